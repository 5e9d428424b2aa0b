"""The round-breakdown benchmarks still run end to end (a renamed hook broke `bench server` once)."""

from __future__ import annotations

import json

import pytest

from amp_fl.bench import server


def test_server_bench_splits_rounds_into_client_evaluation_and_server(capsys: pytest.CaptureFixture[str]) -> None:
    server.main(["--rounds", "3", "--warmup", "1", "--dataset", "mnist5k", "--set", "wireless.num_devices=12"])
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines() if text.startswith("{")]
    assert line["bench"] == "server" and line["rounds_measured"] == 2
    assert line["client_s_mean"] > 0 and line["server_s_mean"] > 0
    parts = ("configure_train", "aggregate_train", "checkpoint", "other")
    assert sum(line[f"server_{p}_s_mean"] for p in parts) == pytest.approx(line["server_s_mean"])
    assert 0 < line["server_share"] < 1
