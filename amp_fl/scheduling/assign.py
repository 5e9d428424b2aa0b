"""Greedy device/RB assignment rules shared by the scheduling baselines, and AoI pruning at kappa."""

from __future__ import annotations

import numpy as np

from amp_fl.pruning.counts import keep_counts
from amp_fl.pruning.policies.aoi import tie_break_jitter, top_aoi_indices
from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.scheduling.schedule import Schedule, assemble_schedule
from amp_fl.wireless.latency import PairCosts


def greedy_pairs(
    score: np.ndarray, feasible: np.ndarray, max_pairs: int, tie_score: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Repeatedly take the feasible pair of highest ``score`` whose device and RB are both free.

    Ties are broken by ``tie_score`` (higher first), then by lower device id, then lower RB id,
    so the result is deterministic. Stops after ``max_pairs`` pairs or when no pair is left.
    """
    devices, rbs = np.nonzero(feasible)
    keys = [rbs, devices]
    if tie_score is not None:
        keys.append(-tie_score[devices, rbs])
    keys.append(-score[devices, rbs])
    order = np.lexsort(keys)  # last key is the primary one
    device_used = np.zeros(feasible.shape[0], dtype=bool)
    rb_used = np.zeros(feasible.shape[1], dtype=bool)
    chosen_devices: list[int] = []
    chosen_rbs: list[int] = []
    for index in order:
        if len(chosen_devices) >= max_pairs:
            break
        k, r = int(devices[index]), int(rbs[index])
        if device_used[k] or rb_used[r]:
            continue
        device_used[k] = rb_used[r] = True
        chosen_devices.append(k)
        chosen_rbs.append(r)
    return np.array(chosen_devices, dtype=np.int64), np.array(chosen_rbs, dtype=np.int64)


def assign_in_device_order(
    device_order: np.ndarray,
    feasible: np.ndarray,
    rb_score: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Visit devices in ``device_order``; each takes a free RB it is feasible on, if any.

    The RB is the free feasible one of highest ``rb_score[k]`` (lowest RB id on ties), or a
    uniformly random free feasible one drawn from ``rng``. A device with no free feasible RB is
    skipped. Stops once every RB is taken.
    """
    if (rb_score is None) == (rng is None):
        raise ValueError("give exactly one of rb_score and rng")
    num_rbs = feasible.shape[1]
    free = np.ones(num_rbs, dtype=bool)
    chosen_devices: list[int] = []
    chosen_rbs: list[int] = []
    for k in np.asarray(device_order, dtype=np.int64):
        if len(chosen_rbs) == num_rbs:
            break
        candidates = np.flatnonzero(free & feasible[k])
        if candidates.size == 0:
            continue
        if rb_score is not None:
            r = int(candidates[np.argmax(rb_score[k, candidates])])
        else:
            assert rng is not None
            r = int(rng.choice(candidates))
        free[r] = False
        chosen_devices.append(int(k))
        chosen_rbs.append(r)
    return np.array(chosen_devices, dtype=np.int64), np.array(chosen_rbs, dtype=np.int64)


def schedule_with_aoi_pruning(
    round: int,
    costs: PairCosts,
    aoi_table: AoITable,
    devices: np.ndarray,
    rbs: np.ndarray,
    seed: int,
    *,
    keep_fraction: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> Schedule:
    """Prune each chosen device at its keep fraction, keeping its oldest regions (Algorithm 1).

    Parameters
    ----------
    round, costs, aoi_table
        The round, its pair costs and the ages before it.
    devices, rbs : (S,) int arrays
        The chosen device/RB pairs.
    seed : int
        Run seed: the tie-break jitter of each device is derived from (seed, round, device)
        (:func:`~amp_fl.pruning.policies.aoi.tie_break_jitter`), as the ``aoi`` policy does.
    keep_fraction : (S,) float array, optional
        The fraction each sub-model is sized from; default the pair's kappa of Eq. (16).
    weights : (S,) int array, optional
        Omega of each device (Eq. (18)) when the caller has it already; else computed from the
        kept regions.
    """
    devices = np.asarray(devices, dtype=np.int64).reshape(-1)
    kappa = costs.keep_fraction[devices, rbs] if keep_fraction is None else keep_fraction
    counts = keep_counts(kappa, aoi_table.layer_sizes).reshape(devices.size, aoi_table.num_layers)
    jitter = tie_break_jitter(seed, round, devices, aoi_table.num_regions)
    kept = top_aoi_indices([ages[devices] for ages in aoi_table.layers()], counts, jitter)
    return assemble_schedule(round, costs, aoi_table, devices, rbs, kappa, counts, kept, weights=weights)
