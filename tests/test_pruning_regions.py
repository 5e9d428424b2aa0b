"""Region maps: groups, coupling, slicing rules and validation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from amp_fl.models import build_model
from amp_fl.pruning.maps import region_map, region_map_for
from amp_fl.pruning.regions import RegionGroup, check_kept

NUM_CLASSES = 7  # not 10, so that a hard-coded class count cannot pass


def test_cnn_groups_and_flatten_expansion() -> None:
    rm = region_map("cnn", (1, 28, 28), NUM_CLASSES)
    assert rm.groups == (
        RegionGroup("features.0", 6, ("features.0",)),
        RegionGroup("features.3", 16, ("features.3",)),
        RegionGroup("classifier.1", 128, ("classifier.1",)),
    )
    assert rm.layer_sizes == [6, 16, 128]
    assert rm.num_regions == 150
    assert rm.offsets == [0, 6, 22]
    rules = {r.name: r for r in rm.arrays}
    # 28 -> conv 24 -> pool 12 -> conv 8 -> pool 4: each conv2 filter feeds 4*4 FC inputs.
    fc1 = rules["classifier.1.weight"]
    assert (fc1.out_group, fc1.in_group, fc1.in_expand, fc1.shape) == (2, 1, 16, (128, 256))
    assert (rules["features.0.weight"].out_group, rules["features.0.weight"].in_group) == (0, None)
    assert (rules["features.3.weight"].out_group, rules["features.3.weight"].in_group) == (1, 0)
    # The class layer is never pruned: only its input axis is sliced.
    assert (rules["classifier.3.weight"].out_group, rules["classifier.3.weight"].in_group) == (None, 2)
    assert rules["classifier.3.bias"].out_group is None
    # A different input size changes the expansion (32 -> 28 -> 14 -> 10 -> 5).
    wider = {r.name: r for r in region_map("cnn", (1, 32, 32), NUM_CLASSES).arrays}
    assert wider["classifier.1.weight"].in_expand == 25


def test_vgg11_groups_and_non_square_flatten() -> None:
    rm = region_map("vgg11", (2, 32, 64), NUM_CLASSES)
    assert rm.layer_sizes == [64, 128, 256, 256, 512, 512, 512, 512, 128]
    assert [g.name for g in rm.groups] == [
        "features.0",
        "features.3",
        "features.6",
        "features.8",
        "features.11",
        "features.13",
        "features.16",
        "features.18",
        "classifier.1",
    ]
    fc1 = {r.name: r for r in rm.arrays}["classifier.1.weight"]
    assert (fc1.in_group, fc1.in_expand, fc1.shape) == (7, 2, (128, 1024))  # final map 1x2


def test_resnet18_residual_streams_are_coupled() -> None:
    rm = region_map("resnet18", (3, 32, 32), NUM_CLASSES)
    stream1 = ("conv1", "layer1.0.conv2", "layer1.1.conv2")
    expected = [
        RegionGroup("conv1", 64, stream1),
        RegionGroup("layer1.0.conv1", 64, ("layer1.0.conv1",)),
        RegionGroup("layer1.1.conv1", 64, ("layer1.1.conv1",)),
    ]
    for stage, width in ((2, 128), (3, 256), (4, 512)):
        expected += [
            RegionGroup(f"layer{stage}.0.conv1", width, (f"layer{stage}.0.conv1",)),
            RegionGroup(
                f"layer{stage}.0.conv2",
                width,
                (f"layer{stage}.0.conv2", f"layer{stage}.0.downsample.0", f"layer{stage}.1.conv2"),
            ),
            RegionGroup(f"layer{stage}.1.conv1", width, (f"layer{stage}.1.conv1",)),
        ]
    assert list(rm.groups) == expected
    rules = {r.name: r for r in rm.arrays}
    # BatchNorm state follows its conv's group; the counter is never sliced.
    for key in ("weight", "bias", "running_mean", "running_var"):
        assert rules[f"layer2.0.downsample.1.{key}"].out_group == rm.group_index("layer2.0.conv2")
        assert rules[f"layer3.1.bn1.{key}"].out_group == rm.group_index("layer3.1.conv1")
    counter = rules["bn1.num_batches_tracked"]
    assert (counter.out_group, counter.in_group, counter.is_parameter, counter.shape) == (None, None, False, ())
    assert not rules["bn1.running_var"].is_parameter and rules["bn1.weight"].is_parameter
    # The downsample conv reads the previous stage's stream; block conv1 reads the stream too.
    assert rules["layer2.0.downsample.0.weight"].in_group == rm.group_index("layer1.1.conv2")
    assert rules["layer2.1.conv1.weight"].in_group == rm.group_index("layer2.0.downsample.0")
    assert (rules["fc.weight"].out_group, rules["fc.weight"].in_group) == (None, rm.group_index("layer4.0.conv2"))


def test_resnet8_residual_streams_are_coupled() -> None:
    # One block per stage: the stem's output is block 1's identity; stages 2 and 3 add a downsample.
    rm = region_map("resnet8", (1, 28, 28), NUM_CLASSES)
    assert list(rm.groups) == [
        RegionGroup("conv1", 16, ("conv1", "layer1.conv2")),
        RegionGroup("layer1.conv1", 16, ("layer1.conv1",)),
        RegionGroup("layer2.conv1", 32, ("layer2.conv1",)),
        RegionGroup("layer2.conv2", 32, ("layer2.conv2", "layer2.downsample.0")),
        RegionGroup("layer3.conv1", 64, ("layer3.conv1",)),
        RegionGroup("layer3.conv2", 64, ("layer3.conv2", "layer3.downsample.0")),
    ]
    rules = {r.name: r for r in rm.arrays}
    assert rules["layer2.downsample.0.weight"].in_group == rm.group_index("conv1")
    assert rules["layer3.bn2.running_mean"].out_group == rm.group_index("layer3.conv2")
    assert (rules["fc.weight"].out_group, rules["fc.weight"].in_group) == (None, rm.group_index("layer3.conv2"))


@pytest.mark.parametrize(
    ("name", "shape"),
    [("cnn", (1, 28, 28)), ("vgg11", (3, 32, 32)), ("resnet18", (3, 16, 16)), ("resnet8", (1, 28, 28))],
)
def test_param_names_follow_state_dict_and_instance_map_matches(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=NUM_CLASSES, input_shape=shape)
    rm = region_map_for(model, shape)
    state = model.state_dict()
    assert rm.param_names == list(state)
    assert rm.shapes == [tuple(t.shape) for t in state.values()]
    assert rm == region_map(name, shape, NUM_CLASSES)  # a real model and a meta model give one map
    assert all(not layer.reads_model_input for layer in rm.layers[1:]) and rm.layers[0].reads_model_input


class _Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x)], dim=1)


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.conv(x))


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow cannot be traced
            return self.conv(x)
        return x


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (_Concat(), "unsupported operation"),
        (nn.Sequential(nn.Conv2d(4, 8, 3, groups=2)), "grouped convolution"),
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4)), "GroupNorm"),
        (_Shared(), "called twice"),
        (_Branchy(), "not traceable"),
    ],
)
def test_unsupported_architectures_raise(model: nn.Module, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        region_map_for(model, (model[0].in_channels if isinstance(model, nn.Sequential) else 3, 8, 8))


def test_unknown_model_name_raises() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        region_map("no-such-model", (3, 32, 32))


def test_check_kept_names_the_bad_group() -> None:
    rm = region_map("cnn", (1, 28, 28), NUM_CLASSES)
    good = [np.array([0, 2]), np.arange(16), np.array([5])]
    assert [k.dtype for k in check_kept(rm, good)] == [np.int64] * 3
    cases = [
        (good[:2], "expected 3 kept index sets"),
        ([good[0], np.array([], dtype=np.int64), good[2]], "'features.3' are empty"),
        ([np.array([2, 0]), good[1], good[2]], "'features.0' must be sorted and unique"),
        ([np.array([1, 1]), good[1], good[2]], "'features.0' must be sorted and unique"),
        ([good[0], good[1], np.array([128])], r"'classifier.1' out of range \[0, 128\)"),
        ([np.array([-1, 0]), good[1], good[2]], "'features.0' out of range"),
        ([np.array([0.0, 1.0]), good[1], good[2]], "'features.0' must be integers"),
        ([np.array([[0, 1]]), good[1], good[2]], "'features.0' must be 1-d"),
    ]
    for kept, message in cases:
        with pytest.raises(ValueError, match=message):
            check_kept(rm, kept)


def test_check_kept_accepts_exactly_the_valid_sets_brute_force() -> None:
    """The one-pass common case agrees with the definition on random sets of every integer dtype (and bool, floats)."""
    rm = region_map("cnn", (1, 28, 28), NUM_CLASSES)
    size = rm.groups[0].size  # 6
    rng = np.random.default_rng(0)
    dtypes = [np.int8, np.int32, np.int64, np.uint8, np.uint64, np.bool_, np.float64]
    for _ in range(600):
        dtype = dtypes[rng.integers(len(dtypes))]
        values = rng.integers(-2 if np.dtype(dtype).kind == "i" else 0, size + 2, size=rng.integers(0, 5))
        idx = np.sort(values) if rng.random() < 0.6 else values
        idx = idx.astype(dtype)
        ints = [int(v) for v in idx]
        valid = (
            idx.dtype.kind in "iu"
            and len(ints) > 0
            and all(0 <= v < size for v in ints)
            and all(a < b for a, b in itertools.pairwise(ints))
        )
        kept = [idx, np.arange(16), np.array([5])]
        if valid:
            (first, *_) = check_kept(rm, kept)
            assert first.dtype == np.int64 and first.tolist() == ints
        else:
            with pytest.raises(ValueError, match="'features.0'"):
                check_kept(rm, kept)
