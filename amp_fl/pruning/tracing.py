"""Deriving a :class:`~amp_fl.pruning.regions.RegionMap` by tracing a model with ``torch.fx``.

The rules are those of :mod:`amp_fl.pruning.regions` (whose functions :func:`region_map` and
:func:`region_map_for` are the entry points); this is the part that needs torch.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.func import functional_call

from amp_fl.pruning.regions import ArrayRule, LayerInfo, RegionGroup, RegionMap, owns_state

# Batch size of the input used to trace shapes: 2, so that BatchNorm in training mode
# accepts 1x1 feature maps (it refuses a single value per channel).
_TRACE_BATCH = 2


def _zeros_like(value: torch.Tensor) -> torch.Tensor:
    """A CPU tensor of zeros shaped as ``value`` (which may live on the ``meta`` device).

    Shapes propagate through zeros on the CPU rather than through ``meta`` tensors: torch's meta
    kernels for Linear with a bias, BatchNorm and adaptive pooling import ``torch._dynamo`` (and
    sympy), 1.1-1.7 s on first use in every process (the launcher, the ServerApp, each Ray actor),
    against milliseconds of arithmetic on zeros at batch 2. One module's weights exist at a time.
    """
    return torch.zeros(value.shape, dtype=value.dtype)


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


class _RegionTracer(fx.Interpreter):
    """Runs a traced model on zeros (:func:`_zeros_like`) and labels every tensor with its channel group."""

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

    # execution on zeros -----------------------------------------------------------------------
    def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
        module = self.fetch_attr(target)
        # Zero copies of the weights: shapes propagate; the module's own weights (possibly on the
        # meta device) are neither read nor changed.
        state = {name: _zeros_like(t) for name, t in [*module.named_parameters(), *module.named_buffers()]}
        return functional_call(module, state, args, kwargs)

    def get_attr(self, target: Any, args: Any, kwargs: Any) -> Any:
        value = super().get_attr(target, args, kwargs)
        return _zeros_like(value) if isinstance(value, torch.Tensor) else value

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


def trace_region_map(model: nn.Module, input_shape: Sequence[int]) -> RegionMap:
    """Derive the region map of ``model`` for inputs of shape ``input_shape`` (C, H, W).

    The model is traced with ``torch.fx`` and run on zeros at batch 2 (:func:`_zeros_like`), so
    this is cheap for a real model and also works on a model built on the ``meta`` device.

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
        tracer.run(torch.zeros((_TRACE_BATCH, *(int(d) for d in input_shape))))
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


@functools.lru_cache(maxsize=32)
def cached_region_map(name: str, input_shape: tuple[int, ...], num_classes: int) -> RegionMap:
    from amp_fl.models import build_model

    with torch.device("meta"):
        model = build_model(name, num_classes=num_classes, input_shape=input_shape)  # type: ignore[arg-type]
    return trace_region_map(model, input_shape)
