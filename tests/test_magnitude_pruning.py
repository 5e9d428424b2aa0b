"""Issue 10: global magnitude pruning (IMP and one-shot) against torch's global_unstructured, by hand, and in training.

Masks are compared entry for entry with ``torch.nn.utils.prune.global_unstructured(...,
pruning_method=L1Unstructured)`` applied to the same weights (and, for IMP, to the same sequence
of weights between steps); counts are checked against hand-computed plans; local training is
checked to leave every pruned entry exactly zero.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from amp_fl.client.settings import TrainSettings
from amp_fl.client.sparse_fedavg import MaskedTrainer, prunable_arrays
from amp_fl.client.trainer import ModelInfo
from amp_fl.data.datasets import ArraySplit
from amp_fl.models import build_model
from amp_fl.pruning.magnitude import (
    MagnitudePruner,
    PruningPlan,
    global_magnitude_prune,
    imp_steps_needed,
    rewind,
    sparsity_of,
)
from amp_fl.pruning.maps import region_map_for
from amp_fl.pruning.submodel import module_arrays

NUM_CLASSES = 7  # not 10, so that a hard-coded class count cannot pass


def _model(name: str, input_shape: tuple[int, int, int], seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model(name, num_classes=NUM_CLASSES, input_shape=input_shape)


def _weight_params(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _torch_masks(model: nn.Module) -> list[np.ndarray]:
    return [m.weight_mask.detach().numpy().astype(bool) for m, _ in _weight_params(model)]


def _pruner_for(model: nn.Module, input_shape, **plan) -> tuple[MagnitudePruner, list[int]]:
    regions = region_map_for(model, input_shape)
    flags = prunable_arrays(regions)
    return MagnitudePruner(regions.shapes, flags, **plan), [i for i, f in enumerate(flags) if f]


@pytest.mark.parametrize(
    ("name", "input_shape", "target"),
    [
        ("cnn", (1, 28, 28), 0.5),
        ("cnn", (1, 28, 28), 0.8),
        ("cnn", (1, 28, 28), 0.9),
        ("cnn", (1, 28, 28), 0.95),
        ("resnet18", (3, 16, 16), 0.9),
    ],
)
def test_one_shot_mask_equals_torch_global_unstructured(name, input_shape, target):
    model = _model(name, input_shape)
    weights = module_arrays(model)
    pruner, index = _pruner_for(model, input_shape, method="one_shot", target=target, first_round=0)
    # The prunable arrays are exactly the conv / linear weights torch would be given.
    assert len(index) == len(_weight_params(model))
    step = pruner.prune_after(0, weights)
    assert step is not None and step.count == round(target * pruner.plan.num_prunable)

    prune.global_unstructured(_weight_params(model), pruning_method=prune.L1Unstructured, amount=target)
    for ours, theirs in zip(pruner.prunable_masks, _torch_masks(model), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    # Exact achieved sparsity: round(target * N) entries removed, N = every conv / linear weight.
    assert pruner.num_pruned == round(target * sum(p.numel() for p in model.parameters() if p.dim() > 1))


@pytest.mark.parametrize(("rate", "target"), [(0.2, 0.9), (0.2, 0.95), (0.5, 0.8), (0.35, 0.5)])
def test_imp_masks_equal_torch_step_by_step(rate, target):
    """IMP over several steps with the weights changing between steps (as training changes them).

    torch prunes ``amount`` of the still-unpruned entries of the *current* weights
    (``weight_orig * weight_mask``); each step of ours gets the same weights.
    """
    input_shape = (1, 28, 28)
    model = _model("cnn", input_shape, seed=1)
    pruner, index = _pruner_for(model, input_shape, method="imp", target=target, rate=rate, interval=3, first_round=2)
    steps = pruner.plan.steps()
    assert len(steps) >= 2
    assert [s.round for s in steps] == [2 + 3 * i for i in range(len(steps))]
    rng = np.random.default_rng(5)
    params = _weight_params(model)
    for i, step in enumerate(steps):
        if i > 0:  # "training": new weights, the same in both (pruned entries stay 0 in ours)
            for module, _ in params:
                orig = module.weight_orig
                with torch.no_grad():
                    orig.copy_(torch.from_numpy(rng.standard_normal(orig.shape).astype(np.float32)))
            with torch.no_grad():  # torch recomputes ``weight = weight_orig * weight_mask`` in its forward pre-hook
                model(torch.zeros(1, *input_shape))
        weights = module_arrays(model) if i == 0 else None
        if weights is None:
            weights = [np.zeros(s, dtype=np.float32) for s in pruner.shapes]
            for j, (module, _) in zip(index, params, strict=True):
                weights[j] = (module.weight_orig * module.weight_mask).detach().numpy().copy()
        assert pruner.prune_after(step.round, weights) == step
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=step.torch_amount)
        for ours, theirs in zip(pruner.prunable_masks, _torch_masks(model), strict=True):
            np.testing.assert_array_equal(ours, theirs)
        assert pruner.num_pruned == sum(s.count for s in steps[: i + 1])
    assert pruner.num_pruned == round(target * pruner.plan.num_prunable)
    assert pruner.sparsity == pytest.approx(round(target * pruner.plan.num_prunable) / pruner.plan.num_prunable)


def test_imp_plan_by_hand():
    """N = 1000, rate 0.2, target 0.5: remove 200, 160, 128, then the last 12 (not round(0.2 * 512) = 102)."""
    plan = PruningPlan("imp", 0.5, 1000, rate=0.2, interval=4, first_round=3)
    steps = plan.steps()
    assert [s.count for s in steps] == [200, 160, 128, 12]
    assert [s.round for s in steps] == [3, 7, 11, 15]
    assert [s.torch_amount for s in steps] == [0.2, 0.2, 0.2, 12]
    assert [s.sparsity for s in steps] == [0.2, 0.36, 0.488, 0.5]
    assert plan.last_round == 15 and plan.step_after(7) == steps[1] and plan.step_after(8) is None
    one_shot = PruningPlan("one_shot", 0.5, 1000, first_round=3).steps()
    assert [(s.round, s.count, s.torch_amount) for s in one_shot] == [(3, 500, 500)]
    assert PruningPlan("imp", 0.0, 1000).steps() == ()


@pytest.mark.parametrize("num", [1, 7, 101, 36_758])
@pytest.mark.parametrize("target", [0.0, 0.5, 0.8, 0.9, 0.95, 0.999])
@pytest.mark.parametrize("method", ["imp", "one_shot"])
def test_achieved_sparsity_is_exactly_the_rounded_target(num, target, method):
    plan = PruningPlan(method, target, num, rate=0.2)
    assert sum(s.count for s in plan.steps()) == round(target * num)
    assert all(s.count >= 1 for s in plan.steps())


def test_imp_steps_needed_formula():
    assert imp_steps_needed(0.9, 0.2) == 11  # 0.8^10 = 0.107 > 0.1 >= 0.8^11 = 0.086
    assert imp_steps_needed(0.95, 0.2) == 14
    assert imp_steps_needed(0.5, 0.5) == 1
    assert imp_steps_needed(0.0, 0.2) == 0
    for target, rate in ((0.9, 0.2), (0.95, 0.2), (0.8, 0.5)):
        assert len(PruningPlan("imp", target, 36_758, rate=rate).steps()) == imp_steps_needed(target, rate)


def test_ties_go_to_the_lower_flat_index_and_pruned_entries_never_return():
    weights = [np.array([[1.0, -1.0], [2.0, 0.5]]), np.array([0.5, 3.0, -1.0])]
    masks = [np.ones((2, 2), bool), np.ones(3, bool)]
    first = global_magnitude_prune(weights, masks, 3)  # 0.5 (index 3), 0.5 (index 4), then 1.0 at index 0
    np.testing.assert_array_equal(first[0], [[False, True], [True, False]])
    np.testing.assert_array_equal(first[1], [False, True, True])
    # An already pruned entry with a now-large weight is not revived; the next smallest kept one goes.
    weights[0][0, 0] = 100.0
    second = global_magnitude_prune(weights, first, 1)
    np.testing.assert_array_equal(second[0], [[False, False], [True, False]])
    assert sparsity_of(second) == pytest.approx(4 / 7)
    with pytest.raises(ValueError, match="count"):
        global_magnitude_prune(weights, second, 4)


def test_rewind_resets_survivors_to_the_snapshot():
    snapshot = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([7.0, 8.0], dtype=np.float32)]
    trained = [s + 100 for s in snapshot]
    mask = np.array([[True, False, True], [False, True, True]])
    out = rewind(trained, snapshot, [mask, None])
    np.testing.assert_array_equal(out[0], np.where(mask, snapshot[0], 0))
    np.testing.assert_array_equal(out[1], snapshot[1])


@pytest.mark.parametrize(("name", "input_shape"), [("cnn", (1, 28, 28)), ("resnet18", (3, 16, 16))])
def test_masked_entries_stay_zero_through_local_training(name, input_shape):
    model = _model(name, input_shape, seed=2)
    regions = region_map_for(model, input_shape)
    pruner = MagnitudePruner(regions.shapes, prunable_arrays(regions), method="one_shot", target=0.9)
    weights = module_arrays(model)
    pruner.prune_after(0, weights)
    weights = pruner.apply(weights)
    rng = np.random.default_rng(0)
    data = ArraySplit(
        rng.standard_normal((50, *input_shape)).astype(np.float32), rng.integers(0, NUM_CLASSES, 50).astype(np.int64)
    )
    trainer = MaskedTrainer(data, ModelInfo(name, input_shape, NUM_CLASSES), regions)
    result = trainer.fit(weights, pruner.masks, TrainSettings(0.5, 6, 16), np.random.default_rng(1))
    moved = 0
    for w_end, update, mask in zip(result.weights, result.update, pruner.masks, strict=True):
        if mask is None:
            continue
        assert np.all(w_end[~mask] == 0.0) and np.all(update[~mask] == 0.0)
        moved += int(np.count_nonzero(update[mask]))
    assert moved > 0.5 * pruner.plan.num_prunable * 0.1  # the surviving weights did train
    assert result.num_examples == 6 * 16 and np.isfinite(result.train_loss)
