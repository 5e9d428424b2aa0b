"""Issue 2: IID and non-IID shard partitions."""

import numpy as np
import pytest

from amp_fl.data.partition import iid_partition, partition, shard_partition
from amp_fl.errors import ConfigError


def _labels(n_per_class=60, classes=10, seed=3):
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(classes), n_per_class))


@pytest.mark.parametrize(("devices", "shards"), [(10, 2), (20, 3), (7, 1), (30, 2)])
def test_shards_hold_at_most_s_labels_and_use_each_sample_once(devices, shards):
    labels = _labels()
    parts = shard_partition(labels, devices, shards, seed=0)
    assert len(parts) == devices
    flat = np.concatenate(parts)
    assert len(np.unique(flat)) == len(flat)  # every sample at most once
    if devices * shards >= 10:
        assert len(flat) == len(labels)  # every label has a shard: nothing is left out
    else:  # fewer shards than labels: whole labels are left out, shards stay single-label
        assert len(np.unique(labels[flat])) == devices * shards
    shard = len(flat) / (devices * shards)
    for part in parts:
        assert len(np.unique(labels[part])) <= shards
        # near-equal shards: within one sample per shard of the ideal size
        assert abs(len(part) - shards * shard) <= shards


def test_unbalanced_classes_still_give_single_label_shards():
    # MNIST-like imbalance: class sizes that are not multiples of the shard size.
    sizes = [59, 67, 60, 61, 58, 54, 59, 63, 58, 61]
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(10), sizes))
    parts = shard_partition(labels, 30, 2, seed=4)
    assert all(len(np.unique(labels[p])) <= 2 for p in parts)
    flat = np.concatenate(parts)
    assert len(np.unique(flat)) == len(flat) == len(labels)


def test_shards_per_label_when_shards_align_with_classes():
    # 10 classes x 60 samples, 10 devices x 2 shards of 30: every shard is a single label.
    labels = _labels()
    for part in shard_partition(labels, 10, 2, seed=5):
        _values, counts = np.unique(labels[part], return_counts=True)
        assert all(c % 30 == 0 for c in counts)


def test_same_seed_same_partition_and_different_seed_differs():
    labels = _labels()
    a = shard_partition(labels, 10, 2, seed=1)
    b = shard_partition(labels, 10, 2, seed=1)
    c = shard_partition(labels, 10, 2, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_iid_covers_everything_evenly():
    parts = iid_partition(103, 10, seed=0)
    flat = np.concatenate(parts)
    assert sorted(flat.tolist()) == list(range(103))
    assert {len(p) for p in parts} == {10, 11}
    assert not all(np.array_equal(x, y) for x, y in zip(parts, iid_partition(103, 10, seed=1), strict=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_devices": 0, "shards_per_device": 2}, "num_devices: must be >= 1"),
        ({"num_devices": 10, "shards_per_device": 0}, "shards_per_device: must be >= 1"),
        ({"num_devices": 400, "shards_per_device": 2}, "shards_per_device: 400 devices x 2 shards = 800 shards"),
    ],
)
def test_impossible_partitions_name_the_parameter(kwargs, message):
    # Library code names its parameter; amp_fl.config.check_partition names the config key.
    with pytest.raises(ValueError, match=message) as info:
        shard_partition(_labels(), seed=0, **kwargs)
    assert not isinstance(info.value, ConfigError)


def test_unknown_scheme():
    with pytest.raises(ValueError, match="unknown partition scheme"):
        partition(_labels(), 10, "dirichlet", 2, 0)
