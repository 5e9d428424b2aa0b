"""Personalised evaluation: how well a device's own model does on the device's own label distribution.

A device that holds labels in proportions ``p_k(c)`` (its training data) is scored on the test
set by class: ``score_k = sum_c p_k(c) * acc_c / sum_c p_k(c)``, where ``acc_c`` is the model's
accuracy on the test samples of label ``c`` and the sums run over the labels that have test
samples (all of them in practice). Labels the device does not hold do not count, so a device with
two digits is scored on those two digits, weighted as it sees them. The loss is weighted the same
way. For APFL the model is the personalised ``alpha v + (1 - alpha) w``; for the other methods it is
the global model, which makes the numbers comparable across methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from amp_fl.client.trainer import ModelEvaluator
from amp_fl.data.datasets import ArraySplit
from amp_fl.errors import check_argument


@dataclass(frozen=True)
class LabelWeightedScore:
    """Accuracy and mean cross-entropy weighted by a label distribution, and the test samples used."""

    accuracy: float
    loss: float
    num_samples: int


def label_frequencies(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``p(c)``: the fraction of ``labels`` equal to each class ``c`` (float64, sums to 1)."""
    labels = np.asarray(labels)
    check_argument(labels.ndim == 1 and labels.size > 0, "labels", f"must be a non-empty 1-d array, got {labels.shape}")
    check_argument(
        bool(np.all((labels >= 0) & (labels < num_classes))),
        "labels",
        f"must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}",
    )
    counts = np.bincount(labels.astype(np.int64), minlength=num_classes).astype(np.float64)
    return counts / counts.sum()


def label_weighted_score(
    correct: np.ndarray, losses: np.ndarray, labels: np.ndarray, weights: np.ndarray
) -> LabelWeightedScore:
    """Combine per-sample results into the label-weighted score of the module docstring.

    Parameters
    ----------
    correct : bool array (N,)
        Whether each test sample was classified correctly.
    losses : float array (N,)
        Each sample's cross-entropy.
    labels : int array (N,)
        Each sample's label.
    weights : float array (num_classes,)
        ``p(c)``, e.g. from :func:`label_frequencies`; non-negative, not all zero.
    """
    correct, losses, labels = np.asarray(correct, bool), np.asarray(losses, np.float64), np.asarray(labels)
    weights = np.asarray(weights, np.float64)
    check_argument(
        correct.shape == losses.shape == labels.shape and correct.ndim == 1,
        "correct",
        f"correct {correct.shape}, losses {losses.shape} and labels {labels.shape} must be equal 1-d shapes",
    )
    check_argument(
        weights.ndim == 1 and bool(np.all(weights >= 0)) and weights.sum() > 0,
        "weights",
        "must be a non-negative 1-d array with a positive sum",
    )
    num_classes = weights.size
    counts = np.bincount(labels, minlength=num_classes)[:num_classes].astype(np.float64)
    hits = np.bincount(labels, weights=correct.astype(np.float64), minlength=num_classes)[:num_classes]
    loss_sums = np.bincount(labels, weights=losses, minlength=num_classes)[:num_classes]
    used = (weights > 0) & (counts > 0)
    check_argument(bool(used.any()), "labels", "no test sample has a label of positive weight")
    w = weights[used] / weights[used].sum()
    accuracy = float(np.sum(w * hits[used] / counts[used]))
    loss = float(np.sum(w * loss_sums[used] / counts[used]))
    return LabelWeightedScore(accuracy, loss, int(counts[used].sum()))


def evaluate_on_label_distribution(
    evaluator: ModelEvaluator, arrays: list[np.ndarray], test: ArraySplit, weights: np.ndarray
) -> LabelWeightedScore:
    """Score the full-model ``arrays`` on the test samples whose label has positive weight."""
    weights = np.asarray(weights, np.float64)
    check_argument(weights.ndim == 1, "weights", f"must be 1-d, got shape {weights.shape}")
    keep = np.flatnonzero(np.isin(test.labels, np.flatnonzero(weights > 0)))
    check_argument(keep.size > 0, "weights", "no test sample has a label of positive weight")
    correct, losses = evaluator.per_sample(arrays, test, keep)
    return label_weighted_score(correct, losses, test.labels[keep], weights)
