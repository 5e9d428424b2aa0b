"""Issue 11, item 6: a non-finite global model stops the run cleanly; optional update-norm clipping."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from strategy_doubles import LR, constant_client, make_strategy, run_round

from amp_fl.config import load_config
from amp_fl.errors import DivergedError
from amp_fl.launch.inprocess import InProcessGrid, run_in_process
from amp_fl.server import checkpoint as C
from amp_fl.strategy import amp_fl as strategy_module


def test_overflowing_model_raises_and_keeps_the_last_finite_weights(cnn):
    """Both devices send 3e38 (finite float32) every round: w moves by -LR * 3e38 = -1.5e38 per round,
    so w stays finite after rounds 1 and 2 and overflows float32 (max 3.4e38) in round 3."""
    regions, _w0 = cnn
    full = regions.full_kept()
    plan = {t: [(0, full), (1, full)] for t in (1, 2, 3)}
    strategy, reports = make_strategy(cnn, plan, compensation="none")
    grid = InProcessGrid(constant_client({0: 3e38, 1: 3e38}), 2)
    run_round(strategy, grid, 1)
    run_round(strategy, grid, 2)
    after_2 = [w.copy() for w in strategy.weights]
    assert all(np.isfinite(w).all() for w in after_2)
    with np.errstate(over="ignore"), pytest.raises(DivergedError) as info:
        run_round(strategy, grid, 3)
    assert info.value.round == 3
    assert str(info.value) == "diverged at round 3: the global model has NaN or infinite values in 'features.0.weight'"
    for w, w2 in zip(strategy.weights, after_2, strict=True):
        np.testing.assert_array_equal(w, w2)  # never replaced by the non-finite model
    assert [r.round for r in reports] == [1, 2]  # no report for the diverged round


def test_clipping_scales_a_long_update_to_the_bound_and_is_off_by_default(cnn):
    """Device 0 sends 100.0 in every one of the 36,758 entries: norm 100 * sqrt(36758). Clipped to 1,
    every entry becomes 1 / sqrt(36758), so w moves by LR / sqrt(36758) (compensation none, one device)."""
    regions, w0 = cnn
    plan = {1: [(0, regions.full_kept())]}
    strategy, _ = make_strategy(cnn, plan, compensation="none", clip_update_norm=1.0)
    run_round(strategy, InProcessGrid(constant_client({0: 100.0, 1: 0.0}), 2), 1)
    count = sum(w.size for w in w0)
    assert count == 36_758
    for w, w_start in zip(strategy.weights, w0, strict=True):
        np.testing.assert_allclose(w, w_start - LR / math.sqrt(count), rtol=0, atol=1e-6)

    unclipped, _ = make_strategy(cnn, plan, compensation="none")
    run_round(unclipped, InProcessGrid(constant_client({0: 100.0, 1: 0.0}), 2), 1)
    for w, w_start in zip(unclipped.weights, w0, strict=True):
        np.testing.assert_allclose(w, w_start - LR * 100.0, rtol=1e-6)


def test_a_diverged_run_stops_cleanly_with_its_metrics_and_last_good_checkpoint(tmp_path, monkeypatch):
    """The global step of round 3 turns NaN (stand-in for an overflow): the run ends without a crash;
    metrics.csv keeps rounds 0-2, the checkpoint and final_model.npz hold round 2's model, and the
    summary says where and why."""
    real_step = strategy_module.server_step
    calls = []

    def step(settings, state, weights, direction):
        calls.append(1)
        new = real_step(settings, state, weights, direction)
        if len(calls) == 3:
            new[2] = np.full_like(new[2], np.nan)
        return new

    monkeypatch.setattr(strategy_module, "server_step", step)
    values = {"dataset": {"name": "mnist5k"}, "wireless": {"num_devices": 6, "num_rbs": 3}, "num_rounds": 6}
    values["checkpoint"] = {"every_s": 0.0}  # every round checkpoints, so the last good one is round 2's
    run = run_in_process(load_config(values), tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    why = "the global model has NaN or infinite values in 'features.3.weight'"
    assert summary["status"] == f"diverged at round 3: {why}"
    assert summary["last_checkpoint_round"] == 2
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["round"]) for r in rows] == [0, 1, 2]
    state = C.load_checkpoint(run)
    assert state.round == 2
    with np.load(run / "final_model.npz") as z:
        for i, w in enumerate(state.parts["strategy"]["weights"]):
            np.testing.assert_array_equal(z[f"arr_{i}"], w)
            assert np.isfinite(w).all()


def test_launcher_ends_a_diverged_run_with_one_line_naming_round_and_cure(tmp_path, monkeypatch):
    """A stand-in for ``flwr run`` that ends as a diverged ServerApp does (exit 0, status ``diverged ...``)."""
    import sys

    from amp_fl.launch import launcher as launch_mod

    status = "diverged at round 3: the global model has NaN or infinite values in 'features.3.weight'"
    script = f"import json, sys; open(sys.argv[1] + '/summary.json', 'w').write(json.dumps({{'status': {status!r}}}))"
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr_home"))
    monkeypatch.setattr(launch_mod, "flwr_command", lambda cfg, f, home: [sys.executable, "-c", script, str(f.parent)])
    values = {"dataset": {"name": "mnist5k"}, "wireless": {"num_devices": 6, "num_rbs": 3}, "num_rounds": 6}
    with pytest.raises(launch_mod.RunFailedError) as info:
        launch_mod.launch(load_config(values), tmp_path / "run")
    message = str(info.value)
    assert message.startswith(status + "; the metrics up to the last good round are in ")
    assert message.endswith("try a smaller train.learning_rate or strategy.clip_update_norm")
