"""Issue 22: a run's horizon on the simulated clock (``sim_time_limit_s``), num_rounds a cap."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord

from amp_fl.config import load_config
from amp_fl.data.datasets import ArraySplit
from amp_fl.errors import ConfigError, SimTimeLimitReached
from amp_fl.launch.inprocess import run_in_process
from amp_fl.models import build_model
from amp_fl.pruning.submodel import module_arrays
from amp_fl.run_folder import COMPLETED, STOP_REASON, STOP_REASONS, STOPPED_EARLY, MetricsWriter
from amp_fl.server.recorder import Recorder
from amp_fl.strategy.report import Participant, RoundReport

LATENCY_S = 0.04


def _report(round: int) -> RoundReport:
    participant = Participant(0, 0, 1.0, (6, 16, 128), 1.0, 0.01, 0.03)
    return RoundReport(
        round=round,
        participants=(participant,),
        round_latency_s=LATENCY_S,
        objective=1.0,
        received_devices=(0,),
        failed={},
        downlink_bytes=10,
        uplink_bytes_per_device={0: 10},
        train_loss={0: 1.0},
        client_fit_s={0: 0.1},
        mean_aoi=0.0,
    )


def _recorder(tmp_path: Path, num_rounds: int, **kwargs) -> Recorder:
    data = ArraySplit(np.zeros((4, 1, 28, 28), dtype=np.float32), np.zeros(4, dtype=np.int64))
    return Recorder(
        model=build_model("cnn", num_classes=10),
        test_data=data,
        eval_batch_size=4,
        writer=MetricsWriter(tmp_path),
        num_rounds=num_rounds,
        **kwargs,
    )


def test_the_first_round_ending_at_or_past_the_limit_is_evaluated_and_ends_the_run(tmp_path):
    # 0.04 s rounds, limit 0.1 s: round 2 ends at 0.08 s, round 3 at 0.12 s (the first past 0.1 s).
    # every_sim_s = 1 s would skip rounds 1-3; the stop round is the run's last, so it is evaluated.
    recorder = _recorder(tmp_path, num_rounds=100, sim_time_limit_s=0.1, every_sim_s=1.0)
    weights = module_arrays(build_model("cnn", num_classes=10))
    recorder(0, ArrayRecord(weights))
    for k in (1, 2):
        recorder.on_round_end(_report(k))
        assert recorder(k, ArrayRecord(weights)) is None  # not on the grid, not the last
    recorder.on_round_end(_report(3))
    with pytest.raises(SimTimeLimitReached, match=r"round 3: simulated time 0.12 s reached sim_time_limit_s=0.1"):
        recorder(3, ArrayRecord(weights))
    rows = recorder.writer.rows
    assert [r.round for r in rows] == [0, 1, 2, 3]  # the stop round's row is written first
    assert rows[3].sim_time_s == pytest.approx(0.12) and not math.isnan(rows[3].accuracy)


def test_a_limit_met_exactly_stops_and_a_limit_at_the_last_round_does_not_raise(tmp_path):
    weights = module_arrays(build_model("cnn", num_classes=10))
    exact = _recorder(tmp_path / "a", num_rounds=100, sim_time_limit_s=2 * LATENCY_S)
    exact(0, ArrayRecord(weights))
    exact.on_round_end(_report(1))
    exact(1, ArrayRecord(weights))
    exact.on_round_end(_report(2))
    with pytest.raises(SimTimeLimitReached):
        exact(2, ArrayRecord(weights))  # 0.08 s == the limit: "passes" includes reaching it
    capped = _recorder(tmp_path / "b", num_rounds=1, sim_time_limit_s=LATENCY_S)
    capped(0, ArrayRecord(weights))
    capped.on_round_end(_report(1))
    assert capped(1, ArrayRecord(weights)) is not None  # the cap's last round ends the run anyway


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_a_bad_limit_is_refused_naming_the_key(bad):
    with pytest.raises(ConfigError, match="sim_time_limit_s"):
        load_config({"sim_time_limit_s": bad})


def test_a_run_stopped_by_its_horizon_is_completed_with_the_reason(tmp_path):
    cfg = load_config(
        {
            "dataset": {"name": "mnist5k"},
            "wireless": {"num_devices": 4, "num_rbs": 2},
            "num_rounds": 50,
            "sim_time_limit_s": 0.25,
            "seed": 0,
        }
    )
    run = run_in_process(cfg, tmp_path / "run")
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    times = [float(r["sim_time_s"]) for r in rows]
    assert times[-1] >= 0.25 > times[-2]  # stopped after the first round ending past 0.25 s
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == COMPLETED and summary["rounds_completed"] == len(rows) - 1 < 50
    assert summary[STOP_REASON] == "sim_time_limit" and summary[STOP_REASON] in STOP_REASONS
    assert "sim_time_limit_s=0.25" in summary[STOPPED_EARLY]
    assert (run / "final_model.npz").is_file()
