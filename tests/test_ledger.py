"""The results ledger (amp_fl.experiments.ledger): compact records of finished runs; campaigns resume from them."""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from amp_fl.experiments import ledger
from amp_fl.experiments.campaign import compose_values, is_complete, make_jobs, still_to_run
from amp_fl.run_folder import (
    CHECKPOINT_FILE,
    FINAL_MODEL_FILE,
    METRICS_FILE,
    RUN_CONFIG_FILE,
    SUMMARY_FILE,
    RunFolderError,
)


@dataclass(frozen=True)
class _Spec:
    run_id: str
    overrides: tuple[str, ...]


SPEC = _Spec("fig/seed0", ("experiment=quick", "seed=0"))


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project root of its own: runs/ and results/ under tmp_path."""
    monkeypatch.setattr(ledger, "PROJECT_ROOT", tmp_path)
    return tmp_path


def _finished_run(run_dir: Path, values: dict, model_bytes: bytes = b"model") -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SUMMARY_FILE).write_text(json.dumps({"status": "completed", "final_accuracy": 0.5}))
    (run_dir / RUN_CONFIG_FILE).write_text(json.dumps(values))
    (run_dir / METRICS_FILE).write_text("round,accuracy\n0,0.1\n1,0.5\n")
    (run_dir / CHECKPOINT_FILE).write_bytes(b"x" * 1000)
    (run_dir / "accuracy_vs_round.png").write_bytes(b"png")
    (run_dir / "tensorboard").mkdir()
    (run_dir / "tensorboard" / "events").write_bytes(b"ev")
    (run_dir / FINAL_MODEL_FILE).write_bytes(model_bytes)


def _names(record: Path) -> set[str]:
    with tarfile.open(record) as archive:
        return set(archive.getnames())


def test_a_run_under_runs_has_a_record_at_the_same_path_under_results(project):
    expected = project / "results" / "a" / "b" / "seed0.tar.xz"
    assert ledger.record_path(project / "runs" / "a" / "b" / "seed0") == expected
    assert ledger.record_path(project / "elsewhere" / "seed0") is None  # scratch campaigns keep their runs
    assert ledger.record_path(project / "runs") is None


def test_a_record_keeps_what_reports_read_and_leaves_out_checkpoint_figures_and_events(project):
    run = project / "runs" / "c" / "seed0"
    _finished_run(run, {"seed": 0})
    record = ledger.record(run, keep_model=True)
    assert record == project / "results" / "c" / "seed0.tar.xz"
    assert _names(record) == {SUMMARY_FILE, RUN_CONFIG_FILE, METRICS_FILE, FINAL_MODEL_FILE}
    back = ledger.restore_to(run, project)
    assert back is not None
    assert (back / METRICS_FILE).read_text() == (run / METRICS_FILE).read_text()
    assert (back / FINAL_MODEL_FILE).read_bytes() == b"model"


def test_without_keep_model_the_record_leaves_the_final_model_out_and_says_so(project):
    run = project / "runs" / "c" / "seed0"
    _finished_run(run, {"seed": 0})
    record = ledger.record(run)
    assert record is not None
    assert _names(record) == {SUMMARY_FILE, RUN_CONFIG_FILE, METRICS_FILE, ledger.OMITTED_FILE}
    back = ledger.restore_to(run, project)
    assert back is not None and ledger.omits_final_model(back)


def test_an_unfinished_run_gets_no_record(project):
    run = project / "runs" / "c" / "seed0"
    _finished_run(run, {"seed": 0})
    (run / FINAL_MODEL_FILE).unlink()  # killed between the summary and the model
    assert ledger.record(run) is None
    (run / FINAL_MODEL_FILE).write_bytes(b"m")
    (run / SUMMARY_FILE).write_text(json.dumps({"status": "failed: x"}))
    assert ledger.record(run) is None
    assert not (project / "results").exists()


def test_a_large_final_model_is_left_out_and_said_to_be(project, monkeypatch):
    monkeypatch.setattr(ledger, "MAX_MODEL_BYTES", 10)
    run = project / "runs" / "big" / "seed0"
    _finished_run(run, {"seed": 0}, model_bytes=b"m" * 11)
    record = ledger.record(run, keep_model=True)
    assert record is not None
    assert FINAL_MODEL_FILE not in _names(record)
    back = ledger.restore_to(run, project)
    assert back is not None and ledger.omits_final_model(back)
    assert not ledger.omits_final_model(run)


def test_a_campaign_resumes_from_the_ledger_on_a_machine_that_never_ran_it(project):
    values = compose_values(SPEC.overrides)
    run = project / "runs" / "camp" / SPEC.run_id
    _finished_run(run, {**values, "output_dir": str(run)})
    assert ledger.record(run) is not None
    # The next session: runs/ is gone, results/ came with the clone.
    for path in sorted(run.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    run.rmdir()
    jobs = make_jobs([SPEC], project / "runs" / "camp")
    assert is_complete(jobs[0].run_dir, jobs[0].values)
    assert still_to_run(jobs) == []
    assert (jobs[0].run_dir / METRICS_FILE).read_text() == "round,accuracy\n0,0.1\n1,0.5\n"
    assert [p.name for p in jobs[0].run_dir.parent.iterdir()] == ["seed0"]  # no scratch folder left behind


def test_a_record_of_other_settings_is_not_used_and_the_folder_is_left_as_it_was(project):
    other = compose_values(("experiment=quick", "seed=5"))
    run = project / "runs" / "camp" / SPEC.run_id
    _finished_run(run, {**other, "output_dir": str(run)})
    ledger.record(run)
    (run / SUMMARY_FILE).write_text(json.dumps({"status": "running"}))  # an interrupted attempt of the new design
    jobs = make_jobs([SPEC], project / "runs" / "camp")
    assert still_to_run(jobs) == jobs
    assert json.loads((run / SUMMARY_FILE).read_text())["status"] == "running"
    assert [p.name for p in run.parent.iterdir()] == ["seed0"]


def test_a_damaged_record_is_one_error_naming_it(project):
    target = project / "results" / "camp" / "fig" / "seed0.tar.xz"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not an archive")
    with pytest.raises(RunFolderError, match=r"seed0\.tar\.xz: not a readable ledger record"):
        make_jobs([SPEC], project / "runs" / "camp")


def test_the_record_command_records_every_finished_run_below_a_folder(project, capsys):
    for seed in (0, 1):
        _finished_run(project / "runs" / "s" / f"seed{seed}", {"seed": seed})
    (project / "runs" / "s" / "seed1" / FINAL_MODEL_FILE).unlink()
    assert ledger.main(["record", str(project / "runs" / "s")]) == 0
    assert sorted(p.name for p in (project / "results" / "s").iterdir()) == ["seed0.tar.xz"]
    assert "1 run(s) recorded" in capsys.readouterr().out


def test_the_record_command_refuses_a_folder_that_is_not_there(project, capsys):
    with pytest.raises(SystemExit) as stop:
        ledger.main(["record", str(project / "runs" / "nowhere")])
    assert stop.value.code == 2 and "no such folder" in capsys.readouterr().err
    assert not (project / "results").exists()
