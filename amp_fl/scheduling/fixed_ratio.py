"""Fixed-ratio mode (paper Figs. 2-5): every scheduled device is pruned by the same ratio beta and
exactly ``num_scheduled`` devices train per round; the latency budget is not enforced.

Keep counts: ``floor((1 - beta) I_l + 1e-9)`` per layer (the tolerance stops ``0.57 * 100 =
56.99999999999999`` from losing a region to floating point); every layer must keep >= 1.

Device selection (``selection``):
- ``"aoi"`` (default): AMP-FL's objective with the keep counts fixed. Omega_k no longer depends
  on the RB, so the maximum-weight matching is simply the ``num_scheduled`` devices of largest
  Omega_k (eq. 18); ties are broken by the same seeded rule as region ties
  (``aoi_priority_order``), so in round 0, when all ages are equal, the pick is uniformly random.
- ``"random"``: ``num_scheduled`` devices uniformly at random.

Only devices with a positive rate (a usable channel) are candidates. The chosen devices get RBs
by maximum-sum-rate matching, which only affects the reported latencies. Sub-models keep each
device's oldest regions (Algorithm 1); a pruning policy other than AoI may replace the kept
indices while keeping ``keep_counts``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from amp_fl.errors import require
from amp_fl.pruning.policies.aoi import aoi_priority_order
from amp_fl.pruning.policies.base import keep_counts_for_fraction
from amp_fl.scheduling.amp import top_square_sums
from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.scheduling.schedule import Schedule, SchedulerBase, assemble_schedule, top_aoi_indices
from amp_fl.wireless.channel import ChannelState
from amp_fl.wireless.latency import SystemModel, check_layer_sizes

SELECTIONS = ("aoi", "random")


def fixed_keep_counts(pruning_ratio: float, layer_sizes: Sequence[int]) -> np.ndarray:
    """Regions kept per layer at pruning ratio beta: ``floor((1 - beta) I_l)``, (L,) int64.

    Raises ConfigError (``pruning.ratio``) when a layer would keep no region.
    """
    sizes = check_layer_sizes(layer_sizes)
    # The same rounding as the pruning policies use, so both sides agree on every count.
    counts = np.array(keep_counts_for_fraction(sizes, 1.0 - pruning_ratio), dtype=np.int64)
    require(
        bool(counts.min() >= 1),
        "pruning.ratio",
        f"{pruning_ratio} leaves a layer of {int(sizes[np.argmin(counts)])} regions empty",
    )
    return counts


class FixedRatioScheduler(SchedulerBase):
    """Fixed pruning ratio, fixed number of devices per round (see module docstring).

    Parameters
    ----------
    system : SystemModel
    seed : int
    pruning_ratio : float
        beta in [0, 1), the same for every scheduled device.
    num_scheduled : int
        |S_t|, in [1, min(K, R)].
    selection : {"aoi", "random"}, default "aoi"
    """

    name = "fixed_ratio"

    def __init__(
        self, system: SystemModel, seed: int, pruning_ratio: float, num_scheduled: int, selection: str = "aoi"
    ) -> None:
        require(
            isinstance(pruning_ratio, int | float) and 0.0 <= pruning_ratio < 1.0,
            "pruning.ratio",
            f"must be in [0, 1), got {pruning_ratio!r}",
        )
        limit = min(system.num_devices, system.num_rbs)
        require(
            isinstance(num_scheduled, int) and 1 <= num_scheduled <= limit,
            "scheduling.num_scheduled",
            f"must be an integer in [1, min(K, R) = {limit}], got {num_scheduled!r}",
        )
        require(selection in SELECTIONS, "scheduling.selection", f"must be one of {SELECTIONS}, got {selection!r}")
        super().__init__(system, seed)
        self.pruning_ratio = float(pruning_ratio)
        self.num_scheduled = int(num_scheduled)
        self.selection = selection

    def schedule(self, round: int, channel_state: ChannelState, aoi_table: AoITable) -> Schedule:
        costs = self.round_costs(round, channel_state, aoi_table)
        counts = fixed_keep_counts(self.pruning_ratio, aoi_table.layer_sizes)
        rng = self.round_rng(round)
        candidates = np.flatnonzero((costs.rates > 0).any(axis=1))
        if self.selection == "aoi":
            omega = self._device_weights(aoi_table, counts)[candidates]
            devices = candidates[aoi_priority_order(omega, rng)[: self.num_scheduled]]
        else:
            devices = rng.choice(candidates, size=min(self.num_scheduled, candidates.size), replace=False)
        devices = np.sort(devices).astype(np.int64)
        rows, rbs = linear_sum_assignment(costs.rates[devices], maximize=True)
        devices = devices[rows]
        per_device_counts = np.broadcast_to(counts, (devices.size, counts.size))
        kept = top_aoi_indices(aoi_table, devices, per_device_counts, rng)
        keep = np.full(devices.size, 1.0 - self.pruning_ratio)
        return assemble_schedule(round, costs, aoi_table, devices, rbs, keep, per_device_counts, kept)

    @staticmethod
    def _device_weights(aoi_table: AoITable, counts: np.ndarray) -> np.ndarray:
        """Omega_k at fixed per-layer counts: sum over layers of the c_l largest ``(tau + 1)^2``."""
        total = np.zeros(aoi_table.num_devices, dtype=np.int64)
        for ages, count in zip(aoi_table.layers(), counts, strict=True):
            total += top_square_sums(ages, np.full((aoi_table.num_devices, 1), count))[:, 0]
        return total
