"""CIFAR ResNet-18 (3x3 stem, stride 1, no max-pool) on torchvision's ``resnet18``.

With 3x32x32 inputs and 10 classes it has exactly 11,173,962 parameters.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet18

MIN_SIDE = 8  # three stride-2 stages must leave at least one pixel


def build_resnet18(*, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    c, h, w = input_shape
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(f"resnet18 needs inputs of at least {MIN_SIDE}x{MIN_SIDE}, got {h}x{w}")
    model = resnet18(weights=None, num_classes=num_classes)
    # CIFAR variant: a 3x3 stride-1 stem and no max-pool keep small images from shrinking too early.
    model.conv1 = nn.Conv2d(c, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model
