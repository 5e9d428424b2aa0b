"""How one array travels in a Flower record: the one home of the arrays' wire encoding.

Format: Flower's own ``numpy.ndarray`` serialisation, unchanged. An :class:`flwr.app.Array` has
``stype == "numpy.ndarray"``, ``dtype`` (numpy's name, e.g. ``"float32"``) and ``shape``, and
its ``data`` is exactly what ``np.save`` writes: a ``.npy`` file (magic, version 1.0, a header
naming the dtype with its byte order, C order and the shape, padded to 64 bytes, then the values
in C order). So any Flower code reads our arrays with ``Array.numpy()``, and we read any Flower
sender's ``Array(ndarray)``.

Why not ``np.save``/``np.load`` themselves: a sub-model's arrays are small, and for small arrays
both cost mostly header work (``np.load`` parses the header with ``ast.literal_eval``): about 15 us
to write and 30 us to read one array here, for some 100 arrays a round each way. We write the same
bytes from a header built once per ``(dtype, shape)``, and read an array whose header is byte for
byte the one we write for the ``dtype`` and ``shape`` it declares with ``np.frombuffer``: the
result is then what ``np.load`` returns, as a read-only view of the message's bytes (a receiver
that writes into it copies first). Any other valid ``.npy`` payload (another numpy's header
layout, Fortran order) goes through ``np.load``, and must hold the dtype and shape it declares.

A malformed array (another ``stype``, an unknown dtype, a payload that is no ``.npy`` of the
declared dtype and shape) is one error of the caller's type naming the array.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from flwr.app import Array
from numpy.lib import format as npy

from amp_fl.errors import check_argument

STYPE = "numpy.ndarray"  # Flower's SType.NUMPY: what Array(ndarray) writes and Array.numpy() reads

# Distinct (dtype, shape) pairs of a run: the sub-models' sizes (a few hundred at most) and the model's.
_LAYOUTS = 4096


@lru_cache(maxsize=_LAYOUTS)
def _encoding(dtype: np.dtype, shape: tuple[int, ...]) -> tuple[str, bytes]:
    """``Array.dtype`` (``str(dtype)``, slow in numpy) and the header for arrays of ``dtype`` and ``shape``."""
    return str(dtype), _header(dtype, shape)


def _header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The ``.npy`` header ``np.save`` writes for a C-ordered array of ``dtype`` and ``shape``."""
    fields = {"descr": npy.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    buffer = io.BytesIO()
    try:
        npy.write_array_header_1_0(buffer, fields)
    except ValueError:  # a header over 64 KiB: np.save then writes version 2.0
        buffer = io.BytesIO()
        npy.write_array_header_2_0(buffer, fields)
    return buffer.getvalue()


def encode_array(value: np.ndarray) -> Array:
    """``value`` as a Flower :class:`Array`, byte for byte what ``Array(value)`` makes of a C-ordered copy.

    0-d arrays stay 0-d (``np.asarray(order="C")``, not ``np.ascontiguousarray``, which makes
    them shape ``(1,)``).
    """
    array = np.asarray(value, order="C")
    check_argument(not array.dtype.hasobject, "value", f"object arrays cannot go on the wire, got {array.dtype}")
    shape = tuple(int(d) for d in array.shape)
    dtype_name, header = _encoding(array.dtype, shape)
    return Array(dtype=dtype_name, shape=shape, stype=STYPE, data=header + array.tobytes())


@lru_cache(maxsize=_LAYOUTS)
def _layout(dtype_name: str, shape: tuple[int, ...]) -> tuple[np.dtype, bytes, int]:
    """The declared dtype, the header we would write for it and the payload size in bytes."""
    dtype = np.dtype(dtype_name)
    return dtype, _header(dtype, shape), dtype.itemsize * math.prod(shape)


def decode_array(array: Array, name: str, where: str, error: type[ValueError]) -> np.ndarray:
    """The numpy array ``array`` carries (read-only when it took the fast route); ``error`` if malformed."""

    def fail(problem: str) -> ValueError:
        return error(f"{where}: array {name!r} {problem}")

    if array.stype != STYPE:
        raise fail(f"is serialised as {array.stype!r}, expected {STYPE!r}")
    shape = array.shape
    if not isinstance(shape, tuple) or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
        raise fail(f"declares an impossible shape {shape!r}")
    try:
        dtype, header, size = _layout(array.dtype, shape)
    except (TypeError, ValueError) as exc:
        raise fail(f"declares an unknown dtype {array.dtype!r}") from exc
    if dtype.hasobject or dtype.itemsize == 0:  # np.save refuses objects; a 0-byte item holds nothing
        raise fail(f"declares a dtype that cannot travel, {array.dtype!r}")
    data = array.data
    if len(data) == len(header) + size and data.startswith(header):
        return np.frombuffer(data, dtype=dtype, count=size // dtype.itemsize, offset=len(header)).reshape(shape)
    return _loaded(data, dtype, shape, fail)


def _loaded(data: bytes, dtype: np.dtype, shape: tuple[int, ...], fail: Callable[[str], ValueError]) -> np.ndarray:
    """Any other ``.npy`` payload, through ``np.load``; it must hold the declared dtype and shape."""
    try:
        # Never allow_pickle: loading pickled data can run arbitrary code.
        value = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # np.load raises ValueError, OSError, EOFError, ... on bad bytes
        raise fail(f"holds no valid .npy payload ({type(exc).__name__}: {exc})") from None
    if not isinstance(value, np.ndarray) or value.dtype != dtype or value.shape != shape:
        got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
        raise fail(f"declares {dtype} {shape}, its payload holds {got}")
    return value
