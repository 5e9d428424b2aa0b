"""Parameters and buffers apart: BatchNorm's running statistics are averaged as values, never stepped.

A model's ``state_dict`` holds trainable parameters and buffers (BatchNorm's ``running_mean``,
``running_var`` and integer ``num_batches_tracked``). Only parameters have a gradient: the
server's gradient cache, its 1/K compensation, over-the-air superposition and its optimiser act
on them alone. A device uploads each buffer's trained value
(:func:`~amp_fl.client.trainer.upload_of`), and the server sets every buffer entry to the mean of
the values of the devices whose sub-model held it this round (FedAvg's rule for buffers, applied
region-wise as AMP-FL's parameters are); an entry no device held keeps its value. Integer buffers
stay integers (the rounded mean, in their dtype).

Why averaging rather than HeteroFL's static BatchNorm (no running statistics; the server
recomputes them on data): the global model is evaluated centrally with its running statistics,
and the server of this system holds no training data to recompute them; averaging the devices'
statistics is what FedAvg does for the full model, and on a channel a sub-model did not hold it
leaves the statistics of the last devices that trained it.

Pure NumPy, no Flower.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from amp_fl.errors import check_argument
from amp_fl.pruning.regions import RegionMap

Arrays = list[np.ndarray]
T = TypeVar("T")


def server_array(array: np.ndarray) -> np.ndarray:
    """A global-model array as the server keeps it (a copy): float32, or its integer dtype (``num_batches_tracked``)."""
    array = np.asarray(array)
    return np.array(array, dtype=array.dtype if np.issubdtype(array.dtype, np.integer) else np.float32)


@dataclass(frozen=True)
class StateSplit:
    """Which of a model's state_dict entries are parameters and which are buffers.

    ``parameter_map`` / ``buffer_map``: the region map restricted to either kind (same groups and
    layers), so the region-wise tools (slicing, scattering, the AoI-discounted sums) act on one
    kind at a time.
    """

    parameters: tuple[int, ...]
    buffers: tuple[int, ...]
    parameter_map: RegionMap
    buffer_map: RegionMap

    @classmethod
    def of(cls, region_map: RegionMap) -> StateSplit:
        rules = region_map.arrays
        parameters = tuple(i for i, r in enumerate(rules) if r.is_parameter)
        buffers = tuple(i for i, r in enumerate(rules) if not r.is_parameter)
        return cls(
            parameters,
            buffers,
            dataclasses.replace(region_map, arrays=tuple(rules[i] for i in parameters)),
            dataclasses.replace(region_map, arrays=tuple(rules[i] for i in buffers)),
        )

    @property
    def size(self) -> int:
        return len(self.parameters) + len(self.buffers)

    def parameters_of(self, arrays: Sequence[T]) -> list[T]:
        """The parameter entries of a full state_dict list (arrays, shapes, masks), in order."""
        check_argument(len(arrays) == self.size, "arrays", f"{len(arrays)} arrays for {self.size} state_dict entries")
        return [arrays[i] for i in self.parameters]

    def buffers_of(self, arrays: Sequence[T]) -> list[T]:
        """The buffer entries of a full state_dict list, in order."""
        check_argument(len(arrays) == self.size, "arrays", f"{len(arrays)} arrays for {self.size} state_dict entries")
        return [arrays[i] for i in self.buffers]

    def merge(self, parameters: Sequence[np.ndarray], buffers: Sequence[np.ndarray]) -> Arrays:
        """One state_dict list from its parameter and buffer entries."""
        check_argument(len(parameters) == len(self.parameters), "parameters", f"{len(parameters)} arrays")
        check_argument(len(buffers) == len(self.buffers), "buffers", f"{len(buffers)} arrays")
        out: list[np.ndarray | None] = [None] * self.size
        for i, a in zip(self.parameters, parameters, strict=True):
            out[i] = a
        for i, a in zip(self.buffers, buffers, strict=True):
            out[i] = a
        return [a for a in out if a is not None]


def average_buffers(
    current: Sequence[np.ndarray], values: Sequence[Sequence[np.ndarray]], held: Sequence[Sequence[np.ndarray]]
) -> Arrays:
    """Every buffer entry the mean over the devices that held it; entries no device held keep ``current``.

    Parameters
    ----------
    current : sequence of np.ndarray
        The global buffers (full shapes, their own dtypes: float32 statistics, int64 counters).
    values : one sequence of arrays per device
        Each device's trained buffers scattered to full shape (anything on entries it did not hold).
    held : same structure of bool arrays
        Which entries each device held.

    Returns
    -------
    list of np.ndarray
        New arrays (never 0-d NumPy scalars), in ``current``'s dtypes; an integer buffer gets the
        mean rounded half to even.
    """
    check_argument(len(values) == len(held), "held", f"{len(held)} mask lists for {len(values)} devices")
    out = []
    for a, now in enumerate(current):
        now = np.asarray(now)
        total = np.zeros(now.shape, dtype=np.float64)
        count = np.zeros(now.shape, dtype=np.int64)
        for device_values, device_held in zip(values, held, strict=True):
            mask = np.asarray(device_held[a], dtype=bool)
            np.add(total, np.asarray(device_values[a], dtype=np.float64), out=total, where=mask)
            count += mask
        mean = np.divide(total, count, out=np.asarray(now, dtype=np.float64).copy(), where=count > 0)
        if np.issubdtype(now.dtype, np.integer):
            mean = np.rint(mean)
        out.append(np.asarray(mean.astype(now.dtype), dtype=now.dtype).reshape(now.shape))
    return out
