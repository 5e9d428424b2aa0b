"""AoI pruning policy (Algorithm 1): keep the regions whose gradient is oldest.

Ties between equal ages are broken by a seeded random priority, so that at the start (all
ages equal) devices do not all keep the same first channels. The rule: sort by
``age + u`` descending, with ``u ~ U[0, 1)`` drawn per region from the caller's generator;
ages are integers, so ``u`` only ever reorders equal ages.
"""

from __future__ import annotations

import numpy as np


def aoi_priority_order(ages: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices that sort ``ages`` (last axis) from oldest to newest, ties in seeded random order.

    Works on a single layer (shape ``(I_l,)``) or a batch of devices (shape ``(K, I_l)``).
    """
    ages = np.asarray(ages)
    jitter = rng.random(ages.shape)
    # Distinct keys almost surely (ties only on equal jitter), so an unstable sort is enough and faster.
    return np.argsort(-(ages + jitter), axis=-1)


def select_top_aoi(ages: np.ndarray, keep: int, rng: np.random.Generator) -> np.ndarray:
    """The ``keep`` oldest regions of one layer, as sorted indices."""
    ages = np.asarray(ages)
    if not 0 <= keep <= ages.shape[-1]:
        raise ValueError(f"keep must be in [0, {ages.shape[-1]}], got {keep}")
    return np.sort(aoi_priority_order(ages, rng)[:keep])
