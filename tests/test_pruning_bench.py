"""Smoke test of the sub-model benchmark at a tiny size (its real run takes minutes)."""

from __future__ import annotations

import json

import pytest

from amp_fl.bench import submodel


def test_benchmark_emits_one_line_per_configuration_and_the_goal(capsys: pytest.CaptureFixture[str]) -> None:
    submodel.main(
        ["--models", "vgg11,cnn", "--keeps", "0.5", "--steps", "1", "--batch", "2", "--repeats", "1", "--threads", "1"]
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rows = [(r["model"], r["keep"], r["variant"]) for r in lines if "summary" not in r]
    assert rows == [(m, k, v) for m in ("vgg11", "cnn") for k in (1.0, 0.5) for v in ("sliced", "masked")]
    by_key = {(r["model"], r["keep"], r["variant"]): r for r in lines if "summary" not in r}
    assert by_key[("vgg11", 1.0, "sliced")]["ratio_to_full"] == 1.0
    assert by_key[("vgg11", 1.0, "masked")]["measured_as"] == "sliced"
    assert by_key[("vgg11", 0.5, "sliced")]["params"] == 2_323_338
    assert by_key[("vgg11", 0.5, "masked")]["params"] == 9_287_434
    assert by_key[("cnn", 0.5, "sliced")]["bytes"] == 4 * 9_592
    (goal,) = [r for r in lines if r.get("summary") == "goal"]
    assert goal["model"] == "vgg11" and goal["keep"] == 0.5 and isinstance(goal["goal_met"], bool)
    assert goal["flops_ratio"] == round(230_133_504 / 913_448_448, 4)
