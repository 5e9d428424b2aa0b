"""Exact parameter and FLOP counts of a sub-model, from the region map and keep counts alone.

Used by the wireless/latency model (eqs. (4)-(7): upload size Q and compute C scale with the
sub-model) without building any sub-model. FLOPs follow ``torch.utils.flop_counter``'s
convention: 2 FLOPs per multiply-accumulate of conv and linear layers; bias additions,
activations, pooling, BatchNorm and residual additions are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .regions import LayerInfo, RegionMap


def _counts(region_map: RegionMap, keep_counts: Sequence[int] | None) -> list[int]:
    """Keep counts (``None``: the full model), checked to be one per group in ``[0, I_l]``.

    Zero is accepted: the counts are pure arithmetic, and callers may want the size of an
    infeasible configuration before rejecting it.
    """
    if keep_counts is None:
        return region_map.layer_sizes
    if len(keep_counts) != len(region_map.groups):
        raise ValueError(f"expected {len(region_map.groups)} keep counts (one per group), got {len(keep_counts)}")
    counts = [int(c) for c in keep_counts]
    for group, count in zip(region_map.groups, counts, strict=True):
        if not 0 <= count <= group.size:
            raise ValueError(f"keep count of group {group.name!r} must be in [0, {group.size}], got {count}")
    return counts


def submodel_shapes(region_map: RegionMap, keep_counts: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """Shapes of the sub-model's arrays in ``param_names`` order (parameters and buffers)."""
    counts = _counts(region_map, keep_counts)
    return [rule.sub_shape(counts) for rule in region_map.arrays]


def submodel_param_count(region_map: RegionMap, keep_counts: Sequence[int] | None = None) -> int:
    """Trainable parameters of the sub-model (``sum(p.numel() for p in sub.parameters())``).

    BatchNorm running statistics and ``num_batches_tracked`` are buffers: they are sent with
    the arrays (see :func:`submodel_array_count`) but, as in PyTorch, are not parameters.
    """
    counts = _counts(region_map, keep_counts)
    return sum(math.prod(rule.sub_shape(counts)) for rule in region_map.arrays if rule.is_parameter)


def submodel_array_count(region_map: RegionMap, keep_counts: Sequence[int] | None = None) -> int:
    """Entries of all arrays exchanged with a device: parameters plus BatchNorm buffers."""
    counts = _counts(region_map, keep_counts)
    return sum(math.prod(rule.sub_shape(counts)) for rule in region_map.arrays)


def _layer_forward_flops(layer: LayerInfo, counts: Sequence[int]) -> int:
    n_in, n_out = layer.widths(counts)
    return 2 * n_in * n_out * layer.kernel_elems * layer.out_positions


def forward_flops_per_sample(region_map: RegionMap, keep_counts: Sequence[int] | None = None) -> int:
    """Forward-pass FLOPs of one sample: ``2 * MACs`` of every conv and linear layer."""
    counts = _counts(region_map, keep_counts)
    return sum(_layer_forward_flops(layer, counts) for layer in region_map.layers)


def training_flops_per_sample(region_map: RegionMap, keep_counts: Sequence[int] | None = None) -> int:
    """Forward plus backward FLOPs of one sample.

    The backward pass of a conv/linear layer costs twice its forward (gradient with respect to
    the input and to the weight), except for layers reading the model input directly, which need
    only the weight gradient (1x).
    """
    counts = _counts(region_map, keep_counts)
    total = 0
    for layer in region_map.layers:
        forward = _layer_forward_flops(layer, counts)
        total += forward + (forward if layer.reads_model_input else 2 * forward)
    return total
