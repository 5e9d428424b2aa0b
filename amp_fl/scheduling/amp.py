"""AMP-FL's joint device scheduling, model pruning and RB allocation (Algorithms 1 and 2), done efficiently.

The paper runs Algorithm 1 (a sort per layer) for each of the K x R device/RB pairs and then
solves the LP relaxation P4. Two observations make this much cheaper with the same optimum:

1. Omega(k, r) (Eq. (18)) is the sum of the ``c_l(k, r) = floor(kappa_{k,r} I_l)`` largest values
   of ``(tau + 1)^2`` in each layer. That sum depends on the *values* of the largest ages only,
   not on which of several equal-age regions a tie-break keeps. So sort each device's ages once
   per layer (a plain integer sort), take prefix sums, and read Omega for every RB off the
   prefix sums: O(K I log I_max + K R L) instead of K R sorts.
2. P4 is a maximum-weight bipartite matching (its constraint matrix is totally unimodular), and
   ``scipy.optimize.linear_sum_assignment`` solves it directly. Weights are non-negative, so a
   maximum-weight full assignment of the smaller side is also a maximum-weight partial matching;
   pairs matched at weight 0 (infeasible) are simply not scheduled.

3. Only a few devices can be matched to an RB: the RB's R best devices contain an optimal
   partner (swap argument below). Upper bounds of Omega read off a coarse grid of keep
   fractions rule out almost every pair, and Omega is computed exactly for the rest only. The
   per-device sorted-age sums (:mod:`amp_fl.scheduling.age_sums`) carry over from round to round:
   only the devices scheduled since the last round are sorted again.

The tie-break between equal ages (Algorithm 1's seeded jitter, see
:mod:`amp_fl.pruning.policies.aoi`) is applied only to the scheduled devices, to pick *which*
regions they keep; it is the shared AoI pruning step of every scheduler
(:func:`~amp_fl.scheduling.assign.schedule_with_aoi_pruning`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from amp_fl.pruning.counts import keep_counts
from amp_fl.scheduling.age_sums import SortedAgeSums
from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.scheduling.assign import schedule_with_aoi_pruning
from amp_fl.scheduling.schedule import Schedule, Scheduler
from amp_fl.wireless.channel import ChannelState
from amp_fl.wireless.latency import SystemModel, feasible_pairs

_INT32_MAX = int(np.iinfo(np.int32).max)
# Keep fractions of the bounding grid: j / 64 for j = 0..64. A power of two keeps kappa * 64
# exact, so the grid point a pair is bounded by is never below its kappa.
_GRID_STEPS = 64


def top_square_sums(ages: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """For each row j and column c: the sum of the ``counts[j, c]`` largest ``(tau + 1)^2`` of row j.

    ``ages`` is (n, I_l) non-negative integers, ``counts`` (n, m) integers in [0, I_l]; returns
    (n, m) int64. One sort per row serves all m counts through prefix sums.
    """
    size = ages.shape[1]
    ascending = np.sort(ages, axis=1)  # values only: ties do not change the sums
    # Squares and prefix sums in int32 whenever a whole row's sum fits (always, for realistic
    # ages: (tau + 1)^2 * I_l < 2^31 up to tau = 2047 with 512 regions); this halves the
    # memory traffic of the two passes that follow the sort. int64 otherwise.
    oldest = int(ascending[:, -1].max()) if ascending.size else 0
    dtype = np.int32 if (oldest + 1) ** 2 * size <= _INT32_MAX else np.int64
    squared: np.ndarray = ascending.astype(dtype, copy=ascending.dtype != dtype)
    squared += 1
    squared *= squared
    prefix = np.empty((ages.shape[0], size + 1), dtype=dtype)
    prefix[:, 0] = 0
    np.cumsum(squared, axis=1, out=prefix[:, 1:])
    # The c largest of an ascending row = the whole row minus its (I_l - c) smallest.
    top = prefix[:, -1:] - np.take_along_axis(prefix, size - np.asarray(counts, dtype=np.intp), axis=1)
    return top.astype(np.int64, copy=False)


def aoi_weight_matrix(keep_fraction: np.ndarray, layer_ages: Sequence[np.ndarray]) -> np.ndarray:
    """Omega(k, r) of Eq. (18) for every device/RB pair, (K, R) int64; 0 for infeasible pairs.

    Parameters
    ----------
    keep_fraction : (K, R) float array
        kappa_{k,r} of Eq. (16).
    layer_ages : sequence of (K, I_l) int arrays
        tau_{k,t-1} per layer (e.g. ``AoITable.layers()``).
    """
    keep_fraction = np.asarray(keep_fraction, dtype=np.float64)
    num_devices, num_rbs = keep_fraction.shape
    sizes = [int(ages.shape[1]) for ages in layer_ages]
    weights = np.zeros((num_devices, num_rbs), dtype=np.int64)
    feasible = feasible_pairs(keep_fraction, sizes)
    # Devices with no feasible RB are never scheduled: do not sort their ages at all.
    rows = np.flatnonzero(feasible.any(axis=1))
    if rows.size == 0:
        return weights
    all_rows = rows.size == num_devices
    kappa = keep_fraction if all_rows else keep_fraction[rows]
    counts = keep_counts(kappa, sizes)  # (rows, R, L)
    total = np.zeros((rows.size, num_rbs), dtype=np.int64)
    for layer, ages in enumerate(layer_ages):
        total += top_square_sums(ages if all_rows else ages[rows], counts[..., layer])
    total[~(feasible if all_rows else feasible[rows])] = 0
    weights[rows] = total
    return weights


def max_weight_matching(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-weight device/RB matching (Algorithm 2 / problem P3), only pairs of positive weight.

    Returns the matched device ids and RB ids. Rows with no positive weight are left out of the
    assignment problem, which only shrinks it.
    """
    weights = np.asarray(weights)
    rows = np.flatnonzero((weights > 0).any(axis=1))
    if rows.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # float64 is exact for these integer weights up to 2^53.
    sub = weights[rows].astype(np.float64)
    r, c = linear_sum_assignment(sub, maximize=True)
    positive = sub[r, c] > 0
    return rows[r[positive]].astype(np.int64), c[positive].astype(np.int64)


def candidate_weights(
    keep_fraction: np.ndarray, sums: SortedAgeSums, layer_sizes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Devices that may be in a maximum-weight matching, and the weights of the pairs that may be.

    Returns ``rows`` (sorted device ids) and ``weights`` (len(rows), R) int64: the exact Omega of
    every pair that may be matched, 0 for the others (and for infeasible ones). A maximum-weight
    matching of ``weights`` is one of the full K x R matrix of Omega.

    Why it is exact: if RB r is matched to a device k while R other devices have
    ``Omega(j, r) > Omega(k, r)``, at most R - 1 of those are matched elsewhere, so one is free
    and can take r instead at a gain. Hence pairs with R strictly better pairs in their column
    are never needed. ``bound`` (Omega at kappa rounded up to the grid; Omega is non-decreasing
    in kappa) is >= Omega; per RB, the exact Omega of its R best-bounded devices gives a
    threshold ``theta_r``, and pairs with ``bound < theta_r`` have R strictly better pairs.
    Every choice depends only on values, so a warm and a rebuilt cache pick the same pairs.
    """
    kappa = np.asarray(keep_fraction, dtype=np.float64)
    num_devices, num_rbs = kappa.shape
    feasible = feasible_pairs(kappa, layer_sizes)
    if num_devices <= 2 * num_rbs:  # too few devices for the bound to rule many out
        rows = np.flatnonzero(feasible.any(axis=1))
        weights = sums.omega(rows[:, None], keep_counts(kappa[rows], layer_sizes))
        weights[~feasible[rows]] = 0
        return rows, weights
    # RB-major (R, K) layout: the per-RB selections below run along contiguous rows.
    kappa_t = np.ascontiguousarray(kappa.T)
    step = np.minimum((kappa_t * sums.grid_steps).astype(np.intp) + 1, sums.grid_steps)
    bound = sums.omega_on_grid()[np.arange(num_devices), step]  # (R, K)
    bound[~feasible.T] = 0
    best = np.argpartition(bound, num_devices - num_rbs, axis=1)[:, num_devices - num_rbs :]  # (R, R)
    rb_of = np.broadcast_to(np.arange(num_rbs)[:, None], best.shape)
    theta = np.min(_pair_weights(sums, kappa_t, feasible, layer_sizes, rb_of, best), axis=1)
    pair_rbs, pair_devices = np.nonzero((bound >= theta[:, None]) & (bound > 0))
    rows, pair_rows = np.unique(pair_devices, return_inverse=True)
    weights = np.zeros((rows.size, num_rbs), dtype=np.int64)
    weights[pair_rows, pair_rbs] = _pair_weights(sums, kappa_t, feasible, layer_sizes, pair_rbs, pair_devices)
    return rows, weights


def _pair_weights(
    sums: SortedAgeSums,
    kappa_t: np.ndarray,
    feasible: np.ndarray,
    layer_sizes: Sequence[int],
    rbs: np.ndarray,
    devices: np.ndarray,
) -> np.ndarray:
    """Exact Omega of the pairs (devices[i], rbs[i]) (any matching shapes), 0 where infeasible."""
    omega = sums.omega(devices, keep_counts(kappa_t[rbs, devices], layer_sizes))
    omega[~feasible[devices, rbs]] = 0
    return omega


class AmpScheduler(Scheduler):
    """AMP-FL's scheduler: maximise the AoI objective, Eq. (14), s.t. the deadline, Eq. (8a), and OFDMA, Eqs. (8b)-(8d).

    Parameters
    ----------
    system : SystemModel
        Devices, radio and latency budget.
    seed : int
        Run seed; the tie-breaks of device k in round t come from (seed, t, k), so a round's
        schedule depends only on its inputs and the seed.
    """

    name = "amp"

    def __init__(self, system: SystemModel, seed: int) -> None:
        super().__init__(system, seed)
        # Derived from the AoI table alone (rebuilt for any other table object, e.g. one loaded
        # from a checkpoint), so it is not saved: a resumed run schedules as the uninterrupted one.
        self._age_sums = SortedAgeSums(_GRID_STEPS)

    def schedule(self, round: int, channel_state: ChannelState, aoi_table: AoITable) -> Schedule:
        costs = self.round_costs(round, channel_state, aoi_table)
        self._age_sums.sync(aoi_table)
        rows, weights = candidate_weights(costs.keep_fraction, self._age_sums, aoi_table.layer_sizes)
        matched, rbs = max_weight_matching(weights)
        # Omega read off the matrix equals the kept regions' weight: the tie-break changes which
        # equal-age regions are kept, not their ages (tested against kept_weights).
        return schedule_with_aoi_pruning(
            round, costs, aoi_table, rows[matched], rbs, self.seed, weights=weights[matched, rbs]
        )
