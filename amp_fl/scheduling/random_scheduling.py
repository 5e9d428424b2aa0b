"""Random scheduling baseline (paper Sec. V-B): random devices on random RBs that meet the deadline,
each pruned by AMP-FL's AoI rule at its kappa.

Rule: visit devices in a seeded random order; each takes a uniformly random free RB among those
it is feasible on (skipped if none); stop once all R RBs are taken. Round t's draws come from a
generator derived from (seed, t).
"""

from __future__ import annotations

from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.scheduling.assign import assign_in_device_order, schedule_with_aoi_pruning
from amp_fl.scheduling.schedule import Schedule, check_inputs
from amp_fl.wireless.channel import ChannelState
from amp_fl.wireless.latency import SystemModel, feasible_pairs
from amp_fl.wireless.seeding import check_seed, derive_rng


class RandomScheduler:
    """Random feasible scheduling with AoI pruning (see module docstring)."""

    name = "random"

    def __init__(self, system: SystemModel, seed: int) -> None:
        self.system = system
        self.seed = check_seed(seed)

    def schedule(self, round: int, channel_state: ChannelState, aoi_table: AoITable) -> Schedule:
        check_inputs(self.system.num_devices, self.system.num_rbs, round, channel_state, aoi_table)
        costs = self.system.pair_costs(channel_state)
        feasible = feasible_pairs(costs.keep_fraction, aoi_table.layer_sizes)
        rng = derive_rng(self.seed, "scheduler.random", int(round))
        order = rng.permutation(self.system.num_devices)
        devices, rbs = assign_in_device_order(order, feasible, rng=rng)
        return schedule_with_aoi_pruning(round, costs, aoi_table, devices, rbs, rng)
