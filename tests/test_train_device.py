"""train.device: checked by the config, carried as configured, resolved per process; central evaluation's engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_train_setup

from amp_fl import protocol as P
from amp_fl.bench.engine import old_evaluate
from amp_fl.client import device as device_module
from amp_fl.client.device import resolve_device
from amp_fl.client.inference import MaxPool2x2, PooledConv2d, inference_model, with_inference_pooling
from amp_fl.client.local import train_settings
from amp_fl.client.personal import evaluate_on_label_distribution
from amp_fl.client.trainer import ModelEvaluator
from amp_fl.config import load_config
from amp_fl.data.datasets import load_dataset
from amp_fl.errors import ConfigError
from amp_fl.models import build_model, model_spec
from amp_fl.protocol.fields import Fields
from amp_fl.pruning.submodel import module_arrays


def test_the_config_checks_the_name_and_the_setup_carries_it_unresolved() -> None:
    assert load_config({}).train.device == "auto"
    with pytest.raises(ConfigError, match="train.device"):
        load_config({"train": {"device": "tpu"}})
    setup = make_train_setup(device="cuda")  # not resolved on the server: the client's hardware decides
    wire = Fields(setup.to_config(), "test", ValueError)  # as every instruction's config carries it
    assert P.TrainSetup._from_fields(wire).device == "cuda"
    assert train_settings(setup).device == "cuda"


def test_cpu_resolves_and_a_missing_accelerator_names_train_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    resolve = resolve_device.__wrapped__  # uncached, for the patched torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)
    assert resolve("auto") == torch.device("cpu")
    for name in ("cuda", "mps"):
        with pytest.raises(ConfigError, match=f"train.device: {name}"):
            resolve(name)
    monkeypatch.setattr(device_module, "_mps_available", lambda: True)
    assert resolve("auto") == torch.device("mps")  # CUDA first, then MPS
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve("auto") == torch.device("cuda")


def test_the_evaluator_scores_as_the_old_evaluation_did() -> None:
    test = load_dataset("mnist5k", download=False).test
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = build_model("cnn", num_classes=10)
        arrays = [module_arrays(model), module_arrays(build_model("cnn", num_classes=10))]
    evaluator = ModelEvaluator(model, 256, memory_format=model_spec("cnn").train_memory_format)
    for weights in arrays:  # weights loaded in place, twice into the same module
        accuracy, loss = evaluator(weights, test)
        old_accuracy, old_loss = old_evaluate(weights, build_model("cnn", num_classes=10), test, 256)
        assert accuracy == old_accuracy
        assert loss == pytest.approx(old_loss, rel=1e-5)
    assert next(model.parameters()).is_contiguous()  # the caller's module is not re-laid out
    with pytest.raises(ValueError, match="data"):
        evaluator(arrays[0], type(test)(test.images[:0], test.labels[:0]))
    assert np.isfinite(loss)


def test_the_personalised_evaluation_scores_each_sample_as_a_plain_forward_pass_does() -> None:
    """The evaluator's per-sample pass (channels-last, index-free pools) against the model's own forward."""
    test = load_dataset("mnist5k", download=False).test
    with torch.random.fork_rng():
        torch.manual_seed(5)
        model = build_model("cnn", num_classes=10)
    arrays = module_arrays(model)
    evaluator = ModelEvaluator(model, 64, memory_format=model_spec("cnn").train_memory_format)
    weights = np.zeros(10)
    weights[[2, 7]] = [0.25, 0.75]  # a device holding two labels, one three times as often
    keep = np.flatnonzero(np.isin(test.labels, [2, 7]))
    with torch.no_grad():
        logits = model(torch.from_numpy(test.images[keep]))
    labels = torch.from_numpy(test.labels[keep])
    plain_correct = (logits.argmax(dim=1) == labels).numpy()
    plain_losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none").numpy()
    correct, losses = evaluator.per_sample(arrays, test, keep)
    assert correct.dtype == bool and np.array_equal(correct, plain_correct)
    np.testing.assert_allclose(losses, plain_losses, rtol=1e-5, atol=1e-6)
    score = evaluate_on_label_distribution(evaluator, arrays, test, weights)
    hits = [plain_correct[test.labels[keep] == c].mean() for c in (2, 7)]
    assert score.accuracy == pytest.approx(0.25 * hits[0] + 0.75 * hits[1], abs=1e-12)
    assert score.num_samples == keep.size
    with pytest.raises(ValueError, match="weight"):
        evaluate_on_label_distribution(evaluator, arrays, test, np.zeros(10))


@pytest.mark.parametrize(
    ("in_channels", "kernel", "size"),
    [(1, 5, (28, 28)), (3, 5, (32, 32)), (1, 5, (27, 29)), (2, 4, (13, 12)), (1, 3, (9, 9)), (4, 4, (10, 11))],
)
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_a_pooled_convolution_equals_the_convolution_then_its_pool(
    in_channels: int, kernel: int, size: tuple[int, int], layout: torch.memory_format
) -> None:
    gen = torch.Generator().manual_seed(in_channels * 100 + kernel)
    conv = torch.nn.Conv2d(in_channels, 6, kernel)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
        x = torch.randn(5, in_channels, *size, generator=gen).contiguous(memory_format=layout)
        expected = torch.nn.functional.max_pool2d(conv(x), 2)
        fused = PooledConv2d.replacing(conv)
        got = fused(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)  # the same products, summed in another order
    assert fused.weight is conv.weight and fused.bias is conv.bias


def test_the_cnn_evaluates_its_first_convolution_and_pool_as_one() -> None:
    model = build_model("cnn", num_classes=10)
    names = list(model.state_dict())
    fast = inference_model(build_model("cnn", num_classes=10))
    assert isinstance(fast.features[0], PooledConv2d) and isinstance(fast.features[1], torch.nn.Identity)
    assert not isinstance(fast.features[3], PooledConv2d)  # 6 input channels: oneDNN is fast there
    assert list(fast.state_dict()) == names  # arrays load into it as into the model
    padded = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.MaxPool2d(2))
    assert type(inference_model(padded)[0]) is torch.nn.Conv2d  # VGG's padded convolutions: not fused


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("size", [(24, 24), (7, 9)])
def test_inference_pooling_equals_max_pool2d(size: tuple[int, int], layout: torch.memory_format) -> None:
    x = torch.randn(5, 6, *size).contiguous(memory_format=layout)
    x[0, 0, 0, 0] = float("nan")  # a NaN wins its window, as in max_pool2d
    x[1, :, :2, :2] = 1.5  # a tie: a max is exact whichever corner wins
    pooled, expected = MaxPool2x2()(x), torch.nn.functional.max_pool2d(x, 2)
    assert torch.isnan(pooled[0, 0, 0, 0]) and torch.equal(pooled.nan_to_num(7.0), expected.nan_to_num(7.0))
    model = with_inference_pooling(build_model("vgg11", num_classes=10, input_shape=(3, 32, 32)))
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    assert sum(isinstance(m, MaxPool2x2) for m in model.modules()) == 5
    padded = torch.nn.MaxPool2d(2, padding=1)  # not the plain 2x2 pool: kept
    assert isinstance(with_inference_pooling(torch.nn.Sequential(padded))[0], torch.nn.MaxPool2d)
