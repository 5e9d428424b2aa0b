"""HeteroFL's width levels (Diao et al., 2021) on the wireless round: each scheduled device trains the
sub-model of one of a few fixed keep fractions ("levels", e.g. 1, 1/2, 1/4 of every layer's width).

Devices and RBs are selected as for Synchronous FL (:func:`~amp_fl.scheduling.full_model.select_pairs`:
max-sum-rate matching, or random), so the method differs from it only in the sub-model sizes. A
device's level (``assignment``):

- ``"fixed"`` (HeteroFL's fixed computation-complexity levels): by capability, once. The devices are
  ranked by their full-model compute time (Eq. (6) at beta = 0; ties by device id) and split into
  ``len(levels)`` groups of sizes as equal as possible; the fastest group trains the largest level.
- ``"channel"`` (HeteroFL's dynamic levels, the level read off this round's channel): the largest
  level not above the device's kappa of Eq. (16) on its RB (the keep fraction that meets T_max);
  the smallest level when none is.

There is no deadline: the round lasts as long as its slowest device (Eqs. (6)-(7) at the realised
keep fraction), as in Synchronous FL. Which regions a level keeps is the pruning policy's choice:
``static`` (HeteroFL: the first ``c_l`` of every layer) or ``fedrolex`` (a rolling window). The
schedule's own kept indices are Algorithm 1's (reported Omega only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

from amp_fl.errors import check_argument
from amp_fl.pruning.counts import keep_counts
from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.scheduling.assign import schedule_with_aoi_pruning
from amp_fl.scheduling.full_model import FULL_MODEL_SELECTIONS, FullModelSelection, select_pairs
from amp_fl.scheduling.schedule import Schedule, Scheduler
from amp_fl.wireless.channel import ChannelState
from amp_fl.wireless.latency import SystemModel

LevelAssignment = Literal["fixed", "channel"]
LEVEL_ASSIGNMENTS: tuple[LevelAssignment, ...] = get_args(LevelAssignment)
DEFAULT_LEVELS: tuple[float, ...] = (1.0, 0.5, 0.25)  # HeteroFL's a, b, c (d = 1/8 empties the CNN's 6-filter layer)


def check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    """The levels, largest first; ``ArgumentError`` naming ``levels`` unless they are distinct fractions in (0, 1]."""
    values = tuple(float(v) for v in levels)
    check_argument(len(values) >= 1, "levels", "needs at least one keep fraction")
    check_argument(all(0.0 < v <= 1.0 for v in values), "levels", f"keep fractions must be in (0, 1], got {values}")
    check_argument(len(set(values)) == len(values), "levels", f"must be distinct, got {values}")
    return tuple(sorted(values, reverse=True))


def check_levels_fit(levels: Sequence[float], layer_sizes: Sequence[int]) -> None:
    """Every level must keep >= 1 region of every layer (``ArgumentError`` naming ``levels``)."""
    smallest = min(levels)
    counts = keep_counts(smallest, layer_sizes)
    check_argument(
        bool(counts.min() >= 1),
        "levels",
        f"level {smallest} leaves a layer of {int(layer_sizes[int(np.argmin(counts))])} regions empty",
    )


def capability_levels(compute_full_s: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Fixed assignment: each device's level, (K,), from its full-model compute time (fastest: largest level).

    The K devices sorted by compute time (stable: ties by id) are cut into ``len(levels)``
    contiguous groups whose sizes differ by at most one, the larger groups first
    (``np.array_split``); group i trains ``levels[i]`` (``levels`` largest first).
    """
    order = np.argsort(np.asarray(compute_full_s, dtype=np.float64), kind="stable")
    assigned = np.empty(order.size, dtype=np.float64)
    for level, group in zip(levels, np.array_split(order, len(levels)), strict=True):
        assigned[group] = level
    return assigned


def channel_levels(kappa: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Per-round assignment: the largest level <= each kappa (``levels`` largest first), else the smallest."""
    ladder = np.asarray(levels, dtype=np.float64)
    kappa = np.asarray(kappa, dtype=np.float64)
    fits = ladder[None, :] <= kappa[:, None] + 1e-12  # the slack of keep_counts: kappa = 1/2 keeps level 1/2
    first = np.where(fits.any(axis=1), np.argmax(fits, axis=1), ladder.size - 1)
    return ladder[first]


class WidthLevelScheduler(Scheduler):
    """HeteroFL's width levels with Synchronous FL's device selection (see module docstring).

    Parameters
    ----------
    system : SystemModel
    seed : int
    levels : sequence of float, default (1, 1/2, 1/4)
        The keep fractions a device may train at, each in (0, 1].
    assignment : {"fixed", "channel"}, default "fixed"
    selection : {"rate", "random"}, default "rate"
    """

    name = "levels"

    def __init__(
        self,
        system: SystemModel,
        seed: int,
        levels: Sequence[float] = DEFAULT_LEVELS,
        assignment: LevelAssignment = "fixed",
        selection: FullModelSelection = "rate",
    ) -> None:
        check_argument(
            assignment in LEVEL_ASSIGNMENTS, "assignment", f"must be one of {LEVEL_ASSIGNMENTS}, got {assignment!r}"
        )
        check_argument(
            selection in FULL_MODEL_SELECTIONS,
            "selection",
            f"must be one of {FULL_MODEL_SELECTIONS}, got {selection!r}",
        )
        super().__init__(system, seed)
        self.levels = check_levels(levels)
        self.assignment = assignment
        self.selection = selection
        # A function of the device profiles alone (no state to save).
        self.fixed_levels = capability_levels(system.compute_full_s, self.levels)

    def schedule(self, round: int, channel_state: ChannelState, aoi_table: AoITable) -> Schedule:
        costs = self.round_costs(round, channel_state, aoi_table)
        check_levels_fit(self.levels, aoi_table.layer_sizes)
        devices, rbs = select_pairs(costs.rates, self.selection, self.round_rng(round))
        if self.assignment == "fixed":
            kappa = self.fixed_levels[devices]
        else:
            kappa = channel_levels(costs.keep_fraction[devices, rbs], self.levels)
        return schedule_with_aoi_pruning(round, costs, aoi_table, devices, rbs, self.seed, keep_fraction=kappa)
