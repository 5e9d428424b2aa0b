"""The AMP-FL paper's MNIST CNN: two 5x5 convs (6, 16 filters) with 2x2 max-pools, FC 128, FC classes.

With 1x28x28 inputs and 10 classes it has exactly 36,758 parameters.
"""

from __future__ import annotations

from torch import nn

KERNEL = 5


def _after_conv_pool(size: int) -> int:
    return (size - KERNEL + 1) // 2


def paper_cnn_feature_size(height: int, width: int) -> tuple[int, int]:
    """Spatial size of the feature map that enters the first FC layer."""
    h, w = _after_conv_pool(_after_conv_pool(height)), _after_conv_pool(_after_conv_pool(width))
    if h < 1 or w < 1:
        raise ValueError(f"cnn needs inputs of at least 16x16 pixels, got {height}x{width}")
    return h, w


class PaperCNN(nn.Module):
    def __init__(
        self, in_channels: int, height: int, width: int, num_classes: int, widths: tuple[int, int, int] = (6, 16, 128)
    ) -> None:
        super().__init__()
        c1, c2, hidden = widths
        fh, fw = paper_cnn_feature_size(height, width)
        # Pool, then ReLU: the paper's conv-ReLU-pool computes the same function and the same
        # gradients (max commutes with the monotone ReLU, and a window whose max is <= 0 passes
        # no gradient either way), but the ReLU and its backward run on a 4x smaller map. Both
        # are parameter-free, so state_dict names (features.0, features.3) are unchanged.
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, KERNEL),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, KERNEL),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * fh * fw, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.classifier(self.features(x))


def build_cnn(*, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    c, h, w = input_shape
    return PaperCNN(c, h, w, num_classes)
