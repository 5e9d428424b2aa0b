"""The campaigns' shared machinery (amp_fl.experiments.campaign): a plan's jobs and what counts as done."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from amp_fl.errors import diverged_status
from amp_fl.experiments.campaign import (
    check_engine,
    compose_values,
    is_complete,
    make_jobs,
    outcome_text,
    still_to_run,
)
from amp_fl.run_folder import FINAL_MODEL_FILE, RUN_CONFIG_FILE, SUMMARY_FILE


@dataclass(frozen=True)
class _Spec:
    run_id: str
    overrides: tuple[str, ...]


SPECS = [_Spec("a/seed0", ("experiment=quick", "seed=0")), _Spec("a/seed1", ("experiment=quick", "seed=1"))]


def _finish(run_dir: Path, values: dict, status: str = "completed", model: bool = True) -> None:
    """A run folder as the server leaves it, written somewhere else than ``values`` says."""
    run_dir.mkdir(parents=True)
    (run_dir / SUMMARY_FILE).write_text(json.dumps({"status": status}))
    stored = {**values, "output_dir": "/moved/elsewhere", "dataset": {**values["dataset"], "root": "/other/data"}}
    (run_dir / RUN_CONFIG_FILE).write_text(json.dumps(stored))
    if model:
        (run_dir / FINAL_MODEL_FILE).write_bytes(b"")


def test_a_plan_has_one_job_per_spec_in_its_own_folder(tmp_path):
    jobs = make_jobs(SPECS, tmp_path)
    assert [j.run_dir for j in jobs] == [tmp_path / "a" / "seed0", tmp_path / "a" / "seed1"]
    assert [j.values["output_dir"] for j in jobs] == [str(j.run_dir) for j in jobs]
    assert [j.values["seed"] for j in jobs] == [0, 1]
    assert jobs[0].spec is SPECS[0]
    _finish(jobs[1].run_dir, jobs[1].values)
    assert still_to_run(jobs) == [jobs[0]]


def test_complete_means_finished_with_the_final_model_and_the_same_config(tmp_path):
    values = compose_values(["experiment=quick", "seed=3"])
    _finish(tmp_path / "done", values)
    assert is_complete(tmp_path / "done", values)  # written elsewhere, data elsewhere: the same run
    assert not is_complete(tmp_path / "done", compose_values(["experiment=quick", "seed=4"]))
    _finish(tmp_path / "no_model", values, model=False)  # killed between the summary and the model
    assert not is_complete(tmp_path / "no_model", values)
    _finish(tmp_path / "running", values, status="running")
    assert not is_complete(tmp_path / "running", values)
    assert not is_complete(tmp_path / "never", values)
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / SUMMARY_FILE).write_text('{"status": "comp')
    assert not is_complete(tmp_path / "torn", values)


def test_a_diverged_run_is_an_outcome_kept_and_a_failed_one_is_run_again(tmp_path):
    # The server stops a diverged run cleanly (the rows, the last good model): the same seed would
    # diverge again, so a campaign keeps it (and scores it); a failed or interrupted run is redone.
    values = compose_values(["experiment=quick", "seed=3"])
    _finish(tmp_path / "diverged", values, status=diverged_status(154, "the global model's weight norm 1e22"))
    assert is_complete(tmp_path / "diverged", values)
    for name, status in (("failed", "failed: round 3: no device could be scheduled"), ("stopped", "interrupted")):
        _finish(tmp_path / name, values, status=status)
        assert not is_complete(tmp_path / name, values)
    assert outcome_text(tmp_path / "diverged") == "diverged at round 154"
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / SUMMARY_FILE).write_text(json.dumps({"status": "completed", "final_accuracy": None}))
    assert outcome_text(tmp_path / "done") == "completed"
    (tmp_path / "done" / SUMMARY_FILE).write_text(
        json.dumps({"status": "completed", "final_accuracy": None, "final_val_accuracy": 0.75})
    )
    assert outcome_text(tmp_path / "done") == "final validation accuracy 0.7500"
    assert outcome_text(tmp_path / "never") == "no summary"


def test_an_unknown_engine_is_refused():
    check_engine("flower")
    with pytest.raises(ValueError, match="engine: choose from inprocess, flower"):
        check_engine("ray")


def test_a_flower_run_that_diverged_is_a_result_and_one_that_failed_an_error(tmp_path, monkeypatch):
    # The launcher raises for both (one run, one clear line); the campaign keeps the diverged one.
    from amp_fl.experiments import campaign
    from amp_fl.launch import launcher

    values = compose_values(["experiment=quick", "seed=3"])

    def launch_that_stops(cfg, run_dir, status):
        _finish(run_dir, values, status=status)
        raise launcher.RunFailedError(status)

    monkeypatch.setattr(
        launcher, "launch", lambda cfg, run_dir: launch_that_stops(cfg, run_dir, diverged_status(9, "x"))
    )
    assert "wall_s" in campaign.run_flower(values, str(tmp_path / "diverged"))
    monkeypatch.setattr(launcher, "launch", lambda cfg, run_dir: launch_that_stops(cfg, run_dir, "failed: round 2: y"))
    with pytest.raises(launcher.RunFailedError, match="failed: round 2"):
        campaign.run_flower(values, str(tmp_path / "failed"))
