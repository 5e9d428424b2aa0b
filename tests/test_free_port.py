"""Listener ports: picked outside the kernel's ephemeral range, so no outgoing connection takes one first."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from amp_fl.deployment import os_processes
from amp_fl.deployment.os_processes import LISTEN_PORTS_LOW, ephemeral_ports, free_port


def test_a_free_port_is_below_the_ephemeral_range_and_can_be_bound() -> None:
    ports = {free_port() for _ in range(20)}
    ephemeral = ephemeral_ports()
    assert all(LISTEN_PORTS_LOW <= p < ephemeral.start for p in ports)
    assert len(ports) > 1  # drawn, not a fixed port every run would share
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_taken_port_is_never_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        monkeypatch.setattr(os_processes, "LISTEN_PORTS_LOW", taken)
        # The only candidate is taken: the OS's own pick, never the taken port.
        monkeypatch.setattr(os_processes, "ephemeral_ports", lambda: range(taken + 1, taken + 2))
        port = free_port(tries=5)
        assert port != taken
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_the_ephemeral_range_is_read_from_the_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("40000\t50000\n")
    monkeypatch.setattr(os_processes, "EPHEMERAL_RANGE_FILE", ranges)
    assert ephemeral_ports() == range(40000, 50001)
    monkeypatch.setattr(os_processes, "EPHEMERAL_RANGE_FILE", tmp_path / "missing")
    assert ephemeral_ports() == range(32768, 61000)
