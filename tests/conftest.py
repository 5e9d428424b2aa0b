"""Shared builders for the tests: the run setup every instruction carries and a CNN's regions and weights.

The builders are plain functions (import them: ``from conftest import make_train_setup``) so module-level
constants can use them; ``cnn`` is also a fixture. A test states only what differs from the defaults.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from amp_fl import protocol as P
from amp_fl.models import build_model
from amp_fl.pruning.maps import region_map_for
from amp_fl.pruning.regions import RegionMap
from amp_fl.pruning.submodel import module_arrays

# The smallest useful run: two devices of the offline mnist5k set, the paper's CNN, one SGD step of batch 1.
TRAIN_SETUP_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "dataset": "mnist5k",
    "data_root": "data",
    "num_devices": 2,
    "partition": "iid",
    "shards_per_device": 2,
    "model": "cnn",
    "input_shape": (1, 28, 28),
    "num_classes": 10,
    "learning_rate": 0.05,
    "local_steps": 1,
    "batch_size": 1,
    "memory_friendly": False,
}


def make_train_setup(**overrides: Any) -> P.TrainSetup:
    """A :class:`~amp_fl.protocol.TrainSetup` of the defaults above with ``overrides`` applied."""
    unknown = set(overrides) - set(TRAIN_SETUP_DEFAULTS) - {f for f in P.TrainSetup.__dataclass_fields__}
    if unknown:
        raise TypeError(f"unknown TrainSetup fields {sorted(unknown)}")
    return P.TrainSetup(**{**TRAIN_SETUP_DEFAULTS, **overrides})


def cnn_arrays(seed: int | None = 0) -> tuple[RegionMap, list[np.ndarray]]:
    """The paper's CNN on 28x28 inputs: its region map and initial weights.

    ``seed`` seeds the initialisation; ``None`` draws from torch's global state.
    """
    if seed is None:
        model = build_model("cnn", num_classes=10)
    else:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = build_model("cnn", num_classes=10)
    return region_map_for(model, (1, 28, 28)), module_arrays(model)


@pytest.fixture(scope="module", name="cnn")
def cnn_fixture() -> tuple[RegionMap, list[np.ndarray]]:
    return cnn_arrays()
