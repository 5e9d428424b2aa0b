"""The sparsity sweep reads a finished run's folder through amp_fl.run_folder (no run needed)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from amp_fl.experiments import ota_imp
from amp_fl.experiments.campaign import Job
from amp_fl.experiments.ota_imp import RunSpec, read_result
from amp_fl.run_folder import (
    MetricsWriter,
    RoundRow,
    write_config,
    write_final_model,
    write_summary,
    write_timing,
)


def _row(k: int, accuracy: float) -> RoundRow:
    return RoundRow(
        round=k,
        sim_time_s=float(k),
        round_latency_s=1.0,
        accuracy=accuracy,
        loss=1.0,
        train_loss=1.0,
        avg_aoi=1.0,
        num_scheduled=4 if k else 0,
        num_received=3 if k else 0,
        num_failed=1 if k else 0,
        mean_keep_ratio=1.0,
        uplink_bytes=300 * k,
        downlink_bytes=400 * k,
        objective=0.0,
        wall_time_s=float(k),
    )


def test_read_result_takes_accuracy_sparsity_bytes_and_silent_share_from_the_folder(tmp_path):
    writer = MetricsWriter(tmp_path)
    for k, acc in enumerate([0.1, 0.5, float("nan"), 0.7]):
        writer.append(_row(k, acc))
        if k:
            writer.append_schedule({"round": k, "device_ids": [0, 1, 2, 3], "failures": {"3": "silent: fading"}})
    write_summary(
        tmp_path, {"status": "completed", "dataset_used": "mnist5k", "total_downlink_bytes": 7, "total_uplink_bytes": 5}
    )
    write_final_model(tmp_path, [np.array([[0.0, 1.0], [0.0, 0.0]]), np.zeros(3)])  # the bias is not prunable
    write_timing(tmp_path, {"wall_s": 12.5})
    spec = RunSpec("full-imp-s75-seed0", "sparse", "full", "imp", 0.75, 0, ())
    result = read_result(Job(spec, {}, tmp_path), last_k=2)
    assert result.final_accuracy == pytest.approx(0.6)  # mean of the last 2 evaluated rounds after round 0
    assert (result.last_accuracy, result.best_accuracy, result.rounds) == (0.7, 0.7, 2)
    assert (result.num_pruned, result.num_prunable, result.achieved_sparsity) == (3, 4, 0.75)
    assert result.downlink_per_piu_last == 1200 / 4 and result.uplink_per_piu_last == 900 / 3
    assert result.silent_fraction == pytest.approx(0.25)
    assert (result.dataset, result.total_downlink, result.total_uplink, result.wall_s) == ("mnist5k", 7, 5, 12.5)


def _finish(job: Job) -> None:
    """A finished run of ``job`` on disk, written through amp_fl.run_folder (what is_complete accepts)."""
    writer = MetricsWriter(job.run_dir)
    for k, acc in enumerate([0.1, 0.4, 0.6]):
        writer.append(_row(k, acc))
    write_config(job.run_dir, job.values)
    write_summary(
        job.run_dir,
        {"status": "completed", "dataset_used": "fashion_mnist", "total_downlink_bytes": 7, "total_uplink_bytes": 5},
    )
    write_final_model(job.run_dir, [np.array([[0.0, 1.0], [2.0, 0.0]])])
    write_timing(job.run_dir, {"wall_s": 3.0})


def test_report_only_reports_the_finished_runs_names_the_missing_ones_and_runs_nothing(tmp_path, monkeypatch, capsys):
    def no_runs(*args, **kwargs):
        raise AssertionError("--report-only ran something")

    monkeypatch.setattr(ota_imp, "execute", no_runs)
    narrow = ["--targets", "0.9", "--participation", "full", "--seeds", "0", "--runs-root", str(tmp_path / "runs")]
    report_dir = tmp_path / "report"
    # Nothing finished: one clear error, no report folder.
    assert ota_imp.main(["residual", "--report-only", *narrow, "--report-dir", str(report_dir)]) == 1
    assert "no finished run to report" in capsys.readouterr().err and not report_dir.exists()
    jobs, todo = ota_imp.plan(
        replace(ota_imp.SWEEPS["residual"], targets=(0.9,), participation=(("full", 1.0),), seeds=(0,)),
        tmp_path / "runs",
    )
    assert [j.spec.run_id for j in jobs] == [
        "full-imp-s90-seed0",
        "full-one_shot-s90-seed0",
        "full-gradual-s90-seed0",
    ] and todo == jobs
    _finish(jobs[0])
    assert ota_imp.main(["residual", "--report-only", *narrow, "--report-dir", str(report_dir)]) == 0
    report = (report_dir / "report.md").read_text()
    assert "**Interim report: 1 of 3 runs of the design have finished.**" in report
    assert "Still to run (2): `full-one_shot-s90-seed0`, `full-gradual-s90-seed0`" in report
    assert "| 90 % | about +23 points | n/a" in report  # no pair yet: no IMP - one-shot figure


def _result(part: str, method: str, target: float, seed: int, accuracy: float) -> ota_imp.RunResult:
    run_id = f"{part}-{method}-s{round(100 * target):02d}-seed{seed}"
    spec = RunSpec(run_id, "sparse", part, method, target, seed, ())
    nan = float("nan")
    return ota_imp.RunResult(
        spec,
        "fashion_mnist",
        accuracy,
        accuracy,
        accuracy,
        target,
        round(target * 76_000),
        76_000,
        nan,
        nan,
        0,
        0,
        0.0,
        60,
        1.0,
    )


def test_the_closing_note_pairs_seeds_states_the_direction_and_the_rounds_on_the_final_mask(tmp_path):
    sweep = ota_imp.SWEEPS["residual"]
    values = ota_imp.plan(replace(sweep, targets=(0.9,), seeds=(0,)), tmp_path)[0][0].values  # the preset's
    s = values["sparse_fedavg"]
    assert (values["num_rounds"], s["first_round"], s["interval"], s["rate"]) == (60, 10, 10, 0.5)
    accuracy = {  # (part, method, seed) -> accuracy at 90 %; IMP - one-shot: full -0.10, -0.20; partial +0.05
        ("full", "imp", 0): 0.30, ("full", "one_shot", 0): 0.40, ("full", "imp", 1): 0.20,
        ("full", "one_shot", 1): 0.40, ("partial", "imp", 0): 0.35, ("partial", "one_shot", 0): 0.30,
    }  # fmt: skip
    results = [_result(p, m, 0.9, seed, a) for (p, m, seed), a in accuracy.items()]
    results.append(_result("full", "dense", 0.0, 0, 0.5))
    note = "\n".join(ota_imp._closing_note(sweep, values, results, "fashion_mnist"))
    assert "| 90 % | about +23 points | -15.0 ± 7.1 points (n = 2: -10.0, -20.0) | +5.0 points (n = 1: +5.0) |" in note
    assert "| 95 % | not stated | n/a | n/a |" in note
    assert "IMP fares better against one-shot with partial participation, the opposite of the paper's" in note
    assert "the dense model reaches full 50.0 %" in note
    # 50, 75, 87.5, 90 % after rounds 10, 20, 30, 40: the 90 % ticket trains 20 rounds; 95 % takes a fifth step.
    assert (
        "at 90 % IMP's last step follows round 40, so its final ticket trains 20 rounds, one-shot's final mask 50"
        in note
    )
    assert "at 95 % IMP's last step follows round 50, so its final ticket trains 10 rounds" in note


def test_the_residual_sweep_runs_gradual_pruning_beside_imp_and_one_shot_at_90_and_95_only():
    specs = ota_imp.expand(ota_imp.SWEEPS["residual"])
    gradual = [s for s in specs if s.method == "gradual"]
    assert len(specs) == 54 + 12 and len(gradual) == 12  # 2 targets x 2 participation levels x 3 seeds
    assert {s.target for s in gradual} == {0.9, 0.95}
    assert all("sparse_fedavg.method=gradual" in s.overrides for s in gradual)
    assert {s.run_id for s in specs if s.method == "imp"} >= {"full-imp-s90-seed0", "partial-imp-s95-seed2"}
    assert all("sparse_fedavg.method=imp" in s.overrides for s in specs if s.method == "imp")
    # --targets 0.5: no comparator runs there.
    assert not [s for s in ota_imp.expand(replace(ota_imp.SWEEPS["residual"], targets=(0.5,))) if s.method == "gradual"]


def test_the_report_sets_the_comparator_against_one_shot(tmp_path):
    sweep = replace(ota_imp.SWEEPS["residual"], targets=(0.9,), seeds=(0, 1))
    results = [
        _result("full", "one_shot", 0.9, 0, 0.40),
        _result("full", "gradual", 0.9, 0, 0.45),
        _result("full", "one_shot", 0.9, 1, 0.30),
        _result("full", "gradual", 0.9, 1, 0.40),
    ]
    lines = ota_imp._comparator_section(sweep, results, ["full", "partial"])
    assert lines[0] == "## Gradual against one-shot"
    assert "| 90 % | +7.5 ± 3.5 points (n = 2: +5.0, +10.0) | 42.5 % ± 3.5 | n/a | n/a |" in lines


def test_a_participation_difference_within_the_seeds_spread_is_called_undecided():
    # Means -11.0 (full) and -9.5 (partial): 1.5 points apart, standard deviations 1.4 and 2.1.
    (line,) = ota_imp._participation_bullet([-10.0, -12.0], [-8.0, -11.0])
    assert "-11.0 points with full and -9.5 points with partial participation" in line
    assert "the difference, 1.5 points, is within the seeds' spread (standard deviation up to 2.1 points)" in line
    (line,) = ota_imp._participation_bullet([-10.0, -12.0], [-2.0, -3.0])  # 8.5 points apart: partial favours IMP
    assert "IMP fares better against one-shot with partial participation, the opposite of the paper's" in line
    assert ota_imp._participation_bullet([], [1.0]) == []
