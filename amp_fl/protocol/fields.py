"""Typed readers and writers of Flower records: every check names the key it read (shared by all messages)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from amp_fl.protocol.arrays import decode_array, encode_array
from amp_fl.protocol.keys import CONFIG, METRICS, WIRE_DTYPE


# ------------------------------------------------------------------------------ field readers
class Fields:
    """Typed reads of one record, raising ``error`` with a message that names the key."""

    def __init__(self, record: Mapping[str, object], where: str, error: type[ValueError]) -> None:
        self.record, self.where, self.error = record, where, error

    def fail(self, key: str, problem: str) -> ValueError:
        return self.error(f"{self.where}: key {key!r} {problem}")

    def _get(self, key: str) -> object:
        if key not in self.record:
            raise self.fail(key, "is missing")
        return self.record[key]

    def integer(self, key: str, minimum: int = 0) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {type(value).__name__} {value!r}")
        if value < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {value}")
        return int(value)

    def number(
        self, key: str, *, positive: bool = False, minimum: float | None = None, maximum: float | None = None
    ) -> float:
        return self._number(key, self._get(key), positive=positive, minimum=minimum, maximum=maximum)

    def _number(
        self,
        key: str,
        value: object,
        *,
        positive: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, got {type(value).__name__} {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise self.fail(key, f"must be finite, got {number}")
        if positive and number <= 0:
            raise self.fail(key, f"must be > 0, got {number}")
        if minimum is not None and number < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {number}")
        if maximum is not None and number > maximum:
            raise self.fail(key, f"must be <= {maximum}, got {number}")
        return number

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def choice(self, key: str, choices: Sequence[str]) -> str:
        value = self.text(key)
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def flag(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be a boolean, got {type(value).__name__} {value!r}")
        return value

    def positive_numbers(self, key: str) -> tuple[float, ...]:
        value = self._get(key)
        if not isinstance(value, list) or not value:
            raise self.fail(key, f"must be a non-empty list of numbers, got {value!r}")
        return tuple(self._number(key, v, positive=True) for v in value)

    def positive_ints(self, key: str, length: int) -> tuple[int, ...]:
        value = self._get(key)
        if (
            not isinstance(value, list)
            or len(value) != length
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
        ):
            raise self.fail(key, f"must be a list of {length} positive integers, got {value!r}")
        return tuple(int(v) for v in value)


def config_fields(content: RecordDict, where: str, error: type[ValueError]) -> Fields:
    if CONFIG not in content.config_records:
        raise error(f"{where}: no {CONFIG!r} config record")
    return Fields(content.config_records[CONFIG], where, error)


def metrics_fields(content: RecordDict, where: str, error: type[ValueError]) -> Fields:
    if METRICS not in content.metric_records:
        raise error(f"{where}: no {METRICS!r} metric record")
    return Fields(content.metric_records[METRICS], where, error)


def arrays_of(content: RecordDict, name: str, where: str, error: type[ValueError]) -> ArrayRecord:
    if name not in content.array_records:
        raise error(f"{where}: no {name!r} array record")
    return content.array_records[name]


def wire_arrays(
    record: ArrayRecord, where: str, error: type[ValueError]
) -> tuple[tuple[str, ...], tuple[np.ndarray, ...]]:
    """Named float32 arrays with finite values, in record order (read-only: views of the message's bytes)."""
    names, arrays = [], []
    for name, array in record.items():
        value = decode_array(array, name, where, error)
        if value.dtype != WIRE_DTYPE:
            raise error(f"{where}: array {name!r} must be {WIRE_DTYPE}, got {value.dtype}")
        if not np.all(np.isfinite(value)):
            raise error(f"{where}: array {name!r} contains NaN or infinite values")
        names.append(name)
        arrays.append(value)
    if not names:
        raise error(f"{where}: the array record is empty")
    return tuple(names), tuple(arrays)


def to_array_record(names: Sequence[str], arrays: Sequence[np.ndarray]) -> ArrayRecord:
    """Named arrays in that order, each encoded by :func:`~amp_fl.protocol.arrays.encode_array` (0-d stays 0-d)."""
    # Filled item by item: ArrayRecord({...}) would rebuild every Array it is given.
    record = ArrayRecord()
    for name, value in zip(names, arrays, strict=True):
        record[name] = encode_array(value)
    return record


def model_record(arrays: Sequence[np.ndarray]) -> ArrayRecord:
    """The global model as Flower hands it around: keyed ``"0"``, ``"1"``, ... as ``ArrayRecord(list)`` keys it,
    each array encoded by :func:`~amp_fl.protocol.arrays.encode_array` (the same bytes, without ``np.save``)."""
    return to_array_record([str(i) for i in range(len(arrays))], arrays)


def model_arrays(record: ArrayRecord) -> list[np.ndarray]:
    """The arrays of a :func:`model_record` (or of Flower's ``ArrayRecord(list)``) in order, read-only."""
    return [decode_array(array, name, "model record", ValueError) for name, array in record.items()]


def in_order(
    names: Sequence[str], arrays: Sequence[np.ndarray], wanted: Sequence[str], where: str, error: type[ValueError]
) -> list[np.ndarray]:
    """``arrays`` (named ``names``) in ``wanted`` order; a missing or unexpected name is an error."""
    by_name = dict(zip(names, arrays, strict=True))
    # Missing and extra arrays are told apart: a truncated upload and a board sending more than
    # asked are different faults to debug.
    missing = sorted(set(wanted) - set(by_name))
    if missing:
        raise error(f"{where}: missing arrays {missing[:3]} ({len(missing)} of the model's {len(wanted)})")
    extra = sorted(set(by_name) - set(wanted))
    if extra:
        raise error(f"{where}: unexpected extra arrays {extra[:3]} (the model has {len(wanted)})")
    return [by_name[n] for n in wanted]


def check_shapes(
    names: Sequence[str],
    arrays: Sequence[np.ndarray],
    expected: Sequence[tuple[int, ...]],
    where: str,
    error: type[ValueError],
) -> None:
    for name, got, want in zip(names, arrays, expected, strict=True):
        if got.shape != tuple(want):
            raise error(f"{where}: array {name!r} has shape {got.shape}, expected {tuple(want)}")


# ------------------------------------------------------------------------------ client state
def arrays_to_record(names: Sequence[str], arrays: Sequence[np.ndarray]) -> ArrayRecord:
    """Named arrays -> ArrayRecord (insertion order kept); for the client's own ``context.state``."""
    if len(names) != len(arrays):
        raise ValueError(f"{len(names)} names for {len(arrays)} arrays")
    return to_array_record(names, arrays)


def record_to_arrays(record: ArrayRecord, names: Iterable[str]) -> list[np.ndarray]:
    """ArrayRecord -> writable arrays in ``names`` order (``ValueError`` on a missing or extra name or a bad array)."""
    wanted = list(names)
    where = "array record"
    # Copies: the client updates its state arrays in place (decoding gives views of the record's bytes).
    arrays = [np.array(decode_array(a, n, where, ValueError)) for n, a in record.items()]
    return in_order(list(record.keys()), arrays, wanted, where, ValueError)
