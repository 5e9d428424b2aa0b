"""Issue 20, end to end: ``method=fedbuff`` through ``python -m amp_fl`` (Hydra -> ``flwr run``, SuperLink, Ray).

4 PIUs, 3 RBs (3 training at once), a buffer of 2, 3 server steps on mnist5k. The simulated
timeline (who is dispatched when, on which RB, at what latency) depends only on the seed and the
channel, so it must equal the in-process run's; the rows must show one buffered step each.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amp_fl.config import load_config
from amp_fl.launch.inprocess import run_in_process
from amp_fl.launch.launcher import PROJECT_ROOT, flower_processes

ROUNDS = 3
OVERRIDES = [
    "experiment=quick",
    "method=fedbuff",
    "wireless.num_devices=4",
    "wireless.num_rbs=3",
    "fedbuff.buffer_size=2",
    f"num_rounds={ROUNDS}",
    "seed=3",
]
CNN_PARAMETERS = 36_758  # the full model: every update uploads all of it

pytestmark = pytest.mark.e2e


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def _timeline(run: Path) -> list[dict]:
    """schedule.jsonl without the measured client training times (wall clock)."""
    lines = (run / "schedule.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "client_fit_s"} for line in lines]


def test_fedbuff_runs_through_flower_one_buffered_step_per_round(tmp_path):
    run, home = tmp_path / "run", tmp_path / "flwr_home"
    cmd = [sys.executable, "-m", "amp_fl", *OVERRIDES, f"hydra.run.dir={run}"]
    env = {**os.environ, "FLWR_HOME": str(home)}
    out = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert flower_processes(home) == []  # the background SuperLink was stopped

    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == ROUNDS
    assert summary["config"]["algorithm"] == "fedbuff" and summary["config"]["fedbuff"]["buffer_size"] == 2
    rows = _rows(run)
    assert [int(r["round"]) for r in rows] == list(range(ROUNDS + 1))
    assert [int(r["num_scheduled"]) for r in rows[1:]] == [3, 2, 2]  # all 3 slots, then the 2 the step freed
    for row in rows[1:]:
        assert int(row["num_received"]) == 2 and int(row["num_failed"]) == 0
        assert int(row["uplink_bytes"]) == 2 * 4 * CNN_PARAMETERS
        assert 0 <= float(row["accuracy"]) <= 1
    times = [float(r["sim_time_s"]) for r in rows]
    assert times[0] == 0 and all(b > a for a, b in itertools.pairwise(times))
    assert summary["final_sim_time_s"] == pytest.approx(times[-1])

    # The same ServerApp and ClientApp code in process: the same simulated timeline.
    cfg = json.loads((run / "run_config.json").read_text())
    cfg["output_dir"] = str(tmp_path / "inprocess")
    reference = run_in_process(load_config(cfg), tmp_path / "inprocess")
    assert _timeline(run) == _timeline(reference)
    assert [r["sim_time_s"] for r in _rows(reference)] == [r["sim_time_s"] for r in rows]
