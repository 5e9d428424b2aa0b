"""Keep counts of Eq. (16), and exact parameter and FLOP counts of a sub-model from them.

:func:`keep_counts` is the one rule turning a keep fraction kappa into regions kept per layer;
the wireless latency model, every scheduler and the pruning policies use it. The parameter and
FLOP counts serve the latency model (Eqs. (4)-(7): upload size Q and compute C scale with the
sub-model) without building any sub-model. FLOPs follow ``torch.utils.flop_counter``'s
convention: 2 FLOPs per multiply-accumulate of conv and linear layers; bias additions,
activations, pooling, BatchNorm and residual additions are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from amp_fl.errors import check_argument

from .regions import LayerInfo, RegionMap

# floor(kappa * I_l) is taken after adding this slack. A product that is mathematically an
# integer can land just below it in floating point (0.29 * 100 = 28.999999999999996,
# 0.57 * 100 = 56.99999999999999): without the slack a keep fraction given as a decimal (a fixed
# pruning ratio, a policy's keep fraction) would lose a whole region to rounding. It is far below the gap between two
# counts (1 / I_l >= 1e-6 for any real layer), so it never adds a region that kappa does not pay for.
_FLOOR_SLACK = 1e-9


def check_layer_sizes(layer_sizes: Sequence[int]) -> tuple[int, ...]:
    """Return ``layer_sizes`` as a tuple of ints after checking each layer has at least one region."""
    sizes = tuple(int(s) for s in layer_sizes)
    check_argument(
        len(sizes) >= 1 and all(s >= 1 for s in sizes),
        "layer_sizes",
        f"need >= 1 layer of >= 1 region each, got {list(layer_sizes)}",
    )
    return sizes


def keep_counts(kappa: ArrayLike, layer_sizes: Sequence[int]) -> np.ndarray:
    """Regions kept per layer at keep fraction ``kappa``: ``floor(kappa * I_l)`` (Eq. (16), Algorithm 1).

    Vectorised: ``kappa`` of any shape (a scalar, one per device, a K x R matrix) gives an
    ``int64`` array of shape ``kappa.shape + (L,)``. Each count is ``floor(kappa I_l + 1e-9)``
    (see ``_FLOOR_SLACK``), never more than ``I_l``. A zero count means the sub-model is infeasible.
    The result is laid out layer by layer, so ``counts[..., l]`` is a contiguous block.

    Raises
    ------
    ValueError
        Naming ``kappa`` when a fraction is not in [0, 1], ``layer_sizes`` when a layer is empty.
    """
    sizes = check_layer_sizes(layer_sizes)
    kappa = np.asarray(kappa, dtype=np.float64)
    # min/max propagate NaN, which then fails both comparisons.
    if kappa.size and not (kappa.min() >= 0.0 and kappa.max() <= 1.0):
        bad = kappa[~((kappa >= 0.0) & (kappa <= 1.0))]
        raise ValueError(f"kappa: keep fractions must be in [0, 1], got {float(bad.ravel()[0])}")
    counts = np.empty((len(sizes), *kappa.shape), dtype=np.int64)
    scaled = np.empty(kappa.shape, dtype=np.float64)
    for layer, size in enumerate(sizes):
        np.multiply(kappa, size, out=scaled)
        scaled += _FLOOR_SLACK
        # Casting truncates, which is the floor of these non-negative values. No clip to I_l is
        # needed: kappa <= 1 makes kappa * I_l <= I_l exactly, and I_l + 1e-9 still floors to I_l.
        counts[layer] = scaled
    return np.moveaxis(counts, 0, -1)


def keep_counts_for_fraction(layer_sizes: Sequence[int], fraction: float) -> list[int]:
    """:func:`keep_counts` of one keep fraction, as a list (one count per layer)."""
    return [int(c) for c in keep_counts(fraction, layer_sizes)]


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
