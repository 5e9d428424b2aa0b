"""Wake Flower's simulation engine when the ServerApp pushes a round's messages.

Flower's simulation engine (``flwr.server.superlink.fleet.vce.vce_api``, Flower 1.41) hands
messages to its Ray actors from a thread that scans every node's inbox, then sleeps 0.1 s
(``add_messages_to_queue``). A round's messages therefore wait 50 ms on average, and up to 0.1 s,
before any actor starts on them: 10-25 % of a round of a few tenths of a second here. Scanning
more often costs more than it saves (a scan of 100 nodes takes some 4 ms of CPU; a 5 ms interval
made rounds slower). Instead this module replaces that thread's body with one that does the same
scan but sleeps on an event the ServerApp's grid sets after each push: the round's messages
reach the actors at once, and between pushes it scans every 0.1 s as Flower's does.

Nothing else changes: the same scan, the same queue, the same stop event, no message content
touched (the same seed gives the same ``metrics.csv`` with and without it). The hook applies only
in the process of a local simulation (where the engine's module is already imported), and only
where the pinned function has the expected parameters; otherwise it does nothing and Flower keeps
its own 0.1 s look. ``install`` must run before the engine starts its scan thread: the ServerApp
module calls it on import, which the simulation process does before it has built its Ray actors.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from queue import Queue
from typing import Any, Protocol

log = logging.getLogger(__name__)

VCE_MODULE = "flwr.server.superlink.fleet.vce.vce_api"
SCAN_FUNCTION = "add_messages_to_queue"
SCAN_PARAMETERS = ["state", "queue", "nodes_mapping", "f_stop"]
SCAN_INTERVAL_S = 0.1  # Flower's own, kept between pushes
# AMP_FL_ENGINE_WAKEUP=0 in the environment of `python -m amp_fl` (or of flwr-simulation) keeps
# Flower's own scan: for a comparison (`amp_fl.bench startup --wakeup both`) or should the hook misbehave.
ENABLE_ENV = "AMP_FL_ENGINE_WAKEUP"
# The ServerApp's line in flower.log saying which scan runs.
ON = "amp-fl: the simulation engine is woken on each push"
OFF = "amp-fl: the simulation engine looks for messages every 0.1 s (Flower's own scan)"

_pushed = threading.Event()


class _InboxState(Protocol):
    def get_message_ins(self, node_id: int, limit: int | None) -> list[Any]: ...


def scan_for_messages(
    state: _InboxState, queue: Queue[Any], nodes_mapping: dict[int, Any], f_stop: threading.Event
) -> None:
    """Flower's scan (each node's next message into the actors' queue), woken by a push.

    The event is cleared before a scan starts, so a push that lands during a scan wakes the next
    one: no message waits for the interval.
    """
    while not f_stop.is_set():
        _pushed.clear()
        for node_id in nodes_mapping:
            for message in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(message)
        _pushed.wait(SCAN_INTERVAL_S)


def notify_pushed() -> None:
    """Wake the scan: messages were pushed."""
    _pushed.set()


def install() -> bool:
    """Put :func:`scan_for_messages` in place of the engine's scan; ``True`` where it did.

    Does nothing outside a local simulation's process (the engine's module not imported: the
    deployment engine, the in-process loop), where Flower's function is not the expected one, or
    where ``AMP_FL_ENGINE_WAKEUP=0``.
    """
    module = sys.modules.get(VCE_MODULE)
    if module is None or os.environ.get(ENABLE_ENV, "1") == "0":
        return False
    original = getattr(module, SCAN_FUNCTION, None)
    if original is scan_for_messages:
        return True
    if original is None or list(inspect.signature(original).parameters) != SCAN_PARAMETERS:
        log.debug("Flower's %s.%s is not the expected one; its 0.1 s scan stays", VCE_MODULE, SCAN_FUNCTION)
        return False
    if any(getattr(thread, "_target", None) is original for thread in threading.enumerate()):
        log.info("Flower's simulation engine started scanning before the wake-up hook; it looks every 0.1 s")
        return False
    setattr(module, SCAN_FUNCTION, scan_for_messages)
    return True


class _Pushing(Protocol):
    def push_messages(self, messages: Iterable[Any]) -> Iterable[str]: ...


def wake_on_push(grid: _Pushing) -> None:
    """Make ``grid.push_messages`` wake the scan after it has stored the messages (idempotent)."""
    push: Callable[[Iterable[Any]], Iterable[str]] = grid.push_messages
    if getattr(push, "wakes_engine", False):
        return

    def push_and_wake(messages: Iterable[Any]) -> Iterable[str]:
        ids = push(messages)
        notify_pushed()
        return ids

    push_and_wake.wakes_engine = True  # type: ignore[attr-defined]
    setattr(grid, "push_messages", push_and_wake)  # noqa: B010 (an instance's method, not the class's)


__all__ = ["OFF", "ON", "install", "notify_pushed", "scan_for_messages", "wake_on_push"]
