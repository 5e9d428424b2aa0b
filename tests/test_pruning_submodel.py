"""Sub-models: slicing, building, equivalence with a zero-masked full model, scattering back."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from amp_fl.errors import InvalidReplyError
from amp_fl.models import build_model
from amp_fl.pruning.counts import submodel_param_count
from amp_fl.pruning.maps import region_map
from amp_fl.pruning.regions import KeptIndices, RegionMap
from amp_fl.pruning.submodel import (
    build_submodel,
    extract_arrays,
    held_masks,
    load_arrays,
    module_arrays,
    scatter_arrays,
)

NUM_CLASSES = 7
# Small legal inputs; vgg11's 32x64 makes the final map 1x2 (flatten expansion 2) and
# resnet18's 12x10 exercises uneven strides.
CASES = [("cnn", (1, 28, 28)), ("vgg11", (2, 32, 64)), ("resnet18", (3, 12, 10))]


def random_kept(rm: RegionMap, rng: np.random.Generator) -> KeptIndices:
    """Uneven random kept sets; one group keeps a single region and one keeps all."""
    sizes = rm.layer_sizes
    counts = [int(rng.integers(1, s + 1)) for s in sizes]
    single, full = rng.choice(len(sizes), size=2, replace=False)
    counts[single], counts[full] = 1, sizes[full]
    return [np.sort(rng.choice(s, size=c, replace=False)).astype(np.int64) for s, c in zip(sizes, counts, strict=True)]


def randomised_model(name: str, shape: tuple[int, int, int], seed: int) -> nn.Module:
    """A model in eval mode with He-scaled random weights and random biases and BatchNorm state,
    so activations stay O(1) through the depth and every parameter matters."""
    torch.manual_seed(seed)
    with torch.device("meta"):  # skip the default initialisation: every tensor is overwritten below
        model = build_model(name, num_classes=NUM_CLASSES, input_shape=shape)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, math.sqrt(2.0 / fan_in))
                if module.bias is not None:
                    module.bias.uniform_(-0.1, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.fill_(3)
    return model.eval()


def zero_pruned_regions(model: nn.Module, rm: RegionMap, kept: KeptIndices) -> None:
    """Reference pruning: zero the weights and biases of pruned output regions, and the BatchNorm
    weight and bias of pruned channels (so those channels output exactly zero)."""
    state = model.state_dict()
    with torch.no_grad():
        for rule in rm.arrays:
            if rule.out_group is None or rule.role not in ("weight", "bias", "norm_affine"):
                continue
            pruned = np.setdiff1d(np.arange(rule.shape[0]), kept[rule.out_group])
            state[rule.name][torch.from_numpy(pruned)] = 0


@pytest.mark.parametrize(("name", "shape"), CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_submodel_equals_zero_masked_full_model(name: str, shape: tuple[int, int, int], seed: int) -> None:
    rm = region_map(name, shape, NUM_CLASSES)
    rng = np.random.default_rng(seed)
    kept = random_kept(rm, rng)
    full = randomised_model(name, shape, seed)
    sub_arrays = extract_arrays(module_arrays(full), rm, kept)
    sub = build_submodel(name, shape, NUM_CLASSES, rm, kept, arrays=sub_arrays).eval()
    x = torch.from_numpy(rng.standard_normal((3, *shape)).astype(np.float32))
    with torch.no_grad():
        unpruned = full(x)
        zero_pruned_regions(full, rm, kept)
        expected, got = full(x), sub(x)
    assert expected.abs().max() > 0.05, "outputs too small for the comparison to mean anything"
    assert not torch.allclose(expected, unpruned, atol=1e-3), "pruning had no effect"
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # Physically smaller: its state has exactly the extracted shapes, and nothing more.
    assert [tuple(t.shape) for t in sub.state_dict().values()] == [a.shape for a in sub_arrays]
    assert sum(p.numel() for p in sub.parameters()) < sum(p.numel() for p in full.parameters())
    for got_array, sent in zip(module_arrays(sub), sub_arrays, strict=True):
        np.testing.assert_array_equal(got_array, sent)


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_scatter_restores_held_entries_and_zeros_elsewhere(name: str, shape: tuple[int, int, int]) -> None:
    rm = region_map(name, shape, NUM_CLASSES)
    kept = random_kept(rm, np.random.default_rng(7))
    full_arrays = module_arrays(randomised_model(name, shape, 7))
    sub_arrays = extract_arrays(full_arrays, rm, kept)
    for a in sub_arrays:
        assert a.flags.c_contiguous and a.dtype in (np.float32, np.int64)
    restored, masks = scatter_arrays(sub_arrays, rm, kept, rm.shapes)
    for rule, original, back, held in zip(rm.arrays, full_arrays, restored, masks, strict=True):
        assert back.shape == held.shape == rule.shape, rule.name
        np.testing.assert_array_equal(back[held], original[held], err_msg=rule.name)
        assert not back[~held].any(), rule.name
    # Held parameter entries are exactly the sub-model's parameters (BatchNorm buffers excluded).
    held_params = sum(int(m.sum()) for rule, m in zip(rm.arrays, masks, strict=True) if rule.is_parameter)
    sub = build_submodel(name, shape, NUM_CLASSES, rm, kept)
    assert held_params == sum(p.numel() for p in sub.parameters()) == submodel_param_count(rm, [len(k) for k in kept])
    assert held_params == sum(a.size for rule, a in zip(rm.arrays, sub_arrays, strict=True) if rule.is_parameter)
    for a, b in zip(masks, held_masks(rm, kept), strict=True):
        np.testing.assert_array_equal(a, b)


def test_held_mask_requires_both_output_and_input_region() -> None:
    rm = region_map("cnn", (1, 28, 28), NUM_CLASSES)
    kept = [np.array([1, 4]), np.array([0, 3, 15]), np.array([2])]
    masks = dict(zip(rm.param_names, held_masks(rm, kept), strict=True))
    conv2 = masks["features.3.weight"]  # (16, 6, 5, 5)
    assert conv2.sum() == 3 * 2 * 25
    assert conv2[3, 4].all() and not conv2[3, 2].any() and not conv2[5, 4].any()
    fc1 = masks["classifier.1.weight"]  # (128, 16*4*4): input channel 15 owns features 240..255
    assert fc1.sum() == 3 * 16
    assert fc1[2, 240:256].all() and fc1[2, 48:64].all() and not fc1[2, 64:240].any() and not fc1[3].any()
    assert masks["classifier.3.bias"].all() and masks["classifier.3.weight"].sum() == NUM_CLASSES


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_keeping_everything_gives_the_full_model(name: str, shape: tuple[int, int, int]) -> None:
    rm = region_map(name, shape, NUM_CLASSES)
    full = randomised_model(name, shape, 3)
    arrays = module_arrays(full)
    kept = rm.full_kept()
    sub_arrays = extract_arrays(dict(zip(rm.param_names, arrays, strict=True)), rm, kept)  # dict input too
    for a, b in zip(sub_arrays, arrays, strict=True):
        np.testing.assert_array_equal(a, b)
    sub = build_submodel(name, shape, NUM_CLASSES, rm, kept, arrays=sub_arrays).eval()
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(sub(x), full(x), atol=1e-6, rtol=1e-6)
    restored, masks = scatter_arrays(sub_arrays, rm, kept)
    assert all(m.all() for m in masks)
    for a, b in zip(restored, arrays, strict=True):
        np.testing.assert_array_equal(a, b)


def test_submodel_trains_and_extract_does_not_alias_inputs() -> None:
    rm = region_map("resnet18", (3, 8, 8), NUM_CLASSES)
    kept = random_kept(rm, np.random.default_rng(5))
    arrays = module_arrays(randomised_model("resnet18", (3, 8, 8), 5))
    sub_arrays = extract_arrays(arrays, rm, kept)
    sub_arrays[-1][...] = 0  # the last array is fc.bias, which is never sliced
    assert arrays[-1].any()
    sub = build_submodel("resnet18", (3, 8, 8), NUM_CLASSES, rm, kept, arrays=sub_arrays).train()
    assert all(t.device.type == "cpu" for t in sub.state_dict().values())
    loss = nn.functional.cross_entropy(sub(torch.randn(4, 3, 8, 8)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in sub.parameters())
    assert int(sub.state_dict()["bn1.num_batches_tracked"]) == 3 + 1  # counters travel with the arrays


def test_bad_arrays_raise_naming_the_parameter() -> None:
    rm = region_map("cnn", (1, 28, 28), NUM_CLASSES)
    kept = [np.array([0, 1]), np.arange(4), np.arange(10)]
    arrays = module_arrays(build_model("cnn", num_classes=NUM_CLASSES))
    with pytest.raises(ValueError, match="expected 8 arrays"):
        extract_arrays(arrays[:-1], rm, kept)
    bad = list(arrays)
    bad[2] = np.zeros((16, 6, 3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="'features.3.weight' has shape"):
        extract_arrays(bad, rm, kept)
    with pytest.raises(ValueError, match="missing \\['classifier.3.bias'\\]"):
        extract_arrays(dict(zip(rm.param_names[:-1], arrays, strict=False)), rm, kept)
    with pytest.raises(ValueError, match="'features.0' must be sorted"):
        extract_arrays(arrays, rm, [np.array([1, 0]), kept[1], kept[2]])
    sub = extract_arrays(arrays, rm, kept)
    sub[4] = sub[4][:, :-1]
    with pytest.raises(InvalidReplyError, match="'classifier.1.weight' has shape"):
        scatter_arrays(sub, rm, kept)
    with pytest.raises(InvalidReplyError, match="expected 8 arrays"):
        scatter_arrays(sub[:3], rm, kept)
    with pytest.raises(ValueError, match="full_shapes"):
        scatter_arrays(extract_arrays(arrays, rm, kept), rm, kept, [(1,)] * 8)
    module = build_submodel("cnn", (1, 28, 28), NUM_CLASSES, rm, kept)
    with pytest.raises(ValueError, match="'features.0.weight' has shape"):
        load_arrays(module, arrays)
    with pytest.raises(ValueError, match="region map does not describe"):
        build_submodel("vgg11", (3, 32, 32), NUM_CLASSES, rm, kept)
    with pytest.raises(ValueError, match="region map does not describe"):
        build_submodel("cnn", (1, 28, 28), NUM_CLASSES + 1, rm, kept)
    with pytest.raises(ValueError, match="region map does not describe"):
        build_submodel("cnn", (1, 32, 32), NUM_CLASSES, rm, kept)
