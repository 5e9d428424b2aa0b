"""Issue 22: APFL with Deng et al.'s adaptive alpha (``strategy.apfl_alpha_mode=adaptive``)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from conftest import cnn_arrays, make_train_setup
from tiny_linear import LR, X, Y, linear, weights_of
from torch import nn

from amp_fl import protocol as P
from amp_fl.client.app import app as client_app
from amp_fl.client.local import batch_rng, local_data, model_info, train_settings
from amp_fl.client.objectives import apfl_step
from amp_fl.client.settings import MixingWeight
from amp_fl.client.trainer import SubModelTrainer
from amp_fl.config import load_config
from amp_fl.errors import ConfigError
from amp_fl.launch.inprocess import FIRST_NODE_ID, InProcessGrid, run_in_process


def _adaptive_step(w, v, alpha: MixingWeight):
    model, personal = linear(w), linear(v)
    optimiser = torch.optim.SGD(model.parameters(), lr=LR)
    personal_optimiser = torch.optim.SGD(personal.parameters(), lr=LR)
    loss = apfl_step(model, optimiser, personal, personal_optimiser, X, Y, nn.MSELoss(), alpha=alpha)
    return loss, weights_of(model), weights_of(personal)


def test_one_adaptive_alpha_step_by_hand():
    """w = (1, 2), v = (3, 1), alpha = 0.25, f(u) = (u . x)^2 with x = (1, 1).

    mixed = 0.25 (3, 1) + 0.75 (1, 2) = (1.5, 1.75), mixed . x = 3.25, grad f(mixed) = 6.5 (1, 1).
    d f / d alpha = <v - w, grad f(mixed)> = (2, -1) . (6.5, 6.5) = 6.5; at step size 0.01:
    alpha' = 0.25 - 0.065 = 0.185. v and w move as with a fixed alpha of 0.25 (pre-step state):
    v' = (3, 1) - 0.1 * 0.25 * (6.5, 6.5) = (2.8375, 0.8375); w' = (1, 2) - 0.1 * (6, 6) = (0.4, 1.4).
    """
    alpha = MixingWeight(0.25, 0.01)
    loss, w, v = _adaptive_step([1.0, 2.0], [3.0, 1.0], alpha)
    assert loss == pytest.approx(9.0)
    assert alpha.value == pytest.approx(0.185, abs=1e-6)
    assert v == pytest.approx([2.8375, 0.8375], abs=1e-6)
    assert w == pytest.approx([0.4, 1.4], abs=1e-6)


def test_alpha_is_clipped_to_0_and_1():
    # d f / d alpha = 6.5 at step size 0.1: 0.25 - 0.65 < 0 -> 0.
    down = MixingWeight(0.25, 0.1)
    _adaptive_step([1.0, 2.0], [3.0, 1.0], down)
    assert down.value == 0.0
    # v = (1, 0): mixed = (1, 1.5), grad f = 5 (1, 1), <v - w, g> = (0, -2) . (5, 5) = -10: 0.25 + 1 > 1 -> 1.
    up = MixingWeight(0.25, 0.1)
    _adaptive_step([1.0, 2.0], [1.0, 0.0], up)
    assert up.value == 1.0
    with pytest.raises(ValueError, match="alpha"):
        MixingWeight(1.5, 0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        MixingWeight(0.5, 0.0)


SETUP = make_train_setup(
    seed=2,
    num_devices=4,
    partition="shards",
    local_steps=3,
    batch_size=16,
    local_objective="apfl",
    proximal_mu=0.0,
    apfl_alpha=0.25,
    apfl_alpha_lr=0.05,
)
DEVICE = 1


def _train(grid, regions, weights, server_round):
    instruction = P.TrainInstruction(
        round=server_round,
        device=DEVICE,
        setup=SETUP,
        names=tuple(regions.param_names),
        arrays=tuple(weights),
        kept=tuple(regions.full_kept()),
    )
    (reply,) = grid.send_and_receive([instruction.to_message(FIRST_NODE_ID + DEVICE)])
    assert not reply.has_error()


def test_the_client_keeps_its_adapted_alpha_in_its_state_across_rounds():
    regions, w0 = cnn_arrays(seed=1)
    grid = InProcessGrid(client_app, SETUP.num_devices)
    state = grid.contexts[FIRST_NODE_ID + DEVICE].state
    trainer = SubModelTrainer(local_data(SETUP, DEVICE), model_info(SETUP), regions)
    assert P.STATE_ALPHA not in state.config_records
    _train(grid, regions, w0, 1)
    # The same steps by hand: the trainer with a MixingWeight starting at apfl_alpha.
    alpha = MixingWeight(0.25, 0.05)
    settings = dataclasses.replace(train_settings(SETUP), alpha=alpha)
    first = trainer.fit(w0, regions.full_kept(), settings, batch_rng(SETUP, DEVICE, 1), [a.copy() for a in w0])
    stored = float(state.config_records[P.STATE_ALPHA]["alpha"])
    assert stored == alpha.value != 0.25
    # Round 2 starts from the stored alpha (and v), not from apfl_alpha again.
    _train(grid, regions, first.weights, 2)
    settings2 = dataclasses.replace(train_settings(SETUP), alpha=alpha)
    assert first.personal is not None
    trainer.fit(first.weights, regions.full_kept(), settings2, batch_rng(SETUP, DEVICE, 2), first.personal)
    assert float(state.config_records[P.STATE_ALPHA]["alpha"]) == alpha.value


BASE = {
    "dataset": {"name": "mnist5k"},
    "wireless": {"num_devices": 5, "num_rbs": 3},
    "num_rounds": 3,
    "seed": 1,
    "scheduling": {"name": "full_model"},
}
APFL = {"compensation": "none", "local_objective": "apfl", "apfl_alpha": 0.25, "personal_eval_interval": 3}


def test_an_adaptive_apfl_run_reports_personal_and_global_accuracy(tmp_path):
    fixed = run_in_process(load_config({**BASE, "strategy": APFL}), tmp_path / "fixed")
    adaptive_cfg = load_config({**BASE, "strategy": {**APFL, "apfl_alpha_mode": "adaptive"}})
    adaptive = run_in_process(adaptive_cfg, tmp_path / "adaptive")
    rows = {name: list(csv.DictReader((run / "metrics.csv").open())) for name, run in [("f", fixed), ("a", adaptive)]}
    # w is trained by plain SGD on f(w) in APFL: its global model does not depend on alpha.
    assert [r["accuracy"] for r in rows["a"]] == [r["accuracy"] for r in rows["f"]]
    personal = float(rows["a"][-1]["personal_accuracy"])
    assert 0 < personal <= 1 and not math.isnan(personal)
    summary = json.loads((adaptive / "summary.json").read_text())
    assert summary["config"]["strategy"]["apfl_alpha_mode"] == "adaptive"
    assert summary["personal_accuracy"]["accuracy"] == pytest.approx(personal)


def test_adaptive_alpha_needs_apfl():
    with pytest.raises(ConfigError, match="strategy.apfl_alpha_mode"):
        load_config({"strategy": {"apfl_alpha_mode": "adaptive"}})
    with pytest.raises(ConfigError, match="strategy.apfl_alpha_mode"):
        load_config({**BASE, "strategy": {**APFL, "apfl_alpha_mode": "learned"}})
    assert np.isclose(load_config({**BASE, "strategy": APFL}).strategy.apfl_alpha or 0, 0.25)
