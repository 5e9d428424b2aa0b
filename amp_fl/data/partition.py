"""Partitioning a labelled dataset across K devices.

Written here rather than taken from ``flwr_datasets.ShardPartitioner``: that one needs Hugging
Face ``datasets`` + pyarrow and an Arrow table, while ours works on a label array in a few lines
and is tested for its invariants directly.

- IID: a seeded permutation cut into K near-equal parts.
- Shards (McMahan et al.; the paper's non-IID split): ``s * K`` single-label shards of
  near-equal size, ``s`` distinct shards per device at random, so a device holds at most ``s``
  labels (see :func:`shard_partition` for how this differs from cutting the sorted data).
"""

from __future__ import annotations

import numpy as np

from amp_fl.errors import check_argument


def iid_partition(num_samples: int, num_devices: int, seed: int) -> list[np.ndarray]:
    """Split ``range(num_samples)`` into ``num_devices`` random parts of near-equal size."""
    check_argument(num_devices >= 1, "num_devices", f"must be >= 1, got {num_devices}")
    check_argument(
        num_samples >= num_devices,
        "num_devices",
        f"{num_devices} devices but only {num_samples} samples: a device would get none",
    )
    order = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(part) for part in np.array_split(order, num_devices)]


def shard_counts_per_label(class_sizes: np.ndarray, num_shards: int) -> np.ndarray:
    """Shards per label, proportional to the label's size (largest remainder), summing to ``num_shards``."""
    exact = class_sizes * num_shards / class_sizes.sum()
    counts = np.floor(exact).astype(np.int64)
    remainder_order = np.argsort(-(exact - counts), kind="stable")
    counts[remainder_order[: num_shards - counts.sum()]] += 1
    return np.minimum(counts, class_sizes)  # a shard needs at least one sample


def shard_partition(labels: np.ndarray, num_devices: int, shards_per_device: int, seed: int) -> list[np.ndarray]:
    """Non-IID label shards: each device gets ``shards_per_device`` shards, each shard one label.

    The paper's recipe (sort by label, cut ``s*K`` equal shards) lets a shard straddle two labels
    whenever class sizes are not multiples of the shard size (MNIST's are not), and then a device
    can hold more than ``s`` labels. Here the shards are cut per label instead: label ``c`` gets a
    share of the ``s*K`` shards proportional to its size and its samples (in seeded random order)
    are split into that many near-equal shards. Shard sizes then differ slightly across labels
    (by one sample within a label), every sample is used at most once, and a device holds at
    most ``s`` labels.
    """
    labels = np.asarray(labels)
    check_argument(num_devices >= 1, "num_devices", f"must be >= 1, got {num_devices}")
    check_argument(shards_per_device >= 1, "shards_per_device", f"must be >= 1, got {shards_per_device}")
    num_shards = num_devices * shards_per_device
    check_argument(
        num_shards <= len(labels),
        "shards_per_device",
        f"{num_devices} devices x {shards_per_device} shards = {num_shards} shards but only {len(labels)} samples",
    )
    rng = np.random.default_rng(seed)
    classes, class_sizes = np.unique(labels, return_counts=True)
    counts = shard_counts_per_label(class_sizes, num_shards)
    check_argument(
        int(counts.sum()) == num_shards,
        "shards_per_device",
        f"cannot cut {num_shards} single-label shards from classes of sizes {class_sizes.tolist()}",
    )
    shards: list[np.ndarray] = []
    for label, count in zip(classes, counts, strict=True):
        members = rng.permutation(np.flatnonzero(labels == label))
        shards.extend(np.array_split(members, int(count)) if count else [])
    assignment = rng.permutation(num_shards).reshape(num_devices, shards_per_device)
    return [np.sort(np.concatenate([shards[i] for i in row])) for row in assignment]


def partition(labels: np.ndarray, num_devices: int, scheme: str, shards_per_device: int, seed: int) -> list[np.ndarray]:
    """Dispatch on ``scheme`` (``iid`` or ``shards``)."""
    if scheme == "iid":
        return iid_partition(len(labels), num_devices, seed)
    if scheme == "shards":
        return shard_partition(labels, num_devices, shards_per_device, seed)
    raise ValueError(f"unknown partition scheme {scheme!r}; choose iid or shards")
