"""Issue 9: evaluation on a grid of the simulated clock, early stop at a validation accuracy, and the
report pieces that read such runs (un-evaluated rows, the curve goal, goal verdicts)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord

from amp_fl.config import load_config
from amp_fl.data.datasets import ArraySplit
from amp_fl.errors import ConfigError, ValidationTargetReached
from amp_fl.experiments.figure_report import PanelResult, _timed_verdict, curve_above_from
from amp_fl.experiments.figures import PaperClaim
from amp_fl.experiments.tune import tune
from amp_fl.models import build_model
from amp_fl.pruning.submodel import module_arrays
from amp_fl.report.maths import SpeedupInterval
from amp_fl.report.runs import Group, Run, read_metrics
from amp_fl.run_folder import MetricsWriter, smoothed_time_to_target
from amp_fl.server.recorder import Recorder, evaluation_due, summary_outcome
from amp_fl.strategy.report import Participant, RoundReport

LATENCY_S = 0.04  # every round of the hand-built reports lasts 0.04 simulated seconds


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
    labels = np.zeros(12, dtype=np.int64)  # all class 0: the all-zero model (uniform logits) scores 1.0
    data = ArraySplit(np.random.default_rng(0).normal(size=(12, 1, 28, 28)).astype(np.float32), labels)
    return Recorder(
        model=build_model("cnn", num_classes=10),
        test_data=data,
        eval_batch_size=6,
        writer=MetricsWriter(tmp_path),
        num_rounds=num_rounds,
        validation_data=data,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("evaluation.every_sim_s", -0.5, "every_sim_s"),
        ("evaluation.every_sim_s", math.inf, "every_sim_s"),
        ("evaluation.every_rounds", -1, "every_rounds"),
        ("evaluation.stop_at_val_accuracy", 0.0, "stop_at_val_accuracy"),
        ("evaluation.stop_at_val_accuracy", 1.5, "stop_at_val_accuracy"),
        ("evaluation.stop_window_s", -0.1, "stop_window_s"),
        ("evaluation.stop_window_s", math.nan, "stop_window_s"),
    ],
)
def test_bad_evaluation_settings_name_the_key(key, value, problem):
    section, name = key.split(".")
    values = {section: {name: value}, "dataset": {"validation_fraction": 0.1}}
    with pytest.raises(ConfigError, match=f"evaluation.{problem}"):
        load_config(values)


def test_stopping_on_validation_needs_a_validation_split():
    with pytest.raises(ConfigError, match="evaluation.stop_at_val_accuracy.*dataset.validation_fraction"):
        load_config({"evaluation": {"stop_at_val_accuracy": 0.7}})
    assert load_config({}).evaluation.every_sim_s == 0.0  # default: every round, as before


def test_evaluation_grid_on_the_simulated_clock(tmp_path):
    # Rounds end at 0.04 k s. With a 0.1 s grid the server evaluates round 0, the first round to end at
    # or after 0.1 s (round 3, 0.12 s) and after 0.2 s (round 5, 0.20 s), and the last round (6).
    recorder = _recorder(tmp_path, num_rounds=6, every_sim_s=0.1)
    weights = module_arrays(build_model("cnn", num_classes=10))
    returned = {}
    for k in range(7):
        if k:
            recorder.on_round_end(_report(k))
        returned[k] = recorder(k, ArrayRecord(weights))
    evaluated = [r.round for r in recorder.writer.rows if not math.isnan(r.accuracy)]
    assert evaluated == [0, 3, 5, 6]
    assert [k for k, m in returned.items() if m is not None] == [0, 3, 5, 6]
    rows = recorder.writer.rows
    assert all(math.isnan(r.val_accuracy) == math.isnan(r.accuracy) for r in rows)
    assert [r.sim_time_s for r in rows] == pytest.approx([LATENCY_S * k for k in range(7)])
    assert recorder.latest_arrays is not None  # the latest model is kept whether evaluated or not
    # The summary reads the evaluated rows: final accuracy from round 6, rounds completed 6.
    outcome = summary_outcome(rows, "completed", 0.9, 0.0)
    assert outcome["final_accuracy_round"] == 6 and outcome["rounds_completed"] == 6
    assert not math.isnan(outcome["best_accuracy"])
    # metrics.csv as the report reads it: the un-evaluated rows are dropped.
    columns = read_metrics(tmp_path / "metrics.csv")
    assert columns["round"].tolist() == [0, 3, 5, 6]


def test_a_round_grid_evaluates_every_so_many_rounds_and_the_last(tmp_path):
    # every_rounds=4 over 6 rounds: round 0, round 4 and the last round (6), wherever the clock is.
    recorder = _recorder(tmp_path, num_rounds=6, every_rounds=4)
    weights = module_arrays(build_model("cnn", num_classes=10))
    for k in range(7):
        if k:
            recorder.on_round_end(_report(k))
        recorder(k, ArrayRecord(weights))
    assert [r.round for r in recorder.writer.rows if not math.isnan(r.accuracy)] == [0, 4, 6]
    assert evaluation_due(5, 0.2, 0.16, 0.0, 6, personal=True, every_rounds=4)  # personalised rounds always


def test_the_clock_grid_and_the_round_grid_exclude_each_other():
    with pytest.raises(ConfigError, match="evaluation.every_rounds.*evaluation.every_sim_s=0.5"):
        load_config({"evaluation": {"every_rounds": 3, "every_sim_s": 0.5}})
    assert load_config({"evaluation": {"every_rounds": 3}}).evaluation.every_rounds == 3
    assert load_config({}).evaluation.every_rounds == 0  # default: off


def test_without_the_test_set_the_grid_evaluates_validation_only(tmp_path):
    # The grid of the test above (rounds 0, 3, 5, 6), now keyed on the validation evaluations alone.
    recorder = _recorder(tmp_path, num_rounds=6, every_sim_s=0.1)
    recorder.test_data = None  # evaluation.test=false (the runner passes None)
    weights = module_arrays(build_model("cnn", num_classes=10))
    returned = []
    for k in range(7):
        if k:
            recorder.on_round_end(_report(k))
        returned.append(recorder(k, ArrayRecord(weights)))
    rows = recorder.writer.rows
    assert [r.round for r in rows if not math.isnan(r.val_accuracy)] == [0, 3, 5, 6]
    assert all(math.isnan(r.accuracy) and math.isnan(r.loss) for r in rows)
    assert returned == [None] * 7  # Flower's evaluate_fn gets no test metrics
    outcome = summary_outcome(rows, "completed", 0.9, 0.0)
    assert outcome["final_accuracy"] is None and outcome["final_val_accuracy"] == rows[-1].val_accuracy


def test_leaving_out_the_test_set_needs_a_validation_split():
    with pytest.raises(ConfigError, match="evaluation.test.*dataset.validation_fraction"):
        load_config({"evaluation": {"test": False}})
    assert (
        load_config({"evaluation": {"test": False}, "dataset": {"validation_fraction": 0.1}}).evaluation.test is False
    )
    assert load_config({}).evaluation.test is True


def test_every_round_is_evaluated_by_default(tmp_path):
    recorder = _recorder(tmp_path, num_rounds=3)
    weights = module_arrays(build_model("cnn", num_classes=10))
    for k in range(4):
        if k:
            recorder.on_round_end(_report(k))
        assert recorder(k, ArrayRecord(weights)) is not None
    assert not any(math.isnan(r.accuracy) for r in recorder.writer.rows)


def test_validation_target_stops_the_run_after_writing_its_row(tmp_path):
    recorder = _recorder(tmp_path, num_rounds=5, stop_at_val_accuracy=0.9)
    zeros = [np.zeros_like(w) for w in module_arrays(build_model("cnn", num_classes=10))]
    class_one = [*zeros[:-1], np.eye(10, dtype=np.float32)[1]]  # only the output bias: predicts class 1
    assert recorder(0, ArrayRecord(class_one)) is not None
    assert recorder.writer.rows[0].val_accuracy == 0.0  # every label is 0: below the target, no stop
    recorder.on_round_end(_report(1))
    with pytest.raises(ValidationTargetReached, match="round 1: validation accuracy 1.0000") as stop:
        recorder(1, ArrayRecord(zeros))  # uniform logits: argmax is class 0, accuracy 1.0
    assert stop.value.round == 1
    assert [r.round for r in recorder.writer.rows] == [0, 1]  # the stop round's row is written first


@pytest.mark.parametrize(("target", "stop_round", "mean"), [(0.6, 3, 2 / 3), (0.7, 5, 1.0)])
def test_a_stop_window_stops_once_the_smoothed_validation_accuracy_holds_the_target(tmp_path, target, stop_round, mean):
    # Validation accuracy by round (every 0.04 s): 0, 1, 0, 1, 1, 1, 1. With a 0.1 s window the first
    # whole window ends at round 3 (0.12 s): rounds 1-3 (0.04, 0.08, 0.12 s), mean 2/3; round 4
    # (0.16 s): rounds 2-4, 2/3; round 5 (0.20 s): rounds 3-5, 1.0. Target 0.6 stops at round 3,
    # 0.7 at round 5, both though round 1 already crossed it (where stop_window_s=0 stops).
    recorder = _recorder(tmp_path, num_rounds=6, stop_at_val_accuracy=target, stop_window_s=0.1)
    zeros = [np.zeros_like(w) for w in module_arrays(build_model("cnn", num_classes=10))]
    class_one = [*zeros[:-1], np.eye(10, dtype=np.float32)[1]]  # val accuracy 0; zeros: 1 (every label is 0)
    models = [class_one, zeros, class_one, zeros, zeros, zeros, zeros]
    with pytest.raises(ValidationTargetReached, match=f"mean validation accuracy of the last 0.1 s {mean:.4f}") as stop:
        for k, weights in enumerate(models):
            if k:
                recorder.on_round_end(_report(k))
            recorder(k, ArrayRecord(weights))
    assert stop.value.round == stop_round and stop.value.val_accuracy == pytest.approx(mean)
    rows = recorder.writer.rows
    assert [r.val_accuracy for r in rows] == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0][: stop_round + 1]
    # The same rule as the smoothed time to target read afterwards: the run stops at its hit.
    hit = smoothed_time_to_target([r.round for r in rows], [r.sim_time_s for r in rows],
                                  [r.val_accuracy for r in rows], target, window_s=0.1)  # fmt: skip
    assert hit is not None and hit.round == stop_round


def test_time_to_target_tuning_stops_each_run_at_the_target(tmp_path):
    sets = ["experiment=quick", "wireless.num_devices=3", "wireless.num_rbs=2"]
    kwargs = dict(seeds=(0,), rounds=3, target=0.01, sets=sets, runs_dir=tmp_path / "runs")
    payload = tune("amp_fl", {}, reports_dir=tmp_path / "reports", log=lambda _: None, **kwargs)
    assert "evaluation.stop_at_val_accuracy=0.01" in payload["base_overrides"]
    run = tmp_path / "runs" / "amp_fl" / "default" / "seed0"
    summary = json.loads((run / "summary.json").read_text())
    # Any model scores at least 1 % on validation: the run stops after round 0, complete.
    assert summary["status"] == "completed" and summary["rounds_completed"] == 0
    assert "stopped at round 0" in summary["stopped_early"]
    lines: list[str] = []
    tune("amp_fl", {}, reports_dir=tmp_path / "reports", log=lines.append, **kwargs)
    assert lines[0] == "[tune] amp_fl: 1 runs, 1 complete, 0 to run"  # a stopped run is not run again


def _run(seed: int, times: list[float], accuracy: list[float]) -> Run:
    columns = {"round": np.arange(len(times)), "sim_time_s": np.array(times), "accuracy": np.array(accuracy)}
    return Run(Path(f"/runs/{seed}"), seed, {}, {}, columns)


def test_curve_goal_compares_mean_curves_on_the_time_grid():
    claim = PaperClaim("mnist", "s2", "trend", "ours", ("a", "b"), math.nan, "goal", "issue 9",
                       trend="curve_above_from", goal=True, from_time_s=1.0)  # fmt: skip
    # Step curves: ours is 0.5 from 0 s and 0.8 from 1.5 s (mean of two seeds); a is 0.6 from 0 s;
    # b is 0.4 then 0.7 from 1.0 s. From 1.0 s to the common end 2.0 s on a 0.25 s grid
    # (1.0, 1.25, 1.5, 1.75, 2.0): ours - max(a, b) = -0.2, -0.2, +0.1, +0.1, +0.1.
    ours = Group("ours", [_run(0, [0, 1.5, 2.0], [0.4, 0.7, 0.7]), _run(1, [0, 1.5, 2.5], [0.6, 0.9, 0.9])])
    a = Group("a", [_run(0, [0, 3.0], [0.6, 0.6])])
    b = Group("b", [_run(0, [0, 1.0, 2.0], [0.4, 0.7, 0.7])])
    result = curve_above_from(claim, [PanelResult("s2", "", [ours, a, b], None)])
    assert "at or above at 3 of 5 points from 1 s to 2.00 s" in result.ours
    assert "smallest margin -20.00 points at 1.00 s" in result.ours
    assert "mean margin -2.00 points" in result.ours
    assert result.verdict == "goal missed at 2 of 5 points"
    later = PaperClaim("mnist", "s2", "trend", "ours", ("a", "b"), math.nan, "goal", "issue 9",
                       trend="curve_above_from", goal=True, from_time_s=1.5)  # fmt: skip
    assert curve_above_from(later, [PanelResult("s2", "", [ours, a, b], None)]).verdict == "goal met"


def test_goal_verdicts_say_met_or_by_how_much_missed():
    goal = PaperClaim("mnist", "s2", "speedup", "ours", ("a",), 2.0, "goal", "issue 9", 0.7, goal=True)
    interval = SpeedupInterval(2.3, 1.62, 3.1, 8, 0.95, 10_000)
    assert _timed_verdict(goal, 2.3, interval) == "goal met; 95 % interval's lower bound 1.62x (n=8)"
    assert _timed_verdict(goal, 2.3) == "goal met; no interval (fewer than 2 paired seeds)"
    assert _timed_verdict(goal, math.inf) == "goal met (only AMP-FL reached the target)"
    assert (
        _timed_verdict(goal, 1.5)
        == "goal missed: 1.50x of 2x (75% of the goal); no interval (fewer than 2 paired seeds)"
    )
    assert _timed_verdict(goal, math.nan) == "not measurable"


def test_an_evaluation_grid_changes_which_rows_are_evaluated_and_nothing_else(tmp_path):
    """Evaluation never feeds back into training: a run on a round grid is the every-round run with
    the rows between its points left unevaluated (the paper presets' grids rest on this)."""
    from amp_fl.launch.inprocess import run_in_process
    from amp_fl.run_folder import read_columns, read_schedule

    values = {"dataset": {"name": "mnist5k"}, "wireless": {"num_devices": 6, "num_rbs": 3}, "num_rounds": 5, "seed": 3}
    every = run_in_process(load_config(values), tmp_path / "every")
    grid = run_in_process(load_config({**values, "evaluation": {"every_rounds": 2}}), tmp_path / "grid")
    a, b = read_columns(every / "metrics.csv"), read_columns(grid / "metrics.csv")
    evaluated = ~np.isnan(b["accuracy"])
    assert b["round"][evaluated].tolist() == [0, 2, 4, 5] and np.isnan(a["accuracy"]).sum() == 0
    for column in set(a) - {"wall_time_s"}:
        rows = evaluated if column in ("accuracy", "loss") else np.ones_like(evaluated)
        np.testing.assert_array_equal(a[column][rows], b[column][rows], err_msg=column)
    for x, y in zip(read_schedule(every), read_schedule(grid), strict=True):
        assert {k: v for k, v in x.items() if k != "client_fit_s"} == {
            k: v for k, v in y.items() if k != "client_fit_s"
        }
    with np.load(every / "final_model.npz") as za, np.load(grid / "final_model.npz") as zb:
        assert za.files == zb.files and all(np.array_equal(za[k], zb[k]) for k in za.files)
