"""Rolling pruning: a window of ``k`` consecutive regions (cyclic) that moves every round.

Two rules: ``rolling`` (the window advances by its own length, beyond FedRolex: full coverage in
``ceil(I / k)`` rounds) and ``fedrolex`` (Alam et al., 2022, as published: the window advances by
one region per round)."""

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


def fedrolex_window(size: int, count: int, server_round: int) -> np.ndarray:
    """FedRolex's window of ``count`` regions (cyclic) in ``server_round``: it starts at ``(round - 1) mod size``.

    The start advances by one region per round and wraps; Flower's first round (1) starts at 0, so
    round 1 keeps the same first ``count`` regions as HeteroFL's static sub-model.
    """
    start = (int(server_round) - 1) % int(size)
    return np.sort((start + np.arange(count, dtype=np.int64)) % size)


class FedRolexPolicy(PruningPolicy):
    """FedRolex: every device's window of each group starts at the same region, advanced by one per round."""

    name = "fedrolex"

    def _select(self, keep_counts: list[int], ctx: SelectionContext) -> KeptIndices:
        return [
            fedrolex_window(size, count, ctx.server_round)
            for size, count in zip(ctx.region_map.layer_sizes, keep_counts, strict=True)
        ]
