"""Every scheduler, pruning policy and compensation scope runs through the ServerApp/ClientApp code.

Uses the in-process grid (same apps, no SuperLink) so that each combination takes seconds; the
Flower engine itself is covered by test_e2e_flower.py.
"""

import csv
import json

import pytest

from amp_fl.config import load_config
from amp_fl.launch.inprocess import run_in_process

BASE = {"dataset": {"name": "mnist5k"}, "wireless": {"num_devices": 6, "num_rbs": 3}, "num_rounds": 2}


@pytest.mark.parametrize(
    "override",
    [
        {"scheduling": {"name": "pr"}},
        {"scheduling": {"name": "channel"}},
        {"scheduling": {"name": "random"}},
        {"scheduling": {"name": "full_model"}, "strategy": {"compensation": "none"}},
        {"scheduling": {"name": "fixed_ratio", "num_scheduled": 2}, "pruning": {"ratio": 0.5}},
        {"pruning": {"policy": "importance"}},
        {"pruning": {"policy": "random"}},
        {"pruning": {"policy": "static"}},
        {"pruning": {"policy": "rolling"}, "strategy": {"compensation": "scheduled"}},
        {"strategy": {"memory_friendly": True}},
    ],
    ids=lambda o: json.dumps(o, sort_keys=True).replace('"', ""),
)
def test_variant_runs_and_respects_its_schedule(tmp_path, override):
    values = {**BASE, **override}
    run = run_in_process(load_config(values), tmp_path)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["round"]) for r in rows] == [0, 1, 2]
    records = [json.loads(line) for line in (run / "schedule.jsonl").read_text().splitlines()]
    for row, record in zip(rows[1:], records, strict=True):
        assert int(row["num_received"]) == len(record["device_ids"]) >= 1
        assert len(set(record["rb_ids"])) == len(record["rb_ids"])  # an RB serves one device
        if override.get("scheduling", {}).get("name") == "full_model":
            assert all(c == [6, 16, 128] for c in record["keep_counts"])
        if override.get("scheduling", {}).get("name") == "fixed_ratio":
            assert record["keep_counts"] == [[3, 8, 64]] * 2  # floor(0.5 * I_l), 2 devices
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def test_offline_fallback_is_recorded_in_the_run(tmp_path):
    values = {
        **BASE,
        "num_rounds": 1,
        "dataset": {"name": "mnist", "root": str(tmp_path / "no_data"), "download": False, "fallback": "mnist5k"},
    }
    with pytest.warns(RuntimeWarning, match="DATASET FALLBACK"):
        run = run_in_process(load_config(values), tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["dataset_requested"], summary["dataset_used"]) == ("mnist", "mnist5k")
    assert "unavailable" in summary["dataset_fallback_reason"]
    assert summary["status"] == "completed"
