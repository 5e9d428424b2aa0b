"""A run folder's writers and readers (amp_fl.run_folder): what is written reads back the same."""

from __future__ import annotations

import math

import numpy as np
import pytest

from amp_fl.run_folder import (
    METRICS_FILE,
    MetricsWriter,
    RoundRow,
    RunFolderError,
    comparable_config,
    last_personal_accuracy,
    read_columns,
    read_config,
    read_final_model,
    read_rows,
    read_schedule,
    read_summary,
    read_timing,
    time_to_accuracy,
    write_config,
    write_final_model,
    write_summary,
    write_timing,
)


def _row(k: int, accuracy: float, personal: float = math.nan) -> RoundRow:
    """Round ``k``: every column set (NaN where round 0 has no value), integers growing with ``k``."""
    counts = {"num_scheduled": 2 * (k > 0), "num_received": 2 * (k > 0), "num_failed": 0}
    traffic = {"uplink_bytes": 100 * k, "downlink_bytes": 120 * k}
    nan_at_0 = {"train_loss": 1.2 if k else math.nan, "mean_keep_ratio": 0.6 if k else math.nan}
    return RoundRow(
        round=k, sim_time_s=0.5 * k, round_latency_s=0.5 * (k > 0), accuracy=accuracy, loss=1.0, avg_aoi=1.0,
        objective=0.0, wall_time_s=2.0 * k, personal_accuracy=personal, **counts, **traffic, **nan_at_0,
    )  # fmt: skip


ROWS = [_row(0, 0.1), _row(1, 0.6, personal=0.7), _row(2, math.nan), _row(3, 0.8)]


def test_metrics_written_read_back_as_rows_and_as_columns(tmp_path):
    writer = MetricsWriter(tmp_path)
    for row in ROWS:
        writer.append(row)
    assert read_rows(tmp_path / METRICS_FILE) == ROWS  # NaN is math.nan on both sides
    columns = read_columns(tmp_path / METRICS_FILE)
    assert columns["round"].tolist() == [0, 1, 2, 3] and columns["round"].dtype == np.int64
    assert columns["uplink_bytes"].tolist() == [0.0, 100.0, 200.0, 300.0]
    assert np.isnan(columns["accuracy"][2])  # an unevaluated round stays (the report leaves it out)


def test_strict_columns_name_the_truncated_line(tmp_path):
    writer = MetricsWriter(tmp_path)
    for row in ROWS[:2]:
        writer.append(row)
    path = tmp_path / METRICS_FILE
    path.write_text(path.read_text() + "2,1.0\n")
    with pytest.raises(RunFolderError, match="last line has 2 fields"):
        read_columns(path)
    assert [r.round for r in read_rows(path)] == [0, 1]  # a file still being written: the complete rows
    with pytest.raises(RunFolderError, match="cannot read"):
        read_columns(tmp_path / "nowhere.csv")


def test_schedule_summary_config_model_and_timing_round_trip(tmp_path):
    writer = MetricsWriter(tmp_path)
    writer.append_schedule({"round": 1, "device_ids": [0, 2]})
    assert read_schedule(tmp_path) == [{"round": 1, "device_ids": [0, 2]}]
    write_summary(tmp_path, {"status": "completed", "final_accuracy": 0.8})
    assert read_summary(tmp_path) == {"status": "completed", "final_accuracy": 0.8}
    write_config(tmp_path, {"seed": 3, "wireless": {"num_rbs": 2}, "layers": (1, 2)})
    assert read_config(tmp_path) == {"seed": 3, "wireless": {"num_rbs": 2}, "layers": [1, 2]}
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros(4, dtype=np.float32)]
    write_final_model(tmp_path, arrays)
    for read, written in zip(read_final_model(tmp_path), arrays, strict=True):
        np.testing.assert_array_equal(read, written)
    assert read_timing(tmp_path) == {}  # none written yet
    write_timing(tmp_path, {"wall_s": 1.5})
    assert read_timing(tmp_path) == {"wall_s": 1.5}


def test_unreadable_json_is_a_run_folder_error_naming_the_file(tmp_path):
    (tmp_path / "summary.json").write_text('{"status": "compl')
    with pytest.raises(RunFolderError, match=r"summary.json: not valid JSON"):
        read_summary(tmp_path)


def test_summary_numbers_skip_unmeasured_rounds():
    assert time_to_accuracy(ROWS, 0.75) == {"target": 0.75, "round": 3, "sim_time_s": 1.5}
    assert time_to_accuracy(ROWS, 0.9)["round"] is None
    assert time_to_accuracy([], 0.5) == {"target": 0.5, "round": None, "sim_time_s": None}
    assert last_personal_accuracy(ROWS) == {"accuracy": 0.7, "round": 1}
    assert last_personal_accuracy(ROWS[:1]) == {"accuracy": None, "round": None}


def test_comparable_config_ignores_where_and_how_a_run_ran():
    made = {"seed": 1, "output_dir": "/a", "verbose": False, "dataset": {"name": "mnist5k", "root": "/data"}}
    moved = {"seed": 1, "output_dir": "/b", "verbose": True, "dataset": {"name": "mnist5k", "root": "/elsewhere"}}
    assert comparable_config(made) == comparable_config(moved) == {"seed": 1, "dataset": {"name": "mnist5k"}}
    assert comparable_config({**made, "seed": 2}) != comparable_config(made)
    assert made["dataset"]["root"] == "/data"  # the caller's mapping is left as it was


def test_metrics_writer_resumes_from_its_state(tmp_path):
    """A writer built for a resumed run touches no file; its state from after round 1 restores
    metrics.csv to rows 0-1 and schedule.jsonl to round 1, dropping what was written after."""
    writer = MetricsWriter(tmp_path)
    writer.append(ROWS[0])
    writer.append_schedule({"round": 1})
    writer.append(ROWS[1])
    state = writer.state_dict()
    writer.append_schedule({"round": 2})
    writer.append(ROWS[2])
    before = (tmp_path / METRICS_FILE).read_text()

    resumed = MetricsWriter(tmp_path)
    assert (tmp_path / METRICS_FILE).read_text() == before  # building it wrote nothing
    resumed.load_state_dict(state)
    assert read_rows(tmp_path / METRICS_FILE) == ROWS[:2] and resumed.rows == ROWS[:2]
    assert read_schedule(tmp_path) == [{"round": 1}]
    with pytest.raises(ValueError, match="rows"):
        MetricsWriter(tmp_path).load_state_dict({"rows": 3})
