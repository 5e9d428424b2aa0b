"""Partitioning a labelled dataset across K devices.

Written here rather than taken from ``flwr_datasets.ShardPartitioner``: that one needs Hugging
Face ``datasets`` + pyarrow and an Arrow table, while ours works on a label array in a few lines
and is tested for its invariants directly.

- IID: a seeded permutation cut into K near-equal parts.
- Shards (McMahan et al.; the paper's non-IID split): sort samples by label (stable, ties in a
  seeded random order), cut ``s * K`` equal shards, give every device ``s`` distinct shards at
  random. A device then holds at most ``s`` labels. Samples beyond ``s*K*shard_size`` (the
  remainder of the integer division) are left out, so every sample is used at most once.
"""

from __future__ import annotations

import numpy as np

from amp_fl.errors import require


def iid_partition(num_samples: int, num_devices: int, seed: int) -> list[np.ndarray]:
    """Split ``range(num_samples)`` into ``num_devices`` random parts of near-equal size."""
    require(num_devices >= 1, "wireless.num_devices", f"must be >= 1, got {num_devices}")
    require(num_samples >= num_devices, "wireless.num_devices",
            f"{num_devices} devices but only {num_samples} samples: a device would get none")
    order = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(part) for part in np.array_split(order, num_devices)]


def shard_partition(labels: np.ndarray, num_devices: int, shards_per_device: int, seed: int) -> list[np.ndarray]:
    """Non-IID label shards: each device gets ``shards_per_device`` shards of label-sorted samples."""
    labels = np.asarray(labels)
    require(num_devices >= 1, "wireless.num_devices", f"must be >= 1, got {num_devices}")
    require(shards_per_device >= 1, "dataset.shards_per_device", f"must be >= 1, got {shards_per_device}")
    num_shards = num_devices * shards_per_device
    require(num_shards <= len(labels), "dataset.shards_per_device",
            f"{num_devices} devices x {shards_per_device} shards = {num_shards} shards but only "
            f"{len(labels)} samples")
    rng = np.random.default_rng(seed)
    # Shuffle first, then stable-sort by label: within a label the order is random per seed.
    shuffled = rng.permutation(len(labels))
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shard_size = len(labels) // num_shards
    shards = by_label[: num_shards * shard_size].reshape(num_shards, shard_size)
    assignment = rng.permutation(num_shards).reshape(num_devices, shards_per_device)
    return [np.sort(shards[row].ravel()) for row in assignment]


def partition(labels: np.ndarray, num_devices: int, scheme: str, shards_per_device: int, seed: int) -> list[np.ndarray]:
    """Dispatch on ``scheme`` (``iid`` or ``shards``)."""
    if scheme == "iid":
        return iid_partition(len(labels), num_devices, seed)
    if scheme == "shards":
        return shard_partition(labels, num_devices, shards_per_device, seed)
    raise ValueError(f"unknown partition scheme {scheme!r}; choose iid or shards")
