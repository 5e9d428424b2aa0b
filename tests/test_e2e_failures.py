"""Issue 11, through Flower's simulation engine: late PIUs miss the round by ``strategy.reply_timeout_s``.

The injector makes about a fifth of the scheduled PIUs reply 6 s late; the server waits 5 s (the
timeout of Flower's ``send_and_receive``), goes on without them, and counts them as timeouts. The
devices that failed are exactly the injected ones. About a minute and a half on two cores.
"""

from __future__ import annotations

import csv
import json

import pytest

from amp_fl.client.failures import injected_failure
from amp_fl.config import load_config
from amp_fl.launch.launcher import FLWR_HOME_DIR, launch
from amp_fl.launch.processes import run_processes

pytestmark = pytest.mark.e2e

VALUES = {
    "dataset": {"name": "mnist5k"},
    "wireless": {"num_devices": 10, "num_rbs": 5},
    "num_rounds": 4,
    "seed": 3,
    "strategy": {"reply_timeout_s": 5.0},
    "failures": {"late_prob": 0.2, "late_delay_s": 6.0},
}


def test_late_replies_miss_the_round_through_flower(tmp_path, monkeypatch):
    home = tmp_path / "flwr_home"
    monkeypatch.setenv("FLWR_HOME", str(home))
    cfg = load_config(VALUES)
    run = launch(cfg, tmp_path / "run")
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    records = [json.loads(line) for line in (run / "schedule.jsonl").read_text().splitlines()]
    late_total = 0
    for row, record in zip(rows[1:], records, strict=True):
        server_round = int(row["round"])
        late = {d for d in record["device_ids"] if injected_failure(cfg.failures, cfg.seed, server_round, d)}
        assert {int(d) for d in record["failures"]} == late, (server_round, record["failures"], late)
        assert all(reason == "no reply within the reply timeout" for reason in record["failures"].values())
        assert int(row["failed_timeout"]) == int(row["num_failed"]) == len(late)
        assert int(row["num_received"]) == len(record["device_ids"]) - len(late)
        late_total += len(late)
    assert late_total >= 1  # the seed makes some PIUs late (else this test would prove nothing)
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert run_processes(run / FLWR_HOME_DIR) == []  # the run's own FLWR_HOME
