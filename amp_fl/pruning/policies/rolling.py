"""Rolling pruning (FedRolex-like): a window of ``k`` consecutive regions that moves every round."""

from __future__ import annotations

import numpy as np

from amp_fl.pruning.regions import KeptIndices

from .base import PruningPolicy, SelectionContext


def rolling_window(size: int, count: int, server_round: int) -> np.ndarray:
    """Sorted indices of the window of ``count`` regions (cyclic) used in ``server_round``.

    The window starts at ``server_round * count mod size``: it advances by its own length each
    round, so with a constant ``count`` any ``ceil(size / count)`` consecutive rounds cover every
    region. (FedRolex advances by one region per round; advancing by the window size reaches
    full coverage ``count`` times sooner, which is what a short federated run needs.)
    """
    start = (int(server_round) * int(count)) % int(size)
    return np.sort((start + np.arange(count, dtype=np.int64)) % size)


class RollingPolicy(PruningPolicy):
    """The same rolling window for every device in a round (as in FedRolex)."""

    name = "rolling"

    def _select(self, keep_counts: list[int], ctx: SelectionContext) -> KeptIndices:
        return [
            rolling_window(size, count, ctx.server_round)
            for size, count in zip(ctx.region_map.layer_sizes, keep_counts, strict=True)
        ]
