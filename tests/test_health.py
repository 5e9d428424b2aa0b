"""The run-health checks (amp_fl/health.py) on hand-made rows: streaks, bounds, and their statuses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from amp_fl.config import config_to_dict, load_config
from amp_fl.errors import ConfigError, UnhealthyRunError
from amp_fl.health import HealthConfig, RunHealth, trailing, weight_norm
from amp_fl.run_folder import RoundRow, comparable_config

GOOD = [np.zeros(3)]


def row(round_: int, scheduled: int = 4, received: int = 4, loss: float = 2.3, sim: float = 0.1) -> RoundRow:
    failed = max(scheduled - received, 0)
    return RoundRow(
        round=round_,
        sim_time_s=sim * round_,
        round_latency_s=sim,
        accuracy=0.5,
        loss=loss,
        train_loss=loss,
        avg_aoi=1.0,
        num_scheduled=scheduled,
        num_received=received,
        num_failed=failed,
        mean_keep_ratio=1.0,
        uplink_bytes=0,
        downlink_bytes=0,
        objective=0.0,
        wall_time_s=float(round_),
        failed_invalid=failed,
    )


def rows_with(*kinds: str) -> list[RoundRow]:
    """Round 0, then one row per kind: ``ok``, ``rejected`` (all replies lost), ``idle`` (nobody scheduled)."""
    made = {"ok": {}, "rejected": {"received": 0}, "idle": {"scheduled": 0, "received": 0}}
    return [row(0, scheduled=0, received=0)] + [row(r, **made[k]) for r, k in enumerate(kinds, start=1)]


def test_streaks_count_the_last_rounds_in_a_row_and_never_round_0():
    rows = rows_with("rejected", "ok", "rejected", "rejected", "idle", "idle")
    assert trailing(rows, "idle") == 2 and trailing(rows, "rejected") == 0
    assert trailing(rows[:-2], "rejected") == 2
    assert trailing(rows_with("idle", "idle"), "idle") == 2  # round 0 (nobody scheduled) is not counted


def test_weight_norm_is_the_l2_norm_of_all_weights_together():
    assert weight_norm([np.array([3.0]), np.array([[4.0]], dtype=np.float32)]) == 5.0
    assert math.isinf(weight_norm([np.array([np.inf])]))
    big = np.full(4, 1e20, dtype=np.float32)  # its float32 sum of squares overflows; the norm does not
    assert weight_norm([big]) == pytest.approx(2e20, rel=1e-6)
    assert math.isnan(weight_norm([np.array([np.nan], dtype=np.float32)]))
    rng = np.random.default_rng(0)
    mixed = [rng.standard_normal((64, 16, 5, 5)).astype(np.float32), rng.standard_normal(10)]
    exact = math.sqrt(sum(float(np.sum(w.astype(np.float64) ** 2)) for w in mixed))
    assert weight_norm(mixed) == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize(
    ("rows", "weights", "status"),
    [
        (
            rows_with("ok", "rejected", "rejected", "rejected"),
            GOOD,
            "failed: round 4: every scheduled reply was rejected or lost for 3 rounds in a row "
            "(round 4: 4 of 4 failed: 4 invalid; health.max_rejected_rounds=3)",
        ),
        (rows_with("idle", "idle", "idle"), GOOD, "failed: round 3: no device could be scheduled for 3 rounds"),
        ([row(0), row(1, loss=4e29)], GOOD, "diverged at round 1: test loss 4e+29 is above health.max_loss=1000"),
        ([row(0), row(1, loss=math.inf)], GOOD, "diverged at round 1: test loss inf"),
        (
            [row(0), row(1)],
            [np.full(4, 1e6)],  # norm 2e6
            "diverged at round 1: the global model's weight norm 2e+06 is above health.max_weight_norm=1e+06",
        ),
    ],
    ids=["all-rejected", "idle", "loss", "infinite-loss", "weight-norm"],
)
def test_each_bound_stops_the_run_with_its_status(rows, weights, status):
    health = RunHealth(HealthConfig(max_rejected_rounds=3, max_idle_rounds=3))
    health.check(rows[:-1], GOOD)  # the round before passes
    with pytest.raises(UnhealthyRunError) as info:
        health.check(rows, weights)
    assert info.value.status.startswith(status)
    assert info.value.round == rows[-1].round


def test_a_run_that_is_fine_passes_and_zero_or_null_turns_a_check_off():
    RunHealth(HealthConfig()).check(rows_with("ok", "rejected", "ok", "idle", "ok"), GOOD)
    RunHealth(HealthConfig()).check([row(0), row(1, loss=math.nan)], GOOD)  # a round not evaluated
    off = RunHealth(HealthConfig(max_rejected_rounds=0, max_idle_rounds=0, max_loss=None, max_weight_norm=None))
    off.check(rows_with(*["rejected"] * 9), [np.full(4, 1e9)])
    off.check(rows_with(*["idle"] * 9), GOOD)


def test_health_settings_are_checked_and_do_not_make_another_run():
    with pytest.raises(ConfigError, match="health.max_idle_rounds: must be >= 0"):
        load_config({"health": {"max_idle_rounds": -1}})
    with pytest.raises(ConfigError, match="health.max_weight_norm: must be a finite number"):
        load_config({"health": {"max_weight_norm": 0.0}})
    assert load_config({}).health == HealthConfig()
    # The bounds only decide when a meaningless run stops: a campaign keeps a run made with other bounds.
    other = config_to_dict(load_config({"health": {"max_loss": 5.0}}))
    assert comparable_config(other) == comparable_config(config_to_dict(load_config({})))


def test_a_fedbuff_step_that_dispatches_nobody_new_is_not_idle():
    """FedBuff applies B buffered updates in a round that may send no new work: something arrived, so it counts."""
    rows = [row(0, scheduled=0, received=0)] + [row(r, scheduled=0, received=3) for r in range(1, 9)]
    RunHealth(HealthConfig(max_idle_rounds=2, max_rejected_rounds=2)).check(rows, GOOD)
    assert trailing(rows, "idle") == 0 and trailing(rows, "rejected") == 0
