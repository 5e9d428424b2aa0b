"""Issue 11, item 2: the run's Flower and Ray processes are found (orphans too) and stopped; the watchdog.

Stand-ins named like Flower's programs and Ray's processes (``exec -a ray::...``) are started as the
launcher starts them (its marker for a test ``FLWR_HOME`` in their environment); decoys show what
must survive: the same programs of another run, a process of this run that is not Flower's or
Ray's, and a SuperNode and a Ray process a user started with the same ``FLWR_HOME``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amp_fl.launch.processes import MARKER, SERVER_APP_PROGRAMS, run_processes, stop_run_processes

SLEEPER = "import time; time.sleep(120)"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids, timeout=15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def spawn(tmp_path):
    """Start stand-in processes; every one still running is killed (by its PID) at the end."""
    procs: list[subprocess.Popen] = []
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    def start(kind: str, home: Path, *, launched: bool = True) -> int:
        """``launched``: started by the launcher (carries its marker); else by a user, with the same FLWR_HOME."""
        env = {**os.environ, "FLWR_HOME": str(home)}
        if launched:
            env[MARKER] = str(home)
        if kind.startswith("ray::"):
            cmd = ["bash", "-c", f"exec -a {kind} {sys.executable} -c '{SLEEPER}'"]
        elif kind == "plain":
            cmd = [sys.executable, "-c", SLEEPER]
        else:  # a script named like Flower's program
            script = bin_dir / kind
            script.write_text(SLEEPER)
            cmd = [sys.executable, str(script)]
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        procs.append(proc)
        return proc.pid

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_run_processes_are_found_by_flwr_home_orphans_included(tmp_path, spawn):
    home, other = tmp_path / "home", tmp_path / "other"
    superexec = spawn("flower-superexec", home)
    simulation = spawn("flwr-simulation", home)
    agent = spawn("ray::DashboardAgent", home)  # what a SIGKILLed ServerApp leaves: parent 1 after its parent dies
    decoys = [
        spawn("flower-superexec", other),
        spawn("ray::DashboardAgent", other),
        spawn("plain", home),
        spawn("flower-supernode", home, launched=False),  # a user's SuperNode (deployment) with the same FLWR_HOME
        spawn("ray::raylet", home, launched=False),  # a user's Ray cluster (deployment.ray_address)
    ]
    time.sleep(0.5)  # let bash exec into the renamed process
    assert run_processes(home) == sorted([superexec, simulation, agent])
    assert run_processes(home, SERVER_APP_PROGRAMS) == [simulation]

    assert stop_run_processes(home, grace_s=5.0) == 3
    assert _wait_gone([superexec, simulation, agent], timeout=5)
    assert all(_alive(p) for p in decoys)
    assert run_processes(home) == []


def test_watchdog_stops_the_run_when_the_launcher_is_sigkilled(tmp_path, spawn):
    home = tmp_path / "home"
    launcher = spawn("plain", tmp_path / "launcher_home")
    superlink = spawn("flower-superlink", home)
    agent = spawn("ray::RuntimeEnvAgent", home)
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "amp_fl.launch.processes", str(launcher), str(home)], start_new_session=True
    )
    try:
        time.sleep(1.5)
        assert _alive(superlink) and _alive(agent)  # nothing happens while the launcher lives
        os.kill(launcher, signal.SIGKILL)
        assert _wait_gone([superlink, agent], timeout=15)
        assert watchdog.wait(timeout=15) == 0
    finally:
        if watchdog.poll() is None:
            watchdog.kill()
            watchdog.wait()


def test_the_launchers_ray_head_counts_as_a_ray_process():
    from amp_fl.launch.processes import _is_flower_or_ray

    venv = Path(sys.executable).parent
    assert _is_flower_or_ray([sys.executable, str(venv / "ray"), "start", "--head", "--block"]) == {"ray"}
    assert _is_flower_or_ray([sys.executable, "-m", "pytest"]) == set()


def test_a_local_simulation_gets_the_launchers_ray_head_and_nothing_else_does():
    from amp_fl.config import load_config
    from amp_fl.launch.launcher import local_ray_head

    env = {MARKER: "/some/home", "PATH": os.environ.get("PATH", "")}
    head = local_ray_head(load_config({}), env)
    assert head is not None and head.num_cpus == len(os.sched_getaffinity(0)) and head.num_gpus is None
    assert head.env[MARKER] == "/some/home"  # found (and stopped) with the run's other processes
    head.temp_dir.rmdir()  # never started: its folder is still empty
    assert local_ray_head(load_config({"deployment": {"ray_address": "10.0.0.2:6379"}}), env) is None
    assert local_ray_head(load_config({"deployment": {"superlink": "10.0.0.2:9093"}}), env) is None
    assert local_ray_head(load_config({}), {**env, "RAY_ADDRESS": "10.0.0.2:6379"}) is None
