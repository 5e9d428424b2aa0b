"""The one reply collector every strategy uses (:mod:`amp_fl.strategy.replies`), on hand-built Flower messages.

Three devices (nodes 100, 101, 102) are sent work in round 2; each case breaks one reply in one
way and checks the failure's kind (data, set where it is detected) and its reason.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from amp_fl import protocol as P
from amp_fl.errors import InvalidReplyError
from amp_fl.strategy.replies import TIMEOUT_REASON, UNKNOWN_DEVICE, Failure, collect_replies

NODES = {0: 100, 1: 101, 2: 102}  # device -> node
ROUND = 2


@pytest.fixture(autouse=True)
def task_identity():
    """Messages built outside a Flower process need a task identity (as the in-process grid sets it)."""
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1


def _instruction(node: int) -> Message:
    return Message(RecordDict(), dst_node_id=node, message_type="train")


def _reply(device: int, *, node: int | None = None, round: int = ROUND, value: float = 1.0) -> Message:
    """Device ``device``'s train reply, sent from ``node`` (its own by default), echoing ``round``."""
    reply = P.TrainReply(
        device=device,
        names=("w",),
        gradient=(np.full(3, value, dtype=np.float32),),
        num_examples=1,
        train_loss=0.5,
        fit_seconds=0.0,
        round=round,
    )
    return reply.to_reply(_instruction(NODES[device] if node is None else node))


def _collect(messages, *, accept=lambda device, reply: reply):
    return collect_replies(
        messages,
        server_round=ROUND,
        node_devices={node: device for device, node in NODES.items()},
        sent=list(NODES),
        decode=P.TrainReply.from_content,
        round_of=lambda reply: reply.round,
        accept=accept,
    )


def test_good_replies_are_accepted_by_device():
    collected = _collect([_reply(2), _reply(0), _reply(1)])
    assert list(collected.accepted) == [0, 1, 2] and collected.failures == {}
    assert all(reply.device == device for device, reply in collected.accepted.items())


@pytest.mark.parametrize(
    ("broken", "failure"),
    [
        (lambda: _reply(1, round=1), Failure("invalid", "reply for round 1, but this is round 2")),
        (lambda: _reply(2, node=101), Failure("invalid", "reply of the node of device 1 says it comes from device 2")),
        (lambda: _reply(1, value=np.nan), Failure("invalid", "train reply: array 'w' contains NaN or infinite values")),
    ],
    ids=["wrong round", "wrong device", "NaN"],
)
def test_a_broken_reply_is_an_invalid_failure_with_its_reason(broken, failure, caplog):
    with caplog.at_level(logging.WARNING, logger="amp_fl.strategy.replies"):
        collected = _collect([_reply(0), broken(), _reply(2)])
    assert list(collected.accepted) == [0, 2] and collected.failures == {1: failure}
    assert any(failure.reason in r.getMessage() and "device 1" in r.getMessage() for r in caplog.records)


def test_an_error_reply_is_an_error_failure():
    error = Message(Error(code=0, reason="sensor bus fault"), reply_to=_instruction(101))
    collected = _collect([_reply(0), error, _reply(2)])
    assert collected.failures == {1: Failure("error", "client error: sensor bus fault")}


def test_a_missing_reply_is_a_timeout_with_the_one_reason():
    collected = _collect([_reply(2)])
    assert collected.failures == {0: Failure("timeout", TIMEOUT_REASON), 1: Failure("timeout", TIMEOUT_REASON)}
    assert TIMEOUT_REASON == "no reply within the reply timeout"


def test_replies_from_unknown_nodes_or_devices_not_sent_work_are_invalid():
    stranger = _reply(0, node=999)
    collected = collect_replies(
        [stranger, _reply(2)],
        server_round=ROUND,
        node_devices={node: device for device, node in NODES.items()},
        sent=[0, 1],  # device 2 was not sent work this round
        decode=P.TrainReply.from_content,
        round_of=lambda reply: reply.round,
        accept=lambda device, reply: reply,
    )
    assert collected.accepted == {}
    assert collected.failures[UNKNOWN_DEVICE].kind == "invalid"
    assert "reply from node 999, which was not sent work" in collected.failures[UNKNOWN_DEVICE].reason
    assert collected.failures[2].kind == "invalid"
    assert {d: f.kind for d, f in collected.failures.items() if d >= 0} == {0: "timeout", 1: "timeout", 2: "invalid"}


def test_the_strategys_own_check_rejects_as_invalid():
    def accept(device, reply):
        if device == 1:
            raise InvalidReplyError("update norm 9 exceeds the bound")
        return reply.gradient[0].sum()

    collected = _collect([_reply(0), _reply(1), _reply(2)], accept=accept)
    assert collected.accepted == {0: 3.0, 2: 3.0}
    assert collected.failures == {1: Failure("invalid", "update norm 9 exceeds the bound")}


def test_a_second_reply_of_a_device_is_ignored():
    collected = _collect([_reply(0, value=1.0), _reply(0, value=5.0), _reply(1), _reply(2)])
    assert collected.failures == {} and collected.accepted[0].gradient[0][0] == 1.0


def test_replies_without_a_round_are_not_checked_for_one():
    reply = P.EvaluateReply(device=1, accuracy=0.5, loss=1.0, num_examples=10, personalised=False)
    collected = collect_replies(
        [reply.to_reply(_instruction(101))],
        server_round=ROUND,
        node_devices={101: 1},
        sent=[1],
        decode=P.EvaluateReply.from_content,
        round_of=None,
        accept=lambda device, reply: reply.accuracy,
        what="evaluate reply",
    )
    assert collected.accepted == {1: 0.5} and collected.failures == {}
