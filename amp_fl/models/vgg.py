"""VGG-11 for 32x32 inputs, the variant that matches the AMP-FL paper's Table I, not its text.

Which variant: torchvision's configuration "A" (eight 3x3 convolutions, 64-128-256-256-512-512-512-512)
without BatchNorm, keeping all **five** 2x2 max-pools (a 512 x 1 x 1 map after the last) and a
classifier 512 -> 128 -> classes. With 3x32x32 inputs and 10 classes it has exactly 9,287,434
parameters: Table I's Q for VGG-11, which sets the simulated clock (Eqs. (6)-(7) and the keep
fraction (16)); so this variant is chosen, because the time axis of Figs. 4-5, 7, 9 and 10(b) depends
on Q and on C (362,285,568 FLOPs per sample, also Table I's).

Why not the paper's text: the text describes the last pool removed and fully connected layers of
512 and 128 (2048 -> 512 -> 128 -> classes on a 512 x 2 x 2 map): 10,336,522 parameters (about
10.3 M), which does not give Table I's Q. That variant is not offered as a model here (the run
would still use Table I's Q and C under ``model.cost_model=paper``, so only the trained network,
not the clock, would differ).

torchvision's ``VGG`` class hard-wires a 7x7 average pool and a 4096-wide classifier, so only the
layer plan is shared with it.
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
