"""Issue 5, end to end through Flower's real simulation engine (`flwr run`, SuperLink, Ray).

Three short runs of 10 PIUs on mnist5k (offline): the cached variant through the Hydra CLI, the
memory-friendly variant and a repeat of the cached one through the launcher. Each takes about a
minute on two cores, most of it Flower and Ray start-up.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amp_fl.config import load_config
from amp_fl.launch.launcher import PROJECT_ROOT, flower_processes, flwr_home, launch
from amp_fl.pruning.counts import submodel_param_count
from amp_fl.pruning.maps import region_map

ROUNDS = 4
SMALL = {"dataset": {"name": "mnist5k"}, "wireless": {"num_devices": 10, "num_rbs": 5}, "num_rounds": ROUNDS, "seed": 3}

pytestmark = pytest.mark.e2e


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _final_model(run: Path) -> list[np.ndarray]:
    with np.load(run / "final_model.npz") as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cached")
    cmd = [sys.executable, "-m", "amp_fl", "experiment=quick", f"num_rounds={ROUNDS}", "seed=3", f"hydra.run.dir={run}"]
    out = subprocess.run(
        cmd,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "FLWR_HOME": str(flwr_home(run))},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # Progress is the launcher's to render (from metrics.csv, a row per round written as it ends):
    # the ServerApp logs it to ``amp_fl.progress`` and prints nothing itself.
    assert len(_read_csv(run / "metrics.csv")) == ROUNDS + 1
    assert flower_processes(flwr_home(run)) == []  # the background SuperLink was stopped
    return run


@pytest.fixture(scope="module")
def memory_friendly_run(tmp_path_factory) -> Path:
    values = {**SMALL, "strategy": {"memory_friendly": True}}
    return launch(load_config(values), tmp_path_factory.mktemp("memory_friendly"))


@pytest.fixture(scope="module")
def repeat_run(tmp_path_factory) -> Path:
    return launch(load_config(SMALL), tmp_path_factory.mktemp("repeat"))


def test_short_run_writes_every_output(cached_run):
    for name in (
        "metrics.csv",
        "schedule.jsonl",
        "summary.json",
        "run_config.json",
        "final_model.npz",
        "accuracy_vs_sim_time.png",
        "accuracy_vs_round.png",
        "avg_aoi_vs_round.png",
    ):
        assert (cached_run / name).stat().st_size > 0, name
    rows = _read_csv(cached_run / "metrics.csv")
    required = {
        "round",
        "sim_time_s",
        "round_latency_s",
        "accuracy",
        "loss",
        "avg_aoi",
        "num_scheduled",
        "mean_keep_ratio",
        "uplink_bytes",
        "downlink_bytes",
        "wall_time_s",
    }
    assert required <= set(rows[0])
    assert [int(r["round"]) for r in rows] == list(range(ROUNDS + 1))
    for r in rows[1:]:
        assert 1 <= int(r["num_scheduled"]) <= 5 and int(r["num_received"]) == int(r["num_scheduled"])
        assert 0 < float(r["round_latency_s"]) <= 0.1 + 1e-12  # T_max of the paper's CNN
        assert 0 < float(r["mean_keep_ratio"]) <= 1
    sim = [float(r["sim_time_s"]) for r in rows]
    assert sim == sorted(sim) and sim[-1] == pytest.approx(sum(float(r["round_latency_s"]) for r in rows))
    summary = json.loads((cached_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == ROUNDS
    assert summary["dataset_used"] == "mnist5k" and summary["config"]["wireless"]["num_devices"] == 10
    assert summary["final_accuracy"] == pytest.approx(float(rows[-1]["accuracy"]))
    assert set(summary["time_to_target_accuracy"]) == {"target", "round", "sim_time_s"}


def test_uplink_bytes_are_four_per_sub_model_parameter(cached_run):
    regions = region_map("cnn", (1, 28, 28), 10)
    rows = _read_csv(cached_run / "metrics.csv")
    for line, row in zip((cached_run / "schedule.jsonl").read_text().splitlines(), rows[1:], strict=True):
        record = json.loads(line)
        expected = {
            str(d): 4 * submodel_param_count(regions, counts)
            for d, counts in zip(record["device_ids"], record["keep_counts"], strict=True)
        }
        assert record["uplink_bytes"] == expected
        assert int(row["uplink_bytes"]) == sum(expected.values())
        # downlink: the same sliced weights plus one int32 per kept region index
        kept = sum(sum(c) for c in record["keep_counts"])
        assert int(row["downlink_bytes"]) == sum(expected.values()) + 4 * kept


def test_memory_friendly_equals_cached_global_model(cached_run, memory_friendly_run):
    """Theorem 2: Algorithm 3 (caches on the clients, in context.state) gives the same global model."""
    for a, b in zip(_final_model(cached_run), _final_model(memory_friendly_run), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    ages_a = [json.loads(x)["device_ids"] for x in (cached_run / "schedule.jsonl").read_text().splitlines()]
    ages_b = [json.loads(x)["device_ids"] for x in (memory_friendly_run / "schedule.jsonl").read_text().splitlines()]
    assert ages_a == ages_b


def test_same_seed_same_metrics(cached_run, repeat_run):
    a, b = _read_csv(cached_run / "metrics.csv"), _read_csv(repeat_run / "metrics.csv")
    for row in a + b:
        row.pop("wall_time_s")
    assert a == b

    def schedules(run):  # client_fit_s is a wall-clock measurement, like wall_time_s
        records = [json.loads(line) for line in (run / "schedule.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "client_fit_s"} for r in records]

    assert schedules(cached_run) == schedules(repeat_run)
