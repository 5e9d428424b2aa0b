"""AoI pruning (Algorithm 1) behind the :class:`PruningPolicy` interface.

The ordering and tie-break rule live in :mod:`.aoi` (pure NumPy, shared with the scheduler);
this module only adapts them to the policy interface.
"""

from __future__ import annotations

import numpy as np

from amp_fl.pruning.regions import KeptIndices

from .aoi import select_top_aoi
from .base import PruningPolicy, SelectionContext, context_rng


class AoIPolicy(PruningPolicy):
    """In every group keep the regions of largest AoI (:func:`.aoi.select_top_aoi`).

    Ties are broken by :func:`.aoi.aoi_priority_order`'s seeded jitter, drawn from a generator
    derived from ``(seed, round, device)``.
    """

    name = "aoi"

    def _select(self, keep_counts: list[int], ctx: SelectionContext) -> KeptIndices:
        rng = context_rng(self.seed, ctx)
        return [
            select_top_aoi(ages, count, rng).astype(np.int64)
            for ages, count in zip(ctx.group_ages(), keep_counts, strict=True)
        ]
