"""Issue 8, end to end: every FL method preset through ``python -m amp_fl`` (Hydra -> ``flwr run``,
SuperLink, Ray): Synchronous FL, FedProx and APFL, 4 PIUs, 2 RBs, 2 rounds on mnist5k.

Each run takes 30-60 s on two cores, most of it Flower and Ray start-up. The runs use their own
FLWR_HOME, so their local SuperLink is never one that another Flower run on this machine is using.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amp_fl.launch.launcher import FLWR_HOME_DIR, PROJECT_ROOT, flower_processes

ROUNDS = 2
OVERRIDES = ["experiment=quick", "wireless.num_devices=4", "wireless.num_rbs=2", f"num_rounds={ROUNDS}", "seed=3"]
CNN_PARAMETERS = 36_758  # the full model: every scheduled device uploads all of it

pytestmark = pytest.mark.e2e


def _run(method: str, run: Path, home: Path) -> Path:
    cmd = [sys.executable, "-m", "amp_fl", *OVERRIDES, f"method={method}", f"hydra.run.dir={run}"]
    env = {**os.environ, "FLWR_HOME": str(home)}
    out = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert flower_processes(run / FLWR_HOME_DIR) == []  # the background SuperLink (the run's own FLWR_HOME) was stopped
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    home = tmp_path_factory.mktemp("flwr_home")
    methods = ("synchronous", "fedprox", "apfl")
    return {method: _run(method, tmp_path_factory.mktemp(method), home) for method in methods}


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def _final_model(run: Path) -> list[np.ndarray]:
    with np.load(run / "final_model.npz") as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


@pytest.mark.parametrize("method", ["synchronous", "fedprox", "apfl"])
def test_method_runs_through_flower_with_full_models(runs, method):
    run = runs[method]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == ROUNDS
    strategy = summary["config"]["strategy"]
    assert strategy["local_objective"] == {"synchronous": "sgd", "fedprox": "fedprox", "apfl": "apfl"}[method]
    assert summary["config"]["scheduling"]["name"] == "full_model" and strategy["compensation"] == "none"
    rows = _rows(run)
    assert [int(r["round"]) for r in rows] == list(range(ROUNDS + 1))
    for row in rows[1:]:
        assert int(row["num_scheduled"]) == int(row["num_received"]) == 2  # one device per RB
        assert float(row["mean_keep_ratio"]) == 1.0
        assert int(row["uplink_bytes"]) == 2 * 4 * CNN_PARAMETERS
        assert 0 <= float(row["accuracy"]) <= 1


def test_apfl_reports_personal_accuracy_beside_the_synchronous_global_model(runs):
    apfl, sync = _rows(runs["apfl"]), _rows(runs["synchronous"])
    # Evaluated at the last round only (personal_eval_interval=10 > 2 rounds); NaN elsewhere.
    personal = [float(r["personal_accuracy"]) for r in apfl]
    assert math.isnan(personal[0]) and math.isnan(personal[1]) and 0 < personal[2] <= 1
    summary = json.loads((runs["apfl"] / "summary.json").read_text())
    assert summary["personal_accuracy"] == {"accuracy": pytest.approx(personal[2]), "round": ROUNDS}
    # APFL's global model is trained by local SGD on the same batches: Synchronous FL's model, exactly.
    assert [r["accuracy"] for r in apfl] == [r["accuracy"] for r in sync]
    for a, b in zip(_final_model(runs["apfl"]), _final_model(runs["synchronous"]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(math.isnan(float(r["personal_accuracy"])) for r in sync)


def test_fedprox_trains_another_global_model_on_the_same_schedule(runs):
    fedprox, sync = runs["fedprox"], runs["synchronous"]
    schedules = [(run / "schedule.jsonl").read_text().splitlines() for run in (fedprox, sync)]
    assert [json.loads(x)["device_ids"] for x in schedules[0]] == [json.loads(x)["device_ids"] for x in schedules[1]]
    difference = max(
        float(np.max(np.abs(a - b))) for a, b in zip(_final_model(fedprox), _final_model(sync), strict=True)
    )
    assert difference > 1e-6
