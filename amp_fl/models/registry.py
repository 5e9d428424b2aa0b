"""Model registry: ``build_model(name, num_classes=..., input_shape=...)``.

Modelled on torchvision's ``get_model``: builders are registered under a unique name and
take keyword-only arguments that are checked eagerly.

This module imports no torch: the configuration checks a model name (and the launcher its
default input shape) without paying for torch and torchvision, about 2.5 s of a cold start.
The built-in architectures are therefore listed here by the dotted path of their builder,
imported when a model is first built; :func:`register_model` adds a builder object.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

Builder = Callable[..., "nn.Module"]


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one architecture.

    ``builder``: the builder, or its ``"module:function"`` path (imported on first use).
    ``channels_last``: train in the channels-last memory format, chosen per model by measuring a
    single-thread CPU SGD step (cnn 4.25 -> 3.35 ms at batch 64, ResNet-18 877 -> 736 ms at
    batch 32; VGG-11 is slower, 353 -> 408 ms, and stays contiguous).
    """

    name: str
    builder: Builder | str
    default_input_shape: tuple[int, int, int]
    channels_last: bool = False

    def resolve_builder(self) -> Builder:
        if not isinstance(self.builder, str):
            return self.builder
        module, _, function = self.builder.partition(":")
        builder: Builder = getattr(importlib.import_module(module), function)
        return builder

    @property
    def train_memory_format(self) -> torch.memory_format:
        import torch

        return torch.channels_last if self.channels_last else torch.contiguous_format


_REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("cnn", "amp_fl.models.cnn:build_cnn", (1, 28, 28), channels_last=True),
        ModelSpec("resnet18", "amp_fl.models.resnet:build_resnet18", (3, 32, 32), channels_last=True),
        ModelSpec("resnet8", "amp_fl.models.resnet8:build_resnet8", (1, 28, 28)),
        ModelSpec("vgg11", "amp_fl.models.vgg:build_vgg11", (3, 32, 32)),
    )
}


def register_model(
    name: str, default_input_shape: tuple[int, int, int], *, channels_last: bool = False
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` under ``name``; a duplicate name is an error."""

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(name, builder, default_input_shape, channels_last)
        return builder

    return decorate


def available_models() -> list[str]:
    return sorted(_REGISTRY)


MODEL_TAGS: tuple[str, ...] = ("scaler", "static_bn")
"""Options a model name may carry after ``+`` (``"resnet18+static_bn+scaler"``), HeteroFL's two model
changes. ``static_bn``: every BatchNorm keeps no running statistics and normalises with the batch's, in
training and evaluation alike (:func:`static_batchnorm`; the state has no running buffers).
``scaler``: sub-models divide pruned layers' outputs by their kept fraction in training (read by
:func:`amp_fl.pruning.submodel.build_submodel`; the architecture and its state are unchanged)."""


def split_model_name(name: str) -> tuple[str, frozenset[str]]:
    """``"cnn+scaler"`` -> ``("cnn", {"scaler"})``: the registered architecture and its tags."""
    base, *tags = name.split("+")
    unknown = [t for t in tags if t not in MODEL_TAGS]
    if unknown:
        raise ValueError(f"unknown model tag {unknown[0]!r} in {name!r}; known tags: {', '.join(MODEL_TAGS)}")
    return base, frozenset(tags)


def model_spec(name: str) -> ModelSpec:
    """The registered architecture of ``name`` (tags after ``+`` ignored: they keep the layers and memory format)."""
    base, _ = split_model_name(name)
    if base not in _REGISTRY:
        raise ValueError(f"unknown model {base!r}; available: {', '.join(available_models())}")
    return _REGISTRY[base]


def check_input_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3 or any(int(d) < 1 for d in input_shape):
        raise ValueError(f"input_shape must be (channels, height, width) with positive sizes, got {input_shape}")
    c, h, w = (int(d) for d in input_shape)
    return c, h, w


def check_num_classes(num_classes: int) -> int:
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    return int(num_classes)


def build_model(name: str, *, num_classes: int = 10, input_shape: tuple[int, int, int] | None = None) -> nn.Module:
    """Build a registered model with ``num_classes`` outputs for ``input_shape`` inputs (C, H, W).

    A ``+static_bn`` tag in ``name`` makes its BatchNorms static (:func:`static_batchnorm`).
    """
    spec = model_spec(name)
    shape = check_input_shape(input_shape if input_shape is not None else spec.default_input_shape)
    model = spec.resolve_builder()(num_classes=check_num_classes(num_classes), input_shape=shape)
    return static_batchnorm(model) if "static_bn" in split_model_name(name)[1] else model


def static_batchnorm(model: nn.Module) -> nn.Module:
    """HeteroFL's static BatchNorm, in place: no running statistics, batch statistics in training and evaluation.

    A sub-model's running statistics would mix channels of different widths and clients; HeteroFL
    tracks none. The buffers are set to ``None``, so they leave ``state_dict`` (and the wire).
    """
    from torch.nn.modules.batchnorm import _BatchNorm

    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.track_running_stats = False
            module.running_mean = None
            module.running_var = None
            module.num_batches_tracked = None
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
