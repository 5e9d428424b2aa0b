"""Device selection for the Synchronous-FL baseline (paper Sec. V-C, refs. [8]-[10]): scheduled
devices train the full model (keep fraction 1) and the round lasts as long as its slowest device.

Selection (``selection``):
- ``"rate"`` (default): channel-aware, a maximum-sum-rate matching of devices to RBs
  (``linear_sum_assignment`` on the K x R rate matrix), min(K, R) devices. This is the strong
  baseline: a random pick often includes a device in a deep fade, whose full-model upload time
  ``~ 1/rho`` (rho ~ Exp(1), infinite mean) would inflate AMP-FL's speedup.
- ``"random"``: min(K, R) devices uniformly at random on a random permutation of the RBs.

Only devices with a positive rate are candidates. With ``deadline_s``, devices whose compute
plus upload time exceeds it are dropped from the aggregate (``Schedule.dropped_device_ids``) and
the round lasts ``deadline_s`` whenever someone is dropped; without it the round waits for the
slowest device. The AoI weights of the full model are reported as the objective for comparison.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import numpy as np

from amp_fl.errors import check_argument
from amp_fl.pruning.regions import KeptIndices
from amp_fl.scheduling.amp import max_weight_matching
from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.scheduling.schedule import Schedule, Scheduler, assemble_schedule
from amp_fl.wireless.channel import ChannelState
from amp_fl.wireless.latency import SystemModel

FullModelSelection = Literal["rate", "random"]
FULL_MODEL_SELECTIONS: tuple[FullModelSelection, ...] = get_args(FullModelSelection)


def select_pairs(
    rates: np.ndarray, selection: FullModelSelection, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Synchronous FL's device selection: the devices and their RBs, one device per RB at most.

    ``rate``: the maximum-sum-rate matching of the (K, R) ``rates``; ``random``: min(K, R) devices
    with a positive rate uniformly at random, on a random permutation of the RBs (``rng`` is the
    round's generator, drawn from only here).
    """
    if selection == "rate":
        return max_weight_matching(rates)
    num_rbs = rates.shape[1]
    candidates = np.flatnonzero((rates > 0).any(axis=1))
    count = min(candidates.size, num_rbs)
    devices = rng.choice(candidates, size=count, replace=False).astype(np.int64)
    rbs = rng.permutation(num_rbs)[:count].astype(np.int64)
    return devices, rbs


class FullModelScheduler(Scheduler):
    """Full-model selection for Synchronous FL (see module docstring).

    Parameters
    ----------
    system : SystemModel
    seed : int
    selection : {"rate", "random"}, default "rate"
    deadline_s : float or None, default None
        Round deadline; ``None`` waits for every scheduled device.
    """

    name = "full_model"

    def __init__(
        self, system: SystemModel, seed: int, selection: FullModelSelection = "rate", deadline_s: float | None = None
    ) -> None:
        check_argument(
            selection in FULL_MODEL_SELECTIONS,
            "selection",
            f"must be one of {FULL_MODEL_SELECTIONS}, got {selection!r}",
        )
        check_argument(
            deadline_s is None
            or (isinstance(deadline_s, int | float) and math.isfinite(deadline_s) and deadline_s > 0),
            "deadline_s",
            f"must be a positive number of seconds or None, got {deadline_s!r}",
        )
        super().__init__(system, seed)
        self.selection = selection
        self.deadline_s = None if deadline_s is None else float(deadline_s)

    def schedule(self, round: int, channel_state: ChannelState, aoi_table: AoITable) -> Schedule:
        costs = self.round_costs(round, channel_state, aoi_table)
        devices, rbs = select_pairs(costs.rates, self.selection, self.round_rng(round))
        sizes = np.array(aoi_table.layer_sizes, dtype=np.int64)
        everything = tuple(np.arange(size) for size in aoi_table.layer_sizes)
        for indices in everything:
            indices.setflags(write=False)
        kept: tuple[KeptIndices, ...] = tuple(everything for _ in range(devices.size))
        return assemble_schedule(
            round,
            costs,
            aoi_table,
            devices,
            rbs,
            np.ones(devices.size),
            np.broadcast_to(sizes, (devices.size, sizes.size)),
            kept,
            deadline_s=self.deadline_s,
        )
