"""K models of one architecture and width as one model: every client's channels side by side.

:func:`grouped_model` turns a module of the common (padded) width into one that runs K such
modules at once on a ``[B, K*C, H, W]`` input, block ``k`` of the channels being client ``k``'s
(its images, then its activations). Each leaf layer is replaced by its grouped form, reading the
K clients' values from stacked state tensors ``[K, *shape]`` (the trainable ones are the leaves
the optimiser steps):

- ``Conv2d(i, o)``: one ``conv2d`` with ``groups=K`` (times the layer's own groups) over
  ``[K*o, i, kh, kw]``, a view of the stacked weight;
- ``Linear(i, o)``: the input's last axis seen as ``[K, i]`` (a flattened ``[K*C, H, W]`` map is
  client-major, so that is client ``k``'s flattened map), one batched matmul;
- ``BatchNorm2d(c)``: one ``batch_norm`` over ``K*c`` channels: per-channel statistics over
  the batch are client ``k``'s own for its channels; the running statistics are updated in
  place through views of the stacked buffers, the counter of every client advances by one;
- parameter-free layers that act per channel (ReLU, max / average pooling, flatten,
  identity) stay as they are.

The architecture's own ``forward`` code then runs unchanged. This replaces running each layer
under ``torch.func.vmap``: the same grouped kernels, without vmap's reshapes around layers
that lost the channels-last layout (its max-pool ran the slow NCHW kernel after a copy).
A model with any other leaf layer, or a forward that mixes channels outside its layers, is not
grouped: :func:`grouped_model` names the first unsupported layer.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

# Layers without state that act on each channel alone (or flatten, keeping channel-major order).
PER_CHANNEL_LAYERS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Identity,
)


class GroupedConv2d(nn.Module):
    def __init__(self, conv: nn.Conv2d, clients: int, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.conv, self.clients, self.weight, self.bias = conv, clients, weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.flatten(0, 1)  # [K, o, i, kh, kw] -> [K*o, i, kh, kw], a view
        b = self.bias.flatten() if self.bias is not None else None
        c = self.conv
        return F.conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups * self.clients)


class GroupedLinear(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight, self.bias = weight, bias  # [K, o, i], [K, o]: K is the weight's leading axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, out_features, in_features = self.weight.shape
        per_client = x.reshape(-1, k, in_features).transpose(0, 1)  # [K, N, i]
        weight_t = self.weight.transpose(1, 2)
        if self.bias is None:
            y = torch.bmm(per_client, weight_t)
        else:
            y = torch.baddbmm(self.bias.unsqueeze(1), per_client, weight_t)
        return y.transpose(0, 1).reshape(*x.shape[:-1], k * out_features)


class GroupedBatchNorm2d(nn.Module):
    def __init__(self, bn: nn.BatchNorm2d, state: Mapping[str, torch.Tensor | None]) -> None:
        super().__init__()
        assert bn.momentum is not None  # _check_leaf refuses cumulative averages
        self.momentum, self.eps = float(bn.momentum), float(bn.eps)
        self.weight, self.bias = state["weight"], state["bias"]
        self.running_mean, self.running_var = state["running_mean"], state["running_var"]
        self.num_batches_tracked = state["num_batches_tracked"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # As nn.BatchNorm2d.forward, on K*c channels.
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        batch_statistics = self.training or self.running_mean is None
        return F.batch_norm(
            x,
            _flat(self.running_mean),
            _flat(self.running_var),
            _flat(self.weight),
            _flat(self.bias),
            batch_statistics,
            self.momentum,
            self.eps,
        )


def _flat(t: torch.Tensor | None) -> torch.Tensor | None:
    """``[K, c]`` as ``[K*c]``, a view (in-place updates of running statistics reach the stacked buffer)."""
    return t.view(-1) if t is not None else None


def grouped_model(module: nn.Module, clients: int, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """``module`` (one client's architecture at the common width) as ``clients`` models in one.

    ``state`` maps each ``state_dict`` name of ``module`` to the clients' stacked values
    ``[clients, *shape]``. ``module`` itself is changed in place (its leaves replaced) and returned.
    """
    for name, leaf in list(module.named_modules()):
        if list(leaf.children()):
            continue  # a container: its leaves are replaced
        replacement = _grouped_leaf(name, leaf, clients, state)
        if replacement is not leaf:
            parent, _, child = name.rpartition(".")
            setattr(module.get_submodule(parent), child, replacement)
    return module


def check_groupable(module: nn.Module) -> None:
    """Raise the ``ValueError`` :func:`grouped_model` would raise for ``module``, before any training.

    Reads only the layers' types and settings, so a model built on the ``meta`` device will do.
    """
    for name, leaf in module.named_modules():
        if not list(leaf.children()):
            _check_leaf(name, leaf)


def _check_leaf(name: str, leaf: nn.Module) -> None:
    """The one check of what the batched pass groups (a layer it cannot is named)."""
    if isinstance(leaf, nn.BatchNorm2d) and leaf.momentum is None:
        raise ValueError(
            f"the batched pass needs BatchNorm with a momentum, layer {name!r} keeps cumulative averages "
            "(they are per client): set train.batched_clients=false"
        )
    grouped = (isinstance(leaf, nn.Conv2d) and leaf.padding_mode == "zeros") or isinstance(
        leaf, (nn.Linear, nn.BatchNorm2d, *PER_CHANNEL_LAYERS)
    )
    if not grouped:
        raise ValueError(
            f"the batched pass cannot group layer {name!r} ({type(leaf).__name__}); it groups Conv2d, Linear, "
            f"BatchNorm2d and {', '.join(t.__name__ for t in PER_CHANNEL_LAYERS)}: set train.batched_clients=false"
        )


def _grouped_leaf(name: str, leaf: nn.Module, clients: int, state: Mapping[str, torch.Tensor]) -> nn.Module:
    def entry(attribute: str) -> torch.Tensor | None:
        return state.get(f"{name}.{attribute}") if getattr(leaf, attribute, None) is not None else None

    _check_leaf(name, leaf)
    if isinstance(leaf, nn.Conv2d):
        return GroupedConv2d(leaf, clients, state[f"{name}.weight"], entry("bias"))
    if isinstance(leaf, nn.Linear):
        return GroupedLinear(state[f"{name}.weight"], entry("bias"))
    if isinstance(leaf, nn.BatchNorm2d):
        attributes = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        return GroupedBatchNorm2d(leaf, {a: entry(a) for a in attributes})
    return leaf  # a per-channel layer


def clients_on_channels(x: torch.Tensor) -> torch.Tensor:
    """Stacked client inputs ``[K, B, *rest]`` as one batch ``[B, K*rest[0], *rest[1:]]`` (client-major channels).

    Images are laid out channels-last (storage ``[B, H, W, K, C]``), as oneDNN's grouped
    convolutions run fastest and the per-channel layers keep it.
    """
    k, b, *rest = x.shape
    merged = x.transpose(0, 1).reshape(b, k * rest[0], *rest[1:])
    return merged.contiguous(memory_format=torch.channels_last) if merged.dim() == 4 else merged


def clients_last_weight(w: torch.Tensor) -> torch.Tensor:
    """Stacked conv weights ``[K, O, I, kh, kw]`` stored as ``[K, O, kh, kw, I]``: the grouped
    convolution's ``[K*O, I, kh, kw]`` (:class:`GroupedConv2d`) is then a channels-last weight,
    as the input (:func:`clients_on_channels`). Other arrays pass unchanged."""
    if w.dim() != 5:
        return w
    return w.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
