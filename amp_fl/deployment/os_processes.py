"""Local ports and process trees (Linux ``/proc``): what the federation's launchers wait on and clean up."""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import time
from pathlib import Path

# Ports a listener is picked from: above Ray's worker ports (10002-19999 by default) and Flower's
# defaults, below the kernel's ephemeral range. A port the OS hands out for bind(0) is from that range,
# and so is every outgoing connection's local port: one picked there can be taken by any connect()
# (Ray's start opens dozens) between the pick and the listener's bind, seconds later.
LISTEN_PORTS_LOW = 20000
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_ports() -> range:
    """The kernel's range for bind(0) and outgoing connections (Linux's default where it cannot be read)."""
    try:
        low, high = (int(v) for v in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", tries: int = 200) -> int:
    """A TCP port nobody listens on right now, outside the ephemeral range where one can be had.

    Several runs and test sessions share the machine, so a port is drawn at random (not seeded: it
    changes no result) and checked by binding it; the OS's own pick where none of ``tries`` is free.
    """
    candidates = range(LISTEN_PORTS_LOW, ephemeral_ports().start)
    draw = random.SystemRandom()
    for _ in range(tries if len(candidates) > 0 else 0):
        port = draw.choice(candidates)
        if _bindable(host, port):
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        chosen: int = s.getsockname()[1]
        return chosen


def wait_for_port(host: str, port: int, timeout_s: float, alive: subprocess.Popen[bytes] | None = None) -> None:
    """Block until ``host:port`` accepts TCP connections; ``RuntimeError`` if ``alive`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"process {alive.args!r} exited with code {alive.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout_s:.0f} s")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (Linux ``/proc``)."""
    seen: set[int] = set()
    stack = [pid]
    while stack:
        for child in _children(stack.pop()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (a zombie holds no resources, its parent reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def describe(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"
