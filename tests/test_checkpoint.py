"""Issue 11, item 1: server checkpoints and resume (in process: the same ServerApp and ClientApp code).

The Flower simulation path with a SIGKILLed ServerApp is in ``tests/test_e2e_resume.py``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from amp_fl.config import load_config
from amp_fl.errors import ConfigError
from amp_fl.launch.inprocess import run_in_process
from amp_fl.run_folder import CHECKPOINT_FILE, RUN_CONFIG_FILE, RoundRow
from amp_fl.server import checkpoint as C

BASE = {
    "dataset": {"name": "mnist5k"},
    "wireless": {"num_devices": 6, "num_rbs": 3},
    "num_rounds": 7,
    "seed": 5,
    "strategy": {"compensation": "all"},
    "checkpoint": {"every_s": 0.0},  # these tests crash at a chosen round: every due round checkpoints
}


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in csv.DictReader(f)]


def _schedule(run: Path) -> list[dict]:
    """schedule.jsonl without the measured client training times (wall clock)."""
    lines = (run / "schedule.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "client_fit_s"} for line in lines]


class Crash(BaseException):
    """Stands for the server being killed (BaseException: nothing in the runner may swallow it)."""


def _crash_after(monkeypatch, server_round: int) -> None:
    """Stop the run right after round ``server_round``'s row is written (and its checkpoint, if one is due)."""
    original = C.Checkpointer.__call__

    def call(self, r):
        original(self, r)
        if r == server_round:
            raise Crash(r)

    monkeypatch.setattr(C.Checkpointer, "__call__", call)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    return run_in_process(load_config(BASE), tmp_path_factory.mktemp("whole"))


@pytest.mark.parametrize(("every", "crash_after"), [(1, 3), (2, 5)])
def test_resumed_run_equals_the_uninterrupted_one(tmp_path, monkeypatch, uninterrupted, every, crash_after):
    """With ``every=2`` and a crash after round 5, metrics.csv already holds row 5 but the checkpoint is
    round 4: the resume drops row 5 and redoes it. Either way every row (wall time aside), the schedule
    log and the final model equal those of the uninterrupted run."""
    values = {**BASE, "checkpoint": {"every": every, "every_s": 0.0}}
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _crash_after(m, crash_after)
        with pytest.raises(Crash):
            run_in_process(load_config(values), run)
    assert len(_rows(run)) == crash_after + 1
    saved = C.load_checkpoint(run)
    assert saved.round == crash_after - crash_after % every
    assert json.loads((run / "summary.json").read_text())["status"].startswith("failed: Crash")

    cfg = C.resume_config(run)
    assert cfg.checkpoint.every == every and cfg.resume == str(run.resolve())
    run_in_process(cfg, run)
    assert _rows(run) == _rows(uninterrupted)
    assert _schedule(run) == _schedule(uninterrupted)
    with np.load(run / "final_model.npz") as a, np.load(uninterrupted / "final_model.npz") as b:
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from_round"] == saved.round


def test_checkpoint_holds_the_server_state(uninterrupted):
    state = C.load_checkpoint(uninterrupted)
    rows = state.parts["metrics"]["rows"]
    assert state.round == 7 and state.seed == 5 and len(rows) == 8
    assert sorted(state.parts) == ["clock", "metrics", "strategy"]
    assert state.parts["clock"]["now_s"] == pytest.approx(rows[-1]["sim_time_s"])
    strategy = state.parts["strategy"]
    assert strategy["aoi"].shape[0] == 6 and strategy["gbar"] is None
    cache = strategy["cache"]
    assert cache is not None and len(cache["cached"]) == 6
    # The running sum is the sum of the stored caches (what Eq. (2)'s 1/K scope divides).
    stored = [c for c in cache["cached"] if c is not None]
    for i, total in enumerate(cache["total"]):
        np.testing.assert_allclose(total, sum(c[i].astype(np.float64) for c in stored), atol=1e-6)
    with np.load(uninterrupted / "final_model.npz") as z:
        for i, w in enumerate(strategy["weights"]):
            np.testing.assert_array_equal(w, z[f"arr_{i}"])


def _state(round_: int) -> C.ServerState:
    row = RoundRow(round_, 0.5, 0.1, 0.3, 2.0, 1.5, 0.7, 2, 2, 0, 0.6, 10, 20, 1.0, 3.0)
    strategy = {
        "weights": [np.full((2, 3), round_, dtype=np.float32)],
        "aoi": np.zeros((2, 4), dtype=np.int64),
        "cache": {"cached": [None, [np.ones((2, 3), dtype=np.float32)]], "total": [np.ones((2, 3))]},
        "gbar": None,
    }
    return C.ServerState(
        round=round_,
        seed=1,
        # 0.30000000000000004 must come back exactly
        parts={"strategy": strategy, "clock": {"now_s": 0.1 + 0.2}, "metrics": {"rows": [dataclasses.asdict(row)]}},
        config={"seed": 1},
    )


def test_checkpoint_write_is_atomic_and_round_trips(tmp_path):
    C.save_checkpoint(tmp_path, _state(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE]  # no temporary left behind
    # A crash while writing the next one leaves a partial temporary file: the last checkpoint still reads.
    (tmp_path / (CHECKPOINT_FILE + ".tmp")).write_bytes(b"PK\x03\x04 half a zip")
    state = C.load_checkpoint(tmp_path)
    assert state.round == 3 and state.parts["clock"]["now_s"] == 0.1 + 0.2
    cached = state.parts["strategy"]["cache"]["cached"]
    assert cached[0] is None
    np.testing.assert_array_equal(cached[1][0], np.ones((2, 3)))
    assert state.parts["strategy"]["aoi"].dtype == np.int64 and state.parts["strategy"]["gbar"] is None
    rows = state.parts["metrics"]["rows"]
    assert repr(rows) == repr(_state(3).parts["metrics"]["rows"])  # repr: NaN (personal_accuracy) != NaN
    C.save_checkpoint(tmp_path, _state(4))  # replaces both the old file and the stale temporary
    assert C.load_checkpoint(tmp_path).round == 4
    assert not (tmp_path / (CHECKPOINT_FILE + ".tmp")).exists()


def _saved_run(tmp_path: Path, **overrides) -> Path:
    """A run folder with a run_config.json and a checkpoint of round 3, without running anything."""
    values = {**BASE, **overrides, "output_dir": str(tmp_path)}
    cfg = load_config(values)
    (tmp_path / RUN_CONFIG_FILE).write_text(json.dumps(C.config_to_dict(cfg), default=list))
    state = _state(3)
    state.config = C.comparable_config(cfg)
    C.save_checkpoint(tmp_path, state)
    return tmp_path


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"strategy": {"memory_friendly": True}}, "Algorithm 3 (strategy.memory_friendly=true) keeps each PIU's"),
        (
            {"strategy": {"local_objective": "apfl", "apfl_alpha": 0.5}, "scheduling": {"name": "full_model"}},
            "APFL keeps each PIU's personal model",
        ),
        ({"num_rounds": 3}, "nothing to resume: the checkpoint"),
    ],
)
def test_resume_is_refused_with_the_reason(tmp_path, overrides, problem):
    run = _saved_run(tmp_path, **overrides)
    with pytest.raises(ConfigError) as info:
        C.resume_config(run)
    assert info.value.key == "resume" and problem in str(info.value)


def test_resume_needs_a_run_folder_with_a_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="is not a run folder"):
        C.resume_config(tmp_path / "nowhere")
    run = _saved_run(tmp_path)
    (run / CHECKPOINT_FILE).unlink()
    with pytest.raises(ConfigError, match="no checkpoint in"):
        C.resume_config(run)


def test_a_changed_configuration_is_named(tmp_path):
    run = _saved_run(tmp_path)
    state = C.load_checkpoint(run)
    changed = load_config({**BASE, "train": {"learning_rate": 0.01}, "output_dir": str(run)})
    with pytest.raises(ConfigError) as info:
        C.check_state_matches(changed, state)
    assert info.value.key == "train.learning_rate"
    C.check_state_matches(load_config({**BASE, "output_dir": str(run), "checkpoint": {"every": 5}}), state)


def test_a_resumed_runs_saved_config_repeats_the_run_from_round_0(tmp_path, monkeypatch):
    """``python -m amp_fl.launch.launcher runs/<run>/run_config.json runs/again`` repeats a run, also a
    resumed one (whose run_config.json names its own folder in ``resume``)."""
    from amp_fl.launch import launcher as launch_mod

    seen = {}

    def fake_launch(cfg, run_dir):
        seen["resume"], seen["run_dir"] = cfg.resume, run_dir

    monkeypatch.setattr(launch_mod, "launch", fake_launch)
    values = {**C.config_to_dict(load_config(BASE)), "resume": str(tmp_path / "first")}
    config = tmp_path / "run_config.json"
    config.write_text(json.dumps(values, default=list))
    launch_mod.main([str(config), str(tmp_path / "again")])
    assert seen == {"resume": None, "run_dir": tmp_path / "again"}


def _whole_and_crashed(values, tmp_path, monkeypatch, crash_after):
    """The uninterrupted run's folder and that of the same run crashed after round ``crash_after``."""
    whole = run_in_process(load_config(values), tmp_path / "whole")
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _crash_after(m, crash_after)
        with pytest.raises(Crash):
            run_in_process(load_config(values), run)
    return whole, run


@pytest.mark.parametrize(
    "strategy",
    [
        {"compensation": "discounted", "staleness_decay": 0.5, "server_optimizer": "momentum", "server_momentum": 0.5},
        {"compensation": "scheduled", "server_optimizer": "adam", "server_lr": 0.001},
    ],
)
def test_a_resumed_server_optimiser_continues_with_its_moments(tmp_path, monkeypatch, strategy):
    """The server optimiser's step count and moments are in the checkpoint: without them, momentum and
    Adam would restart from zero after a resume and the run would differ from the uninterrupted one."""
    values = {**BASE, "num_rounds": 5, "strategy": strategy}
    whole, run = _whole_and_crashed(values, tmp_path, monkeypatch, crash_after=3)
    saved = C.load_checkpoint(run).parts["strategy"]
    optimizer, num_weights = saved["server_optimizer"], len(saved["weights"])
    assert optimizer["step"] == 3 and len(optimizer["first_moment"]) == num_weights
    assert len(optimizer["second_moment"]) == (num_weights if strategy["server_optimizer"] == "adam" else 0)
    run_in_process(C.resume_config(run), run)
    assert _rows(run) == _rows(whole)


SPARSE = {
    "dataset": {"name": "mnist5k"},
    "wireless": {"num_devices": 4},
    "num_rounds": 6,
    "seed": 2,
    "train": {"local_steps": 2, "batch_size": 16},
    # IMP from round 1 with rewinding to round 1's model: the masks, the snapshot and the history all matter.
    "algorithm": "sparse_fedavg",
    "aggregation": "over_the_air",
    "sparse_fedavg": {
        "method": "imp",
        "target": 0.6,
        "rate": 0.3,
        "interval": 1,
        "first_round": 1,
        "rewind_round": 1,
        "participation": 0.5,
    },
    "ota": {"snr_db": 20.0},
}


def test_a_resumed_sparse_fedavg_run_equals_the_uninterrupted_one(tmp_path, monkeypatch):
    """Sparse FedAvg saves its own state (weights, the pruner's masks and steps, the rewind snapshot,
    the history) through the same protocol; crashed after round 3, resumed, it ends where the whole run does."""
    values = {**SPARSE, "checkpoint": {"every": 1, "every_s": 0.0}}
    whole, run = _whole_and_crashed(values, tmp_path, monkeypatch, crash_after=3)
    saved = C.load_checkpoint(run).parts["strategy"]
    assert saved["rewind_snapshot"] is not None and [r["round"] for r in saved["history"]] == [1, 2, 3]
    assert any(m is not None and not m.all() for m in saved["pruner"]["masks"])  # pruned by round 3
    run_in_process(C.resume_config(run), run)
    assert _rows(run) == _rows(whole)
    assert _schedule(run) == _schedule(whole)
    with np.load(run / "final_model.npz") as a, np.load(whole / "final_model.npz") as b:
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])
    resumed, uninterrupted = (C.load_checkpoint(r).parts["strategy"] for r in (run, whole))
    assert resumed["history"] == uninterrupted["history"]
    for m1, m2 in zip(resumed["pruner"]["masks"], uninterrupted["pruner"]["masks"], strict=True):
        assert (m1 is None and m2 is None) or np.array_equal(m1, m2)
    assert resumed["pruner"]["history"] == uninterrupted["pruner"]["history"]


def _files(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / CHECKPOINT_FILE) as z:
        return {name: z[name] for name in z.files}


def test_background_writer_writes_what_the_synchronous_save_writes(tmp_path):
    """Same file contents; the state is copied at submit, so changing it afterwards changes nothing."""
    sync, background = tmp_path / "sync", tmp_path / "background"
    sync.mkdir()
    background.mkdir()
    C.save_checkpoint(sync, _state(3))
    state = _state(3)
    writer = C.BackgroundWriter(background)
    writer.submit(state)
    state.parts["strategy"]["weights"][0][...] = -1.0  # the next round changes the live arrays in place
    writer.close()
    assert writer.written_round == 3
    a, b = _files(sync), _files(background)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_background_writer_raises_a_failed_write_on_the_next_call(tmp_path):
    writer = C.BackgroundWriter(tmp_path / "missing")  # no such folder: the write fails
    writer.submit(_state(1))
    with pytest.raises(FileNotFoundError):
        writer.submit(_state(2))
    writer.close()


CRASH_SCRIPT = """
import os, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_checkpoint import _state
from amp_fl.server.checkpoint import BackgroundWriter
writer = BackgroundWriter(Path({run!r}))
for r in range(1, 6):
    writer.submit(_state(r))
os._exit(1)  # killed right after round 5's checkpoint was handed to the writer
"""


def test_a_crash_right_after_a_round_leaves_that_round_or_the_previous_one(tmp_path):
    import subprocess
    import sys

    script = CRASH_SCRIPT.format(tests=str(Path(__file__).parent), run=str(tmp_path))
    assert subprocess.run([sys.executable, "-c", script], check=False).returncode == 1
    assert C.load_checkpoint(tmp_path).round in (4, 5)


def test_checkpoint_every_s_skips_rounds_until_the_wall_clock_interval(tmp_path, monkeypatch):
    cfg = load_config({**BASE, "num_rounds": 10, "checkpoint": {"every": 1, "every_s": 30.0}})
    now = [100.0]
    monkeypatch.setattr(C.time, "monotonic", lambda: now[0])
    saved = []
    monkeypatch.setattr(C.BackgroundWriter, "submit", lambda self, state: saved.append(state.round))
    checkpoints = C.Checkpointer(tmp_path, cfg, {})
    for r, t in enumerate([100, 110, 131, 140, 165, 170, 175, 180, 185, 190]):
        now[0] = t
        checkpoints(r)
    assert saved == [2, 4]  # 31 s after the start, then 34 s after round 2
    checkpoints(10)  # the last round is always saved
    assert saved == [2, 4, 10]
    with pytest.raises(ConfigError, match="checkpoint.every_s"):
        load_config({**BASE, "checkpoint": {"every_s": -1.0}})


def test_background_writer_copies_views_of_one_table_as_a_block(tmp_path):
    """A cache table's rows (views of one array) are copied together; later changes do not leak in."""
    table = np.arange(24, dtype=np.float32).reshape(4, 6)
    state = _state(2)
    state.parts["strategy"]["cache"] = {"cached": [[table[k, :3], table[k, 3:]] for k in range(4)], "total": []}
    writer = C.BackgroundWriter(tmp_path)
    writer.submit(state)
    table[...] = -1.0
    writer.close()
    cached = C.load_checkpoint(tmp_path).parts["strategy"]["cache"]["cached"]
    want = np.arange(24, dtype=np.float32).reshape(4, 6)
    for k in range(4):
        np.testing.assert_array_equal(np.concatenate(cached[k]), want[k])


def test_views_are_stored_once_and_format_2_still_reads(tmp_path):
    table = np.arange(24, dtype=np.float32).reshape(4, 6)
    state = _state(2)
    state.parts["strategy"]["cache"] = {"cached": [[table[k, :3], table[k, 3:]] for k in range(4)], "total": []}
    C.save_checkpoint(tmp_path, state)
    members = _files(tmp_path)
    assert sum(name.endswith(C.BLOCK_SUFFIX) for name in members) == 1 and len(members) == 4  # + weights, aoi, meta
    cached = C.load_checkpoint(tmp_path).parts["strategy"]["cache"]["cached"]
    np.testing.assert_array_equal(np.array([np.concatenate(c) for c in cached]), table)
    # A format-2 file (every array its own member, no view table) reads the same.
    arrays: dict[str, np.ndarray] = {}
    parts = {name: C._flatten(part, name, arrays) for name, part in state.parts.items()}
    meta = {"format": 2, "round": 2, "seed": 1, "parts": parts, "config": {}}
    np.savez(tmp_path / CHECKPOINT_FILE, **arrays, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    old = C.load_checkpoint(tmp_path).parts["strategy"]["cache"]["cached"]
    np.testing.assert_array_equal(np.array([np.concatenate(c) for c in old]), table)


def test_the_archive_is_np_savez_s_member_for_member(tmp_path):
    """The writer's own savez (no tobytes copies under the GIL) gives np.savez's members, byte for byte."""
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    members = {
        "block#block": np.arange(10_000, dtype=np.float32).reshape(100, 100),
        "fortran": np.asfortranarray(base),
        "strided": base[:, ::2],
        "counter": np.array(7, dtype=np.int64),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "flags": np.array([True, False]),
        "big_endian": np.arange(3, dtype=">i4"),
        "meta": np.frombuffer(b'{"a": 1}', dtype=np.uint8),
    }
    ours, numpy_s = tmp_path / "ours.npz", tmp_path / "numpy.npz"
    with ours.open("wb") as f:
        C._savez(f, members)
    np.savez(numpy_s, **members)
    with zipfile.ZipFile(ours) as a, zipfile.ZipFile(numpy_s) as b:
        assert a.namelist() == b.namelist() == [name + ".npy" for name in members]
        for name in a.namelist():
            assert a.read(name) == b.read(name), name
    with np.load(ours) as z:
        for name, value in members.items():
            assert z[name].dtype == value.dtype and z[name].shape == value.shape
            np.testing.assert_array_equal(z[name], value)
