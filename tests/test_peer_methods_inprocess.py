"""Issue 20 through the ServerApp/ClientApp code (in process): HeteroFL at one full level is Synchronous FL
exactly, and the new methods and rules survive a checkpoint and an exact resume (they add no server state:
the width levels are a function of the device profiles, the windows of the round, the rules read the
gradient cache the strategy already saves)."""

from __future__ import annotations

import numpy as np
import pytest
from test_checkpoint import _rows, _schedule, _whole_and_crashed

from amp_fl.config import load_config
from amp_fl.launch.inprocess import run_in_process
from amp_fl.server import checkpoint as C

BASE = {
    "dataset": {"name": "mnist5k"},
    "wireless": {"num_devices": 6, "num_rbs": 3},
    "num_rounds": 3,
    "seed": 4,
    "checkpoint": {"every_s": 0.0},  # the resume tests crash at a chosen round: every round checkpoints
}
HETEROFL = {
    "scheduling": {"name": "levels", "levels": [1.0, 0.5, 0.25]},
    "pruning": {"policy": "static", "scaler": True},
    "strategy": {"compensation": "none", "fresh_mean": "holders"},
    "model": {"static_bn": True},
}


def _final(run):
    with np.load(run / "final_model.npz") as z:
        return [z[name] for name in sorted(z.files)]


def test_heterofl_with_one_full_level_is_synchronous_fl(tmp_path):
    one_level = {**HETEROFL, "scheduling": {"name": "levels", "levels": [1.0]}}
    heterofl = run_in_process(load_config({**BASE, **one_level}), tmp_path / "heterofl")
    synchronous = {"scheduling": {"name": "full_model"}, "strategy": {"compensation": "none"}}
    sync = run_in_process(load_config({**BASE, **synchronous}), tmp_path / "sync")
    assert _rows(heterofl) == _rows(sync)
    for a, b in zip(_final(heterofl), _final(sync), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "variant",
    [
        {**HETEROFL, "scheduling": {"name": "levels", "assignment": "channel"}, "pruning": {"policy": "fedrolex"}},
        {
            "strategy": {"compensation": "all", "stale_weight": 0.5},
            "model": {"t_max_schedule": "linear", "t_max_end_s": 0.3, "t_max_rounds": 3},
            "scheduling": {"name": "amp", "max_local_steps": 16},
        },
    ],
    ids=["fedrolex_channel_levels", "amp_fl_stale_weight_t_max_schedule_spare_steps"],
)
def test_a_resumed_run_equals_the_uninterrupted_one(tmp_path, monkeypatch, variant):
    values = {**BASE, **variant, "num_rounds": 5}
    whole, run = _whole_and_crashed(values, tmp_path, monkeypatch, crash_after=2)
    assert C.load_checkpoint(run).round == 2
    run_in_process(C.resume_config(run), run)
    steps = [s for record in _schedule(whole) for s in record["local_steps"]]
    if "max_local_steps" in variant["scheduling"]:
        assert max(steps) > 8 and min(steps) >= 8  # some device had time to spare under T_max
    else:
        assert set(steps) == {None}  # train.local_steps for every device
    assert _rows(run) == _rows(whole)
    assert _schedule(run) == _schedule(whole)
    for a, b in zip(_final(run), _final(whole), strict=True):
        np.testing.assert_array_equal(a, b)
