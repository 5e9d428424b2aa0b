"""The batched pass over a round's clients equals SubModelTrainer.fit per client (float tolerance), padding stays 0."""

from __future__ import annotations

import copy
import csv

import numpy as np
import pytest
import torch
from torch import nn

from amp_fl.client import batched
from amp_fl.client.batched import ClientJob, fit_batched
from amp_fl.client.grouped import check_groupable, clients_on_channels, grouped_model
from amp_fl.client.settings import TrainSettings
from amp_fl.client.trainer import ModelInfo, SubModelTrainer
from amp_fl.config import load_config
from amp_fl.data.datasets import ArraySplit
from amp_fl.errors import ConfigError
from amp_fl.launch.inprocess import run_in_process
from amp_fl.models import build_model
from amp_fl.pruning import extract_arrays, module_arrays, region_map

INFO = ModelInfo("cnn", (1, 28, 28), 10)


def _clients(info: ModelInfo = INFO) -> list[tuple[ArraySplit, list[np.ndarray], list[np.ndarray]]]:
    """Three clients of different keep counts (full, 60 %, 30 %) and data sizes."""
    regions = region_map(info.name, info.input_shape, info.num_classes)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        full = module_arrays(build_model(info.name, num_classes=info.num_classes, input_shape=info.input_shape))
    rng = np.random.default_rng(0)
    clients = []
    for k, fraction in enumerate((1.0, 0.6, 0.3)):
        kept = [np.sort(rng.choice(g.size, max(1, int(g.size * fraction)), replace=False)) for g in regions.groups]
        n = 40 + 10 * k
        images = rng.standard_normal((n, *info.input_shape)).astype(np.float32)
        data = ArraySplit(images, rng.integers(0, info.num_classes, n))
        clients.append((data, extract_arrays(full, regions, kept), kept))
    return clients


# The paper's CNN (conv, pool, linear), ResNet-8 (BatchNorm with running statistics and counters,
# residual additions, 1x1 downsampling, average pooling) and its static-BatchNorm variant.
MODELS = [INFO, ModelInfo("resnet8", (3, 16, 16), 10), ModelInfo("resnet8+static_bn", (3, 16, 16), 10)]


@pytest.mark.parametrize(
    ("objective", "info"),
    [("sgd", INFO), ("fedprox", INFO), ("sgd", MODELS[1]), ("fedprox", MODELS[1]), ("sgd", MODELS[2])],
    ids=lambda v: v.name if isinstance(v, ModelInfo) else v,
)
def test_batched_gradients_equal_the_trainers(objective: str, info: ModelInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    regions = region_map(info.name, info.input_shape, info.num_classes)
    settings = TrainSettings(0.05, 4, 8, objective=objective, proximal_mu=0.1 if objective == "fedprox" else 0.0)
    clients = _clients(info)
    one_by_one = [
        SubModelTrainer(data, info, regions).fit(arrays, kept, settings, np.random.default_rng([1, k]))
        for k, (data, arrays, kept) in enumerate(clients)
    ]
    stacked: dict[str, torch.Tensor] = {}
    original = batched._stacked

    def keep_state(*args, **kwargs):  # type: ignore[no-untyped-def]
        stacked.update(original(*args, **kwargs))
        return stacked

    monkeypatch.setattr(batched, "_stacked", keep_state)
    jobs = [
        ClientJob(data, arrays, kept, np.random.default_rng([1, k])) for k, (data, arrays, kept) in enumerate(clients)
    ]
    together = fit_batched(info, regions, jobs, settings)
    for ref, got, (_, arrays, _) in zip(one_by_one, together, clients, strict=True):
        assert [g.shape for g in got.gradient] == [a.shape for a in arrays]
        # Parameters' gradients and buffers' trained values (running statistics, counters).
        for r, g in zip(ref.gradient, got.gradient, strict=True):
            assert g.dtype == r.dtype
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose([w.max() for w in got.weights], [w.max() for w in ref.weights], rtol=1e-5)
        assert got.train_loss == pytest.approx(ref.train_loss, rel=1e-6)
        assert got.num_examples == ref.num_examples
    # The padding of the narrower clients is still exactly zero after training (module docstring).
    for k, (_, arrays, _) in enumerate(clients):
        for (name, state), array in zip(stacked.items(), arrays, strict=True):
            outside = state[k].detach().clone()
            outside[batched.corner(array.shape)] = 0
            assert not outside.any(), name


def test_a_layer_the_pass_cannot_group_is_named() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    state = {name: torch.stack([t, t]) for name, t in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"layer '1' \(GELU\).*batched_clients=false"):
        grouped_model(model, 2, state)


@pytest.mark.parametrize("name", ["cnn", "resnet8", "resnet8+static_bn", "resnet18", "vgg11"])
def test_every_registered_model_can_be_grouped(name: str) -> None:
    shape = (1, 28, 28) if name == "cnn" else (3, 32, 32)
    with torch.device("meta"):
        check_groupable(build_model(name, num_classes=10, input_shape=shape))


def test_an_in_process_run_refuses_a_model_it_cannot_group_before_round_1(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``train.batched_clients`` with a model the pass cannot group: one error naming the setting and the layer."""
    import amp_fl.models

    with torch.device("meta"):
        cumulative = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=None))
    with pytest.raises(ValueError, match=r"layer '1' keeps cumulative averages"):
        check_groupable(cumulative)
    unsupported = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    monkeypatch.setattr(amp_fl.models, "build_model", lambda *args, **kwargs: unsupported)
    cfg = load_config({"dataset": {"name": "mnist5k"}, "num_rounds": 2, "train": {"batched_clients": True}})
    with pytest.raises(ConfigError, match=r"invalid config train.batched_clients: model cnn: .*layer '1' \(GELU\)"):
        run_in_process(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_grouped_model_is_k_models_side_by_side() -> None:
    """Brute force: the grouped forward of K stacked models equals each model's own forward on its own input."""
    torch.manual_seed(0)
    models = [
        nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 25, 4))
        for _ in range(3)
    ]
    inputs = torch.randn(3, 6, 2, 5, 5)  # [K, B, C, H, W]
    states = [m.state_dict() for m in models]
    stacked = {name: torch.stack([s[name] for s in states]) for name in states[0]}  # copies, before training
    template = copy.deepcopy(models[0])
    expected = torch.stack([m(x) for m, x in zip(models, inputs, strict=True)])  # train mode: batch statistics
    got = grouped_model(template, 3, stacked)(clients_on_channels(inputs)).view(6, 3, 4).transpose(0, 1)
    torch.testing.assert_close(got, expected)
    for name in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        torch.testing.assert_close(stacked[name], torch.stack([m.state_dict()[name] for m in models]))


def test_apfl_is_not_batched() -> None:
    regions = region_map("cnn", (1, 28, 28), 10)
    data, arrays, kept = _clients()[0]
    with pytest.raises(ValueError, match="objective"):
        fit_batched(
            INFO, regions, [ClientJob(data, arrays, kept, np.random.default_rng(0))], TrainSettings(0.05, 1, 8, "apfl")
        )


@pytest.mark.parametrize("strategy", [{}, {"local_objective": "fedprox", "proximal_mu": 0.01, "compensation": "none"}])
def test_in_process_batched_rounds_match_one_by_one(tmp_path, strategy, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from amp_fl.client import app

    passes: list[int] = []

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        passes.append(len(args[2]))
        return fit_batched(*args, **kwargs)

    monkeypatch.setattr(app, "fit_batched", counted)
    base = {
        "dataset": {"name": "mnist5k"},
        "wireless": {"num_devices": 6, "num_rbs": 3},
        "num_rounds": 2,
        "train": {"local_steps": 2},
        "strategy": strategy,
    }
    runs = {}
    for batched_clients in (False, True):
        cfg = load_config({**base, "train": {**base["train"], "batched_clients": batched_clients}})
        run = run_in_process(cfg, tmp_path / str(batched_clients))
        runs[batched_clients] = list(csv.DictReader((run / "metrics.csv").open()))
    one_by_one, together = runs[False], runs[True]
    assert len(passes) == 2 and min(passes) >= 2  # one pass per round, over the round's scheduled clients
    assert [r["round"] for r in together] == [r["round"] for r in one_by_one] == ["0", "1", "2"]
    for a, b in zip(one_by_one, together, strict=True):
        assert a["num_received"] == b["num_received"]
        assert float(b["accuracy"]) == pytest.approx(float(a["accuracy"]), abs=0.01)
        assert float(b["loss"]) == pytest.approx(float(a["loss"]), rel=1e-3)
        if a["round"] != "0":
            assert float(b["train_loss"]) == pytest.approx(float(a["train_loss"]), rel=1e-4)
