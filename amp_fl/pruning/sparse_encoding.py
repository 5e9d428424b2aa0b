"""Compact encodings of masked (unstructured-sparse) tensors, with byte counts measured from the buffers.

Pure NumPy, no Flower. A tensor of ``n`` entries of which ``k`` survive its mask is sent in the
smallest of three formats:

``dense``
    all ``n`` values, float32: ``4 n`` bytes (no index);
``bitmap``
    the ``k`` surviving values (float32, C order) and the mask packed 8 entries a byte
    (``numpy.packbits``): ``4 k + ceil(n / 8)`` bytes;
``indices``
    the ``k`` surviving values and their flat indices in the smallest unsigned integer type that
    holds ``n - 1`` (uint8, uint16, uint32 or uint64): ``4 k + k * itemsize`` bytes.

Ties go to the first in that order (dense, bitmap, indices). :attr:`EncodedTensor.nbytes` is
``values.nbytes + index.nbytes`` of the arrays that are actually sent; :func:`encoded_bytes` is the
same count in closed form, so a test can check one against the other and against a hand count.

An update whose mask the receiver already knows (the server knows the mask it sent) needs no
index at all: :func:`pack_values` / :func:`unpack_values` carry just the ``k`` surviving values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from amp_fl.errors import check_argument

Format = Literal["dense", "bitmap", "indices"]
FORMATS: tuple[Format, ...] = get_args(Format)
FORMAT_CODES: dict[Format, int] = {name: code for code, name in enumerate(FORMATS)}  # one byte per tensor on the wire
VALUE_DTYPE = np.dtype(np.float32)
INDEX_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.uint64))


def index_dtype(size: int) -> np.dtype[np.unsignedinteger]:
    """The smallest unsigned integer type that holds every flat index of a tensor of ``size`` entries."""
    check_argument(size >= 1, "size", f"must be >= 1, got {size}")
    for dtype in INDEX_DTYPES:
        if size - 1 <= np.iinfo(dtype).max:
            return dtype
    raise ValueError(f"size: {size} entries do not fit a 64-bit index")  # pragma: no cover


def encoded_bytes(size: int, kept: int) -> dict[Format, int]:
    """Bytes of each format for a tensor of ``size`` entries with ``kept`` survivors (closed form)."""
    check_argument(size >= 1, "size", f"must be >= 1, got {size}")
    check_argument(0 <= kept <= size, "kept", f"must be in [0, {size}], got {kept}")
    value = VALUE_DTYPE.itemsize
    return {
        "dense": value * size,
        "bitmap": value * kept + math.ceil(size / 8),
        "indices": (value + index_dtype(size).itemsize) * kept,
    }


def best_format(size: int, kept: int) -> Format:
    """The format with the fewest bytes (ties: dense, then bitmap, then indices)."""
    sizes = encoded_bytes(size, kept)
    return min(FORMATS, key=lambda f: (sizes[f], FORMATS.index(f)))


@dataclass(frozen=True, eq=False)  # holds arrays
class EncodedTensor:
    """One tensor as sent: its ``format``, ``values`` (float32) and ``index`` (empty for dense)."""

    shape: tuple[int, ...]
    format: Format
    values: np.ndarray
    index: np.ndarray

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the buffers sent: values plus index (the format tag is counted by the caller)."""
        return int(self.values.nbytes + self.index.nbytes)


def encode(array: np.ndarray, mask: np.ndarray | None = None) -> EncodedTensor:
    """Encode ``array`` keeping the entries where ``mask`` is ``True`` (``None``: all), in the smallest format.

    Entries outside the mask are dropped (decoded as 0).
    """
    array = np.asarray(array)
    shape = tuple(int(d) for d in array.shape)
    check_argument(array.size >= 1, "array", "must have at least one entry")
    if mask is None:
        mask = np.ones(shape, dtype=bool)
    mask = np.asarray(mask)
    check_argument(mask.dtype == np.bool_, "mask", f"must be boolean, got {mask.dtype}")
    check_argument(mask.shape == array.shape, "mask", f"has shape {mask.shape}, the array {array.shape}")
    flat_mask = mask.ravel()
    kept = int(np.count_nonzero(flat_mask))
    fmt = best_format(array.size, kept)
    if fmt == "dense":
        values = np.where(mask, array, 0).astype(VALUE_DTYPE).reshape(-1)
        return EncodedTensor(shape, fmt, values, np.zeros(0, dtype=np.uint8))
    values = np.ascontiguousarray(array.reshape(-1)[flat_mask], dtype=VALUE_DTYPE)
    bitmap = fmt == "bitmap"
    index = np.packbits(flat_mask) if bitmap else np.flatnonzero(flat_mask).astype(index_dtype(array.size))
    return EncodedTensor(shape, fmt, values, index)


def decode(tensor: EncodedTensor) -> tuple[np.ndarray, np.ndarray]:
    """The float32 array (0 where not kept) and its boolean mask (``ValueError`` on an inconsistent encoding)."""
    n = tensor.size
    check_argument(tensor.format in FORMATS, "tensor", f"unknown format {tensor.format!r}")
    values = np.asarray(tensor.values)
    check_argument(values.ndim == 1, "tensor", f"values must be 1-d, got shape {values.shape}")
    if tensor.format == "dense":
        check_argument(values.size == n, "tensor", f"dense values: {values.size} for {n} entries")
        return values.astype(VALUE_DTYPE).reshape(tensor.shape), np.ones(tensor.shape, dtype=bool)
    index = np.asarray(tensor.index)
    if tensor.format == "bitmap":
        check_argument(
            index.dtype == np.uint8 and index.size == math.ceil(n / 8),
            "tensor",
            f"bitmap must be {math.ceil(n / 8)} uint8 bytes, got {index.size} {index.dtype}",
        )
        bits = np.unpackbits(index, count=n).astype(bool)
        check_argument(
            not np.any(np.unpackbits(index)[n:]), "tensor", "bitmap has bits set beyond the tensor's entries"
        )
        flat_mask = bits
    else:
        check_argument(index.dtype == index_dtype(n), "tensor", f"indices must be {index_dtype(n)}, got {index.dtype}")
        check_argument(index.ndim == 1, "tensor", "indices must be 1-d")
        positions = index.astype(np.int64)
        check_argument(
            bool(np.all(np.diff(positions) > 0)) and (positions.size == 0 or positions[-1] < n),
            "tensor",
            f"indices must be strictly increasing and below {n}",
        )
        flat_mask = np.zeros(n, dtype=bool)
        flat_mask[positions] = True
    check_argument(
        values.size == int(np.count_nonzero(flat_mask)),
        "tensor",
        f"{values.size} values for {int(np.count_nonzero(flat_mask))} kept entries",
    )
    out = np.zeros(n, dtype=VALUE_DTYPE)
    out[flat_mask] = values
    return out.reshape(tensor.shape), flat_mask.reshape(tensor.shape)


def pack_values(array: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The kept entries of ``array`` as a flat float32 vector (C order); all of it when ``mask`` is ``None``."""
    array = np.asarray(array)
    if mask is None:
        return np.ascontiguousarray(array.reshape(-1), dtype=VALUE_DTYPE)
    check_argument(np.shape(mask) == array.shape, "mask", f"has shape {np.shape(mask)}, the array {array.shape}")
    return np.ascontiguousarray(array.reshape(-1)[np.asarray(mask, dtype=bool).reshape(-1)], dtype=VALUE_DTYPE)


def unpack_values(values: np.ndarray, shape: Sequence[int], mask: np.ndarray | None) -> np.ndarray:
    """Inverse of :func:`pack_values`: a float32 array of ``shape``, 0 outside ``mask``."""
    shape = tuple(int(d) for d in shape)
    values = np.asarray(values)
    check_argument(values.ndim == 1, "values", f"must be 1-d, got shape {values.shape}")
    if mask is None:
        check_argument(values.size == math.prod(shape), "values", f"{values.size} values for shape {shape}")
        return values.astype(VALUE_DTYPE).reshape(shape)
    flat_mask = np.asarray(mask, dtype=bool).reshape(-1)
    check_argument(flat_mask.size == math.prod(shape), "mask", f"has {flat_mask.size} entries for shape {shape}")
    kept = int(np.count_nonzero(flat_mask))
    check_argument(values.size == kept, "values", f"{values.size} values for {kept} kept entries")
    out = np.zeros(flat_mask.size, dtype=VALUE_DTYPE)
    out[flat_mask] = values
    return out.reshape(shape)
