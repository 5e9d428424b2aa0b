"""Region maps: which slices of which state_dict tensors make up each prunable region.

A *region* (spec section 1) is one output filter of a conv layer or one neuron of a hidden FC
layer; it owns its input weights and its bias, and BatchNorm channels follow their conv filter.
A *group* is one prunable layer in the paper's sense: a set of regions that share one kept
index set. Layers whose outputs are added together (ResNet's residual stream: the stem conv,
every block's ``conv2`` and the stage's downsample conv) are coupled into one group, because an
addition only makes sense when both operands keep the same channels.

The map is derived from the model itself: :func:`region_map_for` traces the forward pass with
``torch.fx``, runs it on ``meta`` tensors (no real compute, no real memory) and propagates a
"which group indexes the channel axis" label from layer to layer:

- ``Conv2d`` / ``Linear`` read the label of their input (axis 1 of the weight) and start a new
  group for their output (axis 0);
- BatchNorm, activations, pooling, dropout and identity keep the label;
- a flatten from ``(N, C, H, W)`` to ``(N, C*H*W)`` keeps the label and multiplies its
  *expansion* by ``H*W`` (each kept channel covers ``H*W`` consecutive FC inputs);
- an addition merges the groups of its operands (union-find);
- whatever reaches the model output (the class layer), or is added to the raw input, is
  frozen: it is never pruned.

Any other operation raises :class:`ValueError`, so an unsupported architecture fails loudly
instead of producing a wrong map.

This module holds the map's types and checks and imports no torch (the configuration, the
schedulers and the launcher use them without paying for torch); the tracing itself is
:mod:`amp_fl.pruning.tracing`, and :mod:`amp_fl.pruning.maps` derives a model's map with it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from torch import nn

KeptIndices = Sequence[np.ndarray]
"""One device's sub-model: one sorted, unique ``int64`` index array per group, in ``RegionMap.groups`` order.

Collections over devices are spelled ``tuple[KeptIndices, ...]`` (``Schedule.kept_indices``).
"""

ArrayRole = Literal["weight", "bias", "norm_affine", "norm_stat", "counter"]
LayerKind = Literal["conv", "linear"]


@dataclass(frozen=True)
class RegionGroup:
    """One prunable layer: ``size`` regions sharing one kept index set.

    ``name`` is the first member layer in forward order; ``members`` lists every conv/linear
    layer whose output channels are this group (more than one only for coupled residual layers).
    """

    name: str
    size: int
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class ArrayRule:
    """How one state_dict entry is sliced for a sub-model.

    Attributes
    ----------
    name : str
        The state_dict key.
    shape : tuple[int, ...]
        Its full shape.
    out_group : int or None
        Group whose kept indices select along axis 0; ``None`` leaves axis 0 whole.
    in_group : int or None
        Group whose kept indices select along axis 1; ``None`` leaves axis 1 whole.
    in_expand : int
        Entries of axis 1 per input region (``H*W`` for the first FC layer after a conv stack).
    is_parameter : bool
        ``True`` for trainable parameters, ``False`` for buffers (BatchNorm running statistics
        and ``num_batches_tracked``). Buffers travel with the arrays but are not counted in a
        model's parameter count.
    role : str
        ``"weight"`` (conv/linear weight), ``"bias"``, ``"norm_affine"`` (BatchNorm weight and
        bias), ``"norm_stat"`` (running mean/var) or ``"counter"`` (``num_batches_tracked``).
    """

    name: str
    shape: tuple[int, ...]
    out_group: int | None
    in_group: int | None
    in_expand: int
    is_parameter: bool
    role: ArrayRole

    def sub_shape(self, keep_counts: Sequence[int]) -> tuple[int, ...]:
        """Shape of this array in a sub-model keeping ``keep_counts[g]`` regions of group ``g``."""
        shape = list(self.shape)
        if self.out_group is not None:
            shape[0] = int(keep_counts[self.out_group])
        if self.in_group is not None:
            shape[1] = int(keep_counts[self.in_group]) * self.in_expand
        return tuple(shape)

    def axis_indices(self, kept: KeptIndices) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Indices kept along axis 0 and axis 1 (``None``: the whole axis)."""
        rows = kept[self.out_group] if self.out_group is not None else None
        cols = None
        if self.in_group is not None:
            cols = kept[self.in_group]
            if self.in_expand > 1:
                # Channel c of a flattened (C, H, W) map owns features c*H*W ... c*H*W + H*W - 1.
                cols = (cols[:, None] * self.in_expand + np.arange(self.in_expand)).ravel()
        return rows, cols


@dataclass(frozen=True)
class LayerInfo:
    """A conv or linear layer, with what is needed to count its parameters and FLOPs.

    ``in_features`` and ``out_features`` are the full sizes of weight axes 1 and 0 (for a conv:
    input channels per group and output channels); ``kernel_elems`` is ``kh*kw`` (1 for a linear
    layer); ``out_positions`` is the number of output pixels per sample (1 for a linear layer);
    ``reads_model_input`` is ``True`` when the layer's input does not depend on any parameter,
    so back-propagation needs no gradient with respect to it.
    """

    name: str
    kind: LayerKind
    out_group: int | None
    in_group: int | None
    in_expand: int
    in_features: int
    out_features: int
    kernel_elems: int
    out_positions: int
    has_bias: bool
    reads_model_input: bool

    def widths(self, keep_counts: Sequence[int]) -> tuple[int, int]:
        """``(inputs, outputs)`` of this layer in a sub-model (inputs already expanded)."""
        n_in = self.in_features if self.in_group is None else int(keep_counts[self.in_group]) * self.in_expand
        n_out = self.out_features if self.out_group is None else int(keep_counts[self.out_group])
        return n_in, n_out


@dataclass(frozen=True)
class RegionMap:
    """Regions of one model: its groups, how each state_dict array is sliced, and its layers.

    ``arrays`` follows the model's ``state_dict`` order, which is also the order of the arrays
    exchanged with clients (:attr:`param_names`).
    """

    groups: tuple[RegionGroup, ...]
    arrays: tuple[ArrayRule, ...]
    layers: tuple[LayerInfo, ...]
    input_shape: tuple[int, ...]

    @property
    def layer_sizes(self) -> list[int]:
        """Regions per group, ``I_l``."""
        return [g.size for g in self.groups]

    @property
    def num_regions(self) -> int:
        """Total number of regions ``I`` (sum of the group sizes)."""
        return sum(g.size for g in self.groups)

    @property
    def offsets(self) -> list[int]:
        """Start of each group in a flat region vector of length :attr:`num_regions`."""
        return list(itertools.accumulate(self.layer_sizes, initial=0))[:-1]

    @property
    def param_names(self) -> list[str]:
        """state_dict keys in wire order (parameters and buffers, as ``state_dict()`` lists them)."""
        return [a.name for a in self.arrays]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Full shapes of the arrays, in :attr:`param_names` order."""
        return [a.shape for a in self.arrays]

    def group_index(self, name: str) -> int:
        """Index of the group called ``name`` (or having ``name`` as a member layer)."""
        for i, g in enumerate(self.groups):
            if g.name == name or name in g.members:
                return i
        raise ValueError(f"no region group named {name!r}; groups: {[g.name for g in self.groups]}")

    def full_kept(self) -> list[np.ndarray]:
        """Kept indices that keep every region (the full model)."""
        return [np.arange(g.size, dtype=np.int64) for g in self.groups]


def owns_state(module: nn.Module) -> bool:
    """Whether ``module`` itself (not its children) holds parameters or buffers."""
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


def check_kept(region_map: RegionMap, kept: Sequence[Any]) -> list[np.ndarray]:
    """Validate kept index sets and return them as ``int64`` arrays.

    Raises
    ------
    ValueError
        Naming the group, when the number of sets is wrong or a set is empty, not 1-d, not
        integer, unsorted, has duplicates or is out of range.
    """
    if len(kept) != len(region_map.groups):
        raise ValueError(f"expected {len(region_map.groups)} kept index sets (one per group), got {len(kept)}")
    out: list[np.ndarray] = []
    for group, idx in zip(region_map.groups, kept, strict=True):
        arr = np.asarray(idx)
        if _plainly_valid(arr, group.size):  # the common case in one pass; any doubt: the checks below
            out.append(arr.astype(np.int64, copy=False))
            continue
        if arr.ndim != 1:
            raise ValueError(f"kept indices of group {group.name!r} must be 1-d, got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"kept indices of group {group.name!r} are empty; every group must keep a region")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"kept indices of group {group.name!r} must be integers, got {arr.dtype}")
        if np.any((arr < 0) | (arr >= group.size)):
            raise ValueError(f"kept indices of group {group.name!r} out of range [0, {group.size})")
        if np.any(arr[1:] <= arr[:-1]):  # not np.diff: it wraps around for unsigned dtypes
            raise ValueError(f"kept indices of group {group.name!r} must be sorted and unique")
        out.append(arr.astype(np.int64, copy=False))
    return out


def _plainly_valid(arr: np.ndarray, size: int) -> bool:
    """1-d, non-empty, integer and strictly increasing from >= 0 to < ``size``: every check of :func:`check_kept`."""
    return (
        arr.ndim == 1
        and arr.size > 0
        and arr.dtype.kind in "iu"  # np.issubdtype(dtype, np.integer), without its cost
        and arr[0] >= 0
        and arr[-1] < size
        and bool(np.all(arr[1:] > arr[:-1]))
    )


def keep_counts_of(kept: KeptIndices) -> list[int]:
    """Number of kept regions per group."""
    return [len(k) for k in kept]
