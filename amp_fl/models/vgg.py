"""VGG-11 for 32x32 inputs as in the AMP-FL paper: no BatchNorm, five max-pools, classifier 512->128->classes.

With 3x32x32 inputs and 10 classes it has exactly 9,287,434 parameters. torchvision's ``VGG`` class
hard-wires a 7x7 average pool and a 4096-wide classifier, so only the layer plan is shared with it.
"""

from __future__ import annotations

from torch import nn

# torchvision's configuration "A" (VGG-11); "M" is a 2x2 max-pool.
VGG11_PLAN: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG11_HIDDEN = 128
NUM_POOLS = sum(1 for item in VGG11_PLAN if item == "M")


def vgg_conv_widths() -> list[int]:
    return [int(item) for item in VGG11_PLAN if item != "M"]


class VGG11(nn.Module):
    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        num_classes: int,
        widths: list[int] | None = None,
        hidden: int = VGG11_HIDDEN,
    ) -> None:
        super().__init__()
        scale = 2**NUM_POOLS
        if height < scale or width < scale or height % scale or width % scale:
            raise ValueError(f"vgg11 needs height and width that are multiples of {scale}, got {height}x{width}")
        conv_widths = list(widths) if widths is not None else vgg_conv_widths()
        layers: list[nn.Module] = []
        channels, conv_iter = in_channels, iter(conv_widths)
        for item in VGG11_PLAN:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                out = next(conv_iter)
                layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(inplace=True)]
                channels = out
        self.features = nn.Sequential(*layers)
        flat = channels * (height // scale) * (width // scale)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
        )

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.classifier(self.features(x))


def build_vgg11(*, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    c, h, w = input_shape
    return VGG11(c, h, w, num_classes)
