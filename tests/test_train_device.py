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
from amp_fl.client.local import train_settings
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
