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

import math
from collections.abc import Callable

import numpy as np

from amp_fl.pruning.regions import RegionMap
from amp_fl.state import State, arrays
from amp_fl.strategy.aggregation import Arrays, GradientCache


def check_decay(gamma: float) -> float:
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"staleness_decay: must be in (0, 1], got {gamma}")
    return float(gamma)


def entry_ages(region_map: RegionMap, region_ages: np.ndarray) -> list[np.ndarray]:
    """Per-entry ages of one device's cache, from its row of the AoI table (length ``num_regions``)."""
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
        if rule.in_group is not None:
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


class DiscountedSums:
    """The numerator and denominator of :func:`discounted_mean`, kept up to date round by round.

    Recomputing ``sum_k gamma^a_k G_k`` over all K devices costs O(K * Q) a round. Between two
    rounds a device that uploaded nothing ages by one in every region, so every one of its entry
    ages grows by one (:func:`entry_ages` is a max / min of region ages) and its weight is
    multiplied by ``gamma``. Weights are therefore stored relative to a per-entry reference age
    ``r`` that also grows by one a round (``w_k = gamma^(a_k - r)``): an idle device's term does not
    change, and a round only replaces the terms of the devices that uploaded: O(|S_t| * Q).

    Range: a fresh entry weighs ``gamma^-r`` relative to the reference, which would overflow once
    ``r`` reaches ~1000 rounds at gamma = 1/2; before a weight exceeds ``2^MAX_EXPONENT_BITS`` the
    entry is rebased to the fresh age (its sums scaled by ``gamma^shift``; terms that underflow
    weigh less than ``2^-MAX_EXPONENT_BITS`` of the fresh one). A replaced term never weighs
    less than the one it replaces (a device's entry ages after an upload are at most one more
    than before), so the denominator keeps its largest term and never underflows either.
    """

    MAX_EXPONENT_BITS = 500

    def __init__(self, region_map: RegionMap, num_devices: int, gamma: float) -> None:
        self.region_map = region_map
        self.gamma = check_decay(gamma)
        if self.gamma == 1.0:
            raise ValueError("staleness_decay: 1 weighs every cache alike (scope 'all'); no sums are kept")
        self.max_shift = max(int(self.MAX_EXPONENT_BITS / math.log2(1.0 / self.gamma)), 1)
        shapes = region_map.shapes
        # Every device starts at age 0 with G_k = 0: weight 1 each, numerator 0, denominator K.
        self.numerator = [np.zeros(s, dtype=np.float64) for s in shapes]
        self.denominator = [np.full(s, float(num_devices), dtype=np.float64) for s in shapes]
        self.reference = [np.zeros(s, dtype=np.int64) for s in shapes]

    def advance(self) -> None:
        """A round passed: every age grew by one, and so does the reference (no stored term changes)."""
        for r in self.reference:
            r += 1

    def replace(self, before: Arrays, after: Arrays, ages_before: np.ndarray, ages_after: np.ndarray) -> None:
        """Swap one device's term after it uploaded this round (call :meth:`advance` first).

        ``before`` / ``after``: its G_k before and after this round's upload; ``ages_before`` /
        ``ages_after``: its AoI row (per region) before and after this round's AoI update.
        """
        old_ages = entry_ages(self.region_map, ages_before)
        new_ages = entry_ages(self.region_map, ages_after)
        rows = zip(self.numerator, self.denominator, self.reference, before, after, old_ages, new_ages, strict=True)
        for num, den, ref, g_old, g_new, a_old, a_new in rows:
            weight = np.power(self.gamma, a_old + 1 - ref, dtype=np.float64)  # +1: the round just advanced
            num -= weight * g_old
            den -= weight
            stale = ref - a_new > self.max_shift
            if stale.any():
                scale = np.power(self.gamma, ref[stale] - a_new[stale], dtype=np.float64)
                num[stale] *= scale
                den[stale] *= scale
                ref[stale] = a_new[stale]
            weight = np.power(self.gamma, a_new - ref, dtype=np.float64)
            num += weight * g_new
            den += weight

    def mean(self) -> Arrays:
        return [n / d for n, d in zip(self.numerator, self.denominator, strict=True)]

    def rebuild(self, cache: GradientCache, region_ages: np.ndarray) -> None:
        """Recompute the sums from scratch (O(K * Q)): for a checkpoint written before they were saved.

        The reference is the youngest age of every entry, as :func:`discounted_mean` weighs.
        """
        ages = [entry_ages(self.region_map, row) for row in region_ages]
        for i, shape in enumerate(self.region_map.shapes):
            ref = np.min([a[i] for a in ages], axis=0) if ages else np.zeros(shape, dtype=np.int64)
            num, den = np.zeros(shape, dtype=np.float64), np.zeros(shape, dtype=np.float64)
            for k, a in enumerate(ages):
                weight = np.power(self.gamma, a[i] - ref, dtype=np.float64)
                num += weight * cache.table[i][k]
                den += weight
            self.numerator[i], self.denominator[i], self.reference[i] = num, den, ref

    def state_dict(self) -> State:
        return {
            "numerator": list(self.numerator),
            "denominator": list(self.denominator),
            "reference": list(self.reference),
        }

    def load_state_dict(self, state: State) -> None:
        saved = {key: arrays(state, key) for key in ("numerator", "denominator", "reference")}
        for key, values in saved.items():
            if [a.shape for a in values] != [tuple(s) for s in self.region_map.shapes]:
                raise ValueError(f"state: the discounted sums' {key!r} shapes differ from the model's")
        self.numerator = [np.array(a, dtype=np.float64) for a in saved["numerator"]]
        self.denominator = [np.array(a, dtype=np.float64) for a in saved["denominator"]]
        self.reference = [np.array(a, dtype=np.int64) for a in saved["reference"]]
