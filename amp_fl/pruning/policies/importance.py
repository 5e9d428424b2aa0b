"""Importance pruning: keep the regions whose weights have the largest L1 norm."""

from __future__ import annotations

import numpy as np

from amp_fl.pruning.regions import KeptIndices

from .base import PruningPolicy, SelectionContext


def region_l1_norms(ctx: SelectionContext) -> list[np.ndarray]:
    """L1 norm of every region's weights, per group.

    A conv filter's norm is over its whole kernel (all input channels), an FC neuron's over its
    input weights; for a coupled group (ResNet residual stream) the norms of all member layers
    are summed. Biases and BatchNorm parameters are not part of the importance.
    """
    region_map = ctx.region_map
    if ctx.global_arrays is None:
        raise ValueError("importance pruning needs the current global arrays (SelectionContext.global_arrays)")
    if len(ctx.global_arrays) != len(region_map.arrays):
        raise ValueError(f"expected {len(region_map.arrays)} global arrays, got {len(ctx.global_arrays)}")
    norms = [np.zeros(size, dtype=np.float64) for size in region_map.layer_sizes]
    for rule, array in zip(region_map.arrays, ctx.global_arrays, strict=True):
        if rule.role != "weight" or rule.out_group is None:
            continue
        array = np.asarray(array)
        if array.shape != rule.shape:
            raise ValueError(f"global array {rule.name!r} has shape {array.shape}, expected {rule.shape}")
        norms[rule.out_group] += np.abs(array.reshape(array.shape[0], -1)).sum(axis=1, dtype=np.float64)
    return norms


class ImportancePolicy(PruningPolicy):
    """Keep the ``k`` regions of largest L1 weight norm per group; equal norms: lower index first."""

    name = "importance"

    def _select(self, keep_counts: list[int], ctx: SelectionContext) -> KeptIndices:
        return [
            np.sort(np.argsort(-norm, kind="stable")[:count]).astype(np.int64)
            for norm, count in zip(region_l1_norms(ctx), keep_counts, strict=True)
        ]
