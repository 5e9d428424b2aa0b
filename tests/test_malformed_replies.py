"""Issue 11, item 4: every kind of malformed train reply is rejected before aggregation.

One scheduled device (device 0, a pruned sub-model) sends a reply broken in exactly one way. Each
case checks: the reply is dropped with its own reason (in the round report and in the log), it
counts as a failure of the right kind, and neither the global model, the AoI table nor the
gradient cache moves (compensation ``none``: with no valid update the global step is zero, and a
control case shows that the same reply, unbroken, does move the model).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import Array, Context, Message
from flwr.clientapp import ClientApp
from strategy_doubles import constant_client, make_strategy, reply_to, run_round

from amp_fl import protocol as P
from amp_fl.launch.inprocess import InProcessGrid


def _sub(regions):
    """Device 0's kept regions: 2 of conv1's, 3 of conv2's, 5 of fc1's."""
    return [np.array([0, 2]), np.array([1, 3, 4]), np.arange(5)]


def _full_shape_arrays(regions):
    return [np.ones(shape, dtype=np.float32) for shape in regions.shapes]


def _set_array(content, name, value):
    content.array_records[P.ARRAYS][name] = Array(np.ascontiguousarray(value))


# Each case: (how the good reply is broken, the reason expected in the log and the report).
def _wrong_shape(content, instruction, regions):
    _set_array(content, instruction.names[0], np.ones((1,), dtype=np.float32))


def _wrong_dtype(content, instruction, regions):
    _set_array(content, instruction.names[1], instruction.arrays[1].astype(np.float64))


def _nan(content, instruction, regions):
    _set_array(content, instruction.names[2], np.full_like(instruction.arrays[2], np.nan))


def _inf(content, instruction, regions):
    value = np.ones_like(instruction.arrays[3])
    value.flat[0] = np.inf
    _set_array(content, instruction.names[3], value)


def _missing_metric(content, instruction, regions):
    del content.metric_records[P.METRICS][P.TRAIN_LOSS]


def _missing_array(content, instruction, regions):
    del content.array_records[P.ARRAYS][instruction.names[-1]]


def _extra_array(content, instruction, regions):
    _set_array(content, "backdoor.weight", np.zeros((3,), dtype=np.float32))


def _counts_not_sent(content, instruction, regions):
    """Trained the full model instead of the sub-model it was sent: every array has the full shape."""
    for name, value in zip(regions.param_names, _full_shape_arrays(regions), strict=True):
        _set_array(content, name, value)


def _no_arrays(content, instruction, regions):
    del content[P.ARRAYS]


CASES = {
    "wrong shape": (_wrong_shape, "has shape (1,), expected"),
    "wrong dtype": (_wrong_dtype, "must be float32, got float64"),
    "NaN": (_nan, "contains NaN or infinite values"),
    "Inf": (_inf, "contains NaN or infinite values"),
    "missing metric key": (_missing_metric, "key 'train-loss' is missing"),
    "missing array": (_missing_array, "missing arrays ['classifier.3.bias'] (1 of the model's 8)"),
    "no array record": (_no_arrays, "no 'arrays' array record"),
    "extra array": (_extra_array, "unexpected extra arrays ['backdoor.weight']"),
    "keep counts not the ones sent": (_counts_not_sent, "for the keep counts sent [2, 3, 5]"),
}


def _breaking_client(corrupt, regions, value=1.0) -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        device = P.partition_id(context.node_config)
        instruction = P.TrainInstruction.from_content(msg.content)
        content = reply_to(instruction, device, [np.full_like(a, value) for a in instruction.arrays]).to_content()
        corrupt(content, instruction, regions)
        return Message(content, reply_to=msg)

    return app


def _assert_untouched(strategy, w0, regions):
    for w, w_start in zip(strategy.weights, w0, strict=True):
        np.testing.assert_array_equal(w, w_start)
    np.testing.assert_array_equal(strategy.aoi.ages, np.ones((2, regions.num_regions)))  # nobody refreshed
    for cached in strategy.cache.get(0):
        assert not cached.any()


def test_the_unbroken_reply_is_aggregated(cnn):
    """Control: the reply every case breaks does move the model and reset device 0's kept ages."""
    regions, w0 = cnn
    strategy, reports = make_strategy(cnn, {1: [(0, _sub(regions))]}, compensation="none")
    run_round(strategy, InProcessGrid(_breaking_client(lambda *a: None, regions), 2), 1)
    assert reports[-1].received_devices == (0,) and reports[-1].failures == {}
    assert any(not np.array_equal(w, w_start) for w, w_start in zip(strategy.weights, w0, strict=True))
    assert strategy.aoi.ages[0].min() == 0


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_reply_is_rejected_with_its_reason(cnn, caplog, case):
    regions, w0 = cnn
    corrupt, reason = CASES[case]
    strategy, reports = make_strategy(cnn, {1: [(0, _sub(regions))]}, compensation="none")
    with caplog.at_level(logging.WARNING, logger="amp_fl.strategy.amp_fl"):
        metrics = run_round(strategy, InProcessGrid(_breaking_client(corrupt, regions), 2), 1)[1]
    (report,) = reports
    assert reason in report.failures[0], report.failures[0]
    assert report.failure_kinds == {0: "invalid"} and report.received_devices == ()
    assert report.failure_counts == {"error": 0, "timeout": 0, "invalid": 1, "silent": 0}
    assert metrics[P.NUM_UPDATES] == 0 and metrics[P.NUM_FAILURES] == 1
    assert any(reason in r.getMessage() and "device 0" in r.getMessage() for r in caplog.records)
    _assert_untouched(strategy, w0, regions)


def test_reply_for_another_round_is_rejected(cnn, caplog):
    """A reply that says it answers round 1 arriving in round 2 (e.g. delayed) is not aggregated in round 2."""
    regions, _w0 = cnn
    sub = _sub(regions)
    app = ClientApp()

    @app.train()
    def stale(msg: Message, context: Context) -> Message:
        instruction = P.TrainInstruction.from_content(msg.content)
        reply = reply_to(instruction, 0, [np.ones_like(a) for a in instruction.arrays])
        if instruction.round == 2:
            reply = P.TrainReply(**{**reply.__dict__, "round": 1})
        return reply.to_reply(msg)

    strategy, reports = make_strategy(cnn, {1: [(0, sub)], 2: [(0, sub)]}, compensation="none")
    grid = InProcessGrid(app, 2)
    run_round(strategy, grid, 1)
    after_round_1 = [w.copy() for w in strategy.weights]
    ages_1 = strategy.aoi.ages.copy()
    with caplog.at_level(logging.WARNING, logger="amp_fl.strategy.amp_fl"):
        run_round(strategy, grid, 2)
    assert reports[-1].failures == {0: "reply for round 1, but this is round 2"}
    assert any("reply for round 1, but this is round 2" in r.getMessage() for r in caplog.records)
    for w, w1 in zip(strategy.weights, after_round_1, strict=True):
        np.testing.assert_array_equal(w, w1)
    np.testing.assert_array_equal(strategy.aoi.ages, ages_1 + 1)  # device 0 treated as not scheduled


def test_absurd_norm_is_rejected_only_above_the_configured_bound(cnn, caplog):
    """Device 0 sends 100.0 in every entry of its sub-model; device 1 sends 0.01 everywhere (full model).

    With ``max_update_norm=10`` the first is rejected (norm = 100 * sqrt(entries) >> 10), the second
    (0.01 * sqrt(36,758) = 1.92) is aggregated; without a bound both count.
    """
    regions, w0 = cnn
    plan = {1: [(0, _sub(regions)), (1, regions.full_kept())]}
    values = {0: 100.0, 1: 0.01}
    strategy, reports = make_strategy(cnn, plan, compensation="none", max_update_norm=10.0)
    with caplog.at_level(logging.WARNING, logger="amp_fl.strategy.amp_fl"):
        run_round(strategy, InProcessGrid(constant_client(values), 2), 1)
    (report,) = reports
    assert report.received_devices == (1,)
    assert (
        report.failures[0].startswith("update norm ") and "exceeds the bound max_update_norm=10" in report.failures[0]
    )
    assert any("exceeds the bound max_update_norm=10" in r.getMessage() for r in caplog.records)
    for w, w_start in zip(strategy.weights, w0, strict=True):  # only device 1's step: w - LR * 0.01
        np.testing.assert_allclose(w, w_start - 0.5 * 0.01, atol=1e-7)

    unbounded, reports = make_strategy(cnn, plan, compensation="none")
    run_round(unbounded, InProcessGrid(constant_client(values), 2), 1)
    assert reports[-1].received_devices == (0, 1)


def test_client_exception_is_an_error_failure(cnn):
    regions, w0 = cnn
    app = ClientApp()

    @app.train()
    def boom(msg: Message, context: Context) -> Message:
        raise RuntimeError("sensor bus fault")

    strategy, reports = make_strategy(cnn, {1: [(0, _sub(regions))]}, compensation="none")
    run_round(strategy, InProcessGrid(app, 2), 1)
    (report,) = reports
    assert report.failure_kinds == {0: "error"} and report.failures[0].startswith("client error:")
    _assert_untouched(strategy, w0, regions)
