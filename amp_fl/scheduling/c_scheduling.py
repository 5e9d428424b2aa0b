"""C-scheduling baseline (paper Sec. V-B, ref. [10]): schedule the devices with the largest channel
gain that can meet the deadline, each pruned by AMP-FL's AoI rule at its kappa.

Rule: visit devices in descending gain ``h_k`` (ties: lower device id); each takes, among the
free RBs on which it is feasible, the one with its highest rate, i.e. the least interfered one
(ties: lower RB id), which also gives it the largest kappa. A device feasible on no free RB is
skipped. Stop once all R RBs are taken. The strongest device thus gets the cleanest RB.
"""

from __future__ import annotations

import numpy as np

from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.scheduling.assign import assign_in_device_order, schedule_with_aoi_pruning
from amp_fl.scheduling.schedule import Schedule, Scheduler
from amp_fl.wireless.channel import ChannelState
from amp_fl.wireless.latency import feasible_pairs


class CScheduler(Scheduler):
    """Largest-channel-gain scheduling with AoI pruning (see module docstring)."""

    name = "channel"

    def schedule(self, round: int, channel_state: ChannelState, aoi_table: AoITable) -> Schedule:
        costs = self.round_costs(round, channel_state, aoi_table)
        feasible = feasible_pairs(costs.keep_fraction, aoi_table.layer_sizes)
        order = np.lexsort((np.arange(channel_state.num_devices), -channel_state.gains))
        devices, rbs = assign_in_device_order(order, feasible, rb_score=costs.rates)
        return schedule_with_aoi_pruning(round, costs, aoi_table, devices, rbs, self.seed)
