"""Issue 8: the wire fields of the local objectives and the personal-evaluation messages."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from conftest import make_train_setup
from flwr.app import RecordDict

from amp_fl import protocol as P
from amp_fl.errors import InvalidReplyError
from amp_fl.pruning.submodel import extract_arrays

SETUP = make_train_setup(
    seed=3,
    data_root="/data",
    num_devices=10,
    partition="shards",
    local_steps=2,
    batch_size=16,
    local_objective="fedprox",
    proximal_mu=0.01,
    apfl_alpha=0.0,
)


@pytest.fixture
def server_identity(monkeypatch):
    """Messages built outside a Flower process need a task identity (as the in-process grid sets)."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, attr, 1)


def _train_content(regions, weights, setup=SETUP) -> RecordDict:
    full = regions.full_kept()
    return P.TrainInstruction(1, 2, setup, tuple(regions.param_names), tuple(weights), tuple(full)).to_content()


def _evaluation(regions, weights, setup=SETUP) -> P.EvaluateInstruction:
    return P.EvaluateInstruction(5, 2, setup, 250, tuple(regions.param_names), tuple(weights))


@pytest.mark.parametrize(
    "setup",
    [
        SETUP,
        dataclasses.replace(SETUP, local_objective="apfl", proximal_mu=0.0, apfl_alpha=0.25),
        dataclasses.replace(SETUP, local_objective="sgd", proximal_mu=0.0),
    ],
    ids=["fedprox", "apfl", "sgd"],
)
def test_local_objective_travels_with_the_train_setup(cnn, setup):
    regions, weights = cnn
    assert P.TrainInstruction.from_content(_train_content(regions, weights, setup)).setup == setup


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        (P.LOCAL_OBJECTIVE, "fedavgm", "must be one of sgd, fedprox, apfl"),
        (P.LOCAL_OBJECTIVE, 3, "must be a non-empty string"),
        (P.PROXIMAL_MU, -0.5, "must be >= 0.0"),
        (P.PROXIMAL_MU, float("nan"), "must be finite"),
        (P.APFL_ALPHA, 1.25, "must be <= 1.0"),
        (P.APFL_ALPHA, -0.25, "must be >= 0.0"),
    ],
)
def test_a_bad_objective_field_is_rejected_naming_the_key(cnn, key, value, problem):
    regions, weights = cnn
    content = _train_content(regions, weights)
    content.config_records[P.CONFIG][key] = value
    with pytest.raises(ValueError, match=rf"^train instruction: key '{re.escape(key)}' {problem}"):
        P.TrainInstruction.from_content(content)
    del content.config_records[P.CONFIG][key]
    with pytest.raises(ValueError, match=rf"key '{re.escape(key)}' is missing"):
        P.TrainInstruction.from_content(content)


def test_evaluate_instruction_round_trip_carries_the_full_global_model(cnn, server_identity):
    regions, weights = cnn
    instruction = _evaluation(regions, weights)
    assert instruction.to_message(9).metadata.message_type == "evaluate"
    back = P.EvaluateInstruction.from_content(instruction.to_content())
    assert (back.round, back.device, back.setup, back.batch_size) == (5, 2, SETUP, 250)
    for a, b in zip(back.for_model(regions), weights, strict=True):
        np.testing.assert_array_equal(a, b)
    # A sub-model is not a model to evaluate.
    kept = [k[:1] for k in regions.full_kept()]
    pruned = _evaluation(regions, extract_arrays(weights, regions, kept))
    with pytest.raises(ValueError, match="^evaluate instruction: array 'features.0.weight' has shape"):
        P.EvaluateInstruction.from_content(pruned.to_content()).for_model(regions)
    content = instruction.to_content()
    content.config_records[P.CONFIG][P.EVAL_BATCH_SIZE] = 0
    with pytest.raises(ValueError, match=f"key '{P.EVAL_BATCH_SIZE}' must be >= 1"):
        P.EvaluateInstruction.from_content(content)


def test_evaluate_reply_round_trip_and_checks():
    reply = P.EvaluateReply(device=4, accuracy=0.75, loss=0.5, num_examples=200, personalised=True)
    assert P.EvaluateReply.from_content(reply.to_content()) == reply
    for key, value, error in (
        (P.PERSONAL_ACCURACY, 1.5, "must be <= 1.0"),
        (P.PERSONAL_LOSS, -1.0, "must be >= 0.0"),
        (P.PERSONALISED, 2, "must be 0 or 1"),
        (P.NUM_EXAMPLES, 0, "must be >= 1"),
    ):
        content = reply.to_content()
        content.metric_records[P.METRICS][key] = value
        with pytest.raises(InvalidReplyError, match=rf"^evaluate reply: key '{key}' {error}"):
            P.EvaluateReply.from_content(content)


def test_personal_metrics_for_flower():
    record = P.PersonalMetrics(0.5, 1.25, 7).to_record()
    assert dict(record) == {P.PERSONAL_ACCURACY: 0.5, P.PERSONAL_LOSS: 1.25, P.NUM_DEVICES: 7}
