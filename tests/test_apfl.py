"""Issue 8, APFL: the mixing update against hand-computed values, the personal model in context.state,
the personalised evaluation (brute force), the strategy's evaluation rounds and the recorded column.

The tiny model is ``y_hat = w . x`` (``nn.Linear(2, 1, bias=False)``) with the squared error
``f(w) = (w . x - y)^2`` on one sample ``x = (1, 1)``, ``y = 0``; so ``grad f(w) = 2 (w . x) x``.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from conftest import cnn_arrays, make_train_setup
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from tiny_linear import LR, X, Y, linear, weights_of
from torch import nn

from amp_fl import protocol as P
from amp_fl.client.app import app as client_app
from amp_fl.client.local import batch_rng, local_data, model_info, train_settings
from amp_fl.client.objectives import apfl_step, mix_arrays
from amp_fl.client.personal import label_frequencies, label_weighted_score
from amp_fl.client.settings import TrainSettings
from amp_fl.client.trainer import SubModelTrainer
from amp_fl.config import load_config
from amp_fl.data.datasets import load_dataset
from amp_fl.launch.inprocess import FIRST_NODE_ID, InProcessGrid, run_in_process
from amp_fl.models import build_model
from amp_fl.pruning.maps import region_map_for
from amp_fl.pruning.submodel import load_arrays, module_arrays
from amp_fl.server.build import StrategyInputs, build_strategy, initial_model, latency_config, run_data, train_setup
from amp_fl.strategy.amp_fl import personal_evaluation_due
from amp_fl.strategy.replies import UNKNOWN_DEVICE
from amp_fl.wireless.devices import simulated_device_profile


# ---------------------------------------------------------------------------- the maths
def test_mix_is_alpha_personal_plus_one_minus_alpha_global_on_parameters_only():
    personal = [np.array([3.0, 0.0], np.float32), np.array([7.0], np.float32)]
    global_ = [np.array([1.0, 2.0], np.float32), np.array([9.0], np.float32)]
    mixed = mix_arrays(personal, global_, 0.25, trainable=[True, False])
    np.testing.assert_array_equal(mixed[0], [1.5, 1.5])  # 0.25*(3, 0) + 0.75*(1, 2)
    np.testing.assert_array_equal(mixed[1], [7.0])  # a buffer: the personal model's own
    assert mixed[0].dtype == np.float32
    np.testing.assert_array_equal(mix_arrays(personal, global_, 0.0, [True, True])[0], global_[0])
    np.testing.assert_array_equal(mix_arrays(personal, global_, 1.0, [True, True])[0], personal[0])
    with pytest.raises(ValueError, match=r"^alpha: must be in \[0, 1\]"):
        mix_arrays(personal, global_, 1.5, [True, True])


def _apfl_step(w, v, alpha):
    model, personal = linear(w), linear(v)
    optimiser = torch.optim.SGD(model.parameters(), lr=LR)
    personal_optimiser = torch.optim.SGD(personal.parameters(), lr=LR)
    loss = apfl_step(model, optimiser, personal, personal_optimiser, X, Y, nn.MSELoss(), alpha=alpha)
    return loss, weights_of(model), weights_of(personal)


def test_one_apfl_step_by_hand():
    """w = (1, 2), v = (3, 0), alpha = 0.25.

    w: w . x = 3, grad f(w) = (6, 6), w' = w - 0.1*(6, 6) = (0.4, 1.4).
    v: mixed = 0.25*(3, 0) + 0.75*(1, 2) = (1.5, 1.5), mixed . x = 3, grad f(mixed) = (6, 6),
       grad_v = alpha * (6, 6) = (1.5, 1.5), v' = (3, 0) - 0.1*(1.5, 1.5) = (2.85, -0.15).
    Mixing the *updated* w instead would give mixed = (1.05, 1.05) and v' = (2.895, -0.105).
    """
    loss, w, v = _apfl_step([1.0, 2.0], [3.0, 0.0], 0.25)
    assert loss == pytest.approx(9.0)  # f(w) before the step
    assert w == pytest.approx([0.4, 1.4], abs=1e-6)
    assert v == pytest.approx([2.85, -0.15], abs=1e-6)


def test_apfl_step_at_the_ends_of_alpha():
    # alpha = 0: the personalised model is w, v gets no gradient.
    _, w, v = _apfl_step([1.0, 2.0], [3.0, 0.0], 0.0)
    assert (w, v) == (pytest.approx([0.4, 1.4], abs=1e-6), pytest.approx([3.0, 0.0]))
    # alpha = 1: v is trained on its own: v . x = 3, v' = (3, 0) - 0.1*(6, 6).
    _, w, v = _apfl_step([1.0, 2.0], [3.0, 0.0], 1.0)
    assert (w, v) == (pytest.approx([0.4, 1.4], abs=1e-6), pytest.approx([2.4, -0.6], abs=1e-6))


def test_label_weighted_score_by_hand():
    """Device holds labels 0 and 1 as 3:1. Test: label 0 -> 1 of 2 right, label 1 -> 2 of 3, label 2 ignored.

    accuracy = 0.75 * 1/2 + 0.25 * 2/3 = 0.541666...; loss = 0.75 * (1+3)/2 + 0.25 * (2+2+5)/3 = 2.25.
    """
    weights = label_frequencies(np.array([0, 0, 0, 1]), 3)
    np.testing.assert_array_equal(weights, [0.75, 0.25, 0.0])
    labels = np.array([0, 0, 1, 1, 1, 2])
    correct = np.array([True, False, True, True, False, True])
    losses = np.array([1.0, 3.0, 2.0, 2.0, 5.0, 100.0])
    score = label_weighted_score(correct, losses, labels, weights)
    assert score.accuracy == pytest.approx(0.75 * 0.5 + 0.25 * 2 / 3)
    assert score.loss == pytest.approx(2.25)
    assert score.num_samples == 5
    with pytest.raises(ValueError, match="^labels: no test sample"):
        label_weighted_score(correct[:2], losses[:2], labels[:2], np.array([0.0, 0.0, 1.0]))


# ---------------------------------------------------------------------------- the device side
SETUP = make_train_setup(
    seed=2,
    num_devices=4,
    partition="shards",
    local_steps=3,
    batch_size=16,
    local_objective="apfl",
    proximal_mu=0.0,
    apfl_alpha=0.25,
)
DEVICE = 1


@pytest.fixture(scope="module")
def cnn():
    return cnn_arrays(seed=1)


def _trainer(regions):
    return SubModelTrainer(local_data(SETUP, DEVICE), model_info(SETUP), regions)


def test_trainer_apfl_moves_w_exactly_as_sgd_and_updates_the_personal_model(cnn):
    regions, w0 = cnn
    full = regions.full_kept()
    personal = [a + 0.01 for a in w0]
    sgd = _trainer(regions).fit(w0, full, TrainSettings(0.05, 3, 16), batch_rng(SETUP, DEVICE, 1))
    apfl = _trainer(regions).fit(w0, full, train_settings(SETUP), batch_rng(SETUP, DEVICE, 1), personal)
    for a, b in zip(sgd.gradient, apfl.gradient, strict=True):
        np.testing.assert_array_equal(a, b)  # APFL's w update is local SGD on f(w)
    assert sgd.personal is None and apfl.personal is not None
    assert max(float(np.max(np.abs(v1 - v0))) for v1, v0 in zip(apfl.personal, personal, strict=True)) > 1e-4
    with pytest.raises(ValueError, match="^personal: "):
        _trainer(regions).fit(w0, full, train_settings(SETUP), batch_rng(SETUP, DEVICE, 1))


def _train_message(regions, weights, server_round):
    instruction = P.TrainInstruction(
        round=server_round,
        device=DEVICE,
        setup=SETUP,
        names=tuple(regions.param_names),
        arrays=tuple(weights),
        kept=tuple(regions.full_kept()),
    )
    return instruction.to_message(FIRST_NODE_ID + DEVICE)


def _evaluate(grid, regions, weights, server_round):
    instruction = P.EvaluateInstruction(
        round=server_round,
        device=DEVICE,
        setup=SETUP,
        batch_size=100,
        names=tuple(regions.param_names),
        arrays=tuple(weights),
    )
    (reply,) = grid.send_and_receive([instruction.to_message(FIRST_NODE_ID + DEVICE)])
    assert not reply.has_error()
    return P.EvaluateReply.from_content(reply.content)


def _brute_force_personal_accuracy(arrays):
    """Per label held by the device: the fraction of its test samples classified right, weighted by train counts."""
    model = build_model("cnn", num_classes=10)
    load_arrays(model, arrays)
    model.eval()
    test = load_dataset("mnist5k", download=False).test
    train_labels = local_data(SETUP, DEVICE).labels
    total = 0.0
    for label in np.unique(train_labels):
        samples = test.images[test.labels == label]
        with torch.no_grad():
            predicted = model(torch.from_numpy(samples)).argmax(dim=1).numpy()
        total += np.mean(train_labels == label) * np.mean(predicted == label)
    return total


def test_client_keeps_its_personal_model_across_rounds_and_scores_the_mix(cnn):
    regions, w0 = cnn
    grid = InProcessGrid(client_app, SETUP.num_devices)
    state = grid.contexts[FIRST_NODE_ID + DEVICE].state

    # Before training: no personal model, the device scores the global model.
    before = _evaluate(grid, regions, w0, 1)
    assert not before.personalised
    assert before.accuracy == pytest.approx(_brute_force_personal_accuracy(w0), abs=1e-12)
    assert P.STATE_PERSONAL not in state.array_records

    # Round 1: v_k starts at the received w and is trained on the mixed model.
    (reply,) = grid.send_and_receive([_train_message(regions, w0, 1)])
    assert not reply.has_error()
    v1 = P.record_to_arrays(state.array_records[P.STATE_PERSONAL], regions.param_names)
    expected = _trainer(regions).fit(
        w0, regions.full_kept(), train_settings(SETUP), batch_rng(SETUP, DEVICE, 1), [a.copy() for a in w0]
    )
    for got, want in zip(v1, expected.personal, strict=True):
        np.testing.assert_array_equal(got, want)
    w1 = expected.weights

    # Round 2 starts from the stored v_k, not from the new global model.
    grid.send_and_receive([_train_message(regions, w1, 2)])
    v2 = P.record_to_arrays(state.array_records[P.STATE_PERSONAL], regions.param_names)
    expected2 = _trainer(regions).fit(w1, regions.full_kept(), train_settings(SETUP), batch_rng(SETUP, DEVICE, 2), v1)
    for got, want in zip(v2, expected2.personal, strict=True):
        np.testing.assert_array_equal(got, want)

    # Evaluation scores 0.25 v_k + 0.75 w on the device's own labels.
    after = _evaluate(grid, regions, w1, 2)
    assert after.personalised
    mixed = [(0.25 * v.astype(np.float64) + 0.75 * w).astype(np.float32) for v, w in zip(v2, w1, strict=True)]
    assert after.accuracy == pytest.approx(_brute_force_personal_accuracy(mixed), abs=1e-12)
    assert after.num_examples == int(
        np.isin(load_dataset("mnist5k", download=False).test.labels, np.unique(local_data(SETUP, DEVICE).labels)).sum()
    )


def test_apfl_refuses_a_pruned_sub_model(cnn):
    regions, w0 = cnn
    kept = [k[: max(1, k.size // 2)] for k in regions.full_kept()]
    from amp_fl.pruning.submodel import extract_arrays

    instruction = P.TrainInstruction(
        round=1,
        device=DEVICE,
        setup=SETUP,
        names=tuple(regions.param_names),
        arrays=tuple(extract_arrays(w0, regions, kept)),
        kept=tuple(kept),
    )
    grid = InProcessGrid(client_app, SETUP.num_devices)
    # The ClientApp raises; like Flower's engines, the grid turns that into an error reply.
    (reply,) = grid.send_and_receive([instruction.to_message(FIRST_NODE_ID + DEVICE)])
    assert reply.has_error() and "apfl objective trains the full model" in reply.error.reason


# ---------------------------------------------------------------------------- the server side
def test_personal_evaluation_rounds():
    due = [r for r in range(1, 26) if personal_evaluation_due(r, 10, 25)]
    assert due == [10, 20, 25]
    assert [r for r in range(1, 4) if personal_evaluation_due(r, 1, 3)] == [1, 2, 3]
    assert not any(personal_evaluation_due(r, None, 5) for r in range(1, 6))


def scripted_evaluator(accuracy_by_device):
    """Device k replies accuracy ``accuracy_by_device[k]`` (device 2 sends an impossible 1.5)."""
    app = ClientApp()

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        device = P.partition_id(context.node_config)
        instruction = P.EvaluateInstruction.from_content(msg.content)
        assert instruction.round == 4 and instruction.batch_size == 1000 and instruction.device == device
        reply = P.EvaluateReply(device, accuracy_by_device[device], 0.5, 10, personalised=device % 2 == 0)
        return reply.to_reply(msg)

    return app


def test_strategy_asks_every_device_and_averages_the_valid_replies(tmp_path):
    values = {
        "dataset": {"name": "mnist5k"},
        "wireless": {"num_devices": 4, "num_rbs": 4},
        "scheduling": {"name": "full_model"},
        "strategy": {
            "compensation": "none",
            "local_objective": "apfl",
            "apfl_alpha": 0.25,
            "personal_eval_interval": 2,
        },
    }
    cfg = load_config(values)
    data = run_data(cfg, tmp_path)
    model = initial_model(cfg, data.data)
    regions = region_map_for(model, data.data.input_shape)
    evaluations = []
    strategy = build_strategy(
        cfg,
        StrategyInputs(
            regions=regions,
            initial_weights=module_arrays(model),
            latency=latency_config(cfg, model, regions),
            device_nodes={k: FIRST_NODE_ID + k for k in range(4)},
            profiles=[simulated_device_profile(k, cfg.seed, cfg.wireless) for k in range(4)],
            setup=train_setup(cfg, data),
            on_personal_evaluation=evaluations.append,
        ),
    )
    strategy.num_rounds = 5
    grid = InProcessGrid(scripted_evaluator({0: 0.2, 1: 0.4, 2: 1.5, 3: 0.9}), 4)
    assert list(strategy.configure_evaluate(3, None, None, grid)) == []  # not an evaluation round
    assert strategy.aggregate_evaluate(3, []) is None and evaluations == []

    messages = list(strategy.configure_evaluate(4, None, None, grid))
    assert sorted(m.metadata.dst_node_id for m in messages) == [FIRST_NODE_ID + k for k in range(4)]
    metrics = strategy.aggregate_evaluate(4, grid.send_and_receive(messages))
    (evaluation,) = evaluations
    assert evaluation.round == 4
    assert evaluation.accuracy == {0: 0.2, 1: 0.4, 3: 0.9}
    assert set(evaluation.failures) == {2} and "personal-accuracy" in evaluation.failures[2]
    assert evaluation.personalised == (0,)
    assert evaluation.mean_accuracy == pytest.approx(0.5)
    assert metrics["personal-accuracy"] == pytest.approx(0.5) and metrics["num-devices"] == 3
    assert UNKNOWN_DEVICE not in evaluation.failures


# ---------------------------------------------------------------------------- a whole run
BASE = {
    "dataset": {"name": "mnist5k"},
    "wireless": {"num_devices": 5, "num_rbs": 3},
    "num_rounds": 3,
    "seed": 1,
    "scheduling": {"name": "full_model"},
}


def test_apfl_run_records_personal_accuracy_and_keeps_the_synchronous_global_model(tmp_path):
    apfl = {"compensation": "none", "local_objective": "apfl", "apfl_alpha": 0.25, "personal_eval_interval": 2}
    run = run_in_process(load_config({**BASE, "strategy": apfl}), tmp_path / "apfl")
    sync = run_in_process(load_config({**BASE, "strategy": {"compensation": "none"}}), tmp_path / "sync")
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    personal = [float(r["personal_accuracy"]) for r in rows]
    assert [math.isnan(p) for p in personal] == [True, True, False, False]  # rounds 2 (interval) and 3 (last)
    assert all(0 < p <= 1 for p in personal[2:])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["personal_accuracy"] == {"accuracy": pytest.approx(personal[3]), "round": 3}
    # APFL's global model is trained by plain local SGD on the same batches: the same as Synchronous FL's.
    sync_rows = list(csv.DictReader((sync / "metrics.csv").open()))
    assert [r["accuracy"] for r in rows] == [r["accuracy"] for r in sync_rows]
    assert all(math.isnan(float(r["personal_accuracy"])) for r in sync_rows)
    with np.load(run / "final_model.npz") as a, np.load(sync / "final_model.npz") as b:
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])
