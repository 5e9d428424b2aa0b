"""Issue 20, end to end: HeteroFL and FedRolex through ``python -m amp_fl`` (Hydra -> ``flwr run``,
SuperLink, Ray), 4 PIUs, 2 RBs, 2 rounds on mnist5k, on the same wireless round and simulated clock.

Each run takes 30-60 s on two cores, most of it Flower and Ray start-up; they use their own FLWR_HOME.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amp_fl.launch.launcher import PROJECT_ROOT, flower_processes
from amp_fl.pruning.counts import submodel_param_count
from amp_fl.pruning.maps import region_map

ROUNDS = 2
OVERRIDES = ["experiment=quick", "wireless.num_devices=4", "wireless.num_rbs=2", f"num_rounds={ROUNDS}", "seed=3"]
LEVEL_COUNTS = {1.0: [6, 16, 128], 0.5: [3, 8, 64], 0.25: [1, 4, 32]}  # floor(level * I_l) of the paper's CNN

pytestmark = pytest.mark.e2e


def _run(method: str, run: Path, home: Path) -> Path:
    cmd = [sys.executable, "-m", "amp_fl", *OVERRIDES, f"method={method}", f"hydra.run.dir={run}"]
    env = {**os.environ, "FLWR_HOME": str(home)}
    out = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert flower_processes(home) == []  # the background SuperLink was stopped
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    home = tmp_path_factory.mktemp("flwr_home")
    return {method: _run(method, tmp_path_factory.mktemp(method), home) for method in ("heterofl", "fedrolex")}


@pytest.mark.parametrize("method", ["heterofl", "fedrolex"])
def test_width_level_methods_run_through_flower(runs, method):
    run = runs[method]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == ROUNDS
    config = summary["config"]
    assert config["scheduling"]["name"] == "levels" and config["strategy"]["fresh_mean"] == "holders"
    assert config["pruning"]["policy"] == {"heterofl": "static", "fedrolex": "fedrolex"}[method]
    assert config["pruning"]["scaler"] and config["model"]["static_bn"]
    regions = region_map("cnn", (1, 28, 28), 10)
    records = [json.loads(line) for line in (run / "schedule.jsonl").read_text().splitlines()]
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["round"]) for r in rows] == list(range(ROUNDS + 1))
    level_of: dict[int, float] = {}
    clock = 0.0
    for record, row in zip(records, rows[1:], strict=True):
        assert len(record["device_ids"]) == int(row["num_received"]) == 2  # one device per RB
        for device, fraction, counts in zip(
            record["device_ids"], record["keep_fraction"], record["keep_counts"], strict=True
        ):
            assert counts == LEVEL_COUNTS[fraction]  # a level's sub-model
            assert level_of.setdefault(device, fraction) == fraction  # fixed by capability: the same every round
            assert record["uplink_bytes"][str(device)] == 4 * submodel_param_count(regions, counts)
        # The simulated clock: each round lasts as long as its slowest device (Table I latencies).
        latency = max(c + u for c, u in zip(record["compute_latency_s"], record["upload_latency_s"], strict=True))
        assert record["round_latency_s"] == pytest.approx(latency)
        clock += latency
        assert float(row["sim_time_s"]) == pytest.approx(clock)
        assert 0 <= float(row["accuracy"]) <= 1
