"""Parameter and FLOP counts of sub-models, without building them."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from amp_fl.pruning.counts import (
    forward_flops_per_sample,
    keep_counts_for_fraction,
    submodel_array_count,
    submodel_param_count,
    submodel_shapes,
    training_flops_per_sample,
)
from amp_fl.pruning.maps import region_map
from amp_fl.pruning.submodel import build_submodel

VGG_WIDTHS = [64, 128, 256, 256, 512, 512, 512, 512]


@pytest.mark.parametrize(
    ("name", "shape", "params"),
    [("cnn", (1, 28, 28), 36_758), ("vgg11", (3, 32, 32), 9_287_434), ("resnet18", (3, 32, 32), 11_173_962)],
)
def test_full_model_parameter_counts(name: str, shape: tuple[int, int, int], params: int) -> None:
    rm = region_map(name, shape, 10)
    assert submodel_param_count(rm) == submodel_param_count(rm, rm.layer_sizes) == params
    # 9,600 BatchNorm running-statistics entries plus 20 counters travel with resnet18's arrays.
    assert submodel_array_count(rm) - params == (9_620 if name == "resnet18" else 0)


def closed_form(
    q: int, k: Fraction, first_weights: int, hidden_biases: int, class_weights: int, class_biases: int
) -> Fraction:
    """Q(k) when every layer keeps the fraction k of its regions (k * I_l integral).

    Hidden weights have both axes pruned (k^2); the first layer's weights keep all inputs and
    hidden biases have one axis (k instead of k^2); class weights keep all outputs (k); class
    biases are not pruned (1 instead of k^2).
    """
    return k * k * q + (k - k * k) * (first_weights + hidden_biases + class_weights) + (1 - k * k) * class_biases


@pytest.mark.parametrize("k", [Fraction(1, 2), Fraction(1)])
def test_cnn_closed_form(k: Fraction) -> None:
    rm = region_map("cnn", (1, 28, 28), 10)
    counts = keep_counts_for_fraction(rm.layer_sizes, float(k))
    expected = closed_form(36_758, k, 6 * 25, 6 + 16 + 128, 128 * 10, 10)
    assert expected.denominator == 1 and submodel_param_count(rm, counts) == expected
    assert submodel_param_count(rm, [3, 8, 64]) == 9_592  # by hand: 78 + 608 + 8,256 + 650


@pytest.mark.parametrize(("k", "classes"), [(0.25, 7), (0.75, 7), (0.5, 13)])
def test_cnn_layerwise_formula(k: float, classes: int) -> None:
    rm = region_map("cnn", (1, 28, 28), classes)
    a, b, c = keep_counts_for_fraction(rm.layer_sizes, k)
    # conv1 (a x 1 x 5 x 5 + a), conv2 (b x a x 5 x 5 + b), fc1 (c x b*4*4 + c), fc2 (classes x c + classes).
    expected = a * 25 + a + b * a * 25 + b + c * b * 16 + c + classes * c + classes
    assert submodel_param_count(rm, [a, b, c]) == expected


@pytest.mark.parametrize("k", [Fraction(1, 2), Fraction(1, 4), Fraction(1, 8)])
def test_vgg11_closed_form(k: Fraction) -> None:
    rm = region_map("vgg11", (3, 32, 32), 10)
    counts = keep_counts_for_fraction(rm.layer_sizes, float(k))
    assert counts == [int(w * k) for w in [*VGG_WIDTHS, 128]]
    expected = closed_form(9_287_434, k, 64 * 3 * 9, sum(VGG_WIDTHS) + 128, 128 * 10, 10)
    assert expected.denominator == 1 and submodel_param_count(rm, counts) == expected


CASES = [("cnn", (1, 28, 28), 7), ("vgg11", (3, 32, 32), 7), ("resnet18", (3, 16, 16), 7)]


def random_counts(sizes: list[int], seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    counts = [int(rng.integers(1, s + 1)) for s in sizes]
    counts[int(rng.integers(len(sizes)))] = 1
    return counts


@pytest.mark.parametrize(("name", "shape", "classes"), CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_counts_match_built_submodel_and_flop_counter(
    name: str, shape: tuple[int, int, int], classes: int, seed: int
) -> None:
    rm = region_map(name, shape, classes)
    counts = random_counts(rm.layer_sizes, seed)
    kept = [np.arange(c, dtype=np.int64) for c in counts]
    sub = build_submodel(name, shape, classes, rm, kept)
    assert submodel_param_count(rm, counts) == sum(p.numel() for p in sub.parameters())
    assert submodel_array_count(rm, counts) == sum(t.numel() for t in sub.state_dict().values())
    assert submodel_shapes(rm, counts) == [tuple(t.shape) for t in sub.state_dict().values()]
    # FLOPs only depend on shapes, so count them on the meta device (no arithmetic is done).
    sub = sub.to("meta").train()
    batch = 3
    x = torch.zeros((batch, *shape), device="meta")
    target = torch.zeros(batch, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as forward_only:
        sub(x)
    assert forward_only.get_total_flops() == batch * forward_flops_per_sample(rm, counts)
    with FlopCounterMode(display=False) as training:
        torch.nn.functional.cross_entropy(sub(x), target).backward()
    assert training.get_total_flops() == batch * training_flops_per_sample(rm, counts)


def test_full_model_flops() -> None:
    cnn = region_map("cnn", (1, 28, 28), 10)
    # 2 x MACs: conv1 24*24*6*25, conv2 8*8*16*6*25, fc1 256*128, fc2 128*10.
    assert forward_flops_per_sample(cnn) == 2 * (86_400 + 153_600 + 32_768 + 1_280) == 548_096
    # Backward is 2x forward except for conv1, whose input needs no gradient.
    assert training_flops_per_sample(cnn) == 3 * 548_096 - 2 * 86_400
    assert forward_flops_per_sample(region_map("vgg11", (3, 32, 32), 10)) == 305_662_464


def test_counts_are_validated() -> None:
    rm = region_map("cnn", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="expected 3 keep counts"):
        submodel_param_count(rm, [1, 2])
    with pytest.raises(ValueError, match=r"'features.3' must be in \[0, 16\], got 17"):
        forward_flops_per_sample(rm, [1, 17, 3])
    assert submodel_param_count(rm, [0, 0, 0]) == 10  # only the class bias is left
