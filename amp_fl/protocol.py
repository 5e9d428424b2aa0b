"""The wire protocol between the AMP-FL ServerApp and ClientApp: typed messages, their keys and checks.

Every message is a frozen dataclass with ``to_content()`` (-> Flower ``RecordDict``) and
``from_content()`` (<- ``RecordDict``). ``from_content`` does *all* of the message's validation
(missing record or key, wrong type, value out of range) and raises an error naming the key, so
no other module reads a record by a string key. Keys are kebab-case by Flower convention; the
record and key names are the module constants below and appear nowhere else.

Messages
--------
``query`` (round 0, every node)
    server -> :class:`ProfileQuery` (the seed and the wireless settings for simulated profiles);
    client -> :class:`DeviceProfileReply` (partition-id, cpu-hz, flops-per-cycle, tx-power-w,
    distance-m). A real board reports measured values from its node config
    (:meth:`DeviceProfileReply.from_node_config`) instead of simulated ones.
``train`` (every scheduled node)
    server -> :class:`TrainInstruction`: the sliced sub-model (``arrays``, physically smaller),
    the kept region indices (``kept``, one int32 array per region group) and the ``config``
    (round, device and the run's :class:`TrainSetup`);
    client -> :class:`TrainReply`: ``arrays`` (the cumulative gradient, or ``g - G_k`` in
    memory-friendly mode, shaped like the sub-model) and ``metrics`` (num-examples, train-loss,
    device, fit-seconds). The setup's ``local-objective`` (sgd, fedprox with ``proximal-mu``, apfl
    with ``apfl-alpha``) says what the device minimises (:mod:`amp_fl.client.objectives`).
``evaluate`` (every node, at the personal-evaluation rounds only)
    server -> :class:`EvaluateInstruction`: the full global model and the run's setup;
    client -> :class:`EvaluateReply`: the device's personalised model (APFL's mix, otherwise the
    global model) scored on test samples of its own label distribution
    (:mod:`amp_fl.client.personal`).

Byte accounting
---------------
Downlink (:attr:`TrainInstruction.downlink_bytes`) = float32 sub-model bytes + 4 bytes per kept
region index (int32). Uplink (:attr:`TrainReply.uplink_bytes`) = float32 gradient bytes only:
the server already knows the kept indices, so the client sends none back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from amp_fl.client.failures import FailureSettings
from amp_fl.client.objectives import LOCAL_OBJECTIVES, LocalObjective
from amp_fl.deployment.provenance import COMPUTE_SOURCES, RADIO_SOURCES, REPORTED, SIMULATED, ReportedDeviceProfile
from amp_fl.errors import InvalidReplyError
from amp_fl.pruning.counts import submodel_shapes
from amp_fl.pruning.regions import KeptIndices, RegionMap, check_kept, keep_counts_of
from amp_fl.wireless.config import WirelessConfig
from amp_fl.wireless.devices import DeviceProfile

# ------------------------------------------------------------------------------ record names
ARRAYS = "arrays"
KEPT = "kept"
CONFIG = "config"
METRICS = "metrics"
STATE_CACHE = "amp-fl-gradient-cache"  # the client's context.state record for memory-friendly AMP-FL
STATE_PERSONAL = "amp-fl-apfl-personal-model"  # the client's context.state record of APFL's personal model v_k

# ------------------------------------------------------------------------------ keys
# Node config (Flower's simulation sets both; a deployed SuperNode gets them from --node-config).
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
# Device profile (reply to the query; also the node-config keys of a board's measured values).
CPU_HZ = "cpu-hz"
FLOPS_PER_CYCLE = "flops-per-cycle"
TX_POWER_W = "tx-power-w"
DISTANCE_M = "distance-m"
PROFILE_KEYS = (CPU_HZ, FLOPS_PER_CYCLE, TX_POWER_W, DISTANCE_M)
# Optional node-config keys of a board (:class:`NodeProfileSettings`).
MEASURE_COMPUTE = "measure-compute"  # true: time SGD steps of the run's model when queried
UPLINK_RATE_BPS = "uplink-rate-bps"  # the board's uplink rate on one RB, bit/s (also in the reply)
# Profile reply: where the numbers came from (amp_fl.deployment.provenance).
COMPUTE_SOURCE = "compute-source"
RADIO_SOURCE = "radio-source"
MEASURED_FLOPS_PER_S = "measured-flops-per-s"
# Profile query: the model a board asked to measure itself trains (with MODEL, INPUT_SHAPE, NUM_CLASSES, BATCH_SIZE).
FLOPS_PER_SAMPLE = "flops-per-sample"
# Profile query.
SEED = "seed"
CELL_RADIUS_M = "cell-radius-m"
MIN_DISTANCE_M = "min-distance-m"
TX_POWER_DBM = "tx-power-dbm"
CPU_FREQS_HZ = "cpu-freqs-hz"
# Train instruction config.
ROUND = "round"
DEVICE = "device"
DATASET = "dataset"
DATA_ROOT = "data-root"
NUM_DEVICES = "num-devices"
PARTITION = "partition"
SHARDS_PER_DEVICE = "shards-per-device"
MODEL = "model"
INPUT_SHAPE = "input-shape"
NUM_CLASSES = "num-classes"
LEARNING_RATE = "learning-rate"
LOCAL_STEPS = "local-steps"
BATCH_SIZE = "batch-size"
MEMORY_FRIENDLY = "memory-friendly"
LOCAL_OBJECTIVE = "local-objective"
PROXIMAL_MU = "proximal-mu"
APFL_ALPHA = "apfl-alpha"
# The failure injector's settings (amp_fl.client.failures; all 0 in a normal run).
FAIL_RAISE_PROB = "fail-raise-prob"
FAIL_LATE_PROB = "fail-late-prob"
FAIL_CORRUPT_PROB = "fail-corrupt-prob"
FAIL_LATE_DELAY_S = "fail-late-delay-s"
VALIDATION_FRACTION = "validation-fraction"
# Evaluate instruction config.
EVAL_BATCH_SIZE = "eval-batch-size"
# Train reply metrics.
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"
FIT_SECONDS = "fit-seconds"
# Evaluate reply metrics.
PERSONAL_ACCURACY = "personal-accuracy"
PERSONAL_LOSS = "personal-loss"
PERSONALISED = "personalised"  # 1: the device scored its own personalised model; 0: the global model
# Metrics the ServerApp hands back to Flower (aggregate_train, aggregate_evaluate, evaluate_fn).
NUM_UPDATES = "num-updates"
NUM_FAILURES = "num-failures"
ACCURACY = "accuracy"
LOSS = "loss"

WIRE_DTYPE = np.dtype(np.float32)
KEPT_DTYPE = np.dtype(np.int32)
KEPT_INDEX_BYTES = KEPT_DTYPE.itemsize  # 4 bytes per kept region index on the downlink


# ------------------------------------------------------------------------------ field readers
class _Fields:
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


def _config(content: RecordDict, where: str, error: type[ValueError]) -> _Fields:
    if CONFIG not in content.config_records:
        raise error(f"{where}: no {CONFIG!r} config record")
    return _Fields(content.config_records[CONFIG], where, error)


def _arrays(content: RecordDict, name: str, where: str, error: type[ValueError]) -> ArrayRecord:
    if name not in content.array_records:
        raise error(f"{where}: no {name!r} array record")
    return content.array_records[name]


def _wire_arrays(
    record: ArrayRecord, where: str, error: type[ValueError]
) -> tuple[tuple[str, ...], tuple[np.ndarray, ...]]:
    """Named float32 arrays with finite values, in record order."""
    names, arrays = [], []
    for name, array in record.items():
        value = array.numpy()
        if value.dtype != WIRE_DTYPE:
            raise error(f"{where}: array {name!r} must be {WIRE_DTYPE}, got {value.dtype}")
        if not np.all(np.isfinite(value)):
            raise error(f"{where}: array {name!r} contains NaN or infinite values")
        names.append(name)
        arrays.append(value)
    if not names:
        raise error(f"{where}: the array record is empty")
    return tuple(names), tuple(arrays)


def _to_array_record(names: Sequence[str], arrays: Sequence[np.ndarray]) -> ArrayRecord:
    return ArrayRecord({n: Array(np.ascontiguousarray(a)) for n, a in zip(names, arrays, strict=True)})


def _in_order(
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


def _check_shapes(
    names: Sequence[str],
    arrays: Sequence[np.ndarray],
    expected: Sequence[tuple[int, ...]],
    where: str,
    error: type[ValueError],
) -> None:
    for name, got, want in zip(names, arrays, expected, strict=True):
        if got.shape != tuple(want):
            raise error(f"{where}: array {name!r} has shape {got.shape}, expected {tuple(want)}")


# ------------------------------------------------------------------------------ node config
def partition_id(node_config: Mapping[str, object]) -> int:
    """The node's device id, its node config's ``partition-id`` (``ValueError`` if absent or invalid)."""
    return _Fields(node_config, "node config", ValueError).integer(PARTITION_ID)


def simulation_node_config(partition: int, num_partitions: int) -> dict[str, int]:
    """The node config Flower's simulation gives node ``partition`` of ``num_partitions``."""
    return {PARTITION_ID: int(partition), NUM_PARTITIONS: int(num_partitions)}


@dataclass(frozen=True)
class NodeProfileSettings:
    """What a board's node config says about its profile (every part optional).

    ``cpu-hz`` + ``flops-per-cycle`` (compute) and ``tx-power-w`` + ``distance-m`` (radio) are
    reported in pairs; ``measure-compute=true`` asks the board to time SGD steps of the run's
    model instead of reporting its compute pair; ``uplink-rate-bps`` is its measured uplink rate
    on one RB. A part left out is simulated from the run seed
    (:func:`amp_fl.deployment.profiles.resolve_profile_reply`).
    """

    partition_id: int
    cpu_hz: float | None = None
    flops_per_cycle: float | None = None
    tx_power_w: float | None = None
    distance_m: float | None = None
    measure_compute: bool = False
    uplink_rate_bps: float | None = None

    @property
    def compute_reported(self) -> bool:
        return self.cpu_hz is not None

    @property
    def radio_reported(self) -> bool:
        return self.tx_power_w is not None

    @property
    def reports_anything(self) -> bool:
        return self.compute_reported or self.radio_reported or self.measure_compute or self.uplink_rate_bps is not None

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, object]) -> NodeProfileSettings:
        """Parse and check (``ValueError`` naming the key: an incomplete pair, a bad value, a conflict)."""
        f = _Fields(node_config, "node config", ValueError)
        values: dict[str, float | None] = {}
        for pair in ((CPU_HZ, FLOPS_PER_CYCLE), (TX_POWER_W, DISTANCE_M)):
            present = [key for key in pair if key in node_config]
            if len(present) == 1:
                missing = [key for key in pair if key not in node_config]
                raise ValueError(f"node config sets {present} but not {missing}: {pair[0]} and {pair[1]} go together")
            for key in pair:
                values[key] = f.number(key, positive=True) if present else None
        measure = node_config.get(MEASURE_COMPUTE, False)
        if isinstance(measure, str) and measure.lower() in ("true", "false"):
            measure = measure.lower() == "true"
        if not isinstance(measure, bool):
            raise ValueError(f"node config: key {MEASURE_COMPUTE!r} must be true or false, got {measure!r}")
        if measure and values[CPU_HZ] is not None:
            raise ValueError(
                f"node config sets both {MEASURE_COMPUTE}=true and {CPU_HZ}/{FLOPS_PER_CYCLE}: "
                "report or measure, not both"
            )
        rate = f.number(UPLINK_RATE_BPS, positive=True) if UPLINK_RATE_BPS in node_config else None
        return cls(
            partition_id=partition_id(node_config),
            cpu_hz=values[CPU_HZ],
            flops_per_cycle=values[FLOPS_PER_CYCLE],
            tx_power_w=values[TX_POWER_W],
            distance_m=values[DISTANCE_M],
            measure_compute=measure,
            uplink_rate_bps=rate,
        )


# ------------------------------------------------------------------------------ query
@dataclass(frozen=True)
class ComputeBenchmark:
    """The model a board asked to measure itself (``measure-compute=true``) trains, and its cost unit.

    ``flops_per_sample`` is C of the server's latency model (the paper's constant or the exact
    count), so the board can report its throughput in the units Eq. (6) divides by.
    """

    model: str
    input_shape: tuple[int, int, int]
    num_classes: int
    batch_size: int
    flops_per_sample: float


@dataclass(frozen=True)
class ProfileQuery:
    """Server -> every node at round 0: who are you, and what can you do?

    Carries the run seed and the wireless settings a node needs to simulate its profile
    (:func:`amp_fl.wireless.devices.simulated_device_profile`).
    """

    MESSAGE_TYPE: ClassVar[str] = MessageType.QUERY

    seed: int
    cell_radius_m: float
    min_distance_m: float
    tx_power_dbm: float
    cpu_freqs_hz: tuple[float, ...]
    flops_per_cycle: float
    benchmark: ComputeBenchmark | None = None  # what a board that measures itself trains

    @classmethod
    def from_wireless(
        cls, seed: int, wireless: WirelessConfig, benchmark: ComputeBenchmark | None = None
    ) -> ProfileQuery:
        return cls(
            seed=int(seed),
            cell_radius_m=float(wireless.cell_radius_m),
            min_distance_m=float(wireless.min_distance_m),
            tx_power_dbm=float(wireless.tx_power_dbm),
            cpu_freqs_hz=tuple(float(f) for f in wireless.cpu_freqs_hz),
            flops_per_cycle=float(wireless.flops_per_cycle),
            benchmark=benchmark,
        )

    def wireless(self) -> WirelessConfig:
        """The wireless settings of the query (defaults for what a profile does not depend on)."""
        return WirelessConfig(
            cell_radius_m=self.cell_radius_m,
            min_distance_m=self.min_distance_m,
            tx_power_dbm=self.tx_power_dbm,
            cpu_freqs_hz=self.cpu_freqs_hz,
            flops_per_cycle=self.flops_per_cycle,
        )

    def to_content(self) -> RecordDict:
        config = ConfigRecord(
            {
                SEED: int(self.seed),
                CELL_RADIUS_M: float(self.cell_radius_m),
                MIN_DISTANCE_M: float(self.min_distance_m),
                TX_POWER_DBM: float(self.tx_power_dbm),
                CPU_FREQS_HZ: [float(f) for f in self.cpu_freqs_hz],
                FLOPS_PER_CYCLE: float(self.flops_per_cycle),
            }
        )
        if self.benchmark is not None:
            b = self.benchmark
            config[MODEL] = b.model
            config[INPUT_SHAPE] = [int(d) for d in b.input_shape]
            config[NUM_CLASSES] = int(b.num_classes)
            config[BATCH_SIZE] = int(b.batch_size)
            config[FLOPS_PER_SAMPLE] = float(b.flops_per_sample)
        return RecordDict({CONFIG: config})

    def to_message(self, dst_node_id: int) -> Message:
        return Message(self.to_content(), dst_node_id=dst_node_id, message_type=self.MESSAGE_TYPE)

    @classmethod
    def from_content(cls, content: RecordDict) -> ProfileQuery:
        """Parse and check a query (``ValueError`` naming the key)."""
        f = _config(content, "profile query", ValueError)
        min_distance = f.number(MIN_DISTANCE_M, positive=True)
        radius = f.number(CELL_RADIUS_M, positive=True)
        if radius <= min_distance:
            raise f.fail(CELL_RADIUS_M, f"must exceed {MIN_DISTANCE_M} ({min_distance}), got {radius}")
        benchmark = None
        if MODEL in content.config_records[CONFIG]:
            c, h, w = f.positive_ints(INPUT_SHAPE, 3)
            benchmark = ComputeBenchmark(
                model=f.text(MODEL),
                input_shape=(c, h, w),
                num_classes=f.integer(NUM_CLASSES, minimum=1),
                batch_size=f.integer(BATCH_SIZE, minimum=1),
                flops_per_sample=f.number(FLOPS_PER_SAMPLE, positive=True),
            )
        return cls(
            seed=f.integer(SEED),
            cell_radius_m=radius,
            min_distance_m=min_distance,
            tx_power_dbm=f.number(TX_POWER_DBM),
            cpu_freqs_hz=f.positive_numbers(CPU_FREQS_HZ),
            flops_per_cycle=f.number(FLOPS_PER_CYCLE, positive=True),
            benchmark=benchmark,
        )


@dataclass(frozen=True)
class DeviceProfileReply:
    """Node -> server: its device id (partition-id) and device profile (simulated, reported or measured).

    ``compute_source`` / ``radio_source`` say where the numbers came from
    (:mod:`amp_fl.deployment.provenance`); they do not take part in equality, which compares
    the profile itself. ``uplink_rate_bps``: the board's reported uplink rate, if any;
    ``measured_flops_per_s``: its measured throughput in exact FLOPs, if it measured itself.
    """

    partition_id: int
    cpu_hz: float
    flops_per_cycle: float
    tx_power_w: float
    distance_m: float
    uplink_rate_bps: float | None = None
    compute_source: str = field(default=SIMULATED, compare=False)
    radio_source: str = field(default=SIMULATED, compare=False)
    measured_flops_per_s: float | None = field(default=None, compare=False)

    @classmethod
    def from_profile(cls, partition: int, profile: DeviceProfile) -> DeviceProfileReply:
        reported = profile if isinstance(profile, ReportedDeviceProfile) else None
        return cls(
            partition_id=int(partition),
            cpu_hz=float(profile.cpu_hz),
            flops_per_cycle=float(profile.flops_per_cycle),
            tx_power_w=float(profile.tx_power_w),
            distance_m=float(profile.distance_m),
            uplink_rate_bps=reported.uplink_rate_bps if reported else None,
            compute_source=reported.compute_source if reported else SIMULATED,
            radio_source=reported.radio_source if reported else SIMULATED,
            measured_flops_per_s=reported.measured_flops_per_s if reported else None,
        )

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, object]) -> DeviceProfileReply | None:
        """The whole profile a board reported in its node config, or ``None`` if it sets none of the keys.

        Setting only some of ``cpu-hz``, ``flops-per-cycle``, ``tx-power-w``, ``distance-m`` is
        an error (``ValueError`` naming the missing keys); a board that reports only part of its
        profile, or measures itself, is answered by
        :func:`amp_fl.deployment.profiles.resolve_profile_reply`, which fills in the rest.
        """
        settings = NodeProfileSettings.from_node_config(node_config)
        if not (settings.compute_reported or settings.radio_reported):
            return None
        present = [key for key in PROFILE_KEYS if key in node_config]
        missing = [key for key in PROFILE_KEYS if key not in node_config]
        if missing:
            raise ValueError(f"node config sets {present} but not {missing}: a reported profile needs all four")
        assert settings.cpu_hz is not None and settings.flops_per_cycle is not None
        assert settings.tx_power_w is not None and settings.distance_m is not None
        return cls(
            partition_id=settings.partition_id,
            cpu_hz=settings.cpu_hz,
            flops_per_cycle=settings.flops_per_cycle,
            tx_power_w=settings.tx_power_w,
            distance_m=settings.distance_m,
            uplink_rate_bps=settings.uplink_rate_bps,
            compute_source=REPORTED,
            radio_source=REPORTED,
        )

    def to_profile(self) -> DeviceProfile:
        """The profile; a :class:`ReportedDeviceProfile` (which keeps the provenance) unless all simulated."""
        if (self.compute_source, self.radio_source, self.uplink_rate_bps, self.measured_flops_per_s) == (
            SIMULATED,
            SIMULATED,
            None,
            None,
        ):
            return DeviceProfile(
                cpu_hz=self.cpu_hz,
                flops_per_cycle=self.flops_per_cycle,
                tx_power_w=self.tx_power_w,
                distance_m=self.distance_m,
            )
        return ReportedDeviceProfile(
            cpu_hz=self.cpu_hz,
            flops_per_cycle=self.flops_per_cycle,
            tx_power_w=self.tx_power_w,
            distance_m=self.distance_m,
            compute_source=self.compute_source,
            radio_source=self.radio_source,
            uplink_rate_bps=self.uplink_rate_bps,
            measured_flops_per_s=self.measured_flops_per_s,
        )

    def to_content(self) -> RecordDict:
        config = ConfigRecord(
            {
                PARTITION_ID: int(self.partition_id),
                CPU_HZ: float(self.cpu_hz),
                FLOPS_PER_CYCLE: float(self.flops_per_cycle),
                TX_POWER_W: float(self.tx_power_w),
                DISTANCE_M: float(self.distance_m),
                COMPUTE_SOURCE: self.compute_source,
                RADIO_SOURCE: self.radio_source,
            }
        )
        if self.uplink_rate_bps is not None:
            config[UPLINK_RATE_BPS] = float(self.uplink_rate_bps)
        if self.measured_flops_per_s is not None:
            config[MEASURED_FLOPS_PER_S] = float(self.measured_flops_per_s)
        return RecordDict({CONFIG: config})

    def to_reply(self, query: Message) -> Message:
        return Message(self.to_content(), reply_to=query)

    @classmethod
    def from_content(cls, content: RecordDict) -> DeviceProfileReply:
        """Parse and check a profile reply (:class:`InvalidReplyError` naming the key)."""
        f = _config(content, "device profile reply", InvalidReplyError)
        record = content.config_records[CONFIG]
        sources: dict[str, str] = {}
        for key, allowed in ((COMPUTE_SOURCE, COMPUTE_SOURCES), (RADIO_SOURCE, RADIO_SOURCES)):
            sources[key] = f.text(key) if key in record else SIMULATED
            if sources[key] not in allowed:
                raise f.fail(key, f"must be one of {', '.join(allowed)}, got {sources[key]!r}")
        return cls(
            partition_id=f.integer(PARTITION_ID),
            cpu_hz=f.number(CPU_HZ, positive=True),
            flops_per_cycle=f.number(FLOPS_PER_CYCLE, positive=True),
            tx_power_w=f.number(TX_POWER_W, positive=True),
            distance_m=f.number(DISTANCE_M, positive=True),
            uplink_rate_bps=f.number(UPLINK_RATE_BPS, positive=True) if UPLINK_RATE_BPS in record else None,
            compute_source=sources[COMPUTE_SOURCE],
            radio_source=sources[RADIO_SOURCE],
            measured_flops_per_s=(
                f.number(MEASURED_FLOPS_PER_S, positive=True) if MEASURED_FLOPS_PER_S in record else None
            ),
        )


# ------------------------------------------------------------------------------ train
@dataclass(frozen=True)
class TrainSetup:
    """The run-wide part of every train and evaluate instruction: data, model and local-training settings.

    ``local_objective`` is what a device minimises (:mod:`amp_fl.client.objectives`);
    ``proximal_mu`` is FedProx's mu (read by ``fedprox`` only), ``apfl_alpha`` APFL's mixing
    weight (read by ``apfl`` only). ``validation_fraction``: the share of the training set held out
    for validation before partitioning (:mod:`amp_fl.data.validation`); devices train on the rest.
    """

    seed: int
    dataset: str
    data_root: str
    num_devices: int
    partition: str
    shards_per_device: int
    model: str
    input_shape: tuple[int, int, int]
    num_classes: int
    learning_rate: float
    local_steps: int
    batch_size: int
    memory_friendly: bool
    local_objective: LocalObjective = "sgd"
    proximal_mu: float = 0.0
    apfl_alpha: float = 0.0
    failures: FailureSettings = field(default_factory=FailureSettings)
    validation_fraction: float = 0.0

    def to_config(self) -> dict[str, int | float | str | bool | list[int]]:
        return {
            SEED: int(self.seed),
            DATASET: self.dataset,
            DATA_ROOT: self.data_root,
            NUM_DEVICES: int(self.num_devices),
            PARTITION: self.partition,
            SHARDS_PER_DEVICE: int(self.shards_per_device),
            MODEL: self.model,
            INPUT_SHAPE: [int(d) for d in self.input_shape],
            NUM_CLASSES: int(self.num_classes),
            LEARNING_RATE: float(self.learning_rate),
            LOCAL_STEPS: int(self.local_steps),
            BATCH_SIZE: int(self.batch_size),
            MEMORY_FRIENDLY: bool(self.memory_friendly),
            LOCAL_OBJECTIVE: self.local_objective,
            PROXIMAL_MU: float(self.proximal_mu),
            APFL_ALPHA: float(self.apfl_alpha),
            FAIL_RAISE_PROB: float(self.failures.raise_prob),
            FAIL_LATE_PROB: float(self.failures.late_prob),
            FAIL_CORRUPT_PROB: float(self.failures.corrupt_prob),
            FAIL_LATE_DELAY_S: float(self.failures.late_delay_s),
            VALIDATION_FRACTION: float(self.validation_fraction),
        }

    @classmethod
    def _from_fields(cls, f: _Fields) -> TrainSetup:
        c, h, w = f.positive_ints(INPUT_SHAPE, 3)
        return cls(
            seed=f.integer(SEED),
            dataset=f.text(DATASET),
            data_root=f.text(DATA_ROOT),
            num_devices=f.integer(NUM_DEVICES, minimum=1),
            partition=f.text(PARTITION),
            shards_per_device=f.integer(SHARDS_PER_DEVICE, minimum=1),
            model=f.text(MODEL),
            input_shape=(c, h, w),
            num_classes=f.integer(NUM_CLASSES, minimum=1),
            learning_rate=f.number(LEARNING_RATE, positive=True),
            local_steps=f.integer(LOCAL_STEPS, minimum=1),
            batch_size=f.integer(BATCH_SIZE, minimum=1),
            memory_friendly=f.flag(MEMORY_FRIENDLY),
            local_objective=_local_objective(f.choice(LOCAL_OBJECTIVE, LOCAL_OBJECTIVES)),
            proximal_mu=f.number(PROXIMAL_MU, minimum=0.0),
            apfl_alpha=f.number(APFL_ALPHA, minimum=0.0, maximum=1.0),
            failures=_failure_settings(f),
            validation_fraction=f.number(VALIDATION_FRACTION, minimum=0.0, maximum=1.0),
        )


def _failure_settings(f: _Fields) -> FailureSettings:
    probs = [f.number(key, minimum=0.0, maximum=1.0) for key in (FAIL_RAISE_PROB, FAIL_LATE_PROB, FAIL_CORRUPT_PROB)]
    if sum(probs) > 1.0:
        raise f.fail(FAIL_RAISE_PROB, f"the three failure probabilities sum to {sum(probs)} > 1")
    raise_prob, late_prob, corrupt_prob = probs
    return FailureSettings(raise_prob, late_prob, corrupt_prob, late_delay_s=f.number(FAIL_LATE_DELAY_S, minimum=0.0))


def _local_objective(name: str) -> LocalObjective:
    for objective in LOCAL_OBJECTIVES:  # narrows the checked string to the Literal type
        if objective == name:
            return objective
    raise ValueError(f"unknown local objective {name!r}")


@dataclass(frozen=True, eq=False)  # holds arrays
class TrainInstruction:
    """Server -> one scheduled node: train this sub-model in this round.

    ``arrays`` are the sliced float32 sub-model arrays named ``names`` (the region map's
    ``param_names``); ``kept`` holds one sorted index array per region group.
    """

    MESSAGE_TYPE: ClassVar[str] = MessageType.TRAIN

    round: int
    device: int
    setup: TrainSetup
    names: tuple[str, ...]
    arrays: tuple[np.ndarray, ...]
    kept: tuple[np.ndarray, ...]

    @property
    def downlink_bytes(self) -> int:
        """float32 sub-model bytes plus 4 bytes (int32) per kept region index."""
        return sum(WIRE_DTYPE.itemsize * int(a.size) for a in self.arrays) + KEPT_INDEX_BYTES * sum(
            int(k.size) for k in self.kept
        )

    def to_content(self) -> RecordDict:
        config = ConfigRecord({**self.setup.to_config(), ROUND: int(self.round), DEVICE: int(self.device)})
        arrays = _to_array_record(self.names, [np.asarray(a, dtype=WIRE_DTYPE) for a in self.arrays])
        kept = ArrayRecord({str(g): Array(np.asarray(k, dtype=KEPT_DTYPE)) for g, k in enumerate(self.kept)})
        return RecordDict({ARRAYS: arrays, KEPT: kept, CONFIG: config})

    def to_message(self, dst_node_id: int) -> Message:
        return Message(self.to_content(), dst_node_id=dst_node_id, message_type=self.MESSAGE_TYPE)

    @classmethod
    def from_content(cls, content: RecordDict) -> TrainInstruction:
        """Parse and check an instruction (``ValueError`` naming the key, record or array).

        Checks what the message alone determines; :meth:`for_model` then checks it against the
        model's region map (names, group count, index range, sub-model shapes).
        """
        where = "train instruction"
        f = _config(content, where, ValueError)
        setup = TrainSetup._from_fields(f)
        names, arrays = _wire_arrays(_arrays(content, ARRAYS, where, ValueError), where, ValueError)
        kept_record = _arrays(content, KEPT, where, ValueError)
        groups = [str(g) for g in range(len(kept_record))]
        if sorted(kept_record.keys()) != sorted(groups):
            raise ValueError(f"{where}: {KEPT!r} entries must be named 0..{len(groups) - 1}, got {list(kept_record)}")
        kept = []
        for g in groups:
            idx = kept_record[g].numpy()
            if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(
                    f"{where}: {KEPT!r} entry {g} must be a 1-d integer array, got {idx.dtype} {idx.shape}"
                )
            kept.append(idx.astype(np.int64))
        return cls(
            round=f.integer(ROUND, minimum=1),
            device=f.integer(DEVICE),
            setup=setup,
            names=names,
            arrays=arrays,
            kept=tuple(kept),
        )

    def for_model(self, region_map: RegionMap) -> tuple[list[np.ndarray], KeptIndices]:
        """The arrays in ``region_map.param_names`` order and the checked kept indices.

        Raises ``ValueError`` when the instruction does not describe a sub-model of that model.
        """
        where = "train instruction"
        try:
            kept = check_kept(region_map, self.kept)
        except ValueError as exc:
            raise ValueError(f"{where}: {KEPT!r}: {exc}") from exc
        arrays = _in_order(self.names, self.arrays, region_map.param_names, where, ValueError)
        expected = submodel_shapes(region_map, keep_counts_of(kept))
        _check_shapes(region_map.param_names, arrays, expected, where, ValueError)
        return arrays, kept


@dataclass(frozen=True, eq=False)  # holds arrays
class TrainReply:
    """Node -> server: the sub-model's cumulative gradient (or ``g - G_k``) and training metrics."""

    device: int
    names: tuple[str, ...]
    gradient: tuple[np.ndarray, ...]
    num_examples: int
    train_loss: float
    fit_seconds: float
    round: int  # echoes the instruction's round, so a reply delayed into a later round is recognised

    @property
    def uplink_bytes(self) -> int:
        """float32 gradient bytes (no indices: the server knows what it sent)."""
        return sum(WIRE_DTYPE.itemsize * int(g.size) for g in self.gradient)

    def to_content(self) -> RecordDict:
        metrics = MetricRecord(
            {
                NUM_EXAMPLES: int(self.num_examples),
                TRAIN_LOSS: float(self.train_loss),
                DEVICE: int(self.device),
                FIT_SECONDS: float(self.fit_seconds),
                ROUND: int(self.round),
            }
        )
        arrays = _to_array_record(self.names, [np.asarray(g, dtype=WIRE_DTYPE) for g in self.gradient])
        return RecordDict({ARRAYS: arrays, METRICS: metrics})

    def to_reply(self, instruction: Message) -> Message:
        return Message(self.to_content(), reply_to=instruction)

    @classmethod
    def from_content(cls, content: RecordDict) -> TrainReply:
        """Parse and check a reply (:class:`InvalidReplyError` naming the key, record or array)."""
        where = "train reply"
        if METRICS not in content.metric_records:
            raise InvalidReplyError(f"{where}: no {METRICS!r} metric record")
        f = _Fields(content.metric_records[METRICS], where, InvalidReplyError)
        device = f.integer(DEVICE)
        num_examples = f.integer(NUM_EXAMPLES, minimum=1)
        train_loss = f.number(TRAIN_LOSS, minimum=0.0)
        fit_seconds = f.number(FIT_SECONDS, minimum=0.0)
        server_round = f.integer(ROUND, minimum=1)
        names, gradient = _wire_arrays(_arrays(content, ARRAYS, where, InvalidReplyError), where, InvalidReplyError)
        return cls(
            device=device,
            names=names,
            gradient=gradient,
            num_examples=num_examples,
            train_loss=train_loss,
            fit_seconds=fit_seconds,
            round=server_round,
        )

    def for_model(self, region_map: RegionMap, kept: KeptIndices) -> list[np.ndarray]:
        """The gradient in ``region_map.param_names`` order, checked against the sub-model ``kept`` describes.

        The client sends no indices back (they would cost uplink), so a reply trained on other keep
        counts than were sent shows as arrays of another sub-model's shape: the error says so.
        """
        where = f"train reply of device {self.device}"
        arrays = _in_order(self.names, self.gradient, region_map.param_names, where, InvalidReplyError)
        counts = keep_counts_of(kept)
        expected = submodel_shapes(region_map, counts)
        try:
            _check_shapes(region_map.param_names, arrays, expected, where, InvalidReplyError)
        except InvalidReplyError as exc:
            raise InvalidReplyError(f"{exc} for the keep counts sent {[int(c) for c in counts]}") from None
        return arrays

    def norm(self) -> float:
        """L2 norm of the whole upload (all arrays together), in float64 so a large update cannot overflow."""
        return math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in self.gradient))


# ------------------------------------------------------------------------------ evaluate
@dataclass(frozen=True, eq=False)  # holds arrays
class EvaluateInstruction:
    """Server -> every node at a personal-evaluation round: score your personalised model.

    ``arrays`` are the full global model's float32 arrays named ``names`` (the region map's
    ``param_names``); ``batch_size`` is the evaluation batch.
    """

    MESSAGE_TYPE: ClassVar[str] = MessageType.EVALUATE

    round: int
    device: int
    setup: TrainSetup
    batch_size: int
    names: tuple[str, ...]
    arrays: tuple[np.ndarray, ...]

    def to_content(self) -> RecordDict:
        config = ConfigRecord(
            {
                **self.setup.to_config(),
                ROUND: int(self.round),
                DEVICE: int(self.device),
                EVAL_BATCH_SIZE: int(self.batch_size),
            }
        )
        arrays = _to_array_record(self.names, [np.asarray(a, dtype=WIRE_DTYPE) for a in self.arrays])
        return RecordDict({ARRAYS: arrays, CONFIG: config})

    def to_message(self, dst_node_id: int) -> Message:
        return Message(self.to_content(), dst_node_id=dst_node_id, message_type=self.MESSAGE_TYPE)

    @classmethod
    def from_content(cls, content: RecordDict) -> EvaluateInstruction:
        """Parse and check an evaluate instruction (``ValueError`` naming the key, record or array)."""
        where = "evaluate instruction"
        f = _config(content, where, ValueError)
        setup = TrainSetup._from_fields(f)
        names, arrays = _wire_arrays(_arrays(content, ARRAYS, where, ValueError), where, ValueError)
        return cls(
            round=f.integer(ROUND, minimum=1),
            device=f.integer(DEVICE),
            setup=setup,
            batch_size=f.integer(EVAL_BATCH_SIZE, minimum=1),
            names=names,
            arrays=arrays,
        )

    def for_model(self, region_map: RegionMap) -> list[np.ndarray]:
        """The arrays in ``region_map.param_names`` order, checked to be the full model's shapes."""
        where = "evaluate instruction"
        arrays = _in_order(self.names, self.arrays, region_map.param_names, where, ValueError)
        _check_shapes(region_map.param_names, arrays, region_map.shapes, where, ValueError)
        return arrays


@dataclass(frozen=True)
class EvaluateReply:
    """Node -> server: its personalised model's label-weighted test accuracy and loss.

    ``num_examples`` is the number of test samples scored; ``personalised`` is ``True`` when the
    device scored its own personalised model (APFL, after its first training round) and ``False``
    when it scored the global model.
    """

    device: int
    accuracy: float
    loss: float
    num_examples: int
    personalised: bool

    def to_content(self) -> RecordDict:
        metrics = MetricRecord(
            {
                DEVICE: int(self.device),
                PERSONAL_ACCURACY: float(self.accuracy),
                PERSONAL_LOSS: float(self.loss),
                NUM_EXAMPLES: int(self.num_examples),
                PERSONALISED: int(self.personalised),
            }
        )
        return RecordDict({METRICS: metrics})

    def to_reply(self, instruction: Message) -> Message:
        return Message(self.to_content(), reply_to=instruction)

    @classmethod
    def from_content(cls, content: RecordDict) -> EvaluateReply:
        """Parse and check an evaluate reply (:class:`InvalidReplyError` naming the key)."""
        where = "evaluate reply"
        if METRICS not in content.metric_records:
            raise InvalidReplyError(f"{where}: no {METRICS!r} metric record")
        f = _Fields(content.metric_records[METRICS], where, InvalidReplyError)
        personalised = f.integer(PERSONALISED)
        if personalised > 1:
            raise f.fail(PERSONALISED, f"must be 0 or 1, got {personalised}")
        return cls(
            device=f.integer(DEVICE),
            accuracy=f.number(PERSONAL_ACCURACY, minimum=0.0, maximum=1.0),
            loss=f.number(PERSONAL_LOSS, minimum=0.0),
            num_examples=f.integer(NUM_EXAMPLES, minimum=1),
            personalised=bool(personalised),
        )


# ------------------------------------------------------------------------------ metrics to Flower
@dataclass(frozen=True)
class RoundMetrics:
    """What ``aggregate_train`` returns to Flower."""

    num_updates: int
    num_failures: int

    def to_record(self) -> MetricRecord:
        return MetricRecord({NUM_UPDATES: int(self.num_updates), NUM_FAILURES: int(self.num_failures)})


@dataclass(frozen=True)
class PersonalMetrics:
    """What ``aggregate_evaluate`` returns to Flower: the mean personalised accuracy and loss over devices."""

    accuracy: float
    loss: float
    num_devices: int

    def to_record(self) -> MetricRecord:
        return MetricRecord(
            {
                PERSONAL_ACCURACY: float(self.accuracy),
                PERSONAL_LOSS: float(self.loss),
                NUM_DEVICES: int(self.num_devices),
            }
        )


@dataclass(frozen=True)
class EvaluationMetrics:
    """What the central evaluation (``evaluate_fn``) returns to Flower."""

    accuracy: float
    loss: float

    def to_record(self) -> MetricRecord:
        return MetricRecord({ACCURACY: float(self.accuracy), LOSS: float(self.loss)})


# ------------------------------------------------------------------------------ client state
def arrays_to_record(names: Sequence[str], arrays: Sequence[np.ndarray]) -> ArrayRecord:
    """Named arrays -> ArrayRecord (insertion order kept); for the client's own ``context.state``."""
    if len(names) != len(arrays):
        raise ValueError(f"{len(names)} names for {len(arrays)} arrays")
    return _to_array_record(names, arrays)


def record_to_arrays(record: ArrayRecord, names: Iterable[str]) -> list[np.ndarray]:
    """ArrayRecord -> arrays in ``names`` order (``ValueError`` on a missing or extra name)."""
    wanted = list(names)
    return _in_order(list(record.keys()), [a.numpy() for a in record.values()], wanted, "array record", ValueError)
