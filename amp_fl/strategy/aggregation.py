"""AMP-FL's global update, pure NumPy (no Flower): the gradient cache of Eq. (2), compensation scopes, Algorithm 3.

All arrays are full-model shaped, in the region map's parameter order. A device's upload is first
scattered to full shape with an element-wise ``held`` mask (see ``amp_fl.pruning.submodel``).

Server-side accumulators are float64 so that summing 100 devices' float32 gradients over hundreds
of rounds does not drift between the cached and the memory-friendly variant (Theorem 2).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from amp_fl.errors import check_argument
from amp_fl.state import State, StateValue, arrays, as_arrays

Arrays = list[np.ndarray]

Compensation = Literal["all", "scheduled", "none", "discounted"]
"""Whose cached gradients fill the pruned entries of the global step.

``all``: every device's cache (Eq. (2), the paper's AMP-FL); ``scheduled``: only this round's
devices; ``none``: no compensation, fresh gradients only (Proposed-wGC); ``discounted``: every
device's cache weighted by ``gamma^age`` (beyond the paper, :mod:`amp_fl.strategy.staleness`)."""
COMPENSATION_SCOPES: tuple[Compensation, ...] = get_args(Compensation)

FreshMean = Literal["scheduled", "holders"]
"""What scope ``none`` divides the fresh gradients by: ``scheduled``, the round's |S_t| (the paper's
Proposed-wGC, :func:`fresh_mean`); ``holders``, per entry the number of devices whose sub-model held
it (HeteroFL's and FedRolex's rule, :func:`holders_mean`)."""
FRESH_MEANS: tuple[FreshMean, ...] = get_args(FreshMean)


def check_fresh_rules(
    compensation: Compensation, fresh_mean: FreshMean, stale_weight: float, memory_friendly: bool = False
) -> None:
    """The per-entry rules against the compensation scope that reads them (``ArgumentError`` naming the rule).

    ``fresh_mean="holders"`` is read by scope ``none`` only; ``stale_weight`` (FedStale's beta, in
    [0, 1]) by scope ``all`` only, and 1 there is the paper's Eq. (2); Algorithm 3
    (``memory_friendly``) keeps no per-device caches on the server to weigh.
    """
    check_argument(fresh_mean in FRESH_MEANS, "fresh_mean", f"choose from {', '.join(FRESH_MEANS)}, got {fresh_mean!r}")
    check_argument(
        fresh_mean == "scheduled" or compensation == "none",
        "fresh_mean",
        f"'holders' averages fresh gradients only: it needs compensation=none (got {compensation!r})",
    )
    check_argument(
        math.isfinite(stale_weight) and 0.0 <= stale_weight <= 1.0,
        "stale_weight",
        f"must be in [0, 1], got {stale_weight}",
    )
    check_argument(
        stale_weight == 1.0 or compensation == "all",
        "stale_weight",
        f"weighs the cached gradients of compensation=all only (got compensation={compensation!r}); leave it at 1.0",
    )
    check_argument(
        stale_weight == 1.0 or not memory_friendly,
        "stale_weight",
        "Algorithm 3 (memory_friendly) keeps no per-device caches on the server; leave it at 1.0",
    )


@dataclass(frozen=True)
class DeviceUpdate:
    """One scheduled device's upload, scattered to full shape."""

    device: int
    values: Arrays  # cumulative gradient g (cached variant) or g - G_k (memory-friendly) on held entries
    held: list[np.ndarray]  # boolean masks


def _zeros(shapes: Sequence[tuple[int, ...]], dtype: type = np.float64) -> Arrays:
    return [np.zeros(shape, dtype=dtype) for shape in shapes]


class GradientCache:
    """The server's table G_k of every device's latest gradient, with a running sum over devices.

    One contiguous float32 K x Q array holds every device's cache (row k: device k's parameters
    flattened in order, :meth:`row`); :attr:`table` gives each parameter's ``(K, *shape)`` view of
    it. It is allocated once with ``np.zeros``: the operating system maps its pages on first
    write, so a device never received costs no physical memory, and a round allocates nothing
    K-sized. The running sum is updated with ``new - old`` on the held entries only, so a round
    costs O(sub-model sizes) instead of O(K * Q).
    """

    def __init__(self, num_devices: int, shapes: Sequence[tuple[int, ...]]) -> None:
        self.num_devices = num_devices
        self.shapes = [tuple(s) for s in shapes]
        sizes = [math.prod(s) for s in self.shapes]
        self.flat = np.zeros((num_devices, sum(sizes)), dtype=np.float32)
        bounds = itertools.pairwise(itertools.accumulate(sizes, initial=0))
        self.table = [self.flat[:, a:b].reshape(num_devices, *s) for (a, b), s in zip(bounds, self.shapes, strict=True)]
        self.received = np.zeros(num_devices, dtype=bool)  # False: G_k is still the initial zero
        self.total = _zeros(self.shapes)

    def get(self, device: int) -> Arrays:
        """Device ``device``'s G_k per parameter (views into the table: zero for a device never received)."""
        return [t[device] for t in self.table]

    def row(self, device: int) -> np.ndarray:
        """Device ``device``'s G_k, every parameter flattened into one contiguous vector (a view)."""
        return self.flat[device]

    def update(self, update: DeviceUpdate) -> None:
        """Eq. (2): G_k <- g on the held entries; elsewhere G_k keeps its previous value."""
        for table, g_new, held, total in zip(self.table, update.values, update.held, self.total, strict=True):
            g_cached = table[update.device]
            # Masked in place (``where=``) rather than gathered (``[held]``): the same float64
            # differences, a third of the time.
            delta = np.subtract(g_new, g_cached, dtype=np.float64)
            np.add(total, delta, out=total, where=held)
            np.copyto(g_cached, g_new, where=held)
        self.received[update.device] = True

    def state_dict(self) -> State:
        """Every device's G_k (``None`` for a device never received) and the running sum; not copies."""
        cached: list[StateValue] = [list(self.get(k)) if self.received[k] else None for k in range(self.num_devices)]
        return {"cached": cached, "total": list(self.total)}

    def load_state_dict(self, state: State) -> None:
        """Set the table and its running sum (the sum is restored, not recomputed, so a resumed run
        adds in exactly the same order as an uninterrupted one)."""
        cached = state.get("cached")
        if not isinstance(cached, list) or len(cached) != self.num_devices:
            raise ValueError(f"state: 'cached' must list {self.num_devices} devices")
        tables = [None if c is None else as_arrays(c, f"the cache of device {k}") for k, c in enumerate(cached)]
        total = arrays(state, "total")
        for checked in [*(t for t in tables if t is not None), total]:
            if [a.shape for a in checked] != self.shapes:
                raise ValueError("state: cached array shapes differ from the model's")
        for k, device_table in enumerate(tables):
            for i, table in enumerate(self.table):
                if device_table is not None:
                    table[k] = device_table[i]
                elif self.received[k]:  # a row never written is already zero (and unmapped): leave it
                    table[k] = 0.0
            self.received[k] = device_table is not None
        self.total = [np.array(t, dtype=np.float64) for t in total]

    def mean_over_all(self) -> Arrays:
        """(1/K) * sum_k G_k: compensation scope ``all``."""
        return [t / self.num_devices for t in self.total]

    def mean_over(self, devices: Sequence[int]) -> Arrays:
        """Mean of the listed devices' (just updated) caches: compensation scope ``scheduled``."""
        acc = _zeros(self.shapes)
        for device in devices:
            for a, table in zip(acc, self.table, strict=True):
                a += table[device]
        return [a / max(len(devices), 1) for a in acc]


def fresh_mean(updates: Sequence[DeviceUpdate], shapes: Sequence[tuple[int, ...]]) -> Arrays:
    """Compensation scope ``none`` (Proposed-wGC): fresh gradients, zero on pruned entries, mean over S_t."""
    acc = _zeros(shapes)
    for update in updates:
        for a, g, held in zip(acc, update.values, update.held, strict=True):
            a[held] += g[held]
    return [a / max(len(updates), 1) for a in acc]


def holders_mean(updates: Sequence[DeviceUpdate], shapes: Sequence[tuple[int, ...]]) -> Arrays:
    """HeteroFL's aggregation: per entry, the mean of the fresh gradients of the devices that held it.

    An entry no device held gets 0 (the global step leaves it unchanged). With the plain server step
    at the clients' eta, ``w - eta * holders_mean`` is, on every held entry, the mean of the holders'
    trained weights: HeteroFL's and FedRolex's "average over the clients that hold each entry".
    """
    fresh, holders = _fresh_sums(updates, shapes)
    return [np.divide(f, n, out=np.zeros_like(f), where=n > 0) for f, n in zip(fresh, holders, strict=True)]


def stale_weighted_mean(cache: GradientCache, updates: Sequence[DeviceUpdate], stale_weight: float) -> Arrays:
    """FedStale's mix of fresh and cached gradients, per entry (``cache`` already holds this round's updates).

    Entry e's direction is ``(F_e + beta * (T_e - F_e)) / (n_e + beta * (K - n_e))``: ``F_e`` the sum of
    the ``n_e`` fresh gradients that held e this round, ``T_e`` the sum of all K caches (so
    ``T_e - F_e`` is the stale part). beta = 1 is Eq. (2), ``T / K``; beta = 0 is :func:`holders_mean`.
    An entry with a zero denominator (beta = 0, no holder) gets 0.
    """
    fresh, holders = _fresh_sums(updates, cache.shapes)
    k, beta = cache.num_devices, float(stale_weight)
    out = []
    for f, n, total in zip(fresh, holders, cache.total, strict=True):
        numerator = f + beta * (total - f)
        denominator = n + beta * (k - n)
        out.append(np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0))
    return out


def _fresh_sums(updates: Sequence[DeviceUpdate], shapes: Sequence[tuple[int, ...]]) -> tuple[Arrays, Arrays]:
    """Per entry: the sum of this round's fresh gradients (float64) and how many devices held it."""
    fresh = _zeros(shapes)
    holders = _zeros(shapes)
    for update in updates:
        for f, n, g, held in zip(fresh, holders, update.values, update.held, strict=True):
            np.add(f, g, out=f, where=held)
            n += held
    return fresh, holders


class MemoryFriendlyAggregate:
    """Algorithm 3: the server keeps only Gbar = (1/K) sum_k G_k; devices keep their own G_k.

    Device k uploads ``g - G_k`` on its held entries and then sets ``G_k <- g`` there; the server
    adds the scattered differences / K to Gbar. By Theorem 2 this equals the cached variant.
    """

    def __init__(self, num_devices: int, shapes: Sequence[tuple[int, ...]]) -> None:
        self.num_devices = num_devices
        self.gbar = _zeros(shapes)

    def state_dict(self) -> State:
        return {"gbar": list(self.gbar)}

    def load_state_dict(self, state: State) -> None:
        gbar = arrays(state, "gbar")
        if [a.shape for a in gbar] != [a.shape for a in self.gbar]:
            raise ValueError("state: Gbar's array shapes differ from the model's")
        self.gbar = [np.array(g, dtype=np.float64) for g in gbar]

    def apply(self, updates: Sequence[DeviceUpdate]) -> Arrays:
        for update in updates:
            for acc, diff, held in zip(self.gbar, update.values, update.held, strict=True):
                acc[held] += diff[held].astype(np.float64) / self.num_devices
        return self.gbar


def apply_global_step(weights: Arrays, direction: Arrays, learning_rate: float) -> Arrays:
    """w_{t+1} = w_t - eta * direction, kept in the weights' dtype (and shape: a 0-d array stays an array).

    For parameters only: a buffer is no gradient (:mod:`amp_fl.strategy.buffers`).
    """
    return [
        np.asarray((w.astype(np.float64) - learning_rate * d).astype(w.dtype, copy=False), dtype=w.dtype)
        for w, d in zip(weights, direction, strict=True)
    ]
