"""The AMP-FL ClientApp: Flower glue around :class:`SubModelTrainer` (NumPy in, NumPy out).

One process (a Ray actor in simulation, ``flwr-clientapp`` on a board) may serve many nodes, so
datasets, partitions and region maps are cached per process, keyed by what defines them.
Everything a client needs arrives in the server's messages (:mod:`amp_fl.protocol`); its identity
is the node config's ``partition-id``. A board can report measured hardware with the
``--node-config`` keys of :data:`amp_fl.protocol.PROFILE_KEYS`.
"""

from __future__ import annotations

import time
from functools import lru_cache

import numpy as np
import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from amp_fl import protocol as P
from amp_fl.client.trainer import ModelInfo, SubModelTrainer, TrainSettings
from amp_fl.data.datasets import ArraySplit, load_dataset
from amp_fl.data.partition import partition
from amp_fl.pruning.regions import KeptIndices, RegionMap, region_map
from amp_fl.pruning.submodel import extract_arrays, scatter_arrays
from amp_fl.wireless.devices import simulated_device_profile
from amp_fl.wireless.seeding import derive_rng

app = ClientApp()


@lru_cache(maxsize=8)
def _partitions(name: str, root: str, num_devices: int, scheme: str, shards: int, seed: int) -> list[np.ndarray]:
    data = load_dataset(name, root, download=False)
    return partition(data.train.labels, num_devices, scheme, shards, seed)


def local_data(setup: P.TrainSetup, device: int) -> ArraySplit:
    """This device's partition of the training set, as the server's train setup describes it."""
    parts = _partitions(
        setup.dataset, setup.data_root, setup.num_devices, setup.partition, setup.shards_per_device, setup.seed
    )
    train = load_dataset(setup.dataset, setup.data_root, download=False).train
    idx = parts[device]
    return ArraySplit(train.images[idx], train.labels[idx])


def model_info(setup: P.TrainSetup) -> ModelInfo:
    return ModelInfo(setup.model, setup.input_shape, setup.num_classes)


@app.query()
def report_profile(msg: Message, context: Context) -> Message:
    """Tell the server who this node is and what it can do (measured on a board, or simulated from the seed)."""
    query = P.ProfileQuery.from_content(msg.content)
    reply = P.DeviceProfileReply.from_node_config(context.node_config)
    if reply is None:
        device = P.partition_id(context.node_config)
        profile = simulated_device_profile(device, query.seed, query.wireless())
        reply = P.DeviceProfileReply.from_profile(device, profile)
    return reply.to_reply(msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Rebuild the sub-model, train it, return its cumulative gradient (or ``g - G_k``)."""
    torch.set_num_threads(1)  # one actor per core; more threads would oversubscribe and slow both
    instruction = P.TrainInstruction.from_content(msg.content)
    device = P.partition_id(context.node_config)
    if instruction.device != device:
        raise ValueError(f"train instruction for device {instruction.device} delivered to partition-id {device}")
    setup = instruction.setup
    info = model_info(setup)
    regions = region_map(info.name, info.input_shape, info.num_classes)
    arrays, kept = instruction.for_model(regions)
    settings = TrainSettings(setup.learning_rate, setup.local_steps, setup.batch_size)
    rng = derive_rng(setup.seed, "client.batches", device, instruction.round)
    started = time.perf_counter()
    result = SubModelTrainer(local_data(setup, device), info, regions).fit(arrays, kept, settings, rng)
    fit_s = time.perf_counter() - started
    gradient = result.gradient
    if setup.memory_friendly:
        gradient = _difference_to_own_cache(context, regions, kept, gradient)
    reply = P.TrainReply(
        device=device,
        names=tuple(regions.param_names),
        gradient=tuple(gradient),
        num_examples=result.num_examples,
        train_loss=result.train_loss,
        fit_seconds=fit_s,
    )
    return reply.to_reply(msg)


def _difference_to_own_cache(
    context: Context, regions: RegionMap, kept: KeptIndices, gradient: list[np.ndarray]
) -> list[np.ndarray]:
    """Algorithm 3, device side: upload ``g - G_k`` on the held entries and set ``G_k <- g`` there.

    G_k lives in ``context.state`` (full-model shaped), so the server needs no per-device cache.
    """
    names = regions.param_names
    if P.STATE_CACHE in context.state.array_records:
        cache = P.record_to_arrays(context.state.array_records[P.STATE_CACHE], names)
    else:
        cache = [np.zeros(shape, dtype=np.float32) for shape in regions.shapes]
    cached_sub = extract_arrays(cache, regions, kept)
    difference = [(g - c).astype(np.float32) for g, c in zip(gradient, cached_sub, strict=True)]
    full, held = scatter_arrays(gradient, regions, kept, regions.shapes)
    for c, f, h in zip(cache, full, held, strict=True):
        c[h] = f[h]
    context.state.array_records[P.STATE_CACHE] = P.arrays_to_record(names, cache)
    return difference


__all__ = ["app"]
