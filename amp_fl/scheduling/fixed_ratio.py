"""Fixed-ratio mode (paper Figs. 2-5): every scheduled device is pruned by the same ratio beta and
exactly ``num_scheduled`` devices train per round; the latency budget is not enforced.

Keep counts: :func:`~amp_fl.pruning.counts.keep_counts` of ``1 - beta``, the rule of Eq. (16)
(``floor((1 - beta) I_l)``, with its floating-point slack); every layer must keep >= 1.

Device selection (``selection``):
- ``"aoi"`` (default): AMP-FL's objective with the keep counts fixed. Omega_k no longer depends
  on the RB, so the maximum-weight matching is simply the ``num_scheduled`` devices of largest
  Omega_k (Eq. (18)); ties are broken by the same seeded-jitter rule as region ties
  (Algorithm 1, :func:`~amp_fl.pruning.policies.aoi.top_aoi_indices`, with jitter from this
  round's generator), so in round 0, when all ages are equal, the pick is uniformly random.
- ``"random"``: ``num_scheduled`` devices uniformly at random.

Only devices with a positive rate (a usable channel) are candidates. The chosen devices get RBs
by maximum-sum-rate matching, which only affects the reported latencies. Sub-models keep each
device's oldest regions (Algorithm 1); a pruning policy other than AoI may replace the kept
indices while keeping ``keep_counts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
from scipy.optimize import linear_sum_assignment

from amp_fl.errors import check_argument
from amp_fl.pruning.counts import keep_counts
from amp_fl.pruning.policies.aoi import top_aoi_indices
from amp_fl.scheduling.amp import top_square_sums
from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.scheduling.assign import schedule_with_aoi_pruning
from amp_fl.scheduling.schedule import Schedule, Scheduler
from amp_fl.wireless.channel import ChannelState
from amp_fl.wireless.latency import SystemModel

FixedRatioSelection = Literal["aoi", "random"]
FIXED_RATIO_SELECTIONS: tuple[FixedRatioSelection, ...] = get_args(FixedRatioSelection)


def fixed_keep_counts(pruning_ratio: float, layer_sizes: Sequence[int]) -> np.ndarray:
    """Regions kept per layer at pruning ratio beta: ``keep_counts(1 - beta, layer_sizes)``, (L,) int64.

    Raises ValueError (naming ``pruning_ratio``) when a layer would keep no region.
    """
    counts = keep_counts(1.0 - pruning_ratio, layer_sizes)
    check_argument(
        bool(counts.min() >= 1),
        "pruning_ratio",
        f"{pruning_ratio} leaves a layer of {int(layer_sizes[int(np.argmin(counts))])} regions empty",
    )
    return counts


class FixedRatioScheduler(Scheduler):
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
        self,
        system: SystemModel,
        seed: int,
        pruning_ratio: float,
        num_scheduled: int,
        selection: FixedRatioSelection = "aoi",
    ) -> None:
        check_argument(
            isinstance(pruning_ratio, int | float) and 0.0 <= pruning_ratio < 1.0,
            "pruning_ratio",
            f"must be in [0, 1), got {pruning_ratio!r}",
        )
        limit = min(system.num_devices, system.num_rbs)
        check_argument(
            isinstance(num_scheduled, int) and 1 <= num_scheduled <= limit,
            "num_scheduled",
            f"must be an integer in [1, min(K, R) = {limit}], got {num_scheduled!r}",
        )
        check_argument(
            selection in FIXED_RATIO_SELECTIONS,
            "selection",
            f"must be one of {FIXED_RATIO_SELECTIONS}, got {selection!r}",
        )
        super().__init__(system, seed)
        self.pruning_ratio = float(pruning_ratio)
        self.num_scheduled = int(num_scheduled)
        self.selection = selection

    def schedule(self, round: int, channel_state: ChannelState, aoi_table: AoITable) -> Schedule:
        costs = self.round_costs(round, channel_state, aoi_table)
        counts = fixed_keep_counts(self.pruning_ratio, aoi_table.layer_sizes)
        rng = self.round_rng(round)
        candidates = np.flatnonzero((costs.rates > 0).any(axis=1))
        size = min(self.num_scheduled, candidates.size)
        omega: np.ndarray | None = None
        if size == 0:
            devices = candidates
        elif self.selection == "aoi":
            omega = self._device_weights(aoi_table, counts)
            # Algorithm 1's rule on one "layer" whose regions are the candidate devices.
            (chosen,) = top_aoi_indices([omega[None, candidates]], [[size]], rng.random((1, candidates.size)))[0]
            devices = candidates[chosen]
        else:
            devices = np.sort(rng.choice(candidates, size=size, replace=False))
        rows, rbs = linear_sum_assignment(costs.rates[devices], maximize=True)
        devices = devices[rows].astype(np.int64)
        return schedule_with_aoi_pruning(
            round,
            costs,
            aoi_table,
            devices,
            rbs,
            self.seed,
            keep_fraction=np.full(devices.size, 1.0 - self.pruning_ratio),
            weights=None if omega is None else omega[devices],
        )

    @staticmethod
    def _device_weights(aoi_table: AoITable, counts: np.ndarray) -> np.ndarray:
        """Omega_k at fixed per-layer counts: sum over layers of the c_l largest ``(tau + 1)^2``."""
        total = np.zeros(aoi_table.num_devices, dtype=np.int64)
        for ages, count in zip(aoi_table.layers(), counts, strict=True):
            total += top_square_sums(ages, np.full((aoi_table.num_devices, 1), count))[:, 0]
        return total
