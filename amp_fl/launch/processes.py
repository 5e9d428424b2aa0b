"""The Flower and Ray processes of a run, found and stopped whatever happened to the launcher.

Every process of a local Flower run (``flwr run``, the detached SuperLink, its SuperExec, the
``flwr-simulation`` process that hosts the ServerApp, and Ray's GCS, raylet, agents and actors)
inherits the environment the launcher gives ``flwr run``, which carries :data:`MARKER` =
``FLWR_HOME``. A process belongs to the run of ``home`` when it is one of those programs and
carries the marker for ``home`` (or, for a SuperLink or SuperExec, names ``home`` on its command
line); that still finds Ray's agents after a SIGKILLed ServerApp left them orphaned (parent 1),
where walking the process tree would not. Only the launcher sets the marker, so a SuperLink, its
SuperNodes or a Ray cluster that a user started (even with the same ``FLWR_HOME``) are never
matched, nor are the launcher and its ancestors.

:func:`watch` is the launcher's watchdog: a small process in its own session that stops the
run's processes as soon as the launcher is gone, SIGKILL included (a SIGKILLed launcher cannot
clean up after itself). Run it with ``python -m amp_fl.launch.processes <pid> <home>``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

# Programs of a Flower run (basename of a command-line word) and Ray's processes.
FLOWER_PROGRAMS = frozenset(
    {
        "flwr",
        "flower-superlink",
        "flower-superexec",
        "flower-supernode",
        "flwr-simulation",
        "flwr-serverapp",
        "flwr-clientapp",
    }
)
MARKER = "AMP_FL_LAUNCHED_FLWR_HOME"  # set by the launcher in the environment of `flwr run` only
SERVER_APP_PROGRAMS = frozenset({"flwr-simulation", "flwr-serverapp"})  # where the ServerApp runs
WATCH_POLL_S = 0.5


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:  # gone, or another user's
        return None


def _parent(pid: int) -> int:
    stat = _read(Path(f"/proc/{pid}/stat"))
    if stat is None:
        return 0
    return int(stat.rsplit(b")", 1)[1].split()[1])  # the name may contain spaces and parentheses


def _ancestors_and_self() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 0 and pid not in pids:
        pids.add(pid)
        pid = _parent(pid)
    return pids


def _is_flower_or_ray(words: list[str]) -> set[str]:
    """The Flower programs among the command line's words; ``{"ray"}`` for a Ray process; empty otherwise."""
    if words and words[0].startswith("ray::"):
        return {"ray"}
    if any(Path(w).name == "ray" for w in words[:2]):  # the `ray start --head --block` of the launcher's head
        return {"ray"}
    found = {Path(w).name for w in words[:3]} & FLOWER_PROGRAMS
    if not found and any("/site-packages/ray/" in w for w in words[:3]):
        return {"ray"}
    return found


def run_processes(home: Path, programs: frozenset[str] | None = None) -> list[int]:
    """PIDs of the Flower/Ray processes of the run whose ``FLWR_HOME`` is ``home`` (``programs``: only those)."""
    home_s = str(home)
    marker = f"{MARKER}={home_s}".encode()
    skip = _ancestors_and_self()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in skip:
            continue
        raw = _read(proc / "cmdline")
        if not raw:
            continue
        raw_s = raw.decode(errors="replace")
        words = raw_s.split("\0")
        kinds = _is_flower_or_ray(words)
        if not kinds or (programs is not None and not kinds & programs):
            continue
        environ = _read(proc / "environ") or b""
        if marker in environ.split(b"\0") or (kinds & {"flower-superlink", "flower-superexec"} and home_s in raw_s):
            pids.append(int(proc.name))
    return sorted(pids)


def _children(pid: int) -> list[int]:
    raw = _read(Path(f"/proc/{pid}/task/{pid}/children"))
    return [int(c) for c in raw.split()] if raw else []


def stop_run_processes(home: Path, grace_s: float = 5.0) -> int:
    """SIGTERM, then after ``grace_s`` SIGKILL, every process of the run of ``home`` and their children."""
    targets = set(run_processes(home))
    stack = list(targets)
    while stack:
        for child in _children(stack.pop()):
            if child not in targets:
                targets.add(child)
                stack.append(child)
    targets -= _ancestors_and_self()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_start_time(p) is not None for p in targets):  # zombies are done
            time.sleep(0.1)
    return len(targets)


def _start_time(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot); ``None`` if it is gone or a zombie (dead, not yet reaped)."""
    stat = _read(Path(f"/proc/{pid}/stat"))
    if stat is None:
        return None
    fields = stat.rsplit(b")", 1)[1].split()
    return None if fields[0] == b"Z" else fields[19].decode()


def watch(launcher_pid: int, home: Path, run_dir: Path | None = None, poll_s: float = WATCH_POLL_S) -> None:
    """Wait until ``launcher_pid`` is gone (by start time: a reused PID does not count), then stop the run.

    The launcher kills its watchdog when it ends on its own; reaching the stop means it was killed
    (SIGKILL: nothing of it ran), so the run's summary is marked interrupted here.
    """
    started = _start_time(launcher_pid)
    while started is not None and _start_time(launcher_pid) == started:
        time.sleep(poll_s)
    stop_run_processes(home)
    if run_dir is not None:
        from amp_fl.run_folder import INTERRUPTED, finish_summary, resume_hint

        finish_summary(run_dir, INTERRUPTED, interrupted_by="the launcher was killed", resume=resume_hint(run_dir))


if __name__ == "__main__":
    watch(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
