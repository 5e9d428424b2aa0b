"""Dispatch for asynchronous FL (FedBuff): which idle devices start training now, on which free RB.

Pure NumPy, no Flower. An asynchronous server keeps ``concurrency`` devices training at once. A
device in flight holds its resource block (RB) from the moment it receives the model until its
update has arrived, so two uploads never share an RB and ``concurrency`` is at most the number of
RBs. Whenever slots are free, :meth:`AsyncDispatcher.dispatch` fills them from the idle devices:

- ``"rate"`` (default, as Synchronous FL's ``full_model`` scheduler): a maximum-sum-rate matching
  of the idle devices to the free RBs (``linear_sum_assignment``), then the ``slots`` pairs of
  highest rate (the same as the matching itself whenever every free RB is a slot, the default
  ``concurrency`` = R);
- ``"random"`` (FedBuff's uniform client sampling): ``slots`` idle devices drawn uniformly, each on
  a free RB drawn uniformly, from the generator ``("fedbuff.dispatch", round)`` of the run seed.

Only devices with a positive rate are candidates (a zero gain would never deliver its update).
Each dispatched device's simulated latency is the Table I system model's full-model compute time
(Eq. (6)) plus its full-model upload time on its RB (Eq. (7)), the rate taken from the channel
state of the dispatch round (block fading, one draw per server round, as for every method).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from amp_fl.errors import check_argument
from amp_fl.scheduling.amp import max_weight_matching
from amp_fl.wireless.channel import ChannelState
from amp_fl.wireless.latency import SystemModel
from amp_fl.wireless.seeding import check_seed, derive_rng

DispatchSelection = Literal["rate", "random"]
DISPATCH_SELECTIONS: tuple[DispatchSelection, ...] = get_args(DispatchSelection)
DISPATCH_STREAM = "fedbuff.dispatch"


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class Dispatch:
    """The devices that start now: device ``device_ids[i]`` uploads on RB ``rb_ids[i]``.

    ``compute_s`` and ``upload_s`` are each one's full-model compute and upload times (seconds of
    simulated time), so its update arrives ``compute_s + upload_s`` after it received the model.
    """

    device_ids: np.ndarray
    rb_ids: np.ndarray
    compute_s: np.ndarray
    upload_s: np.ndarray

    @property
    def size(self) -> int:
        return int(self.device_ids.size)

    @property
    def latency_s(self) -> np.ndarray:
        return self.compute_s + self.upload_s


class AsyncDispatcher:
    """Fills free training slots with idle devices (see the module docstring).

    Parameters
    ----------
    system : SystemModel
        Devices, radio and model costs (Table I).
    seed : int
        The run seed (``selection="random"``).
    selection : {"rate", "random"}, default "rate"
    """

    def __init__(self, system: SystemModel, seed: int, selection: DispatchSelection = "rate") -> None:
        check_argument(
            selection in DISPATCH_SELECTIONS, "selection", f"must be one of {DISPATCH_SELECTIONS}, got {selection!r}"
        )
        self.system = system
        self.seed = check_seed(seed)
        self.selection = selection

    def dispatch(
        self,
        server_round: int,
        channel_state: ChannelState,
        busy_devices: Collection[int],
        busy_rbs: Collection[int],
        slots: int,
    ) -> Dispatch:
        """Up to ``slots`` idle devices (not in ``busy_devices``) on free RBs (not in ``busy_rbs``)."""
        check_argument(slots >= 0, "slots", f"must be >= 0, got {slots}")
        costs = self.system.pair_costs(channel_state)
        idle = np.setdiff1d(np.arange(self.system.num_devices), np.asarray(list(busy_devices), dtype=np.int64))
        free = np.setdiff1d(np.arange(self.system.num_rbs), np.asarray(list(busy_rbs), dtype=np.int64))
        rates = costs.rates[np.ix_(idle, free)]
        candidates = np.flatnonzero((rates > 0).any(axis=1))
        count = min(slots, free.size, candidates.size)
        if self.selection == "rate":
            rows, cols = max_weight_matching(rates)
            best = np.lexsort((rows, -rates[rows, cols]))[:count]  # highest rate first, ties by device
            devices, rbs = idle[rows[best]], free[cols[best]]
        else:
            rng = derive_rng(self.seed, DISPATCH_STREAM, int(server_round))
            devices = idle[rng.choice(candidates, size=count, replace=False)]
            rbs = free[rng.choice(free.size, size=count, replace=False)]
        devices, rbs = devices.astype(np.int64), rbs.astype(np.int64)
        return Dispatch(devices, rbs, costs.compute_full_s[devices], costs.upload_full_s[devices, rbs])
