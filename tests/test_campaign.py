"""The campaigns' shared machinery (amp_fl.experiments.campaign): a plan's jobs and what counts as done."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from amp_fl.experiments.campaign import check_engine, compose_values, is_complete, make_jobs, still_to_run
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


def test_an_unknown_engine_is_refused():
    check_engine("flower")
    with pytest.raises(ValueError, match="engine: choose from inprocess, flower"):
        check_engine("ray")
