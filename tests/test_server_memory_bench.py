"""Smoke test of the server-memory benchmark at a tiny size (its real run, 300 rounds x 100 PIUs, takes minutes)."""

from __future__ import annotations

import json

import pytest

from amp_fl.bench import server_memory


def test_benchmark_emits_one_line_with_the_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    server_memory.main(["--devices", "6", "--rbs", "3", "--rounds", "4", "--settle", "1"])
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert (line["bench"], line["devices"], line["rounds"], line["checkpoint_every"]) == ("server_memory", 6, 4, 1)
    assert line["growth_bound_mib"] == server_memory.GROWTH_BOUND_MIB == 64
    assert line["peak_bound_mib"] == server_memory.PEAK_BOUND_MIB == 1536
    assert line["rss_mib_peak"] >= line["rss_mib_end"] > 0
    # The checkpoint holds at most 6 device caches + the running sum + the model: 8 x 36,758 float32/64 values.
    assert 0 < line["checkpoint_mib"] < 8 * 36_758 * 8 / 2**20 + 0.5
    assert isinstance(line["within_bounds"], bool)
