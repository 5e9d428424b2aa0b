"""The headline study's design (amp_fl.experiments.headline): regimes, their calibration, and the runs of each stage."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from report_doubles import hand_built_group

from amp_fl.experiments import headline as h
from amp_fl.experiments.campaign import Job, check_values, compose_values
from amp_fl.experiments.figures import ROUND_LENGTH_S
from amp_fl.report.compare import SpeedupStats
from amp_fl.report.maths import Speedup, SpeedupInterval
from amp_fl.run_folder import FINAL_MODEL_FILE, METRICS_FILE, RUN_CONFIG_FILE, SUMMARY_FILE, read_columns


def test_cpu_frequencies_span_the_spread_on_a_log_scale_from_the_fastest():
    freqs = h.cpu_freqs(8.0)
    assert freqs == pytest.approx((1.3e9 / 8, 1.3e9 / 4, 1.3e9 / 2, 1.3e9))
    assert h.cpu_freqs(1.0) == pytest.approx((1.3e9,) * 4)
    with pytest.raises(ValueError, match="spread"):
        h.cpu_freqs(0.5)


def test_a_calibration_scales_by_the_full_model_round_and_states_the_compute_share():
    c = h.Calibration(full_round_s=0.5, table1_full_round_s=0.25, comm_only_round_s=0.2)
    assert c.factor == 2.0
    assert c.compute_share == pytest.approx(0.6)
    # Horizon 30 s x 2, grid 0.25 s x 2, tuned T_max 0.08 s x 2, cap ceil(1.15 x 60 / (0.1 x 2)) = 345.
    assert h.scaled_overrides(c, {"model.t_max_s": 0.08}, 0.1) == (
        "sim_time_limit_s=60",
        "evaluation.every_sim_s=0.5",
        "model.t_max_s=0.16",
        "num_rounds=345",
    )
    assert h.scaled_overrides(c, {}, 0.1) == ("sim_time_limit_s=60", "evaluation.every_sim_s=0.5", "num_rounds=345")


def test_table1_calibrates_to_itself_and_to_the_figures_full_model_round_length():
    c = h.calibrate(h.TABLE1)
    assert c.factor == 1.0
    # figures.ROUND_LENGTH_S: 0.2718 s on seed 0 over 150 rounds (mean of three seeds 0.2642 s).
    assert c.full_round_s == pytest.approx(ROUND_LENGTH_S["mnist"]["full_model"], rel=0.05)
    assert 0.0 < c.compute_share < 1.0


def test_slower_compute_makes_rounds_longer_and_compute_bound():
    base, slow = h.calibrate(h.TABLE1), h.calibrate(h.Regime("flops_per_cycle", 1.0, ("wireless.flops_per_cycle=1",)))
    assert slow.full_round_s > base.full_round_s
    assert slow.compute_share > base.compute_share


def test_the_regimes_cover_each_axis_around_table1_with_distinct_keys():
    keys = [r.key for r in h.REGIMES]
    assert len(set(keys)) == len(keys)
    axes = {r.axis for r in h.REGIMES}
    assert axes == {"table1", "cpu_spread", "flops_per_cycle", "num_rbs"}
    for regime in h.REGIMES:
        check_values(compose_values([f"experiment={h.PRESET}", "method=synchronous", *regime.overrides]))


def test_tuning_and_evaluation_seeds_are_disjoint_and_there_are_at_least_eight():
    assert not set(h.TUNING_SEEDS + h.SCREEN_SEEDS) & set(h.EVAL_SEEDS)
    assert len(h.EVAL_SEEDS) >= 8


def test_evaluation_runs_take_the_tuned_values_after_the_method_and_before_the_seed():
    method = h.METHODS[2]  # Synchronous FL
    tuned = {method.key: ("train.learning_rate=0.1",)}
    specs = h.evaluation_specs([method], tuned, seeds=(0, 1))
    assert [s.run_id for s in specs] == ["synchronous/seed0", "synchronous/seed1"]
    assert specs[0].overrides == (
        "experiment=speedup",
        "method=synchronous",
        "train.learning_rate=0.1",
        f"num_rounds={math.ceil(1.15 * 30 / h.MIN_ROUND_S)}",
        "seed=0",
    )


def test_map_runs_scale_the_tuned_t_max_of_amp_fl_only():
    amp, sync = h.METHODS[0], h.METHODS[2]
    tuned = {amp.key: ("model.t_max_s=0.08",), sync.key: ()}
    regime = h.Regime("num_rbs", 20, ("wireless.num_rbs=20",))
    calibration = h.Calibration(0.5, 0.25, 0.2)
    specs = h.map_specs([amp, sync], tuned, {regime.key: calibration}, [regime], seeds=(3,))
    assert [s.run_id for s in specs] == ["num_rbs=20/amp_fl_paper/seed3", "num_rbs=20/synchronous/seed3"]
    amp_overrides, sync_overrides = specs[0].overrides, specs[1].overrides
    assert amp_overrides.index("wireless.num_rbs=20") < amp_overrides.index("model.t_max_s=0.08")
    assert amp_overrides.index("model.t_max_s=0.08") < amp_overrides.index("model.t_max_s=0.16")  # scaled wins
    assert not any(o.startswith("model.t_max_s") for o in sync_overrides)
    assert "sim_time_limit_s=60" in sync_overrides


def _selection_run(run_dir, times, val_accuracy):
    run_dir.mkdir(parents=True)
    pairs = enumerate(zip(times, val_accuracy, strict=True))
    rows = ["round,sim_time_s,accuracy,val_accuracy"] + [f"{i},{t},0.5,{a}" for i, (t, a) in pairs]
    (run_dir / METRICS_FILE).write_text("\n".join(rows) + "\n")


def test_a_selection_run_scores_its_smoothed_validation_time_or_twice_its_length(tmp_path):
    t = list(np.arange(0, 3.01, 0.25))
    held = [0.1] * 5 + [0.8] * 8  # 0.8 from 1.25 s on: the last second holds it from 2.0 s
    _selection_run(tmp_path / "a", t, held)
    assert h.smoothed_validation_time(tmp_path / "a") == 2.0
    _selection_run(tmp_path / "b", t, [0.1] * 12 + [0.9])  # one lucky evaluation at the end: never held
    assert h.smoothed_validation_time(tmp_path / "b") == 6.0


def test_the_screen_ranks_complete_variants_and_names_the_winner(tmp_path):
    jobs = []
    for key, first in (("discounted", 5), ("paper", 9), ("holders", 5)):
        spec = h.StudySpec("screen", key, key, 100, ())
        run_dir = tmp_path / key / "seed100"
        t = list(np.arange(0, 4.01, 0.25))
        _selection_run(run_dir, t, [0.1] * first + [0.8] * (len(t) - first))
        if key != "holders":  # holders' run is unfinished: not ranked
            (run_dir / SUMMARY_FILE).write_text(json.dumps({"status": "completed"}))
            (run_dir / FINAL_MODEL_FILE).write_bytes(b"")
        (run_dir / RUN_CONFIG_FILE).write_text(json.dumps(compose_values(["experiment=quick"])))
        jobs.append(Job(spec, compose_values(["experiment=quick"]), run_dir))
    payload = h.write_screen(jobs, tmp_path / "screen", "cmd")
    assert payload["chosen"] == "discounted"
    assert [r["variant"] for r in payload["ranked"]] == ["discounted", "paper"]
    assert payload["ranked"][0]["mean_s"] == 2.0 and payload["ranked"][1]["mean_s"] == 3.0
    assert "Not yet complete (not ranked): holders." in (tmp_path / "screen" / "screen.md").read_text()
    assert h.best_variant(tmp_path).key == "discounted"


def test_without_a_screen_the_best_variant_is_one_error_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"screen\.json: no finished screen"):
        h.best_variant(tmp_path)
    with pytest.raises(ValueError, match="no finished tuning"):
        h.tuned_overrides(h.METHODS[0], tmp_path)


def test_a_linear_t_max_schedule_is_scaled_at_both_ends():
    # The map once scaled T_max but not where its schedule ends, so a compute-bound regime's rounds
    # shrank from 0.99 s towards Table I's 0.3 s while a full-model round took 2 s.
    best = h.Method("best", "AMP-FL best", ("method=amp_fl_best",), (), amp_fl=True)
    regime = h.Regime("flops_per_cycle", 0.25, ("wireless.flops_per_cycle=0.25",))
    specs = h.map_specs([best], {best.key: ()}, {regime.key: h.Calibration(0.5, 0.25, 0.2)}, [regime], seeds=(0,))
    values = compose_values(list(specs[0].overrides))
    assert values["model"]["t_max_end_s"] == pytest.approx(0.6)
    assert values["model"]["t_max_s"] == pytest.approx(2 * 0.1329371569602361, rel=1e-5)


def test_time_settings_are_those_in_effect():
    amp = compose_values(["experiment=speedup", "method=amp_fl", "model.t_max_s=0.2"])
    assert h.time_settings(amp, amp_fl=True) == {"model.t_max_s": 0.2}  # constant schedule: no end
    sync = compose_values(["experiment=speedup", "method=synchronous", "scheduling.deadline_s=0.4"])
    assert h.time_settings(sync, amp_fl=False) == {"scheduling.deadline_s": 0.4}  # its T_max is inert
    assert h.time_settings(compose_values(["experiment=speedup", "method=synchronous"]), amp_fl=False) == {}


# ------------------------------------------------------------------ the pair's speedups and the map report
TIMES = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]


def _group(label, curves):
    return hand_built_group(label, curves, TIMES)


# AMP-FL holds 75 % (mean of the evaluations in (t - 1, t]) from 1.0 s on both seeds; the rival from 2.0 s and
# 3.0 s: ratio of means (2 + 3) / (1 + 1) = 2.5 at 75 %; 70 %: the same times (no evaluation in between).
AMP = {0: [0.125, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75], 1: [0.125, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75]}
RIVAL = {0: [0.125, 0.25, 0.5, 0.75, 0.75, 0.75, 0.75], 1: [0.125, 0.25, 0.5, 0.5, 0.5, 0.75, 0.75]}


def test_the_pair_speedup_is_the_ratio_of_mean_held_times_and_the_goal_needs_its_interval():
    results = h.pair_results(_group("amp", AMP), _group("rival", RIVAL))
    assert [r.target for r in results] == [0.70, 0.75]
    r75 = results[1]
    assert r75.smoothed.interval.estimate == pytest.approx(2.5)
    assert (r75.smoothed.interval.low, r75.smoothed.interval.high) == pytest.approx((2.0, 3.0))
    assert r75.first.interval.estimate == pytest.approx((1.5 + 2.5) / (0.5 + 0.5))
    assert r75.goal_met  # 2.5x >= 2.0x, and the interval's lower bound 2.0x is above 1.5x
    backwards = h.pair_results(_group("rival", RIVAL), _group("amp", AMP))[1]
    assert backwards.smoothed.interval.estimate == pytest.approx(0.4)
    assert not backwards.goal_met


def test_the_map_report_tabulates_every_complete_regime_and_names_the_missing(tmp_path):
    results = h.pair_results(_group("amp", AMP), _group("rival", RIVAL))
    cal = h.Calibration(0.5, 0.25, 0.2)
    points = [h.MapPoint(h.TABLE1, h.Calibration(0.25, 0.25, 0.16), results), h.MapPoint(h.REGIMES[1], cal, results)]
    pair = (h.METHODS[1], h.METHODS[2])
    report = h.map_report(points, pair, tmp_path, "cmd").read_text()
    assert "| cpu_spread=3 | 0.500 | 2.00 | 60% | 75% | 2.50x [2.00, 3.00] (n=2) |" in report
    assert "Regimes without complete runs yet: cpu_spread=6" in report
    assert all(r.goal_met for r in results)  # the doubles give 2x or more at both targets
    assert "met at: table1=1 to 70%, table1=1 to 75%, cpu_spread=3 to 70%, cpu_spread=3 to 75%." in report
    assert (tmp_path / "regime_map.png").is_file()
    payload = json.loads((tmp_path / "map.json").read_text())
    assert [p["regime"] for p in payload] == ["table1=1", "cpu_spread=3"]


class _RecordingAxes:
    """Stands in for a matplotlib Axes: records what would be drawn."""

    def __init__(self):
        self.errorbars, self.markers = [], []

    def errorbar(self, xs, ys, yerr, **kwargs):
        self.errorbars.append((list(xs), list(ys), [list(e) for e in yerr]))

    def plot(self, xs, ys, fmt, **kwargs):
        self.markers.append((fmt, list(xs), list(ys)))


def _stats(estimate, low, high, n, at_least=None):
    interval = SpeedupInterval(estimate, low, high, n, 0.95, 100)
    return SpeedupStats(Speedup(at_least=at_least or {}), interval, only_method=tuple(at_least or ()))


def test_a_point_only_amp_fl_reached_is_drawn_as_its_lower_bound_and_the_others_with_intervals():
    ax = _RecordingAxes()
    rows = [(5.0, _stats(math.nan, math.nan, math.nan, 0, {0: 1.3, 1: 1.1})), (10.0, _stats(1.2, 1.0, 1.5, 8))]
    assert h._plot_target(ax, rows, 0.75)
    assert ax.errorbars == [([10.0], [1.2], [[pytest.approx(0.2)], [pytest.approx(0.3)]])]
    assert ax.markers == [("^", [5.0], [1.1])]  # the smallest bound over the seeds
    assert not h._plot_target(_RecordingAxes(), [(5.0, _stats(math.nan, math.nan, math.nan, 0))], 0.75)


def test_table1_sits_on_each_axis_at_its_own_value():
    cal = h.Calibration(0.25, 0.25, 0.37)
    table1 = h.MapPoint(h.TABLE1, cal, [])
    assert h._x_on("num_rbs", table1) == 10.0
    assert h._x_on("flops_per_cycle", table1) == cal.compute_share
    assert h._x_on("cpu_spread", table1) == pytest.approx(h.TABLE1_CPU_HZ[-1] / h.TABLE1_CPU_HZ[0])


def _screened(tmp_path, winner="holders_spare"):
    (tmp_path / "screen").mkdir(parents=True, exist_ok=True)
    (tmp_path / "screen" / h.SCREEN_FILE).write_text(json.dumps({"chosen": winner}))
    return h.methods_after_screen(tmp_path)


def test_every_variant_of_the_screen_composes_into_a_valid_selection_run():
    for spec in h.screen_specs(seeds=(100,)):
        values = compose_values(spec.overrides)
        check_values(values)
        assert values["evaluation"]["stop_window_s"] == 1.0 and values["evaluation"]["test"] is False
        assert values["dataset"]["validation_fraction"] == 0.1


def test_every_method_tunes_a_space_whose_corners_are_valid_configs(tmp_path):
    from amp_fl.experiments.tpe import parse_space

    methods = _screened(tmp_path)
    assert methods[1].overrides == next(v for v in h.VARIANTS if v.key == "holders_spare").overrides
    for method in methods:
        preset, rest = h.preset_and_sets(method)
        space = parse_space(list(method.space))
        for corner in ("low", "high"):
            picks = []
            for key, dim in space.items():
                value = dim.choices[-1 if corner == "high" else 0] if dim.kind == "cat" else getattr(dim, corner)
                picks.append(f"{key}={dim.override_value(value)}")
            check_values(compose_values([f"method={preset}", f"experiment={h.PRESET}", *rest, *picks]))


def test_each_study_method_keeps_its_tuning_in_a_folder_of_its_own(tmp_path):
    methods = _screened(tmp_path, winner="paper")
    files = [h.tuning_file(m, tmp_path) for m in methods]
    assert len(set(files)) == len(files)
    assert files[0] == tmp_path / "tuning" / "amp_fl_paper" / "amp_fl" / "tuning.json"
    files[0].parent.mkdir(parents=True)
    files[0].write_text(json.dumps({"chosen_overrides": ["train.learning_rate=0.1", "model.t_max_s=0.2"]}))
    assert h.tuned_overrides(methods[0], tmp_path) == ("train.learning_rate=0.1", "model.t_max_s=0.2")


def test_the_command_refuses_evaluation_seeds_that_were_tuning_seeds(capsys):
    assert h.main(["evaluate", "--seeds", "0,100"]) == 2
    assert "evaluation seeds must differ" in capsys.readouterr().err
    assert h.main(["evaluate", "--seeds", "0,103"]) == 2  # a screen seed
    assert "evaluation seeds must differ" in capsys.readouterr().err


MICRO = [
    "dataset=mnist5k",
    "wireless.num_devices=4",
    "wireless.num_rbs=2",
    "num_rounds=3",
    "train.local_steps=1",
    "train.batch_size=16",
    "evaluation.every_sim_s=0",
    "checkpoint.every=0",
]


def test_the_four_stages_run_end_to_end_on_a_micro_setting(tmp_path, monkeypatch, capsys):
    """screen -> tune -> evaluate -> map through the real campaign machinery (in-process, mnist5k, 3 rounds)."""
    monkeypatch.setattr(h, "VARIANTS", h.VARIANTS[:2])  # paper, discounted
    monkeypatch.setattr(h, "METHODS", h.METHODS[:3])  # AMP-FL paper, AMP-FL best, Synchronous FL
    monkeypatch.setattr(h, "REGIMES", (h.TABLE1, next(r for r in h.REGIMES if r.key == "flops_per_cycle=1")))
    monkeypatch.setattr(h, "TARGETS", (0.1, 0.15))
    common = ["--jobs", "1", "--tuning-seeds", "100", "--seeds", "0", "--trials", "1"]
    common += ["--runs-root", str(tmp_path / "runs"), "--reports-root", str(tmp_path / "reports"), "--set", *MICRO]
    for stage in h.STAGES:
        assert h.main([stage, *common]) == 0, capsys.readouterr().err
    reports = tmp_path / "reports"
    screen = json.loads((reports / "screen" / h.SCREEN_FILE).read_text())
    assert {r["variant"] for r in screen["ranked"]} == {"paper", "discounted"}
    for method in h.methods_after_screen(reports):
        tuning = json.loads(h.tuning_file(method, reports).read_text())
        assert tuning["chosen_overrides"] and tuning["seeds"] == [100]
    headline = json.loads((reports / "evaluate" / "headline.json").read_text())
    assert headline["best_other"] == "Synchronous FL" and headline["seeds"] == [0]
    assert "the best AMP-FL against the best other method" in (reports / "evaluate" / "report.md").read_text()
    regimes = [p["regime"] for p in json.loads((reports / "map" / "map.json").read_text())]
    assert regimes == ["table1=1", "flops_per_cycle=1"]
    assert (reports / "map" / "regime_map.png").is_file()
    # Selection runs (screen, tuning) evaluated validation only; the evaluation runs the test set.
    for stage, test_evaluated in (("screen", False), ("tuning", False), ("evaluate", True)):
        folders = sorted(p.parent for p in (tmp_path / "runs" / stage).rglob("metrics.csv"))
        assert folders, stage
        for columns in (read_columns(folder / METRICS_FILE) for folder in folders):
            assert np.isfinite(columns["val_accuracy"]).all()  # every_sim_s=0: every round evaluated
            assert (np.isfinite(columns["accuracy"]) == test_evaluated).all()
    # Everything again: nothing is rerun (each stage finds its runs complete).
    assert h.main(["screen", *common]) == 0
    assert "0 to run" in capsys.readouterr().out


def test_the_screen_says_whether_every_seed_agrees_with_the_winner():
    ranked = [("a", 17.0, [16.0, 18.0]), ("b", 17.5, [14.0, 21.0]), ("c", 30.0, [30.0, 30.0])]
    text = h._margin_text(ranked)
    assert "lead over `b`: 0.50 s (per seed -2.00, +3.00 s; ahead on 1 of 2 seeds)" in text
    assert "every seed agrees)" in h._margin_text([ranked[0], ranked[2]])
    assert h._margin_text(ranked[:1]) == ""
