"""Issue 11, end to end through Flower's simulation engine: a SIGKILLed ServerApp, resume, clean exits.

- The ServerApp's process (``flwr-simulation``, which hosts it) is SIGKILLed part-way; the launcher
  notices, stops Flower and Ray and says how to resume; ``python -m amp_fl resume=<run>`` finishes
  the run, and its ``metrics.csv`` equals an uninterrupted run's with the same seed (wall time aside).
- After Ctrl-C (SIGINT) and after a SIGKILLed launcher, no Flower or Ray process of the run remains,
  and a new run starts and completes.

About three minutes on two cores (five short Flower runs, most of it Flower and Ray start-up).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amp_fl.config import config_to_dict, load_config
from amp_fl.launch.launcher import PROJECT_ROOT, flwr_home, launch
from amp_fl.launch.processes import SERVER_APP_PROGRAMS, run_processes
from amp_fl.run_folder import CHECKPOINT_FILE
from amp_fl.server.checkpoint import load_checkpoint

pytestmark = pytest.mark.e2e

ROUNDS = 8
SMALL = {
    "dataset": {"name": "mnist5k"},
    "wireless": {"num_devices": 10, "num_rbs": 5},
    "num_rounds": ROUNDS,
    "seed": 3,
    "checkpoint": {"every_s": 0.0},  # every round checkpoints: the test kills the run after round 3's
}


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in csv.DictReader(f)]


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _row_count(run: Path) -> int:
    try:
        return max(0, len((run / "metrics.csv").read_text().splitlines()) - 1)
    except OSError:
        return 0


def _checkpoint_round(run: Path) -> int:
    """The round of the checkpoint on disk (0 while there is none); replaced atomically, so always readable."""
    if not (run / CHECKPOINT_FILE).exists():
        return 0
    return load_checkpoint(run).round


def _start_launcher(run: Path, home: Path, rounds: int = ROUNDS) -> subprocess.Popen[str]:
    """``python -m amp_fl.launch.launcher CONFIG RUN`` in its own process (so it can be signalled)."""
    run.mkdir(parents=True, exist_ok=True)
    config = run.parent / f"{run.name}_config.json"
    config.write_text(json.dumps(config_to_dict(load_config({**SMALL, "num_rounds": rounds})), default=list))
    cmd = [sys.executable, "-m", "amp_fl.launch.launcher", str(config), str(run)]
    env = {**os.environ, "FLWR_HOME": str(home)}
    return subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "flwr_home"
    monkeypatch.setenv("FLWR_HOME", str(home))  # in-process launches use it too; nobody else's SuperLink
    return home


def test_sigkilled_server_app_resumes_to_the_uninterrupted_metrics(tmp_path, home):
    whole = launch(load_config(SMALL), tmp_path / "whole")

    run = tmp_path / "run"
    proc = _start_launcher(run, home)
    # Checkpoints are written by a background thread, so round 3's row can appear before its checkpoint.
    _wait_for(lambda: _row_count(run) >= 4 and _checkpoint_round(run) >= 3, 300, "round 3's checkpoint")
    (server,) = run_processes(flwr_home(run), SERVER_APP_PROGRAMS)  # each run has its own FLWR_HOME
    os.kill(server, signal.SIGKILL)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the ServerApp process stopped without finishing (killed?)"), last
    assert last.endswith(f"continue with: python -m amp_fl resume={run}")
    _wait_for(lambda: run_processes(flwr_home(run)) == [], 30, "no Flower or Ray process left")
    killed_at = load_checkpoint(run).round
    assert 3 <= killed_at < ROUNDS
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"  # the ServerApp never got to say more: the launcher did
    assert summary["resume"] == f"python -m amp_fl resume={run}"

    cmd = [sys.executable, "-m", "amp_fl", f"resume={run}", f"hydra.run.dir={tmp_path / 'hydra'}"]
    out = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"[amp-fl] resuming {run}" in out.stdout
    assert _rows(run) == _rows(whole)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from_round"] == killed_at
    assert run_processes(flwr_home(run)) == []
    assert not (tmp_path / "hydra").exists()  # a resume writes into its own run folder, no stub


@pytest.mark.parametrize("how", ["ctrl-c", "sigkill"])
def test_no_flower_or_ray_process_survives_a_stopped_launcher(tmp_path, home, how):
    run = tmp_path / "run"
    proc = _start_launcher(run, home, rounds=200)
    _wait_for(lambda: _row_count(run) >= 2, 300, "round 1")
    assert run_processes(flwr_home(run))  # SuperLink, SuperExec, flwr-simulation, Ray...
    proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)
    proc.communicate(timeout=120)
    if how == "ctrl-c":
        assert proc.returncode == 128 + signal.SIGINT
    # After SIGKILL the launcher cannot clean up: its watchdog does, within seconds.
    _wait_for(lambda: run_processes(flwr_home(run)) == [], 60, "no Flower or Ray process left")
    # The launcher (Ctrl-C) or its watchdog (SIGKILL, just after stopping Flower) marks the run interrupted.
    _wait_for(lambda: json.loads((run / "summary.json").read_text())["status"] == "interrupted", 30, "interrupted")
    again = launch(load_config({**SMALL, "num_rounds": 2}), tmp_path / "again")  # a new run starts cleanly
    assert _row_count(again) == 3
    assert run_processes(flwr_home(again)) == []
