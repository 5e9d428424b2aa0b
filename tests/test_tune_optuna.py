"""Issue 21: equal-effort tuning with Optuna TPE (amp_fl.experiments.tune --search tpe).

The search space parser, the seeded sampler, the objective on hand-written metrics.csv files, the
study's resume (a trial a killed process left running is asked again and finds its runs), and one
real micro tuning on mnist5k.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from amp_fl.experiments import tpe as tpe_module
from amp_fl.experiments.selection import read_seed
from amp_fl.experiments.tpe import (
    STUDY_FILE,
    Dimension,
    batch_sampler,
    parse_space,
    study_storage,
    trial_folder,
    trial_point,
    trial_value,
    tune_tpe,
)
from amp_fl.experiments.tune import main
from amp_fl.run_folder import FINAL_MODEL_FILE, METRICS_FILE, RUN_CONFIG_FILE, SUMMARY_FILE

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_space_parser_reads_each_kind_and_the_aliases():
    space = parse_space(["learning_rate=float:0.01:0.3:log", "strategy.local_steps=int:1:8", "t_max=cat:0.05,0.1"])
    assert space == {
        "train.learning_rate": Dimension("float", 0.01, 0.3, True),
        "strategy.local_steps": Dimension("int", 1.0, 8.0),
        "model.t_max_s": Dimension("cat", choices=("0.05", "0.1")),
    }
    distributions = {key: dim.distribution() for key, dim in space.items()}
    assert distributions["train.learning_rate"] == FloatDistribution(0.01, 0.3, log=True)
    assert distributions["strategy.local_steps"] == IntDistribution(1, 8)
    assert distributions["model.t_max_s"] == CategoricalDistribution(("0.05", "0.1"))
    # The recorded spec reads back as the same dimension.
    assert parse_space([f"{k}={d.spec()}" for k, d in space.items()]) == space
    assert [d.spec() for d in space.values()] == ["float:0.01:0.3:log", "int:1:8", "cat:0.05,0.1"]
    point = trial_point(
        {"train.learning_rate": 0.1234567891234, "strategy.local_steps": 3, "model.t_max_s": "0.1"}, space
    )
    assert point == {"train.learning_rate": "0.1234567891234", "strategy.local_steps": "3", "model.t_max_s": "0.1"}


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ("learning_rate", "expected KEY=float"),
        ("=float:0:1", "expected KEY=float"),
        ("learning_rate=range:0:1", "the kind must be one of float, int, cat"),
        ("learning_rate=float:0.1", "expected float:LO:HI"),
        ("learning_rate=float:0.1:0.2:linear", "expected float:LO:HI"),
        ("learning_rate=float:a:0.2", "LO and HI must be float numbers"),
        ("strategy.local_steps=int:1.5:4", "LO and HI must be int numbers"),
        ("learning_rate=float:0.3:0.1", "needs finite LO < HI"),
        ("learning_rate=float:0.1:inf", "needs finite LO < HI"),
        ("learning_rate=float:0:0.1:log", "a log scale needs LO > 0"),
        ("t_max=cat:0.1", "cat needs two or more"),
        ("t_max=cat:0.1,,0.2", "cat needs two or more non-empty"),
        ("t_max=cat:0.1,0.1", "cat values must differ"),
    ],
)
def test_space_parser_names_the_problem(item, problem):
    with pytest.raises(ValueError, match=f"^space: .*{problem}"):
        parse_space([item])


def test_a_key_given_twice_is_refused_by_its_full_name():
    with pytest.raises(ValueError, match="space: train.learning_rate given twice"):
        parse_space(["learning_rate=float:0.1:0.2", "train.learning_rate=float:0.1:0.3"])


def test_long_points_get_a_bounded_folder_named_by_the_parameters():
    short = {"train.learning_rate": "0.05"}
    assert trial_folder(short) == "learning_rate_0.05"
    long = {f"strategy.k{i}": repr(0.1 + i / 7) for i in range(8)}
    folder = trial_folder(long)
    assert len(folder) == 100 and folder == trial_folder(dict(long))
    assert folder != trial_folder({**long, "strategy.k7": "0.2"})


def _asked_params(sampler_seed: int, n: int) -> list[dict]:
    """Ask ``n`` trials one at a time with the tuner's sampler (3 random, then TPE), telling a fixed function."""
    space = parse_space(["learning_rate=float:0.01:1.0:log", "strategy.local_steps=int:1:8"])
    distributions = {k: d.distribution() for k, d in space.items()}
    study = optuna.create_study()
    for done in range(n):
        study.sampler = batch_sampler(sampler_seed, done, startup_trials=3)
        trial = study.ask(distributions)
        study.tell(
            trial, (math.log(trial.params["train.learning_rate"]) + 2) ** 2 + trial.params["strategy.local_steps"]
        )
    return [t.params for t in study.trials]


def test_the_same_sampler_seed_proposes_the_same_trials():
    first = _asked_params(0, 6)
    assert _asked_params(0, 6) == first  # random startup and TPE proposals alike
    assert _asked_params(1, 6) != first
    assert len({p["train.learning_rate"] for p in first}) == 6


def _metrics(run_dir: Path, rows: list[tuple[float, float]]) -> None:
    """metrics.csv of (sim_time_s, val_accuracy) rows (NaN: not evaluated); test accuracy 0.99 throughout."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / METRICS_FILE).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["round", "sim_time_s", "accuracy", "val_accuracy"])
        for k, (t, val) in enumerate(rows):
            writer.writerow([k, t, "nan" if math.isnan(val) else 0.99, val])


def test_the_objective_is_the_mean_smoothed_time_with_a_penalty_for_seeds_that_never_hold(tmp_path):
    # Target 0.72, window 1 s. Seed 0 crosses at 0.5 s; its 1 s means: (0.8 + 0.6) / 2 = 0.7 at 1.0 s,
    # (0.6 + 0.8) / 2 = 0.7 at 1.5 s, (0.8 + 0.8) / 2 = 0.8 at 2.0 s: held at 2.0 s. Seed 1 crosses at
    # 0.4 s but never holds (0.6 at 1.2 s, 0.45 at 1.6 s); its run's last row (not evaluated) is at
    # 1.7 s: it scores 2 x 1.7 = 3.4 s. The trial: (2.0 + 3.4) / 2 = 2.7.
    _metrics(tmp_path / "s0", [(0.0, 0.1), (0.5, 0.8), (1.0, 0.6), (1.5, 0.8), (2.0, 0.8)])
    _metrics(tmp_path / "s1", [(0.0, 0.1), (0.4, 0.75), (0.8, 0.3), (1.2, 0.75), (1.6, 0.3), (1.7, math.nan)])
    held, never = read_seed(tmp_path / "s0", 0, 0.72), read_seed(tmp_path / "s1", 1, 0.72)
    assert (held.val_time_to_target, held.val_smoothed_time_to_target, held.last_sim_time_s) == (0.5, 2.0, 2.0)
    assert (never.val_time_to_target, never.val_smoothed_time_to_target, never.last_sim_time_s) == (0.4, None, 1.7)
    assert held.score("val_smoothed_time_to_target") == 2.0
    assert never.score("val_smoothed_time_to_target") == pytest.approx(3.4)
    assert trial_value([held, never], "val_smoothed_time_to_target") == pytest.approx(2.7)
    # The other metrics: the first crossing (both seeds reach it) and the final validation accuracy.
    assert trial_value([held, never], "val_time_to_target") == pytest.approx(0.45)
    assert trial_value([held, never], "val_final") == pytest.approx((0.8 + 0.3) / 2)
    # A 0.3 s window holds one evaluation (0.75 at 0.4 s, a whole window after 0 s): the first crossing.
    assert read_seed(tmp_path / "s1", 1, 0.72, window_s=0.3).val_smoothed_time_to_target == 0.4


def test_a_seed_that_never_holds_scores_its_plan_times_two_plus_its_shortfall(tmp_path):
    # Seed 1's run above, planned for 30 s (sim_time_limit_s) but stopped at 1.7 s (it diverged):
    # as bad as a run that never held the target in 30 s, 2 x 30 = 60 s, not 2 x 1.7 s.
    rows = [(0.0, 0.1), (0.4, 0.75), (0.8, 0.3), (1.2, 0.75), (1.6, 0.3), (1.7, math.nan)]
    _metrics(tmp_path / "timed", rows)
    (tmp_path / "timed" / RUN_CONFIG_FILE).write_text(json.dumps({"sim_time_limit_s": 30.0, "num_rounds": 500}))
    timed = read_seed(tmp_path / "timed", 1, 0.72)
    assert (timed.last_sim_time_s, timed.planned_s) == (1.7, 30.0)
    assert timed.score("val_smoothed_time_to_target") == 60.0
    assert timed.score("val_time_to_target") == 0.4  # it did cross
    # Without a time limit the plan is its rounds: 5 of 20 rounds in 1.7 s -> 6.8 s planned, 13.6 s scored.
    _metrics(tmp_path / "rounds", rows)
    (tmp_path / "rounds" / RUN_CONFIG_FILE).write_text(json.dumps({"sim_time_limit_s": None, "num_rounds": 20}))
    assert read_seed(tmp_path / "rounds", 1, 0.72).score("val_smoothed_time_to_target") == pytest.approx(13.6)
    # A run that ran past its plan (the round that crossed the limit) scores by its plan: 2 x 1.5 s.
    (tmp_path / "timed" / RUN_CONFIG_FILE).write_text(json.dumps({"sim_time_limit_s": 1.5}))
    assert read_seed(tmp_path / "timed", 1, 0.72).score("val_smoothed_time_to_target") == pytest.approx(3.0)
    # Short of the target: its best validation accuracy 0.75 is 0.05 under 0.8, so (2 + 0.05) x 1.5 s.
    short = read_seed(tmp_path / "timed", 1, 0.8)
    assert short.shortfall == pytest.approx(0.05)
    assert short.score("val_smoothed_time_to_target") == pytest.approx(2.05 * 1.5)
    assert short.score("val_time_to_target") == pytest.approx(2.05 * 1.5)  # never crossed 0.8 either


MICRO = ["experiment=quick", "wireless.num_devices=3", "wireless.num_rbs=2"]
SPACE = ["learning_rate=float:0.01:0.3:log"]


def _fake_finished_run(job) -> None:
    """A finished run of ``job`` on disk (what campaign.is_complete accepts): validation accuracy
    0.1 until 0.5 s x (1 / learning rate) / 10, 0.9 after, every 0.25 s for 5 s."""
    lr = float(job.values["train"]["learning_rate"])
    rise = 0.05 / lr
    _metrics(job.run_dir, [(t, 0.9 if t >= rise else 0.1) for t in np.arange(21) * 0.25])
    (job.run_dir / SUMMARY_FILE).write_text(json.dumps({"status": "completed"}))
    (job.run_dir / RUN_CONFIG_FILE).write_text(json.dumps(job.values))
    (job.run_dir / FINAL_MODEL_FILE).write_bytes(b"model")


@pytest.fixture
def fake_execute(monkeypatch):
    """campaign.execute as the tuner calls it, writing a finished run per job and recording which it ran."""
    asked: list[list[str]] = []

    def execute(jobs, engine, workers, log, name="campaign", cluster=None, keep_models=False):
        asked.append([job.spec.run_id for job in jobs])
        for job in jobs:
            _fake_finished_run(job)
        return []

    monkeypatch.setattr(tpe_module, "execute", execute)
    return asked


def _tpe(tmp_path: Path, trials: int, **kwargs) -> dict:
    settings = {"seeds": (0,), "rounds": 2, "target": 0.7, "sets": MICRO, "startup_trials": 2, **kwargs}
    dirs = {"runs_dir": tmp_path / "runs", "reports_dir": tmp_path / "reports"}
    return tune_tpe("amp_fl", parse_space(SPACE), trials=trials, log=lambda _: None, **dirs, **settings)


def test_trials_left_running_by_a_killed_session_are_asked_again_and_find_their_runs(tmp_path, monkeypatch):
    # A session asks trials 0 and 1 together; their runs finish, then the process is killed before
    # it tells the study (KeyboardInterrupt out of the runner, as a Ctrl-C would).
    def killed(jobs, *args, **kwargs):
        for job in jobs:
            _fake_finished_run(job)
        raise KeyboardInterrupt

    monkeypatch.setattr(tpe_module, "execute", killed)
    with pytest.raises(KeyboardInterrupt):
        _tpe(tmp_path, trials=3, jobs=2)
    storage = study_storage(tmp_path / "reports", "amp_fl")
    stale = optuna.load_study(study_name="amp_fl", storage=storage).trials
    assert [t.state for t in stale] == [TrialState.RUNNING] * 2

    asked: list[list[str]] = []

    def execute(jobs, *args, **kwargs):
        asked.append([job.spec.run_id for job in jobs])
        for job in jobs:
            _fake_finished_run(job)
        return []

    monkeypatch.setattr(tpe_module, "execute", execute)
    payload = _tpe(tmp_path, trials=3, jobs=2)
    trials = optuna.load_study(study_name="amp_fl", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 2 + [TrialState.COMPLETE] * 3
    # Trials 2 and 3 are 0 and 1 asked again, with the same parameters; their runs were complete on
    # disk, so the runner got nothing for them, then trial 4's one run.
    assert [t.params for t in trials[2:4]] == [t.params for t in stale]
    assert [t.user_attrs["requeued_from"] for t in trials[2:4]] == [0, 1]
    space = parse_space(SPACE)
    assert asked == [[], [f"{trial_folder(trial_point(trials[4].params, space))}/seed0"]]
    # A re-asked trial's value, from its run on disk: validation accuracy 0.9 from the first 0.25 s
    # evaluation at or after 0.05 / lr, 0.1 before; held once a 1 s window's mean reaches 0.7 (brute force).
    lr = trials[2].params["train.learning_rate"]
    grid = np.arange(21) * 0.25
    first_high = grid[grid >= 0.05 / lr][0]
    means = {t: np.mean([0.9 if u >= first_high else 0.1 for u in grid if t - 1.0 < u <= t]) for t in grid if t >= 1.0}
    assert trials[2].value == min(t for t, m in means.items() if m >= 0.7)
    assert [t["number"] for t in payload["trials"]] == [0, 1, 2, 3, 4]
    assert [t["state"] for t in payload["trials"][:2]] == ["FAIL", "FAIL"]

    # The same call again: the study holds its 3 complete trials, nothing runs or is asked.
    again = _tpe(tmp_path, trials=3, jobs=2)
    assert len(asked) == 2 and again["trials"] == payload["trials"]


def test_the_same_command_proposes_the_same_trials_and_a_resumed_study_continues_as_one(tmp_path, fake_execute):
    whole = _tpe(tmp_path / "a", trials=4)
    again = _tpe(tmp_path / "b", trials=4)
    params = [t["params"] for t in whole["trials"]]
    assert [t["params"] for t in again["trials"]] == params and len({p["train.learning_rate"] for p in params}) == 4
    _tpe(tmp_path / "c", trials=2)
    resumed = _tpe(tmp_path / "c", trials=4)  # a larger budget later: two more trials
    assert [t["params"] for t in resumed["trials"]] == params
    assert [t["value"] for t in resumed["trials"]] == [t["value"] for t in whole["trials"]]
    # Another setting that changes what a value means is refused, naming it.
    with pytest.raises(ValueError, match="study: .*target: 0.7 there, 0.8 here"):
        tune_tpe("amp_fl", parse_space(SPACE), trials=4, rounds=2, target=0.8, sets=MICRO,
                 runs_dir=tmp_path / "c" / "runs", reports_dir=tmp_path / "c" / "reports")  # fmt: skip


def test_trials_asked_together_run_side_by_side_and_are_told_each(tmp_path, fake_execute):
    payload = _tpe(tmp_path, trials=3, jobs=2)
    assert [len(batch) for batch in fake_execute] == [2, 1]  # 2 trials at once, then the 1 left
    assert [t["state"] for t in payload["trials"]] == ["COMPLETE"] * 3
    values = [t["value"] for t in payload["trials"]]
    assert payload["chosen_value"] == min(values)
    assert payload["budget"]["trials_asked_at_once"] == 2


def test_a_micro_tpe_tuning_on_mnist5k_writes_its_study_and_report(tmp_path, capsys):
    # Target 1 % (any model holds it), window 0.1 s: each run stops, through the server's own rule,
    # at the first evaluation a whole window after round 0, not at round 0 where the first crossing is.
    argv = ["amp_fl", "--search", "tpe", "--space", "learning_rate=float:0.01:0.3:log", "--trials", "2"]
    argv += ["--rounds", "8", "--target", "0.01", "--window-s", "0.1", "--startup-trials", "1", "--sampler-seed", "3"]
    argv += [a for s in MICRO for a in ("--set", s)]
    argv += ["--runs-dir", str(tmp_path / "runs"), "--reports-dir", str(tmp_path / "reports")]
    assert main(argv) == 0
    out = tmp_path / "reports" / "amp_fl"
    report = json.loads((out / "tuning.json").read_text())
    study = optuna.load_study(study_name="amp_fl", storage=f"sqlite:///{out / STUDY_FILE}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert report["search"] == "tpe" and report["metric"] == "val_smoothed_time_to_target"
    assert report["budget"]["trials"] == 2 and report["budget"]["sampler_seed"] == 3
    assert "evaluation.stop_window_s=0.1" in report["base_overrides"]
    for trial, stored in zip(report["trials"], study.trials, strict=True):
        assert trial["params"] == stored.params and trial["value"] == stored.value
        (seed,) = trial["seeds"]
        run = Path(seed["run_dir"])
        assert run.parent.name == trial_folder(trial["overrides"])
        # Recomputed from the run's metrics.csv: the last row is the first at or after 0.1 s, and it is the value.
        times = [float(row["sim_time_s"]) for row in csv.DictReader((run / METRICS_FILE).open())]
        assert times[-1] >= 0.1 > times[-2] and len(times) < 9
        assert read_seed(run, 0, 0.01, window_s=0.1).val_smoothed_time_to_target == times[-1] == trial["value"]
        summary = json.loads((run / SUMMARY_FILE).read_text())
        assert (
            summary["stop_reason"] == "val_accuracy"
            and "mean validation accuracy of the last 0.1 s" in (summary["stopped_early"])
        )
    best = min(study.trials, key=lambda t: (t.value, t.number))
    assert report["chosen_trial"] == best.number
    assert report["chosen_overrides"] == [f"train.learning_rate={best.params['train.learning_rate']!r}"]
    md = (out / "tuning.md").read_text()
    assert "(Optuna TPE)" in md and "the test set plays no part" in md and "2 trials x 1 seed(s)" in md
    assert capsys.readouterr().out.strip().splitlines()[-1] == "chosen: " + report["chosen_overrides"][0]
    # The same command resumes: nothing left to run, the same report.
    assert main(argv) == 0
    assert "to run" not in capsys.readouterr().out
    assert json.loads((out / "tuning.json").read_text())["trials"] == report["trials"]


def test_the_cli_keeps_each_searchs_options_apart(tmp_path, capsys):
    dirs = ["--runs-dir", str(tmp_path / "runs"), "--reports-dir", str(tmp_path / "reports")]
    assert main(["amp_fl", "--space", "learning_rate=float:0.01:0.3", *dirs]) == 2
    assert "--space: only with --search tpe" in capsys.readouterr().err
    assert main(["amp_fl", "--search", "tpe", "--grid", "learning_rate=0.1,0.2", "--trials", "2", *dirs]) == 2
    assert "--grid: only with --search grid" in capsys.readouterr().err
    assert main(["amp_fl", "--search", "tpe", "--space", "learning_rate=float:0.01:0.3", *dirs]) == 2
    assert "--trials: TPE needs its budget" in capsys.readouterr().err
    assert main(["amp_fl", "--search", "tpe", "--space", "learning_rate=float:0.3:0.01", "--trials", "2", *dirs]) == 2
    assert "space: train.learning_rate: needs finite LO < HI" in capsys.readouterr().err


def test_a_bad_setting_fails_before_any_trial_is_asked(tmp_path):
    with pytest.raises(ValueError, match="dataset.validation_fraction"):
        _tpe(tmp_path, trials=2, validation_fraction=0.0)
    with pytest.raises(ValueError, match="wireless.num_rbs"):
        tune_tpe("amp_fl", parse_space(SPACE), trials=2, sets=[*MICRO, "wireless.num_rbs=0"],
                 runs_dir=tmp_path / "runs", reports_dir=tmp_path / "reports")  # fmt: skip
    assert not (tmp_path / "reports" / "amp_fl" / STUDY_FILE).exists()


def test_the_median_pruner_stops_a_trial_worse_than_the_median_after_its_first_seed(tmp_path, fake_execute):
    # 8 random trials (startup 10) x seeds 0, 1 with the fake curves (a seed's score depends on the
    # learning rate alone). Once 5 trials are complete, a trial whose seed-0 score is worse than the
    # median of the complete trials' seed-0 scores is pruned before its seed 1 runs.
    payload = _tpe(tmp_path, trials=8, seeds=(0, 1), pruner="median", startup_trials=10)
    ran = {run_id for batch in fake_execute for run_id in batch}
    trials = payload["trials"]
    assert len(trials) == 8 and payload["budget"]["pruner"].startswith("optuna.pruners.MedianPruner")
    complete_first: list[float] = []
    for trial in trials:
        first = trial_value([read_seed(Path(trial["seeds"][0]["run_dir"]), 0, 0.7)], "val_smoothed_time_to_target")
        folder = trial_folder(trial["overrides"])
        if len(complete_first) >= 5 and first > float(np.median(complete_first)):
            assert trial["state"] == "PRUNED" and len(trial["seeds"]) == 1
            assert trial["value"] == first and trial["intermediate_values"] == {"0": first}
            assert f"{folder}/seed1" not in ran
        else:
            assert trial["state"] == "COMPLETE" and len(trial["seeds"]) == 2 and f"{folder}/seed1" in ran
            complete_first.append(first)
    assert any(t["state"] == "PRUNED" for t in trials)
    assert "Pruned trials (counted in the budget" in (tmp_path / "reports" / "amp_fl" / "tuning.md").read_text()
    with pytest.raises(ValueError, match="pruner: a trial is pruned between its seeds"):
        _tpe(tmp_path / "one", trials=2, pruner="median")


def test_trials_told_failed_whose_runs_are_results_now_are_asked_again_once(tmp_path, monkeypatch):
    # A study made before diverged runs were results: every trial's run diverged and the trial was
    # told failed, until a budget of failures stopped the search. Resumed, the study asks those
    # trials' parameters again first (once), finds their runs complete and scores them.
    def old_rule(jobs_of, *args):
        for jobs in jobs_of.values():
            for job in jobs:
                _fake_finished_run(job)
                (job.run_dir / SUMMARY_FILE).write_text(json.dumps({"status": "diverged at round 20: loss nan"}))
        return {number: ["diverged"] for number in jobs_of}

    monkeypatch.setattr(tpe_module, "_run_stage", old_rule)
    with pytest.raises(RuntimeError, match="2 trials had runs that failed"):
        _tpe(tmp_path, trials=2)
    monkeypatch.undo()
    storage = study_storage(tmp_path / "reports", "amp_fl")
    old = optuna.load_study(study_name="amp_fl", storage=storage).trials
    assert [t.state for t in old] == [TrialState.FAIL] * 2

    asked: list[list[Path]] = []
    monkeypatch.setattr(tpe_module, "execute", lambda jobs, *a, **k: asked.append([j.run_dir for j in jobs]) or [])
    payload = _tpe(tmp_path, trials=2)
    trials = optuna.load_study(study_name="amp_fl", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 2 + [TrialState.COMPLETE] * 2
    assert [t.params for t in trials[2:]] == [t.params for t in old]
    assert [t.user_attrs["requeued_from"] for t in trials[2:]] == [0, 1]
    assert asked == [[], []]  # their runs were found complete: nothing ran
    # Each is scored from its run (0.9 from 0.05 / lr on, every 0.25 s to 5 s): the held time (brute
    # force as above), or, never held (its best 0.9 is over the target: no shortfall), 2 x its planned
    # length: its config's 2 rounds, extrapolated from the 20 rounds in 5 s, 0.5 s.
    grid = np.arange(21) * 0.25
    for trial in trials[2:]:
        first_high = grid[grid >= 0.05 / trial.params["train.learning_rate"]][0]
        means = [np.mean([0.9 if u >= first_high else 0.1 for u in grid if t - 1.0 < u <= t]) for t in grid[4:]]
        held = [t for t, m in zip(grid[4:], means, strict=True) if m >= 0.7]
        assert trial.value == (min(held) if held else 2 * 0.5)
    assert payload["trials"][2]["value"] == trials[2].value
    _tpe(tmp_path, trials=2)  # resumed again: nothing is asked a second time
    assert len(optuna.load_study(study_name="amp_fl", storage=storage).trials) == 4


def test_a_tuning_report_says_which_seeds_diverged(tmp_path):
    rows = [(0.0, 0.1), (0.4, 0.3), (0.8, 0.3)]
    _metrics(tmp_path / "d", rows)
    (tmp_path / "d" / SUMMARY_FILE).write_text(json.dumps({"status": "diverged at round 2: loss nan"}))
    _metrics(tmp_path / "n", rows)
    (tmp_path / "n" / SUMMARY_FILE).write_text(json.dumps({"status": "completed"}))
    diverged, never = read_seed(tmp_path / "d", 0, 0.7), read_seed(tmp_path / "n", 1, 0.7)
    assert (diverged.diverged, never.diverged) == (True, False)
    metric = "val_smoothed_time_to_target"
    assert tpe_module._seed_cell(asdict(diverged), metric) == "seed 0: diverged at 0.80 s"
    assert tpe_module._seed_cell(asdict(never), metric) == "seed 1: not reached (ran 0.80 s)"
    # A record made before "diverged" was kept: the run folder says.
    older = {k: v for k, v in asdict(diverged).items() if k != "diverged"}
    assert tpe_module._seed_cell(older, metric) == "seed 0: diverged at 0.80 s"
