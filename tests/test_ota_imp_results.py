"""The sparsity sweep reads a finished run's folder through amp_fl.run_folder (no run needed)."""

from __future__ import annotations

import numpy as np
import pytest

from amp_fl.experiments.campaign import Job
from amp_fl.experiments.ota_imp import RunSpec, read_result
from amp_fl.run_folder import MetricsWriter, RoundRow, write_final_model, write_summary, write_timing


def _row(k: int, accuracy: float) -> RoundRow:
    return RoundRow(
        round=k,
        sim_time_s=float(k),
        round_latency_s=1.0,
        accuracy=accuracy,
        loss=1.0,
        train_loss=1.0,
        avg_aoi=1.0,
        num_scheduled=4 if k else 0,
        num_received=3 if k else 0,
        num_failed=1 if k else 0,
        mean_keep_ratio=1.0,
        uplink_bytes=300 * k,
        downlink_bytes=400 * k,
        objective=0.0,
        wall_time_s=float(k),
    )


def test_read_result_takes_accuracy_sparsity_bytes_and_silent_share_from_the_folder(tmp_path):
    writer = MetricsWriter(tmp_path)
    for k, acc in enumerate([0.1, 0.5, float("nan"), 0.7]):
        writer.append(_row(k, acc))
        if k:
            writer.append_schedule({"round": k, "device_ids": [0, 1, 2, 3], "failures": {"3": "silent: fading"}})
    write_summary(
        tmp_path, {"status": "completed", "dataset_used": "mnist5k", "total_downlink_bytes": 7, "total_uplink_bytes": 5}
    )
    write_final_model(tmp_path, [np.array([[0.0, 1.0], [0.0, 0.0]]), np.zeros(3)])  # the bias is not prunable
    write_timing(tmp_path, {"wall_s": 12.5})
    spec = RunSpec("full-imp-s75-seed0", "sparse", "full", "imp", 0.75, 0, ())
    result = read_result(Job(spec, {}, tmp_path), last_k=2)
    assert result.final_accuracy == pytest.approx(0.6)  # mean of the last 2 evaluated rounds after round 0
    assert (result.last_accuracy, result.best_accuracy, result.rounds) == (0.7, 0.7, 2)
    assert (result.num_pruned, result.num_prunable, result.achieved_sparsity) == (3, 4, 0.75)
    assert result.downlink_per_piu_last == 1200 / 4 and result.uplink_per_piu_last == 900 / 3
    assert result.silent_fraction == pytest.approx(0.25)
    assert (result.dataset, result.total_downlink, result.total_uplink, result.wall_s) == ("mnist5k", 7, 5, 12.5)
