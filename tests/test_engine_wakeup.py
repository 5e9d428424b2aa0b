"""The wake-up of Flower's simulation engine on a push (amp_fl.server.engine_wakeup)."""

from __future__ import annotations

import inspect
import sys
import threading
import types
from queue import Queue

import flwr.server.superlink.fleet.vce.vce_api as vce_api
import pytest

from amp_fl.server import engine_wakeup


class Inboxes:
    """A LinkState's ``get_message_ins`` over per-node lists; counts scans, may stop the engine after one."""

    def __init__(self, inboxes: dict[int, list[str]], stop_after_scan: threading.Event | None = None) -> None:
        self.inboxes = inboxes
        self.stop_after_scan = stop_after_scan
        self.scans = 0
        self.lock = threading.Lock()

    def get_message_ins(self, node_id: int, limit: int | None) -> list[str]:
        with self.lock:
            taken = self.inboxes[node_id][:limit]
            del self.inboxes[node_id][: len(taken)]
            if node_id == max(self.inboxes):
                self.scans += 1
                if self.stop_after_scan is not None:
                    self.stop_after_scan.set()
        return taken


def _one_scan(scan, inboxes: dict[int, list[str]]) -> list[str]:
    stop = threading.Event()
    queue: Queue[str] = Queue()
    scan(Inboxes(inboxes, stop), queue, {node: node for node in inboxes}, stop)
    return [queue.get_nowait() for _ in range(queue.qsize())]


def test_the_pinned_flower_scan_is_the_one_this_hook_replaces():
    # A Flower upgrade that changes the engine's scan must be looked at before the hook is trusted.
    source = inspect.getsource(vce_api.add_messages_to_queue)
    assert list(inspect.signature(vce_api.add_messages_to_queue).parameters) == engine_wakeup.SCAN_PARAMETERS
    assert "state.get_message_ins(node_id=node_id, limit=1)" in source
    assert "f_stop.wait(0.1)" in source
    assert engine_wakeup.SCAN_INTERVAL_S == 0.1


def test_one_scan_queues_what_flowers_own_scan_queues():
    def inboxes() -> dict[int, list[str]]:
        return {3: ["a1", "a2"], 7: [], 9: ["c1"]}

    ours = _one_scan(engine_wakeup.scan_for_messages, inboxes())
    theirs = _one_scan(vce_api.add_messages_to_queue, inboxes())
    assert ours == theirs == ["a1", "c1"]  # each node's next message, in node order


def test_a_push_wakes_the_scan_long_before_its_interval(monkeypatch):
    monkeypatch.setattr(engine_wakeup, "SCAN_INTERVAL_S", 600.0)
    state = Inboxes({1: [], 2: []})
    queue: Queue[str] = Queue()
    stop = threading.Event()
    scanner = threading.Thread(target=engine_wakeup.scan_for_messages, args=(state, queue, {1: 0, 2: 1}, stop))

    class Grid:
        def push_messages(self, messages):
            with state.lock:
                for node, message in messages:
                    state.inboxes[node].append(message)
            return [message for _, message in messages]

    grid = Grid()
    engine_wakeup.wake_on_push(grid)
    scanner.start()
    try:
        assert list(grid.push_messages([(2, "m")])) == ["m"]
        assert queue.get(timeout=30) == "m"  # the 600 s interval would not have found it
    finally:
        stop.set()
        engine_wakeup.notify_pushed()
        scanner.join(timeout=30)
    assert not scanner.is_alive()


def test_wake_on_push_wraps_a_grid_once():
    calls = []

    class Grid:
        def push_messages(self, messages):
            calls.append(list(messages))
            return ["id"]

    grid = Grid()
    engine_wakeup.wake_on_push(grid)
    engine_wakeup.wake_on_push(grid)
    engine_wakeup._pushed.clear()
    assert list(grid.push_messages(["x"])) == ["id"]
    assert calls == [["x"]]
    assert engine_wakeup._pushed.is_set()
    assert Grid.push_messages is not grid.push_messages  # the instance's, not the class's


def _fake_engine(function) -> types.ModuleType:
    module = types.ModuleType(engine_wakeup.VCE_MODULE)
    setattr(module, engine_wakeup.SCAN_FUNCTION, function)
    return module


def test_install_replaces_the_scan_only_in_a_simulation_process_and_only_the_expected_one(monkeypatch):
    monkeypatch.delitem(sys.modules, engine_wakeup.VCE_MODULE, raising=False)
    assert engine_wakeup.install() is False  # the deployment engine's and the in-process loop's processes

    def expected(state, queue, nodes_mapping, f_stop):
        pass

    def changed(state, queue, f_stop):
        pass

    engine = _fake_engine(expected)
    monkeypatch.setitem(sys.modules, engine_wakeup.VCE_MODULE, engine)
    assert engine_wakeup.install() is True
    assert engine.add_messages_to_queue is engine_wakeup.scan_for_messages
    assert engine_wakeup.install() is True  # twice: still in place

    engine = _fake_engine(expected)
    monkeypatch.setitem(sys.modules, engine_wakeup.VCE_MODULE, engine)
    monkeypatch.setenv(engine_wakeup.ENABLE_ENV, "0")
    assert engine_wakeup.install() is False  # switched off: Flower's own scan stays
    assert engine.add_messages_to_queue is expected
    monkeypatch.delenv(engine_wakeup.ENABLE_ENV)

    engine = _fake_engine(changed)
    monkeypatch.setitem(sys.modules, engine_wakeup.VCE_MODULE, engine)
    assert engine_wakeup.install() is False
    assert engine.add_messages_to_queue is changed


def test_install_leaves_an_engine_that_already_scans(monkeypatch):
    release = threading.Event()

    def running(state, queue, nodes_mapping, f_stop):
        release.wait(30)

    engine = _fake_engine(running)
    monkeypatch.setitem(sys.modules, engine_wakeup.VCE_MODULE, engine)
    scanner = threading.Thread(target=running, args=(None, None, None, None))
    scanner.start()
    try:
        assert engine_wakeup.install() is False
        assert engine.add_messages_to_queue is running
    finally:
        release.set()
        scanner.join(timeout=30)


@pytest.fixture(autouse=True)
def _clear_the_event():
    yield
    engine_wakeup._pushed.clear()
