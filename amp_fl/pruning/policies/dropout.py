"""Federated Dropout (Caldas et al.): keep a uniformly random subset of regions per group."""

from __future__ import annotations

import numpy as np

from amp_fl.pruning.regions import KeptIndices

from .base import PruningPolicy, SelectionContext, device_rng


class FederatedDropoutPolicy(PruningPolicy):
    """Uniform random regions without replacement, seeded per ``(seed, round, device)``."""

    name = "random"

    def _select(self, keep_counts: list[int], ctx: SelectionContext) -> KeptIndices:
        rng = device_rng(self.seed, ctx.server_round, ctx.device_id)
        return [
            np.sort(rng.choice(size, size=count, replace=False)).astype(np.int64)
            for size, count in zip(ctx.region_map.layer_sizes, keep_counts, strict=True)
        ]
