"""Collecting a round's replies: one set of checks for every strategy and every direction.

:func:`collect_replies` takes the messages Flower hands ``aggregate_train`` or
``aggregate_evaluate`` and sorts each into an accepted reply or a :class:`Failure`:

- the node must map to a device that was sent work this round (otherwise the failure is keyed
  by that device, or by :data:`UNKNOWN_DEVICE` for a node that maps to none);
- an error reply (the ClientApp raised) is an ``"error"`` failure;
- the content must decode (the reply type's ``from_content``: records, keys, dtypes, finite
  values), echo the device its node maps to and, for replies that echo it, this round;
- the strategy's own check (``accept``: shapes against what was sent, norm bounds) may still
  reject it;
- a device that was sent work and has no reply is a ``"timeout"`` failure (:data:`TIMEOUT_REASON`).

The failure's kind is set where it is detected, so nothing downstream reads it back from the
message text. A strategy adds the one kind the collector cannot see (``"silent"``: an
over-the-air PIU below the truncation threshold) itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar, get_args

from flwr.app import Message, RecordDict

from amp_fl.errors import InvalidReplyError

log = logging.getLogger(__name__)

# Why a device that was sent work did not count (metrics.csv counts each): the ClientApp raised
# (Flower's error reply), no reply within the reply timeout, a reply that failed a check, or (over
# the air) a PIU silent below the truncation threshold.
FailureKind = Literal["error", "timeout", "invalid", "silent"]
FAILURE_KINDS: tuple[FailureKind, ...] = get_args(FailureKind)

UNKNOWN_DEVICE = -1  # failure key of a reply from a node that maps to no device
TIMEOUT_REASON = "no reply within the reply timeout"
SILENT_REASON = "silent: channel gain below the truncation threshold"


@dataclass(frozen=True)
class Failure:
    """Why one device's reply did not count: its kind (data, for counting) and the reason (for people)."""

    kind: FailureKind
    reason: str


class DeviceReply(Protocol):
    """What every decoded reply echoes: the device it comes from."""

    @property
    def device(self) -> int: ...


R = TypeVar("R", bound=DeviceReply)
A = TypeVar("A")


class _RoundRecord(Protocol):
    @property
    def round(self) -> int: ...


P = TypeVar("P", bound=_RoundRecord)


def pending_for(pending: P | None, server_round: int) -> P:
    """What ``configure_train`` kept for ``server_round``: ``aggregate_train`` without it is the caller's error."""
    if pending is None or pending.round != server_round:
        raise ValueError(f"server_round: aggregate_train({server_round}) without configure_train for that round")
    return pending


@dataclass(frozen=True)
class Collected(Generic[A]):
    """The round's replies: accepted ones and failures, each keyed by device and sorted by it."""

    accepted: dict[int, A]
    failures: dict[int, Failure]


class _Rejected(Exception):
    """A reply that failed a check; carries the failure to record."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


def collect_replies(
    messages: Iterable[Message],
    *,
    server_round: int,
    node_devices: Mapping[int, int],
    sent: Collection[int],
    decode: Callable[[RecordDict], R],
    round_of: Callable[[R], int] | None,
    accept: Callable[[int, R], A],
    what: str = "reply",
) -> Collected[A]:
    """Check every reply of ``server_round`` against what was ``sent`` (device ids); see the module docstring.

    ``round_of`` reads the round a reply says it answers (``None`` for reply types that carry
    none); ``accept`` is the strategy's own check and conversion of a decoded reply (it raises
    :class:`~amp_fl.errors.InvalidReplyError` to reject). ``what`` names the replies in reasons and logs.
    """
    accepted: dict[int, A] = {}
    failures: dict[int, Failure] = {}
    for message in messages:
        device = node_devices.get(message.metadata.src_node_id)
        key = UNKNOWN_DEVICE if device is None else device
        if device is not None and (device in accepted or device in failures):
            # Flower answers each instruction once; a second reply for a device is not a second vote.
            log.warning("round %d: ignored a second %s of device %s", server_round, what, device)
            continue
        try:
            accepted[key] = _check(message, device, server_round, sent, decode, round_of, accept, what)
        except _Rejected as rejected:
            failures[key] = rejected.failure
            log.warning("round %d: dropped %s of device %s: %s", server_round, what, device, rejected.failure.reason)
    for device in sorted(set(sent) - set(accepted) - set(failures)):
        failures[device] = Failure("timeout", TIMEOUT_REASON)
        log.warning("round %d: no %s from device %d within the reply timeout", server_round, what, device)
    return Collected(dict(sorted(accepted.items())), dict(sorted(failures.items())))


def _check(
    message: Message,
    device: int | None,
    server_round: int,
    sent: Collection[int],
    decode: Callable[[RecordDict], R],
    round_of: Callable[[R], int] | None,
    accept: Callable[[int, R], A],
    what: str,
) -> A:
    if device is None or device not in sent:
        node = message.metadata.src_node_id
        raise _Rejected(Failure("invalid", f"{what} from node {node}, which was not sent work this round"))
    if message.has_error():
        raise _Rejected(Failure("error", f"client error: {message.error.reason}"))
    try:
        reply = decode(message.content)
        if reply.device != device:
            raise InvalidReplyError(f"{what} of the node of device {device} says it comes from device {reply.device}")
        if round_of is not None and round_of(reply) != server_round:
            raise InvalidReplyError(f"{what} for round {round_of(reply)}, but this is round {server_round}")
        return accept(device, reply)
    except InvalidReplyError as exc:
        raise _Rejected(Failure("invalid", str(exc))) from None
