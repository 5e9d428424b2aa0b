"""Reading, grouping and comparing hand-built run folders; the ``python -m amp_fl.report`` command."""

import csv
import json
import math

import pytest

from amp_fl.report import main, write_report
from amp_fl.report.compare import compare
from amp_fl.report.runs import RunFolderError, group_runs, load_run

HEADER = ["round", "sim_time_s", "round_latency_s", "accuracy", "loss", "avg_aoi", "wall_time_s"]


def make_run(folder, seed, sim, acc, *, config=None, dataset="fashion_mnist", status="completed"):
    """A run folder with metrics.csv (rows 0..n-1), summary.json and run_config.json."""
    folder.mkdir(parents=True)
    with (folder / "metrics.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for r, (t, a) in enumerate(zip(sim, acc, strict=True)):
            w.writerow([r, t, 0.1, a, 1.0, float(r), 0.5 * r])
    cfg = {"seed": seed, "num_rounds": len(sim) - 1, "output_dir": str(folder), "dataset": {"name": dataset}}
    cfg.update(config or {})
    (folder / "run_config.json").write_text(json.dumps(cfg))
    summary = {"status": status, "dataset_used": dataset, "time_to_target_accuracy": {"target": 0.9}}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


AMP = {"scheduling": {"name": "amp"}, "strategy": {"compensation": "all"}}
SYNC = {"scheduling": {"name": "full_model"}, "strategy": {"compensation": "none"}}


@pytest.fixture
def four_runs(tmp_path):
    """Method A (AMP-FL) and reference B (Synchronous FL), seeds 0 and 1, closed-form times to 70 %."""
    return [
        make_run(tmp_path / "a0", 0, [0, 1, 2, 3, 4], [0.1, 0.5, 0.7, 0.8, 0.9], config=AMP),
        make_run(tmp_path / "a1", 1, [0, 2, 4, 6, 8], [0.1, 0.6, 0.75, 0.85, 0.9], config=AMP),
        make_run(tmp_path / "b0", 0, [0, 3, 6, 9, 12], [0.1, 0.4, 0.7, 0.7, 0.72], config=SYNC),
        make_run(tmp_path / "b1", 1, [0, 3, 6, 9, 12], [0.1, 0.4, 0.5, 0.6, 0.66], config=SYNC),
    ]


def test_groups_by_config_without_seed_and_computes_closed_form_statistics(four_runs):
    groups = group_runs([load_run(p) for p in four_runs])
    assert [(g.label, g.seeds) for g in groups] == [("AMP-FL", [0, 1]), ("Synchronous FL", [0, 1])]
    c = compare(groups, [0.7], reference="Synchronous FL")
    a, b = c.by_label("AMP-FL"), c.by_label("Synchronous FL")
    t = a.targets[0.7].first
    assert t.reached == 2 and t.sim_time_s.mean == 3.0 and t.sim_time_s.std == pytest.approx(math.sqrt(2))
    assert t.rounds.mean == 2.0 and t.rounds.std == 0.0
    assert b.targets[0.7].first.reached == 1 and b.targets[0.7].first.sim_time_s.mean == 6.0
    # Evaluations 1 s or more apart: each 1 s window holds one evaluation, so held = first crossing.
    assert a.targets[0.7].smoothed.hits == t.hits
    assert a.final_accuracy.mean == pytest.approx(0.9) and a.final_accuracy.std == pytest.approx(0.0)
    assert b.final_accuracy.mean == pytest.approx(0.69) and b.best_accuracy.mean == pytest.approx(0.69)
    sp = a.speedup[0.7].first
    assert sp.per_seed.exact == {0: 3.0}  # 6 s / 2 s
    assert sp.per_seed.at_least == {1: 3.0}  # B never reached 70 % in seed 1: its whole run (12 s) / A's 4 s
    assert (sp.interval.estimate, sp.interval.n, sp.only_method, sp.only_reference) == (3.0, 1, (1,), ())


def test_groups_that_share_a_method_name_are_told_apart_by_the_settings_that_differ(tmp_path):
    scheduled = {**AMP, "strategy": {"compensation": "scheduled"}}
    runs = [
        load_run(make_run(tmp_path / "x", 0, [0, 1], [0.1, 0.2], config=AMP)),
        load_run(make_run(tmp_path / "y", 0, [0, 1], [0.1, 0.3], config=scheduled)),
    ]
    assert [g.label for g in group_runs(runs)] == ["AMP-FL [compensation=all]", "AMP-FL [compensation=scheduled]"]
    assert [g.label for g in group_runs(runs, labels=["p", "q"])] == ["p", "q"]
    with pytest.raises(ValueError, match="both seed 0"):
        group_runs(runs, labels=["same", "same"])
    with pytest.raises(ValueError, match="labels"):
        group_runs(runs, labels=["one"])


def test_the_command_writes_the_table_figures_and_json(four_runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = [*map(str, four_runs), "--out", str(out), "--targets", "0.7", "--reference", "Synchronous FL"]
    assert main(args) == 0
    text = (out / "report.md").read_text()
    # Runs end at 4, 8 and 12 s: accuracy at 4 s is A's 0.9 and 0.75, B's 0.4 and 0.4.
    assert "| accuracy at 4.00 s (%) |" in text
    # Per target: held 1 s (time, speedup), then the first crossing (rounds, time, speedup).
    speedup = "3.00x (n=1, no interval); 1 seed(s) where only this method reached it (≥ 3.00x)"
    assert (
        "| AMP-FL | fashion_mnist | 0,1 | 4 | 90.00 ± 0.00 | 90.00 ± 0.00 | 82.50 ± 10.61 | 3.00 ± 1.41 s (2/2) "
        f"| {speedup} | 2.0 ± 0.0 (2/2) | 3.00 ± 1.41 s (2/2) | {speedup} |"
    ) in text
    assert (
        "| Synchronous FL | fashion_mnist | 0,1 | 4 | 69.00 ± 4.24 | 69.00 ± 4.24 | 40.00 ± 0.00 | 6.00 s (1/2) "
        "| 1 (reference) | 2.0 (1/2) | 6.00 s (1/2) | 1 (reference) |"
    ) in text
    assert "| sim. seconds to 70 %, held 1 s | speedup at 70 %, held 1 s | rounds to 70 %, first crossing |" in text
    assert "95 % paired bootstrap interval over seeds (10000 resamples" in text
    for name in ("accuracy_vs_sim_time.png", "accuracy_vs_round.png", "avg_aoi_vs_round.png", "comparison.json"):
        assert (out / name).stat().st_size > 0
    payload = json.loads((out / "comparison.json").read_text())
    at_70 = payload["methods"][0]["targets"]["0.7"]
    assert at_70["sim_time_s"]["mean"] == 3.0 and at_70["smoothed"]["sim_time_s"]["mean"] == 3.0
    assert at_70["smoothed"]["speedup_over_reference"]["ratio_of_means"]["estimate"] == 3.0
    assert at_70["speedup_over_reference"]["excluded_seeds"]["only_method_reached"] == [1]


def test_default_targets_come_from_the_runs(four_runs, tmp_path):
    c = write_report(four_runs, tmp_path / "out")
    assert c.targets == (0.9,) and c.reference == "AMP-FL"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "metrics.csv").unlink(), "not a run folder: no metrics.csv"),
        (lambda d: (d / "summary.json").unlink(), "no summary.json"),
        (lambda d: (d / "summary.json").write_text('{"status": "compl'), "summary.json: not valid JSON"),
        (
            lambda d: (d / "metrics.csv").write_text(",".join(HEADER) + "\n0,0,0,0.1,1,0,0\n1,0.1,0.1,0.2,1."),
            "last line has 5 fields, the header has 7 (truncated file?",
        ),
        (lambda d: (d / "metrics.csv").write_text("round,accuracy\n0,0.1\n"), "no column 'sim_time_s'"),
        (lambda d: (d / "metrics.csv").write_text(",".join(HEADER) + "\n"), "no rows"),
        (
            lambda d: (d / "metrics.csv").write_text(",".join(HEADER) + "\n0,0,0,abc,1,0,0\n"),
            "line 2, column 'accuracy': not a number: 'abc'",
        ),
        (lambda d: (d / "run_config.json").write_text('{"num_rounds": 4}'), "no integer 'seed'"),
    ],
    ids=["no-metrics", "no-summary", "bad-json", "truncated", "missing-column", "no-rows", "not-a-number", "no-seed"],
)
def test_a_damaged_run_folder_is_an_error_naming_the_file_and_the_problem(tmp_path, damage, message):
    folder = make_run(tmp_path / "run", 0, [0, 1, 2, 3], [0.1, 0.2, 0.3, 0.4])
    damage(folder)
    with pytest.raises(RunFolderError, match="run") as err:
        load_run(folder)
    assert message in str(err.value)
    assert str(folder) in str(err.value)


def test_paths_that_are_not_runs(tmp_path, capsys):
    make_run(tmp_path / "sweep" / "0_a", 0, [0, 1], [0.1, 0.2])
    make_run(tmp_path / "sweep" / "1_b", 0, [0, 1], [0.1, 0.2])
    with pytest.raises(RunFolderError, match=r"holds 2 run folder\(s\), pass them instead"):
        load_run(tmp_path / "sweep")
    with pytest.raises(RunFolderError, match="no such folder"):
        load_run(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(RunFolderError, match="not a folder"):
        load_run(tmp_path / "file.txt")
    assert main([str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
