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

from collections.abc import Callable

import numpy as np

from amp_fl.pruning.regions import RegionMap
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
