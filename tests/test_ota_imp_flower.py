"""Issue 10, end to end through Flower's simulation engine: the sparsity preset's driver, a reduced grid.

Two runs of the quick preset (IMP and one-shot to 90 %, full participation, over the air) through
`flwr run` (SuperLink, Ray, the real ServerApp and ClientApp with its ``train.masked`` handler) on
mnist5k (always offline), then the report. About a minute each on two cores.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from amp_fl.experiments.ota_imp import main
from amp_fl.launch.launcher import flower_processes, flwr_home

pytestmark = pytest.mark.e2e

ROUNDS = 3
RUNS = ("full-imp-s90-seed0", "full-one_shot-s90-seed0")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("ota_imp")
    code = main(
        [
            "quick",
            "--engine",
            "flower",
            "--targets",
            "0.9",
            "--participation",
            "full",
            "--no-amp-fl",
            "--set",
            "dataset=mnist5k",
            "wireless.num_devices=4",
            f"num_rounds={ROUNDS}",
            "sparse_fedavg.first_round=0",
            "sparse_fedavg.interval=1",
            "sparse_fedavg.rate=0.7",
            "--runs-root",
            str(root / "runs"),
            "--report-dir",
            str(root / "report"),
        ]
    )
    assert code == 0
    for run_id in RUNS:  # each run's background SuperLink was stopped (each run has its own FLWR_HOME)
        assert flower_processes(flwr_home(root / "runs" / run_id)) == []
    return root


def test_runs_went_through_flower_and_prune_exactly(sweep):
    for run_id in RUNS:
        run = sweep / "runs" / run_id
        assert (run / "flower.log").stat().st_size > 0  # what `flwr run` printed: it went through Flower
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["dataset_used"] == "mnist5k"
        with (run / "metrics.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert [int(r["round"]) for r in rows] == list(range(ROUNDS + 1))
        assert all(int(r["num_scheduled"]) == 4 for r in rows[1:])
        with np.load(run / "final_model.npz") as z:
            weights = [z[f"arr_{i}"] for i in range(len(z.files)) if z[f"arr_{i}"].ndim >= 2]
        total = sum(w.size for w in weights)
        assert sum(int(np.count_nonzero(w == 0)) for w in weights) == round(0.9 * total)


def test_report_sets_our_gain_beside_the_papers(sweep):
    report = (sweep / "report" / "report.md").read_text()
    assert "engine `flower`" in report and "**mnist5k**" in report
    assert "| 90 % | about +23 points |" in report
    assert (sweep / "report" / "accuracy_vs_sparsity.png").stat().st_size > 0
    with (sweep / "report" / "results.csv").open() as f:
        rows = {r["run_id"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(RUNS)
    # Measured bytes: the last round's downlink per PIU is the 90 % model's encoding, far below dense (147,040 B).
    assert all(0 < float(r["downlink_per_piu_last"]) < 0.2 * 147_040 for r in rows.values())
