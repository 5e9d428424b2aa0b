"""Static pruning (HeteroFL): always the first ``k`` regions of each group."""

from __future__ import annotations

import numpy as np

from amp_fl.pruning.regions import KeptIndices

from .base import PruningPolicy, SelectionContext


class StaticPolicy(PruningPolicy):
    """Keep regions ``0 .. k-1`` of every group, every round, on every device."""

    name = "static"

    def _select(self, keep_counts: list[int], ctx: SelectionContext) -> KeptIndices:
        return [np.arange(count, dtype=np.int64) for count in keep_counts]
