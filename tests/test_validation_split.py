"""Issue 9: the validation split is held out of the training set, stratified and seeded, before partitioning."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from conftest import make_train_setup

from amp_fl import protocol as P
from amp_fl.client.local import local_data
from amp_fl.config import RunConfig, load_config
from amp_fl.data.datasets import load_dataset
from amp_fl.data.validation import split_validation, training_pool, validation_counts
from amp_fl.errors import ConfigError
from amp_fl.models import build_model
from amp_fl.pruning.maps import region_map_for
from amp_fl.pruning.submodel import module_arrays
from amp_fl.run_folder import RoundRow
from amp_fl.server.recorder import validation_outcome


def test_counts_are_proportional_and_sum_to_the_rounded_share():
    # 7 labels of 30 (210 samples): 10% = 21 = 3 per label. Sizes 50/30/20 at 25%: 12.5/7.5/5 -> 25 in all.
    np.testing.assert_array_equal(validation_counts(np.full(7, 30), 0.1), np.full(7, 3))
    # Sizes 40/30/10 at 25%: exactly 10, 7.5, 2.5 -> 20 in all; the two halves go by largest remainder
    # (a tie, broken by label order): 10, 8, 2.
    np.testing.assert_array_equal(validation_counts(np.array([40, 30, 10]), 0.25), [10, 8, 2])
    np.testing.assert_array_equal(validation_counts(np.array([5, 5]), 0.0), [0, 0])


def test_split_is_disjoint_stratified_seeded_and_covers_everything():
    labels = np.repeat(np.arange(7), 30)  # 7 classes (not 10), 30 each
    train, val = split_validation(labels, 0.1, seed=4)
    assert len(val) == 21 and len(train) == 189
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(210))
    np.testing.assert_array_equal(np.bincount(labels[val]), np.full(7, 3))
    again = split_validation(labels, 0.1, seed=4)
    np.testing.assert_array_equal(again[1], val)
    assert not np.array_equal(split_validation(labels, 0.1, seed=5)[1], val)
    train0, val0 = split_validation(labels, 0.0, seed=4)
    np.testing.assert_array_equal(train0, np.arange(210))
    assert val0.size == 0


def test_devices_never_train_on_validation_samples():
    data = load_dataset("mnist5k")
    setup = make_train_setup(
        seed=3,
        num_devices=5,
        partition="shards",
        batch_size=8,
        validation_fraction=0.1,
    )
    _, val_idx = split_validation(data.train.labels, 0.1, 3)
    assert len(val_idx) == 400
    pool, validation = training_pool(data.train, 0.1, 3)
    assert validation is not None and len(validation) == 400 and len(pool) == 3600
    val_images = {img.tobytes() for img in data.train.images[val_idx]}
    seen = 0
    for device in range(5):
        local = local_data(setup, device)
        seen += len(local)
        assert len(np.unique(local.labels)) <= 2
        assert not any(img.tobytes() in val_images for img in local.images)
    assert seen == 3600  # 5 x 2 = 10 shards, one per label: every non-validation sample is on one device
    # The train setup carries the fraction to the clients.
    regions = region_map_for(build_model("cnn", num_classes=10), (1, 28, 28))
    weights = module_arrays(build_model("cnn", num_classes=10))
    names, kept = tuple(regions.param_names), tuple(regions.full_kept())
    instruction = P.TrainInstruction(1, 0, setup, names, tuple(weights), kept)
    assert P.TrainInstruction.from_content(instruction.to_content()).setup.validation_fraction == 0.1


def test_validation_fraction_is_validated_naming_the_key():
    values = dataclasses.asdict(RunConfig())
    values["dataset"]["validation_fraction"] = 1.0
    with pytest.raises(ConfigError, match="dataset.validation_fraction"):
        load_config(values)


def _row(k, sim, val):
    return RoundRow(k, sim, 0.1, 0.5, 1.0, 1.0, 0.0, 1, 1, 0, 1.0, 0, 0, 0.0, 0.0, val_accuracy=val, val_loss=1.0)


def test_summary_reports_time_to_target_on_validation():
    rows = [_row(0, 0.0, 0.1), _row(1, 0.3, 0.65), _row(2, 0.5, 0.72), _row(3, 0.9, 0.71)]
    out = validation_outcome(rows, 0.7)
    assert out["val_time_to_target"] == {"target": 0.7, "round": 2, "sim_time_s": 0.5}
    assert out["final_val_accuracy"] == 0.71 and out["best_val_accuracy"] == 0.72
    none = validation_outcome([_row(0, 0.0, math.nan)], 0.7)
    assert none["final_val_accuracy"] is None and none["val_time_to_target"]["round"] is None
