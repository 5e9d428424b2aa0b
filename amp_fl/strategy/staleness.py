"""Staleness-aware compensation (beyond the paper; issue 9): cached gradients discounted by their age.

Compensation scope ``discounted`` with decay ``gamma`` in (0, 1]: entry ``e`` of the global
direction is the weighted mean over all K devices of their cached gradients,

    d[e] = sum_k gamma^{a_k(e)} G_k[e] / sum_k gamma^{a_k(e)},

where ``a_k(e)`` is the age of device k's cached entry after this round's AoI update (0 for an
entry uploaded this round). The weights of an entry sum to one, so the step keeps the scale of a
gradient however stale the caches are. ``gamma = 1`` gives every device weight 1/K: exactly scope
``all`` (Eq. (2)). As ``gamma -> 0`` the fresh entries dominate: each entry becomes the mean of the
gradients uploaded for it this round (and, for an entry nobody uploaded, of the youngest caches).

Ages come from the AoI table (Eq. (9), per device and region), mapped to entries through the
region map: an entry sliced on both axes (a conv/linear weight between two prunable layers) takes
the larger of its output and input region's ages; an entry sliced on one axis takes that region's
age; an entry sliced on neither (the class layer's bias) takes the device's age, the rounds since
it last uploaded anything (the smallest of its region ages, since a scheduled device keeps at least
one region of every layer). The cache is element-wise (an entry is refreshed only when both its
regions were kept), so for two-axis entries this is a lower bound on the entry's true age; it is
exact whenever the two regions were last kept together. The AoI table is reused rather than a
second per-entry age table, which would double the cache's memory.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Literal, get_args

import numpy as np

from amp_fl.pruning.regions import RegionMap
from amp_fl.state import State, arrays
from amp_fl.strategy.aggregation import Arrays, GradientCache


def check_decay(gamma: float) -> float:
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"staleness_decay: must be in (0, 1], got {gamma}")
    return float(gamma)


CacheGranularity = Literal["entry", "region"]
CACHE_GRANULARITIES: tuple[CacheGranularity, ...] = get_args(CacheGranularity)


def entry_ages(
    region_map: RegionMap, region_ages: np.ndarray, granularity: CacheGranularity = "entry"
) -> list[np.ndarray]:
    """Per-entry ages of one device's cache, from its row of the AoI table (length ``num_regions``).

    ``granularity="region"`` (the cache refreshed per region, :func:`~amp_fl.pruning.submodel.region_held_masks`):
    an entry's age is its output region's, or the device's where the array has none; the input
    region plays no part, and the ages are exact.
    """
    region_ages = np.asarray(region_ages, dtype=np.int64)
    offsets = [*region_map.offsets, region_map.num_regions]
    device_age = int(region_ages.min()) if region_ages.size else 0

    def group_ages(group: int) -> np.ndarray:
        return region_ages[offsets[group] : offsets[group + 1]]

    out = []
    for rule in region_map.arrays:
        age = np.full(rule.shape, device_age, dtype=np.int64)
        trailing = max(len(rule.shape) - 1, 0)
        if rule.out_group is not None:
            age = np.broadcast_to(group_ages(rule.out_group).reshape((-1,) + (1,) * trailing), rule.shape)
        if rule.in_group is not None and granularity == "entry":
            cols = np.repeat(group_ages(rule.in_group), rule.in_expand)
            in_age = np.broadcast_to(cols.reshape((1, -1) + (1,) * (trailing - 1)), rule.shape)
            age = in_age if rule.out_group is None else np.maximum(age, in_age)
        out.append(np.array(age, dtype=np.int64))
    return out


def discounted_mean(cache: GradientCache, ages_of: Callable[[int], list[np.ndarray]], gamma: float) -> Arrays:
    """``sum_k gamma^a_k G_k / sum_k gamma^a_k`` per entry, over all devices of ``cache``.

    ``ages_of(k)``: device k's per-entry ages (e.g. :func:`entry_ages`), in the cache's array order;
    called twice per device (ages are recomputed rather than held for all K devices at once).
    """
    gamma = check_decay(gamma)
    devices = range(cache.num_devices)
    # gamma^(a - min_k a) instead of gamma^a: the same ratio, but the youngest cache of every entry
    # has weight 1, so the denominator is >= 1 and never underflows, however old the caches get.
    youngest = [np.full(s, np.iinfo(np.int64).max, dtype=np.int64) for s in cache.shapes]
    for device in devices:
        for y, a in zip(youngest, ages_of(device), strict=True):
            np.minimum(y, a, out=y)
    numerator = [np.zeros(s, dtype=np.float64) for s in cache.shapes]
    denominator = [np.zeros(s, dtype=np.float64) for s in cache.shapes]
    for device in devices:
        arrays = zip(numerator, denominator, cache.get(device), ages_of(device), youngest, strict=True)
        for num, den, g, a, a_min in arrays:
            weight = np.power(gamma, a - a_min, dtype=np.float64)
            num += weight * g
            den += weight
    return [n / d for n, d in zip(numerator, denominator, strict=True)]


class EntryAges:
    """:func:`entry_ages` of all arrays at once, flattened: one gather from the ages of the distinct slot pairs.

    Every entry's age is the larger of two slots of the row extended by the device's age and a
    ``-1`` (which loses every max): its output region's (or the device's age, when axis 0 is
    not sliced) and its input region's (or ``-1``). Entries share few distinct (output, input)
    pairs (a conv kernel's entries, a linear layer's inputs from one channel), so a call takes the
    max over the pairs, then gathers it per entry: one pass over the Q entries instead of three.
    The pairs are found once per region map.
    """

    def __init__(self, region_map: RegionMap, granularity: CacheGranularity = "entry") -> None:
        regions = region_map.num_regions
        device_slot, none_slot = regions, regions + 1
        offsets = [*region_map.offsets, regions]
        outs, ins = [], []
        for rule in region_map.arrays:
            trailing = max(len(rule.shape) - 1, 0)
            out_slot = np.full(rule.shape, device_slot, dtype=np.int64)
            in_slot = np.full(rule.shape, none_slot, dtype=np.int64)
            if rule.out_group is not None:
                rows = np.arange(offsets[rule.out_group], offsets[rule.out_group + 1])
                out_slot[...] = rows.reshape((-1,) + (1,) * trailing)
            if rule.in_group is not None and granularity == "entry":  # region: the input region plays no part
                cols = np.repeat(np.arange(offsets[rule.in_group], offsets[rule.in_group + 1]), rule.in_expand)
                in_slot[...] = cols.reshape((1, -1) + (1,) * (trailing - 1))
            outs.append(out_slot.ravel())
            ins.append(in_slot.ravel())
        out_slots = np.concatenate(outs) if outs else np.zeros(0, dtype=np.int64)
        in_slots = np.concatenate(ins) if ins else np.zeros(0, dtype=np.int64)
        pairs, self.pair_of_entry = np.unique(out_slots * (regions + 2) + in_slots, return_inverse=True)
        self.pair_out, self.pair_in = np.divmod(pairs, regions + 2)
        self._extended = np.zeros(regions + 2, dtype=np.int64)

    def __call__(self, region_ages: np.ndarray, out: np.ndarray, older_by: int = 0) -> np.ndarray:
        """Write the flat entry ages of one device's AoI row, plus ``older_by``, into ``out`` (int64, length Q).

        ``older_by`` is added to the row's few slots rather than to the Q entries (a max of ages
        grows with them; the ``-1`` still loses every max).
        """
        ext = self._extended
        ext[:-2] = region_ages
        ext[-2] = ext[:-2].min() if ext.size > 2 else 0
        if older_by:
            ext[:-1] += older_by
        ext[-1] = -1
        pair_ages = np.maximum(ext[self.pair_out], ext[self.pair_in])
        return np.take(pair_ages, self.pair_of_entry, out=out)


class DiscountedSums:
    """The numerator and denominator of :func:`discounted_mean`, kept up to date round by round.

    Recomputing ``sum_k gamma^a_k G_k`` over all K devices costs O(K * Q) a round. Between two
    rounds a device that uploaded nothing ages by one in every region, so every one of its entry
    ages grows by one (:func:`entry_ages` is a max / min of region ages) and its weight is
    multiplied by ``gamma``. Weights are therefore stored relative to a per-entry reference age
    ``r`` that also grows by one a round (``w_k = gamma^(a_k - r)``): an idle device's term does not
    change, and a round only replaces the terms of the devices that uploaded: O(|S_t| * Q), on
    flat vectors (every parameter in one) with preallocated temporaries.

    Range: a fresh entry weighs ``gamma^-r`` relative to the reference, which would overflow once
    ``r`` reaches ~1000 rounds at gamma = 1/2; before a weight exceeds ``2^MAX_EXPONENT_BITS`` the
    entry is rebased to the fresh age (its sums scaled by ``gamma^shift``; terms that underflow
    weigh less than ``2^-MAX_EXPONENT_BITS`` of the fresh one). A replaced term never weighs
    less than the one it replaces (a device's entry ages after an upload are at most one more
    than before), so the denominator keeps its largest term and never underflows either.
    """

    MAX_EXPONENT_BITS = 500

    def __init__(
        self, region_map: RegionMap, num_devices: int, gamma: float, granularity: CacheGranularity = "entry"
    ) -> None:
        self.region_map = region_map
        self.gamma = check_decay(gamma)
        if self.gamma == 1.0:
            raise ValueError("staleness_decay: 1 weighs every cache alike (scope 'all'); no sums are kept")
        self.max_shift = max(int(self.MAX_EXPONENT_BITS / math.log2(1.0 / self.gamma)), 1)
        self._log_gamma = math.log(self.gamma)  # gamma^e as exp(e ln gamma): 4x faster than np.power
        self.shapes = [tuple(s) for s in region_map.shapes]
        self._sizes = [math.prod(s) for s in self.shapes]
        size = sum(self._sizes)
        # Every device starts at age 0 with G_k = 0: weight 1 each, numerator 0, denominator K.
        self.numerator = np.zeros(size, dtype=np.float64)
        self.denominator = np.full(size, float(num_devices), dtype=np.float64)
        self.reference = np.zeros(size, dtype=np.int64)
        self._entry_ages = EntryAges(region_map, granularity)
        self._ages = np.zeros(size, dtype=np.int64)  # temporaries, reused every call
        self._exponent = np.zeros(size, dtype=np.int64)
        self._weight = np.zeros(size, dtype=np.float64)
        self._term = np.zeros(size, dtype=np.float64)

    def advance(self) -> None:
        """A round passed: every age grew by one, and so does the reference (no stored term changes)."""
        self.reference += 1

    def replace(self, before: np.ndarray, after: np.ndarray, ages_before: np.ndarray, ages_after: np.ndarray) -> None:
        """Swap one device's term after it uploaded this round (call :meth:`advance` first).

        ``before`` / ``after``: its G_k before and after this round's upload, flat
        (:meth:`GradientCache.row`); ``ages_before`` / ``ages_after``: its AoI row (per region)
        before and after this round's AoI update.
        """
        ages, exponent, ref = self._ages, self._exponent, self.reference
        # The round just advanced the reference, not the old ages: they count one round older.
        np.subtract(self._entry_ages(ages_before, out=ages, older_by=1), ref, out=exponent)
        self._add(before, exponent, -1.0)
        new_ages = self._entry_ages(ages_after, out=ages)
        np.subtract(new_ages, ref, out=exponent)
        if exponent.size and exponent.min() < -self.max_shift:
            # Rebase before the fresh weight gamma^-(r - a) gets out of range.
            stale = np.flatnonzero(exponent < -self.max_shift)
            scale = np.exp(-exponent[stale] * self._log_gamma)
            self.numerator[stale] *= scale
            self.denominator[stale] *= scale
            ref[stale] = new_ages[stale]
            exponent[stale] = 0
        self._add(after, exponent, 1.0)

    def _add(self, gradient: np.ndarray, exponent: np.ndarray, sign: float) -> None:
        """numerator += sign * gamma^exponent * gradient; denominator += sign * gamma^exponent."""
        weight, term = self._weight, self._term
        np.multiply(exponent, self._log_gamma, out=weight)
        np.exp(weight, out=weight)
        np.multiply(weight, gradient, out=term)
        if sign > 0:
            self.numerator += term
            self.denominator += weight
        else:
            self.numerator -= term
            self.denominator -= weight

    def mean(self) -> Arrays:
        """The discounted mean, per parameter (views of one new array)."""
        return self._split(self.numerator / self.denominator)

    def _split(self, flat: np.ndarray) -> Arrays:
        bounds = itertools.pairwise(itertools.accumulate(self._sizes, initial=0))
        return [flat[a:b].reshape(s) for (a, b), s in zip(bounds, self.shapes, strict=True)]

    def rebuild(self, cache: GradientCache, region_ages: np.ndarray) -> None:
        """Recompute the sums from scratch (O(K * Q)): for a checkpoint written before they were saved.

        The reference is the youngest age of every entry, as :func:`discounted_mean` weighs.
        """
        ages = [self._entry_ages(row, out=np.zeros_like(self.reference)) for row in region_ages]
        self.reference = np.min(ages, axis=0) if ages else np.zeros_like(self.reference)
        self.numerator[...] = 0.0
        self.denominator[...] = 0.0
        for k, a in enumerate(ages):
            np.subtract(a, self.reference, out=self._exponent)
            self._add(cache.row(k), self._exponent, 1.0)

    def state_dict(self) -> State:
        return {key: list(self._split(flat)) for key, flat in self._flat_state().items()}

    def _flat_state(self) -> dict[str, np.ndarray]:
        return {"numerator": self.numerator, "denominator": self.denominator, "reference": self.reference}

    def load_state_dict(self, state: State) -> None:
        saved = {key: arrays(state, key) for key in ("numerator", "denominator", "reference")}
        for key, values in saved.items():
            if [a.shape for a in values] != self.shapes:
                raise ValueError(f"state: the discounted sums' {key!r} shapes differ from the model's")
        flat = {key: np.concatenate([a.ravel() for a in values]) for key, values in saved.items()}
        self.numerator = flat["numerator"].astype(np.float64)
        self.denominator = flat["denominator"].astype(np.float64)
        self.reference = flat["reference"].astype(np.int64)
