"""The AMP-FL ClientApp: Flower glue around :class:`SubModelTrainer` (NumPy in, NumPy out).

One process (a Ray actor in simulation, ``flwr-clientapp`` on a board) may serve many nodes, so
datasets, partitions and region maps are cached per process, keyed by what defines them.
Everything a client needs arrives in the server's messages; its identity is the node config's
``partition-id``. A board can report measured hardware with ``--node-config`` keys
``cpu-hz``, ``flops-per-cycle``, ``tx-power-w``, ``distance-m``.
"""

from __future__ import annotations

import time
from functools import lru_cache

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from amp_fl import protocol as P
from amp_fl.client.trainer import ModelInfo, SubModelTrainer, TrainSettings
from amp_fl.data.datasets import ArraySplit, load_dataset
from amp_fl.data.partition import partition
from amp_fl.pruning.regions import RegionMap, region_map
from amp_fl.wireless.config import WirelessConfig
from amp_fl.wireless.devices import simulated_device_profile
from amp_fl.wireless.seeding import derive_rng

app = ClientApp()


@lru_cache(maxsize=8)
def _partitions(name: str, root: str, num_devices: int, scheme: str, shards: int, seed: int) -> list[np.ndarray]:
    data = load_dataset(name, root, download=False)
    return partition(data.train.labels, num_devices, scheme, shards, seed)


def local_data(cfg: ConfigRecord, device: int) -> ArraySplit:
    """This device's partition of the training set, as the server's config describes it."""
    name, root = str(cfg["dataset"]), str(cfg["data-root"])
    parts = _partitions(
        name, root, int(cfg["num-devices"]), str(cfg["partition"]), int(cfg["shards-per-device"]), int(cfg["seed"])
    )
    train = load_dataset(name, root, download=False).train
    idx = parts[device]
    return ArraySplit(train.images[idx], train.labels[idx])


@lru_cache(maxsize=4)
def _region_map(model: str, input_shape: tuple[int, int, int], num_classes: int) -> RegionMap:
    return region_map(model, input_shape, num_classes)


def model_info(cfg: ConfigRecord) -> ModelInfo:
    shape = tuple(int(v) for v in cfg["input-shape"])  # type: ignore[union-attr]
    return ModelInfo(str(cfg["model"]), (shape[0], shape[1], shape[2]), int(cfg["num-classes"]))


def device_id(context: Context) -> int:
    return int(context.node_config["partition-id"])


@app.query()
def report_profile(msg: Message, context: Context) -> Message:
    """Tell the server who this node is and what it can do (simulated from the seed, or measured)."""
    cfg = msg.content[P.CONFIG]
    device = device_id(context)
    node_cfg = context.node_config
    if all(key in node_cfg for key in P.PROFILE_KEYS):
        values = {key: float(node_cfg[key]) for key in P.PROFILE_KEYS}  # measured on a real board
    else:
        wireless = WirelessConfig(
            cell_radius_m=float(cfg["cell-radius-m"]),
            min_distance_m=float(cfg["min-distance-m"]),
            tx_power_dbm=float(cfg["tx-power-dbm"]),
            cpu_freqs_hz=tuple(float(f) for f in cfg["cpu-freqs-hz"]),  # type: ignore[union-attr]
            flops_per_cycle=float(cfg["flops-per-cycle"]),
        )
        profile = simulated_device_profile(device, int(cfg["seed"]), wireless)
        values = {
            "cpu-hz": profile.cpu_hz,
            "flops-per-cycle": profile.flops_per_cycle,
            "tx-power-w": profile.tx_power_w,
            "distance-m": profile.distance_m,
        }
    reply = ConfigRecord({"partition-id": device, **values})
    return Message(RecordDict({P.CONFIG: reply}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Rebuild the sub-model, train it, return its cumulative gradient (or ``g - G_k``)."""
    torch.set_num_threads(1)  # one actor per core; more threads would oversubscribe and slow both
    cfg = msg.content[P.CONFIG]
    device = device_id(context)
    if int(cfg["device"]) != device:
        raise ValueError(f"message for device {cfg['device']} delivered to node with partition-id {device}")
    info = model_info(cfg)
    regions = _region_map(info.name, info.input_shape, info.num_classes)
    names = regions.param_names
    arrays = P.record_to_arrays(msg.content[P.ARRAYS], names)
    kept = P.record_to_kept(msg.content[P.KEPT], len(regions.groups))
    settings = TrainSettings(float(cfg["learning-rate"]), int(cfg["local-steps"]), int(cfg["batch-size"]))
    rng = derive_rng(int(cfg["seed"]), "client.batches", device, int(cfg["round"]))
    started = time.perf_counter()
    trainer = SubModelTrainer(local_data(cfg, device), info, regions)
    gradient, samples, metrics = trainer.fit(arrays, kept, settings, rng)
    fit_s = time.perf_counter() - started
    if bool(cfg["memory-friendly"]):
        gradient = _difference_to_own_cache(context, regions, kept, gradient)
    content = RecordDict(
        {
            P.ARRAYS: P.arrays_to_record(names, gradient),
            P.METRICS: MetricRecord(
                {"num-examples": samples, "train-loss": metrics["train_loss"], "device": device, "fit-seconds": fit_s}
            ),
        }
    )
    return Message(content, reply_to=msg)


def _difference_to_own_cache(
    context: Context, regions: RegionMap, kept: list[np.ndarray], gradient: list[np.ndarray]
) -> list[np.ndarray]:
    """Algorithm 3, device side: upload ``g - G_k`` on the held entries and set ``G_k <- g`` there.

    G_k lives in ``context.state`` (full-model shaped), so the server needs no per-device cache.
    """
    from amp_fl.pruning.submodel import extract_arrays, scatter_arrays

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


__all__ = ["ArrayRecord", "app"]
