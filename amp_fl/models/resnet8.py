"""A narrow ResNet-8 for small inputs (28x28 MNIST-like or 32x32 CIFAR-like): 3x3 stem, three residual stages.

Stem conv (``widths[0]`` filters, BatchNorm, ReLU), then one torchvision ``BasicBlock`` per stage of
widths 16 / 32 / 64 (stride 1, 2, 2; a 1x1 conv + BatchNorm downsample where the width or stride
changes), global average pooling and the class layer: 1 + 3 x 2 + 1 = 8 weight layers. With
1x28x28 inputs and 10 classes it has 77,754 parameters, 76,432 (98 %) of them in the seven
convolutions (so global magnitude pruning has to prune convolutions, not one redundant FC layer
as in the paper's CNN), and one single-thread CPU SGD step at batch 32 costs about 25-35 ms: it
trains on 2 cores in CI-sized runs. The region map (:mod:`amp_fl.pruning.tracing`) couples the residual stream of
each stage: the stem and block 1's ``conv2``; block 2's ``conv2`` and its downsample; block 3's.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock

WIDTHS = (16, 32, 64)
MIN_SIDE = 4  # two stride-2 stages must leave at least one pixel


def _stage(in_width: int, width: int, stride: int) -> BasicBlock:
    downsample = None
    if stride != 1 or in_width != width:
        downsample = nn.Sequential(
            nn.Conv2d(in_width, width, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(width)
        )
    return BasicBlock(in_width, width, stride=stride, downsample=downsample)


class ResNet8(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, int, int] = WIDTHS) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.conv1 = nn.Conv2d(in_channels, w1, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _stage(w1, w1, 1)
        self.layer2 = _stage(w1, w2, 2)
        self.layer3 = _stage(w2, w3, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(w3, num_classes)
        for module in self.modules():  # torchvision's ResNet initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def build_resnet8(*, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    c, h, w = input_shape
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(f"resnet8 needs inputs of at least {MIN_SIDE}x{MIN_SIDE}, got {h}x{w}")
    return ResNet8(c, num_classes)
