"""The Recorder uses only what Flower (``evaluate_fn`` arrays) and the strategy (``on_round_end``) hand it."""

from __future__ import annotations

import csv
import json
import logging
import math

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord

from amp_fl import protocol as P
from amp_fl.data.datasets import ArraySplit
from amp_fl.models import build_model
from amp_fl.pruning.submodel import module_arrays
from amp_fl.run_folder import MetricsWriter
from amp_fl.scheduling.schedule import Schedule
from amp_fl.server.recorder import Recorder
from amp_fl.strategy.replies import Failure
from amp_fl.strategy.report import RoundReport, participants_of


def _schedule(round: int) -> Schedule:
    return Schedule(
        round=round,
        layer_sizes=(6, 16, 128),
        device_ids=np.array([0, 2]),
        rb_ids=np.array([1, 0]),
        keep_fraction=np.array([1.0, 0.5]),
        keep_counts=np.array([[6, 16, 128], [3, 8, 64]]),
        kept_indices=((), ()),
        weights=np.array([5, 3]),
        compute_latency_s=np.array([0.01, 0.02]),
        upload_latency_s=np.array([0.03, 0.01]),
        round_latency_s=0.04,
        objective=8,
    )


def _report(round: int) -> RoundReport:
    schedule = _schedule(round)
    return RoundReport(
        round=round,
        participants=participants_of(schedule),
        round_latency_s=schedule.round_latency_s,
        objective=float(schedule.objective),
        received_devices=(0,),
        failed={2: Failure("timeout", "no reply")},
        downlink_bytes=1000,
        uplink_bytes_per_device={0: 400},
        train_loss={0: 1.5},
        client_fit_s={0: 0.2},
        mean_aoi=0.75,
    )


@pytest.fixture
def recorder(tmp_path):
    rng = np.random.default_rng(0)
    data = ArraySplit(rng.normal(size=(20, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 20))
    return Recorder(
        model=build_model("cnn", num_classes=10),
        test_data=data,
        eval_batch_size=8,
        writer=MetricsWriter(tmp_path),
        num_rounds=1,
    )


def test_rows_come_from_flowers_arrays_and_the_round_hook(recorder, tmp_path, caplog, capsys):
    with torch.random.fork_rng():
        torch.manual_seed(1)
        weights = module_arrays(build_model("cnn", num_classes=10))
    with caplog.at_level(logging.INFO, logger="amp_fl.progress"):
        metrics0 = recorder(0, ArrayRecord(weights))
        recorder.on_round_end(_report(1))
        metrics1 = recorder(1, ArrayRecord([w * 0 for w in weights]))
    # The evaluated model is the one Flower passed (all-zero weights: uniform logits, loss ln 10).
    assert metrics1[P.LOSS] == pytest.approx(math.log(10), rel=1e-6)
    assert metrics0[P.LOSS] != pytest.approx(math.log(10), rel=1e-6)
    for a in recorder.latest_arrays:
        assert not a.any()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [r["round"] for r in rows] == ["0", "1"]
    row = rows[1]
    assert float(row["avg_aoi"]) == 0.75 and float(rows[0]["avg_aoi"]) == 0.0
    assert (row["num_scheduled"], row["num_received"], row["num_failed"]) == ("2", "1", "1")
    assert (row["uplink_bytes"], row["downlink_bytes"]) == ("400", "1000")
    assert float(row["train_loss"]) == 1.5 and float(row["sim_time_s"]) == pytest.approx(0.04)
    assert float(row["mean_keep_ratio"]) == pytest.approx((1.0 + 0.5) / 2)
    (line,) = (tmp_path / "schedule.jsonl").read_text().splitlines()
    assert json.loads(line)["failures"] == {"2": "no reply"}
    # Progress: one INFO line per round on amp_fl.progress, nothing on stdout.
    progress = [r for r in caplog.records if r.name == "amp_fl.progress"]
    assert len(progress) == 2 and all(r.levelno == logging.INFO for r in progress)
    assert "round 1/1" in progress[1].getMessage()
    assert capsys.readouterr().out == ""


def test_a_round_without_its_report_is_an_error(recorder):
    weights = module_arrays(recorder.model)
    recorder(0, ArrayRecord(weights))
    recorder.on_round_end(_report(1))
    with pytest.raises(ValueError, match="round 2"):
        recorder(2, ArrayRecord(weights))
