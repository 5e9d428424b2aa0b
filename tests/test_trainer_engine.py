"""The client training engine: pool-then-ReLU CNN, channels-last trainer, sub-model templates, engine bench."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from amp_fl.bench import engine as engine_bench
from amp_fl.client.settings import TrainSettings
from amp_fl.client.trainer import ModelInfo, SubModelTrainer, batch_indices
from amp_fl.data.datasets import ArraySplit, load_dataset
from amp_fl.models import build_model, model_spec
from amp_fl.pruning import build_submodel, extract_arrays, module_arrays, region_map

SHAPE = (1, 28, 28)


@pytest.fixture(scope="module")
def digits() -> ArraySplit:
    # Real digits: constant backgrounds give many equal values inside pooling windows (ties).
    data = load_dataset("mnist5k", download=False)
    return ArraySplit(data.train.images[:256], data.train.labels[:256])


def paper_order_cnn(model: nn.Module) -> nn.Sequential:
    """The paper's conv-ReLU-pool order, sharing ``model``'s layers."""
    f, c = model.features, model.classifier  # type: ignore[union-attr]
    return nn.Sequential(f[0], nn.ReLU(), nn.MaxPool2d(2), f[3], nn.ReLU(), nn.MaxPool2d(2), *c)


def test_pool_then_relu_cnn_equals_the_paper_order_bit_for_bit(digits: ArraySplit) -> None:
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=10, input_shape=SHAPE)
    reference = paper_order_cnn(model)
    x, y = torch.from_numpy(digits.images[:64]), torch.from_numpy(digits.labels[:64])
    loss_fn = nn.CrossEntropyLoss()
    ours = loss_fn(out := model(x), y)
    grads = torch.autograd.grad(ours, list(model.parameters()))
    theirs = loss_fn(expected := reference(x), y)
    expected_grads = torch.autograd.grad(theirs, list(model.parameters()))
    assert torch.equal(out, expected)
    for g, e in zip(grads, expected_grads, strict=True):
        assert torch.equal(g, e)


def test_trainer_equals_a_plain_torch_loop(digits: ArraySplit) -> None:
    """Channels-last, foreach SGD and index_select change float rounding only."""
    regions = region_map("cnn", SHAPE, 10)
    torch.manual_seed(3)
    full = build_model("cnn", num_classes=10, input_shape=SHAPE)
    kept = [np.arange(0, g.size, 2) for g in regions.groups]
    arrays = extract_arrays(module_arrays(full), regions, kept)
    settings = TrainSettings(learning_rate=0.05, local_steps=8, batch_size=64)
    result = SubModelTrainer(digits, ModelInfo("cnn", SHAPE, 10), regions).fit(
        arrays, kept, settings, np.random.default_rng(7)
    )

    module = paper_order_cnn(build_submodel("cnn", SHAPE, 10, regions, kept, arrays=arrays))
    optimiser = torch.optim.SGD(module.parameters(), lr=settings.learning_rate, foreach=False)
    images, labels = torch.from_numpy(digits.images), torch.from_numpy(digits.labels)
    losses = []
    for idx in batch_indices(len(labels), 64, 8, np.random.default_rng(7)):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(module(images[idx]), labels[idx])
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    expected = [p.detach().numpy() for p in module.parameters()]  # the CNN's state is its parameters
    for got, want, sent in zip(result.weights, expected, arrays, strict=True):
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
        assert not np.array_equal(got, sent)  # it trained
    assert result.train_loss == pytest.approx(np.mean(losses), rel=1e-5)
    for g in result.gradient:
        assert g.dtype == np.float32 and g.flags.c_contiguous


def test_cnn_trains_channels_last_and_vgg_contiguous() -> None:
    assert model_spec("cnn").train_memory_format == torch.channels_last
    assert model_spec("vgg11").train_memory_format == torch.contiguous_format


def test_submodels_from_one_template_are_independent_and_freshly_initialised() -> None:
    regions = region_map("cnn", SHAPE, 10)
    kept = [np.arange(0, g.size, 3) for g in regions.groups]
    torch.manual_seed(5)
    first = build_submodel("cnn", SHAPE, 10, regions, kept)
    torch.manual_seed(5)
    second = build_submodel("cnn", SHAPE, 10, regions, kept)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)  # same generator state, same initialisation
    with torch.no_grad():
        next(first.parameters()).add_(1.0)
    assert not torch.equal(next(first.parameters()), next(second.parameters()))
    third = build_submodel("cnn", SHAPE, 10, regions, kept)
    assert not torch.equal(next(third.parameters()), next(second.parameters()))  # the generator moved on
    arrays = module_arrays(second)
    loaded = build_submodel("cnn", SHAPE, 10, regions, kept, arrays=arrays)
    for got, want in zip(module_arrays(loaded), arrays, strict=True):
        np.testing.assert_array_equal(got, want)
    assert loaded.training


def test_engine_bench_prints_the_ratio_and_the_breakdown(capsys: pytest.CaptureFixture[str]) -> None:
    with torch.random.fork_rng():
        threads = torch.get_num_threads()
        try:
            engine_bench.main(
                ["--repeats", "1", "--samples", "80", "--test-samples", "300", "--validation-samples", "100"]
            )
        finally:
            torch.set_num_threads(threads)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary, breakdown, evaluation = lines
    assert summary["batched_median_s"] > 0 and summary["batched_ratio_min"] <= summary["batched_ratio_median"]
    assert evaluation["same_accuracy"] and evaluation["max_loss_diff"] < 1e-4
    assert evaluation["old_median_s"] > 0 and evaluation["new_median_s"] > 0
    assert summary["devices"] == 10 and summary["ratio_min"] <= summary["ratio_median"] <= summary["ratio_max"]
    assert summary["trainer_median_s"] > 0 and summary["naive_median_s"] > 0
    assert set(breakdown) >= {"data_s", "forward_s", "backward_s", "optimizer_s", "step_s"}
