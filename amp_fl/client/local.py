"""What a device knows locally, derived from the server's train setup: its data, model and generators.

One process (a Ray actor in simulation, ``flwr-clientapp`` on a board) may serve many nodes, so
datasets and partitions are cached per process, keyed by what defines them. Shared by every
ClientApp handler (:mod:`amp_fl.client.app`, :mod:`amp_fl.client.sparse_fedavg`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from amp_fl import protocol as P
from amp_fl.client.settings import TrainSettings
from amp_fl.client.trainer import ModelInfo
from amp_fl.data.datasets import ArraySplit, load_dataset
from amp_fl.data.partition import partition
from amp_fl.data.validation import split_validation
from amp_fl.wireless.seeding import derive_rng


@lru_cache(maxsize=8)
def _partitions(
    name: str, root: str, num_devices: int, scheme: str, shards: int, seed: int, validation_fraction: float
) -> list[np.ndarray]:
    """Each device's indices into the full training set; the validation split is removed before partitioning."""
    data = load_dataset(name, root, download=False)
    pool, _ = split_validation(data.train.labels, validation_fraction, seed)
    return [pool[part] for part in partition(data.train.labels[pool], num_devices, scheme, shards, seed)]


def local_data(setup: P.TrainSetup, device: int) -> ArraySplit:
    """This device's partition of the training set (validation samples excluded), as the train setup describes it."""
    parts = _partitions(
        setup.dataset,
        setup.data_root,
        setup.num_devices,
        setup.partition,
        setup.shards_per_device,
        setup.seed,
        setup.validation_fraction,
    )
    train = load_dataset(setup.dataset, setup.data_root, download=False).train
    idx = parts[device]
    return ArraySplit(train.images[idx], train.labels[idx])


def model_info(setup: P.TrainSetup) -> ModelInfo:
    return ModelInfo(setup.model, setup.input_shape, setup.num_classes)


def batch_rng(setup: P.TrainSetup, device: int, server_round: int) -> np.random.Generator:
    """The generator of ``device``'s mini-batches in ``server_round``: a function of (seed, device, round) only."""
    return derive_rng(setup.seed, "client.batches", device, server_round)


def train_settings(setup: P.TrainSetup) -> TrainSettings:
    """The local-training settings of the server's train setup (objective included)."""
    return TrainSettings(
        setup.learning_rate,
        setup.local_steps,
        setup.batch_size,
        objective=setup.local_objective,
        proximal_mu=setup.proximal_mu,
        alpha=setup.apfl_alpha,
        device=setup.device,
    )
