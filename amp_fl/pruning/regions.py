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
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.func import functional_call

KeptIndices = Sequence[np.ndarray]
"""One device's sub-model: one sorted, unique ``int64`` index array per group, in ``RegionMap.groups`` order.

Collections over devices are spelled ``tuple[KeptIndices, ...]`` (``Schedule.kept_indices``).
"""

ArrayRole = Literal["weight", "bias", "norm_affine", "norm_stat", "counter"]
LayerKind = Literal["conv", "linear"]

# Batch size of the meta input used to trace shapes: 2, so that BatchNorm in training mode
# accepts 1x1 feature maps (it refuses a single value per channel).
_TRACE_BATCH = 2


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


# --------------------------------------------------------------------------------------------
# Building the map by tracing the model.


@dataclass
class _Flow:
    """Label of one traced tensor: which group indexes its channel axis (dim 1)."""

    group: int  # union-find element; _FIXED for channels that are never pruned
    expand: int  # features per channel along dim 1 (>1 only after a flatten)
    depends_on_params: bool  # whether autograd will need a gradient for this tensor


_FIXED = 0  # union-find sentinel: unprunable channels (model input, class outputs)

_PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
)
_PASS_FUNCTIONS: frozenset[Any] = frozenset(
    {
        F.relu,
        torch.relu,
        F.relu6,
        F.leaky_relu,
        F.gelu,
        F.silu,
        torch.sigmoid,
        torch.tanh,
        F.max_pool2d,
        F.avg_pool2d,
        F.adaptive_avg_pool2d,
        F.adaptive_max_pool2d,
        F.dropout,
    }
)
_PASS_METHODS = frozenset({"relu", "relu_", "sigmoid", "tanh", "contiguous"})
_FLATTEN_FUNCTIONS: frozenset[Any] = frozenset({torch.flatten})
_FLATTEN_METHODS = frozenset({"flatten", "view", "reshape"})
_ADD_FUNCTIONS: frozenset[Any] = frozenset({operator.add, operator.iadd, torch.add})
_ADD_METHODS = frozenset({"add", "add_"})


def owns_state(module: nn.Module) -> bool:
    """Whether ``module`` itself (not its children) holds parameters or buffers."""
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


class _RegionTracer(fx.Interpreter):
    """Runs a traced model on meta tensors and labels every tensor with its channel group."""

    def __init__(self, graph_module: fx.GraphModule) -> None:
        super().__init__(graph_module)
        self.parent = [_FIXED]  # union-find forest over group elements
        self.sizes = [0]
        self.flows: dict[fx.Node, _Flow | None] = {}
        self.layers: list[dict[str, Any]] = []  # drafts, forward order
        self.norms: dict[str, int] = {}  # BatchNorm module -> group element
        self.seen_modules: set[str] = set()

    # union-find -------------------------------------------------------------------------------
    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        # Keep _FIXED (0) as a root so "frozen" survives every merge; otherwise the older element.
        lo, hi = min(ra, rb), max(ra, rb)
        self.parent[hi] = lo
        return lo

    def new_group(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.sizes.append(size)
        return len(self.parent) - 1

    # execution on meta tensors ---------------------------------------------------------------
    def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
        module = self.fetch_attr(target)
        # Meta copies of the weights: shapes propagate, nothing is computed or allocated.
        meta_state = {name: t.to("meta") for name, t in [*module.named_parameters(), *module.named_buffers()]}
        return functional_call(module, meta_state, args, kwargs)

    def get_attr(self, target: Any, args: Any, kwargs: Any) -> Any:
        value = super().get_attr(target, args, kwargs)
        return value.to("meta") if isinstance(value, torch.Tensor) else value

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        self.flows[n] = self._label(n, value)
        return value

    # label propagation -------------------------------------------------------------------------
    def _input_flow(self, n: fx.Node, arg: Any) -> _Flow:
        if not isinstance(arg, fx.Node) or self.flows.get(arg) is None:
            raise ValueError(f"cannot derive a region map: {n.format_node()} does not take a traced tensor")
        flow = self.flows[arg]
        assert flow is not None
        return flow

    def _label(self, n: fx.Node, value: Any) -> _Flow | None:
        if n.op == "placeholder":
            return _Flow(_FIXED, 1, False)
        if n.op == "output":
            self._freeze_outputs(n.args)
            return None
        if not isinstance(value, torch.Tensor):
            return None  # sizes, shapes and other non-tensor values carry no channels
        if n.op == "call_module":
            return self._label_module(n, self.fetch_attr(str(n.target)), value)
        if n.op == "get_attr":
            raise ValueError(f"cannot derive a region map: tensor attribute {n.target!r} used in forward")
        target = n.target
        is_fn, is_method = n.op == "call_function", n.op == "call_method"
        if (is_fn and target in _PASS_FUNCTIONS) or (is_method and target in _PASS_METHODS):
            return self._input_flow(n, n.args[0])
        if (is_fn and target in _FLATTEN_FUNCTIONS) or (is_method and target in _FLATTEN_METHODS):
            return self._flatten(n, self._input_flow(n, n.args[0]), self._meta_input(n), value)
        if (is_fn and target in _ADD_FUNCTIONS) or (is_method and target in _ADD_METHODS):
            return self._add(n)
        raise ValueError(f"cannot derive a region map: unsupported operation {n.format_node()}")

    def _freeze_outputs(self, arg: Any) -> None:
        if isinstance(arg, fx.Node):
            flow = self.flows.get(arg)
            if flow is not None:
                self.union(flow.group, _FIXED)
        elif isinstance(arg, (tuple, list)):
            for a in arg:
                self._freeze_outputs(a)
        elif isinstance(arg, dict):
            for a in arg.values():
                self._freeze_outputs(a)

    def _meta_input(self, n: fx.Node) -> torch.Tensor:
        value = self.env[n.args[0]]  # type: ignore[index]
        assert isinstance(value, torch.Tensor)
        return value

    def _flatten(self, n: fx.Node, flow: _Flow, x: torch.Tensor, y: torch.Tensor) -> _Flow:
        if x.dim() == y.dim() and x.shape == y.shape:
            return flow
        if y.dim() != 2 or y.shape[0] != x.shape[0] or y.shape[1] != math.prod(x.shape[1:]):
            raise ValueError(
                f"cannot derive a region map: {n.format_node()} reshapes {tuple(x.shape)} to "
                f"{tuple(y.shape)}; only flattening everything after the batch axis is supported"
            )
        return _Flow(flow.group, flow.expand * math.prod(x.shape[2:]), flow.depends_on_params)

    def _add(self, n: fx.Node) -> _Flow:
        tensors = [a for a in n.args if isinstance(a, fx.Node) and self.flows.get(a) is not None]
        if len(tensors) != 2:
            raise ValueError(f"cannot derive a region map: {n.format_node()} is not a tensor + tensor addition")
        a, b = (self._input_flow(n, t) for t in tensors)
        if a.expand != b.expand:
            raise ValueError(f"cannot derive a region map: {n.format_node()} adds tensors of different layouts")
        return _Flow(self.union(a.group, b.group), a.expand, a.depends_on_params or b.depends_on_params)

    def _label_module(self, n: fx.Node, module: nn.Module, y: torch.Tensor) -> _Flow:
        name = str(n.target)
        flow = self._input_flow(n, n.args[0])
        if owns_state(module):
            if name in self.seen_modules:
                raise ValueError(f"cannot derive a region map: module {name!r} is called twice (shared weights)")
            self.seen_modules.add(name)
        if isinstance(module, _PASS_MODULES):
            return flow
        if isinstance(module, nn.Flatten):
            return self._flatten(n, flow, self._meta_input(n), y)
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if flow.expand != 1:
                raise ValueError(f"cannot derive a region map: BatchNorm {name!r} after a flatten")
            self.norms[name] = flow.group
            return flow
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            return self._layer(name, module, flow, self._meta_input(n), y)
        raise ValueError(
            f"cannot derive a region map: module {name!r} of type {type(module).__name__} is not supported "
            "(supported: Conv2d, Linear, BatchNorm1d/2d, activations, pooling, dropout, Identity, Flatten)"
        )

    def _layer(self, name: str, module: nn.Conv2d | nn.Linear, flow: _Flow, x: torch.Tensor, y: torch.Tensor) -> _Flow:
        if isinstance(module, nn.Conv2d):
            if module.groups != 1:
                raise ValueError(f"cannot derive a region map: grouped convolution {name!r} (groups={module.groups})")
            if flow.expand != 1:
                raise ValueError(f"cannot derive a region map: convolution {name!r} after a flatten")
            kind, n_out, n_in = "conv", module.out_channels, module.in_channels
            kernel, positions = math.prod(module.kernel_size), math.prod(y.shape[2:])
        else:
            if x.dim() != 2:
                raise ValueError(f"cannot derive a region map: Linear {name!r} applied to a {x.dim()}-d tensor")
            kind, n_out, n_in, kernel, positions = "linear", module.out_features, module.in_features, 1, 1
        out = self.new_group(n_out)
        self.layers.append(
            {
                "name": name,
                "kind": kind,
                "out": out,
                "in": flow.group,
                "in_expand": flow.expand,
                "in_features": n_in,
                "out_features": n_out,
                "kernel_elems": kernel,
                "out_positions": positions,
                "has_bias": module.bias is not None,
                "reads_model_input": not flow.depends_on_params,
            }
        )
        return _Flow(out, 1, True)


def region_map_for(model: nn.Module, input_shape: Sequence[int]) -> RegionMap:
    """Derive the region map of ``model`` for inputs of shape ``input_shape`` (C, H, W).

    The model is traced with ``torch.fx`` and run on ``meta`` tensors, so this is cheap for a
    real model and also works on a model built on the ``meta`` device.

    Raises
    ------
    ValueError
        If the model cannot be traced or uses an operation or module the region analysis does
        not support (the message names it).
    """
    try:
        graph_module = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, ...) for untraceable code
        raise ValueError(
            f"cannot derive a region map: {type(model).__name__} is not traceable by torch.fx: {exc}"
        ) from exc
    tracer = _RegionTracer(graph_module)
    with torch.no_grad():
        tracer.run(torch.zeros((_TRACE_BATCH, *(int(d) for d in input_shape)), device="meta"))
    return _assemble(model, tracer, tuple(int(d) for d in input_shape))


def _assemble(model: nn.Module, tracer: _RegionTracer, input_shape: tuple[int, ...]) -> RegionMap:
    """Turn the tracer's union-find labels into numbered groups and per-array rules."""
    members: dict[int, list[str]] = {}  # union-find root -> member layers; dicts keep insertion order
    for draft in tracer.layers:  # forward order: a group is numbered at its first member
        root = tracer.find(draft["out"])
        if root != _FIXED:
            members.setdefault(root, []).append(draft["name"])
    group_of_root = {root: index for index, root in enumerate(members)}

    def group_of(element: int) -> int | None:
        return group_of_root.get(tracer.find(element))

    groups = [RegionGroup(names[0], tracer.sizes[root], tuple(names)) for root, names in members.items()]

    layers = tuple(
        LayerInfo(
            name=d["name"],
            kind=d["kind"],
            out_group=group_of(d["out"]),
            in_group=group_of(d["in"]),
            in_expand=d["in_expand"],
            in_features=d["in_features"],
            out_features=d["out_features"],
            kernel_elems=d["kernel_elems"],
            out_positions=d["out_positions"],
            has_bias=d["has_bias"],
            reads_model_input=d["reads_model_input"],
        )
        for d in tracer.layers
    )
    for layer in layers:
        expected = layer.in_features if layer.in_group is None else groups[layer.in_group].size * layer.in_expand
        if expected != layer.in_features:
            raise ValueError(
                f"cannot derive a region map: {layer.name!r} expects {layer.in_features} inputs, "
                f"the traced input has {expected}"
            )
    by_module = {layer.name: layer for layer in layers}
    norms = {name: group_of(element) for name, element in tracer.norms.items()}
    parameter_names = {name for name, _ in model.named_parameters()}

    rules = []
    for key, tensor in model.state_dict(keep_vars=True).items():
        owner, _, attr = key.rpartition(".")
        shape = tuple(tensor.shape)
        is_param = key in parameter_names
        if owner in by_module:
            layer = by_module[owner]
            if attr == "weight":
                rules.append(
                    ArrayRule(key, shape, layer.out_group, layer.in_group, layer.in_expand, is_param, "weight")
                )
            elif attr == "bias":
                rules.append(ArrayRule(key, shape, layer.out_group, None, 1, is_param, "bias"))
            else:
                raise ValueError(f"cannot derive a region map: unexpected state {key!r}")
        elif owner in norms:
            group = norms[owner]
            if attr in ("weight", "bias"):
                rules.append(ArrayRule(key, shape, group, None, 1, is_param, "norm_affine"))
            elif attr in ("running_mean", "running_var"):
                rules.append(ArrayRule(key, shape, group, None, 1, is_param, "norm_stat"))
            elif attr == "num_batches_tracked":
                rules.append(ArrayRule(key, shape, None, None, 1, is_param, "counter"))
            else:
                raise ValueError(f"cannot derive a region map: unexpected state {key!r}")
        else:
            raise ValueError(f"cannot derive a region map: {key!r} belongs to a module the forward pass never calls")
    return RegionMap(tuple(groups), tuple(rules), layers, input_shape)


def region_map(name: str, input_shape: Sequence[int] | None = None, num_classes: int = 10) -> RegionMap:
    """Region map of the registered model ``name`` (built on the ``meta`` device: no weights allocated).

    Maps are immutable and cached per ``(name, input_shape, num_classes)``, so the server can
    ask for one every round at no cost.
    """
    from amp_fl.models import model_spec

    shape = tuple(int(d) for d in input_shape) if input_shape is not None else model_spec(name).default_input_shape
    return _cached_region_map(name, shape, int(num_classes))


@functools.lru_cache(maxsize=32)
def _cached_region_map(name: str, input_shape: tuple[int, ...], num_classes: int) -> RegionMap:
    from amp_fl.models import build_model

    with torch.device("meta"):
        model = build_model(name, num_classes=num_classes, input_shape=input_shape)  # type: ignore[arg-type]
    return region_map_for(model, input_shape)


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
        if arr.ndim != 1:
            raise ValueError(f"kept indices of group {group.name!r} must be 1-d, got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"kept indices of group {group.name!r} are empty; every group must keep a region")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"kept indices of group {group.name!r} must be integers, got {arr.dtype}")
        if np.any((arr < 0) | (arr >= group.size)):
            raise ValueError(f"kept indices of group {group.name!r} out of range [0, {group.size})")
        if np.any(np.diff(arr) <= 0):
            raise ValueError(f"kept indices of group {group.name!r} must be sorted and unique")
        out.append(arr.astype(np.int64, copy=False))
    return out


def keep_counts_of(kept: KeptIndices) -> list[int]:
    """Number of kept regions per group."""
    return [len(k) for k in kept]
