"""PR-scheduling baseline (paper Sec. V-B, refs. [17], [19]): schedule the devices that meet the
deadline with the smallest pruning ratio, each pruned by AMP-FL's AoI rule at its kappa.

"Minimal sum of pruning ratios" alone is minimised by scheduling nobody, so the rule used is:
fill up to R RBs with feasible pairs, preferring pairs whose realised pruning ratio
``beta = 1 - sum_l floor(kappa I_l) / I`` (Eq. (3)) is smallest.

Assignment rules (``assignment``):
- ``"greedy"`` (default): repeatedly take the free device/RB pair with the smallest beta (ties:
  larger kappa, then lower device id, then lower RB id).
- ``"matching"``: the exact optimum of the stated rule: among schedules with the most devices,
  the one with the smallest sum of beta (a maximum-weight matching with weight
  ``(R + 1) + (1 - beta)`` on feasible pairs; the constant makes cardinality come first).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from amp_fl.errors import check_argument
from amp_fl.pruning.counts import keep_counts
from amp_fl.scheduling.amp import max_weight_matching
from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.scheduling.assign import greedy_pairs, schedule_with_aoi_pruning
from amp_fl.scheduling.schedule import Schedule, Scheduler
from amp_fl.wireless.channel import ChannelState
from amp_fl.wireless.latency import SystemModel, realised_keep_fraction

PRAssignment = Literal["greedy", "matching"]
PR_ASSIGNMENTS: tuple[PRAssignment, ...] = get_args(PRAssignment)


class PRScheduler(Scheduler):
    """Smallest-pruning-ratio scheduling with AoI pruning; ``assignment`` as in the module docstring."""

    name = "pr"

    def __init__(self, system: SystemModel, seed: int, assignment: PRAssignment = "greedy") -> None:
        check_argument(
            assignment in PR_ASSIGNMENTS, "assignment", f"must be one of {PR_ASSIGNMENTS}, got {assignment!r}"
        )
        super().__init__(system, seed)
        self.assignment = assignment

    def schedule(self, round: int, channel_state: ChannelState, aoi_table: AoITable) -> Schedule:
        costs = self.round_costs(round, channel_state, aoi_table)
        counts = keep_counts(costs.keep_fraction, aoi_table.layer_sizes)
        kept_fraction = realised_keep_fraction(counts, aoi_table.layer_sizes)
        feasible = counts.min(axis=-1) >= 1
        num_rbs = self.system.num_rbs
        if self.assignment == "greedy":
            devices, rbs = greedy_pairs(kept_fraction, feasible, num_rbs, tie_score=costs.keep_fraction)
        else:
            devices, rbs = max_weight_matching(np.where(feasible, (num_rbs + 1) + kept_fraction, 0.0))
        return schedule_with_aoi_pruning(round, costs, aoi_table, devices, rbs, self.seed)
