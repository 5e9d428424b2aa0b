"""Tracking: with ``tracking.tensorboard=true`` every metrics row and the resolved configuration reach TensorBoard.

The written event files are read back with TensorBoard's own reader (EventAccumulator) and compared
with ``metrics.csv`` value by value; a resumed writer must make TensorBoard drop what a crashed
server logged after its last checkpoint; off (the default), nothing is written.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from amp_fl.config import load_config
from amp_fl.errors import ConfigError
from amp_fl.launch.inprocess import run_in_process
from amp_fl.run_folder import METRIC_COLUMNS, METRICS_FILE, RUN_CONFIG_FILE, MetricsWriter, RoundRow, read_columns
from amp_fl.tracking import CONFIG_TAG, SIM_TIME_TAG, TENSORBOARD_DIR

MICRO = {
    "dataset": {"name": "mnist5k", "validation_fraction": 0.1},
    "num_rounds": 3,
    "seed": 5,
    "wireless": {"num_devices": 4, "num_rbs": 2},
    "train": {"local_steps": 1, "batch_size": 8},
    "checkpoint": {"every": 0},
}


def _events(run_dir):
    events = EventAccumulator(str(run_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def _scalars(events, tag):
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_every_metrics_column_and_the_config_are_read_back_from_the_event_file(tmp_path):
    run = run_in_process(load_config({**MICRO, "tracking": {"tensorboard": True}}), tmp_path / "run")
    columns = read_columns(run / METRICS_FILE)
    events = _events(run)
    logged = set(events.Tags()["scalars"])
    assert set(METRIC_COLUMNS) - logged == {"round", "personal_accuracy"}
    for column in METRIC_COLUMNS:
        if column == "round":
            continue
        expected = [
            (int(r), float(v)) for r, v in zip(columns["round"], columns[column], strict=True) if math.isfinite(v)
        ]
        if not expected:  # never measured in this run (personal_accuracy): nothing drawn
            assert column not in logged, column
            continue
        steps, values = zip(*_scalars(events, column), strict=True)
        assert list(steps) == [s for s, _ in expected], column
        np.testing.assert_allclose(values, [v for _, v in expected], rtol=1e-6, err_msg=column)  # float32 events
    # accuracy against the simulated clock, in milliseconds
    sim = [(round(1000 * t), a) for t, a in zip(columns["sim_time_s"], columns["accuracy"], strict=True)]
    steps, values = zip(*_scalars(events, f"{SIM_TIME_TAG}/accuracy"), strict=True)
    assert list(steps) == [s for s, _ in sim]
    np.testing.assert_allclose(values, [a for _, a in sim], rtol=1e-6)
    # the resolved configuration, as the ServerApp ran it
    text = events.Tensors(f"{CONFIG_TAG}/text_summary")[0].tensor_proto.string_val[0].decode()
    logged_config = json.loads(text.removeprefix("```json\n").removesuffix("\n```"))
    assert logged_config == json.loads((run / RUN_CONFIG_FILE).read_text())
    assert logged_config["seed"] == 5 and logged_config["tracking"] == {"tensorboard": True}


def test_off_by_default_nothing_is_written(tmp_path):
    run = run_in_process(load_config({**MICRO, "num_rounds": 1}), tmp_path / "run")
    assert (run / METRICS_FILE).is_file()
    assert not (run / TENSORBOARD_DIR).exists()


def _row(round_: int, accuracy: float) -> RoundRow:
    return RoundRow(round_, 0.1 * round_, 0.1, accuracy, 1.0, 1.0, 0.5, 2, 2, 0, 0.6, 100, 200, 0.0, 0.0)


def test_a_resumed_writer_makes_tensorboard_drop_the_rounds_it_redoes(tmp_path):
    (tmp_path / RUN_CONFIG_FILE).write_text(json.dumps({"seed": 0, "tracking": {"tensorboard": True}}))
    crashed = MetricsWriter(tmp_path)
    for r, acc in enumerate([0.1, 0.2, 0.3, 0.4]):  # rounds 0-3 logged, the checkpoint holds rounds 0-1
        crashed.append(_row(r, acc))
    checkpoint = {"rows": crashed.state_dict()["rows"][:2]}
    crashed._tracker.close()  # the crashed server's writer is gone
    resumed = MetricsWriter(tmp_path)
    resumed.load_state_dict(checkpoint)
    resumed.append(_row(2, 0.7))
    resumed.append(_row(3, 0.8))
    steps, values = zip(*_scalars(_events(tmp_path), "accuracy"), strict=True)
    assert steps == (0, 1, 2, 3)
    assert values == pytest.approx([0.1, 0.2, 0.7, 0.8])  # rounds 2 and 3 as redone, the first tries dropped


def test_a_missing_tensorboard_package_is_one_config_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "tensorboard" else real(name))
    with pytest.raises(ConfigError, match="tracking.tensorboard: needs the tensorboard package"):
        load_config({"tracking": {"tensorboard": True}}).validate()
