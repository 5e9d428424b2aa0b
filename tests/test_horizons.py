"""Issue 22: the figures' simulated-time horizons and their calibration from the latency model."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from amp_fl.config import load_config
from amp_fl.experiments.campaign import compose_values
from amp_fl.experiments.figures import (
    CIFAR10_HORIZON_S,
    CIFAR10_ROUNDS,
    DATASETS,
    FIGURES,
    FULL_MODEL_ROUNDS,
    QUICK,
    ROUND_CAP_MARGIN,
    ROUND_LENGTH_S,
    SCALES,
    expand,
    round_budget,
)
from amp_fl.experiments.horizons import round_lengths
from amp_fl.experiments.reproduce import expand_figure
from amp_fl.launch.inprocess import run_in_process

SMALL = {"dataset": {"name": "mnist5k"}, "wireless": {"num_devices": 6, "num_rbs": 3}, "num_rounds": 4, "seed": 3}


@pytest.mark.parametrize("scheduling", ["amp", "full_model"])
def test_the_replayed_round_lengths_are_a_real_runs_clock(tmp_path, scheduling):
    cfg = load_config({**SMALL, "scheduling": {"name": scheduling}})
    run = run_in_process(cfg, tmp_path / scheduling)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    measured = [float(r["round_latency_s"]) for r in rows[1:]]
    assert round_lengths(cfg, 4, (1, 28, 28)) == pytest.approx(measured, rel=1e-9)  # metrics.csv keeps 10 digits


# (task, kind) -> the overrides of the run the calibration measured, the input shape, the rounds replayed.
CALIBRATION = {
    ("mnist", "pruned"): (["experiment=fig8", "method=amp_fl"], (1, 28, 28), 100),
    ("mnist", "full_model"): (["experiment=fig8", "method=synchronous"], (1, 28, 28), 150),
    ("cifar10", "pruned"): (["experiment=fig8", "method=amp_fl", "dataset=cifar10", "model=vgg11"], (3, 32, 32), 60),
    ("cifar10", "full_model"): (
        ["experiment=fig8", "method=synchronous", "dataset=cifar10", "model=vgg11"],
        (3, 32, 32),
        200,
    ),
}


@pytest.mark.parametrize(("task", "kind"), list(CALIBRATION))
def test_the_stored_round_lengths_are_the_latency_models(task, kind):
    overrides, shape, rounds = CALIBRATION[(task, kind)]
    means = [
        round_lengths(load_config(compose_values([*overrides, f"seed={seed}"])), rounds, shape).mean()
        for seed in (0, 1, 2)
    ]
    assert np.mean(means) == pytest.approx(ROUND_LENGTH_S[task][kind], rel=0.01)
    # The full-model round caps leave room for the seed with the shortest rounds.
    assert min(means) >= ROUND_LENGTH_S[task][kind] / ROUND_CAP_MARGIN


def test_the_issue_s_vgg11_numbers():
    # An AMP-FL round with VGG-11 lasts 19.97 s; the full-model baselines' round factor is 0.22 (not 0.37).
    assert ROUND_LENGTH_S["cifar10"]["pruned"] == pytest.approx(19.97, abs=0.01)
    assert FULL_MODEL_ROUNDS["cifar10"] == pytest.approx(0.222, abs=0.002)
    assert FULL_MODEL_ROUNDS["mnist"] == pytest.approx(0.375, abs=0.002)


def _time_figures():
    for figure in FIGURES.values():
        if "mnist" in figure.horizon_s:
            yield figure, SCALES["quick"] if figure is QUICK else SCALES["paper"]


def test_each_time_preset_holds_its_horizon_and_a_round_cap_from_the_calibration():
    fashion = DATASETS["fashion_mnist"]
    checked = 0
    for figure, scale in _time_figures():
        horizon = figure.horizon_s["mnist"]
        for spec in expand_figure(figure, scale, fashion):
            if spec.seed != figure.seeds[0] or (
                figure.sweep is not None and spec.sweep_value != figure.sweep.values[0]
            ):
                continue
            cfg = load_config(compose_values(spec.overrides))
            assert cfg.sim_time_limit_s == horizon, spec.run_id
            full = figure.series_by_label(spec.series).full_model
            length = ROUND_LENGTH_S["mnist"]["full_model" if full else "pruned"]
            # horizon / measured mean round length = the round budget; the cap is 1.15x it (+- rounding)
            assert cfg.num_rounds == pytest.approx(ROUND_CAP_MARGIN * horizon / length, rel=0.01), spec.run_id
            checked += 1
    assert checked >= 15


def test_cifar10_figures_get_the_papers_horizons():
    cifar = DATASETS["cifar10"]
    fig8 = expand(FIGURES["fig8"], SCALES["paper"], cifar)
    amp = load_config(compose_values(fig8[0].overrides))
    sync = load_config(compose_values(next(s for s in fig8 if "method=synchronous" in s.overrides).overrides))
    assert amp.sim_time_limit_s == sync.sim_time_limit_s == CIFAR10_HORIZON_S == 3.0e4
    assert amp.num_rounds == round_budget(3.0e4, 19.97) == 1728  # 1502 rounds of 19.97 s, x 1.15
    assert sync.num_rounds == round(1728 * FULL_MODEL_ROUNDS["cifar10"]) == 384  # 333 rounds of 89.96 s
    assert sync.num_rounds * min(86.28, ROUND_LENGTH_S["cifar10"]["full_model"]) > 3.0e4  # the horizon ends it
    fig10 = expand(FIGURES["fig10"], SCALES["quick"], cifar)[0]
    assert load_config(compose_values(fig10.overrides)).sim_time_limit_s == 1.5e4  # the quick scale: half
    fig2 = load_config(compose_values(expand(FIGURES["fig2"], SCALES["paper"], cifar)[0].overrides))
    assert (fig2.num_rounds, fig2.sim_time_limit_s) == (CIFAR10_ROUNDS, None)  # Figs. 4-5: after 1000 rounds


def test_the_resnet_preset_caps_rounds_above_what_its_horizon_needs():
    """conf/experiment/resnet.yaml: one cap for every method, above the rounds 600 s take at each seed's mean length."""
    from amp_fl.experiments.figures import FIGURES

    resnet = FIGURES["resnet"]
    for spec in expand_figure(resnet, SCALES["paper"], DATASETS["fashion_mnist"]):
        cfg = load_config(compose_values(spec.overrides))
        lengths = round_lengths(cfg, 40, (1, 28, 28))
        assert cfg.sim_time_limit_s == 600.0
        assert cfg.num_rounds >= 1.05 * cfg.sim_time_limit_s / lengths.mean(), spec.run_id
