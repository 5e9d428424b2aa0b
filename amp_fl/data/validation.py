"""A validation split held out from the training set, before the training set is partitioned to devices.

Tuning (``amp_fl.experiments.tune``) chooses hyper-parameters on this split, never on the test
set. It is carved out of the *training* set and removed from it before partitioning, so no device
ever trains on a validation sample. Stratified: every label keeps (up to rounding) the same share,
``fraction`` of the training set in all (largest remainder across labels). The samples are drawn
with a generator derived from the run seed (stream ``data.validation``), so the server (which
evaluates on it) and every client (which partitions what is left) compute the same split.
"""

from __future__ import annotations

import numpy as np

from amp_fl.data.datasets import ArraySplit
from amp_fl.data.partition import shard_counts_per_label
from amp_fl.errors import check_argument
from amp_fl.wireless.seeding import derive_rng

VALIDATION_STREAM = "data.validation"


def validation_counts(class_sizes: np.ndarray, fraction: float) -> np.ndarray:
    """Validation samples per label: ``round(fraction * N)`` in all, proportional to the label sizes."""
    class_sizes = np.asarray(class_sizes, dtype=np.int64)
    total = round(fraction * int(class_sizes.sum()))
    if total == 0:
        return np.zeros_like(class_sizes)
    return shard_counts_per_label(class_sizes, total)


def split_validation(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, validation)`` of ``labels``, both sorted, disjoint and covering every sample.

    ``fraction`` 0 holds nothing out (``validation`` is empty).
    """
    labels = np.asarray(labels)
    check_argument(0.0 <= fraction < 1.0, "dataset.validation_fraction", f"must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return np.arange(len(labels)), np.zeros(0, dtype=np.int64)
    rng = derive_rng(seed, VALIDATION_STREAM)
    classes, class_sizes = np.unique(labels, return_counts=True)
    held = [
        rng.choice(np.flatnonzero(labels == label), int(count), replace=False)
        for label, count in zip(classes, validation_counts(class_sizes, fraction), strict=True)
    ]
    validation = np.sort(np.concatenate(held)).astype(np.int64)
    is_validation = np.zeros(len(labels), dtype=bool)
    is_validation[validation] = True
    return np.flatnonzero(~is_validation), validation


def training_pool(train: ArraySplit, fraction: float, seed: int) -> tuple[ArraySplit, ArraySplit | None]:
    """The training samples the devices share, and the held-out validation split (``None`` when off)."""
    train_idx, val_idx = split_validation(train.labels, fraction, seed)
    if val_idx.size == 0:
        return train, None
    return (
        ArraySplit(train.images[train_idx], train.labels[train_idx]),
        ArraySplit(train.images[val_idx], train.labels[val_idx]),
    )
