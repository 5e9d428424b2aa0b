"""Random scheduling baseline (paper Sec. V-B): random devices on random RBs that meet the deadline,
each pruned by AMP-FL's AoI rule at its kappa.

Rule: visit devices in a seeded random order; each takes a uniformly random free RB among those
it is feasible on (skipped if none); stop once all R RBs are taken. Round t's draws come from a
generator derived from (seed, t); the AoI tie-breaks of device k from (seed, t, k).
"""

from __future__ import annotations

from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.scheduling.assign import assign_in_device_order, schedule_with_aoi_pruning
from amp_fl.scheduling.schedule import Schedule, Scheduler
from amp_fl.wireless.channel import ChannelState
from amp_fl.wireless.latency import feasible_pairs


class RandomScheduler(Scheduler):
    """Random feasible scheduling with AoI pruning (see module docstring)."""

    name = "random"

    def schedule(self, round: int, channel_state: ChannelState, aoi_table: AoITable) -> Schedule:
        costs = self.round_costs(round, channel_state, aoi_table)
        feasible = feasible_pairs(costs.keep_fraction, aoi_table.layer_sizes)
        rng = self.round_rng(round)
        order = rng.permutation(self.system.num_devices)
        devices, rbs = assign_in_device_order(order, feasible, rng=rng)
        return schedule_with_aoi_pruning(round, costs, aoi_table, devices, rbs, self.seed)
