"""The result of one round's scheduling, the scheduler interface, and helpers every scheduler shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from amp_fl.pruning.policies.aoi import aoi_priority_order
from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.wireless.channel import ChannelState
from amp_fl.wireless.latency import PairCosts, SystemModel, device_latencies, realised_keep_fraction, round_latency
from amp_fl.wireless.seeding import check_seed, derive_rng

KeptIndices = tuple[tuple[np.ndarray, ...], ...]


def _frozen(array: np.ndarray, dtype: type) -> np.ndarray:
    out = np.array(array, dtype=dtype)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class Schedule:
    """Who trains this round, on which RB, which sub-model, and how long it takes.

    Device-indexed arrays are aligned and sorted by device id.

    Attributes
    ----------
    round : int
    layer_sizes : tuple of int
        I_l of the model the sub-models are cut from.
    device_ids : (S,) int array
        Devices whose update arrives this round (the set S_t).
    rb_ids : (S,) int array
        The RB each of them uses.
    keep_fraction : (S,) float array
        The fraction the sub-model was sized from: kappa of eq. (16) for AMP-FL and its
        scheduling baselines, ``1 - beta`` in fixed-ratio mode, 1 for the full model.
    keep_counts : (S, L) int array
        Regions kept per layer, ``floor(keep_fraction * I_l)``.
    kept_indices : tuple (per device) of tuples (per layer) of sorted int arrays
        Local indices of the kept regions of every layer.
    weights : (S,) int array
        Omega of each device's sub-model, ``sum over kept i of (tau_i + 1)^2`` (eq. 18).
    compute_latency_s, upload_latency_s : (S,) float arrays
        Eqs. (6), (7) at the realised pruning ratio (eq. 3).
    round_latency_s : float
        Length of the round on the simulated clock.
    objective : int
        Sum of ``weights``, the value of problem P~ (14) this schedule reaches.
    dropped_device_ids, dropped_rb_ids : int arrays
        Devices that were selected and transmitted but missed a round deadline (full-model
        baseline only); their updates are not aggregated and their ages are not reset.
    """

    round: int
    layer_sizes: tuple[int, ...]
    device_ids: np.ndarray
    rb_ids: np.ndarray
    keep_fraction: np.ndarray
    keep_counts: np.ndarray
    kept_indices: KeptIndices
    weights: np.ndarray
    compute_latency_s: np.ndarray
    upload_latency_s: np.ndarray
    round_latency_s: float
    objective: int
    dropped_device_ids: np.ndarray = field(default_factory=lambda: _frozen(np.zeros(0), np.int64))
    dropped_rb_ids: np.ndarray = field(default_factory=lambda: _frozen(np.zeros(0), np.int64))

    @property
    def num_scheduled(self) -> int:
        return int(self.device_ids.size)

    @property
    def realised_keep_fraction(self) -> np.ndarray:
        """``1 - beta`` of each sub-model: kept regions over all regions (eq. 3)."""
        return realised_keep_fraction(self.keep_counts, self.layer_sizes)

    @property
    def pruning_ratio(self) -> np.ndarray:
        """beta of each sub-model (eq. 3)."""
        return 1.0 - self.realised_keep_fraction

    @property
    def latency_s(self) -> np.ndarray:
        """Compute plus upload time of each scheduled device."""
        return self.compute_latency_s + self.upload_latency_s

    def kept_for(self, device_id: int) -> tuple[np.ndarray, ...]:
        """Kept indices per layer of ``device_id`` (``KeyError`` if it is not scheduled)."""
        where = np.flatnonzero(self.device_ids == device_id)
        if where.size == 0:
            raise KeyError(f"device {device_id} is not scheduled in round {self.round}")
        return self.kept_indices[int(where[0])]


class SchedulerBase:
    """What every scheduler here shares: the system model, the run seed, per-round inputs.

    A round's random draws come from a generator derived from (seed, "scheduler.<name>", round),
    so a round's schedule depends only on its inputs and the seed (and survives a restart).
    """

    name = "base"

    def __init__(self, system: SystemModel, seed: int) -> None:
        self.system = system
        self.seed = check_seed(seed)

    def round_costs(self, round: int, channel_state: ChannelState, aoi_table: AoITable) -> PairCosts:
        """Validate this round's inputs; rates, full-model latencies and keep fractions of all pairs."""
        check_inputs(self.system.num_devices, self.system.num_rbs, round, channel_state, aoi_table)
        return self.system.pair_costs(channel_state)

    def round_rng(self, round: int) -> np.random.Generator:
        return derive_rng(self.seed, f"scheduler.{self.name}", int(round))


@runtime_checkable
class Scheduler(Protocol):
    """Picks devices, RBs and sub-models for one round."""

    name: str

    def schedule(self, round: int, channel_state: ChannelState, aoi_table: AoITable) -> Schedule:
        """Schedule round ``round`` given this round's channel and the ages before it (tau_{t-1})."""
        ...


def top_aoi_indices(
    aoi_table: AoITable, device_ids: np.ndarray, keep_counts: np.ndarray, rng: np.random.Generator
) -> KeptIndices:
    """Algorithm 1 for the scheduled devices: per layer, the ``keep_counts[s, l]`` oldest regions.

    Uses :func:`~amp_fl.pruning.policies.aoi.aoi_priority_order` (oldest first, ties in seeded
    random order), so the scheduler and the ``aoi`` pruning policy apply one rule; for a single
    device the result equals ``select_top_aoi`` layer by layer with the same generator. One call
    per layer orders all scheduled devices at once.
    """
    device_ids = np.asarray(device_ids, dtype=np.int64)
    if device_ids.size == 0:
        return ()
    keep_counts = np.asarray(keep_counts, dtype=np.int64).reshape(device_ids.size, aoi_table.num_layers)
    per_device: list[list[np.ndarray]] = [[] for _ in range(device_ids.size)]
    rows = np.arange(device_ids.size)
    for layer, ages in enumerate(aoi_table.layers()):
        order = aoi_priority_order(ages[device_ids], rng)
        counts = keep_counts[:, layer]
        # Sort every device's kept prefix in one call: entries past a device's count get a
        # sentinel (the layer size) that sorts last, then each row is cut at its count.
        head = order[:, : int(counts.max(initial=0))].copy()
        head[np.arange(head.shape[1])[None, :] >= counts[:, None]] = ages.shape[1]
        head.sort(axis=1)
        head.setflags(write=False)
        for s in rows:
            per_device[s].append(head[s, : counts[s]])
    return tuple(tuple(layers) for layers in per_device)


def kept_weights(aoi_table: AoITable, device_ids: np.ndarray, kept_indices: KeptIndices) -> np.ndarray:
    """Omega of each device's kept regions, ``sum (tau + 1)^2`` (eq. 18), exact in int64."""
    weights = np.zeros(len(kept_indices), dtype=np.int64)
    ages = aoi_table.ages
    offsets = aoi_table.offsets
    for s, (device, per_layer) in enumerate(zip(device_ids, kept_indices, strict=True)):
        # One gather per device: local indices shifted to table columns.
        columns = np.concatenate([np.asarray(kept, dtype=np.int64) + offsets[l] for l, kept in enumerate(per_layer)])
        tau = ages[int(device), columns].astype(np.int64)
        weights[s] = int(np.sum((tau + 1) ** 2))
    return weights


def assemble_schedule(
    round: int,
    costs: PairCosts,
    aoi_table: AoITable,
    device_ids: Sequence[int] | np.ndarray,
    rb_ids: Sequence[int] | np.ndarray,
    keep_fraction: Sequence[float] | np.ndarray,
    keep_counts: np.ndarray,
    kept_indices: KeptIndices,
    deadline_s: float | None = None,
    weights: np.ndarray | None = None,
) -> Schedule:
    """Build a :class:`Schedule` from chosen pairs and sub-models: latencies, weights, objective.

    ``weights`` (Omega per device, eq. 18) is recomputed from the kept regions unless the
    caller already has it (AMP-FL reads it off its weight matrix). With ``deadline_s``, devices
    whose latency exceeds it are moved to ``dropped_*`` and the round lasts ``deadline_s`` if
    anyone was dropped (the server stops waiting then).
    """
    device_ids = np.asarray(device_ids, dtype=np.int64).reshape(-1)
    rb_ids = np.asarray(rb_ids, dtype=np.int64).reshape(-1)
    keep_fraction = np.asarray(keep_fraction, dtype=np.float64).reshape(-1)
    keep_counts = np.asarray(keep_counts, dtype=np.int64).reshape(device_ids.size, aoi_table.num_layers)
    # Canonical order: by device id, so equal schedules compare equal field by field.
    order = np.argsort(device_ids, kind="stable")
    device_ids, rb_ids = device_ids[order], rb_ids[order]
    keep_fraction, keep_counts = keep_fraction[order], keep_counts[order]
    kept_indices = tuple(kept_indices[int(i)] for i in order)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.int64).reshape(-1)[order]

    realised = realised_keep_fraction(keep_counts, aoi_table.layer_sizes)
    compute_s, upload_s = device_latencies(costs, device_ids, rb_ids, realised)
    arrived = np.ones(device_ids.size, dtype=bool)
    if deadline_s is not None:
        arrived = compute_s + upload_s <= deadline_s
    latency = round_latency(compute_s[arrived], upload_s[arrived])
    if deadline_s is not None and not arrived.all():
        latency = float(deadline_s)

    kept_arrived = tuple(k for k, ok in zip(kept_indices, arrived, strict=True) if ok)
    weights = kept_weights(aoi_table, device_ids[arrived], kept_arrived) if weights is None else weights[arrived]
    return Schedule(
        round=int(round),
        layer_sizes=aoi_table.layer_sizes,
        device_ids=_frozen(device_ids[arrived], np.int64),
        rb_ids=_frozen(rb_ids[arrived], np.int64),
        keep_fraction=_frozen(keep_fraction[arrived], np.float64),
        keep_counts=_frozen(keep_counts[arrived], np.int64),
        kept_indices=kept_arrived,
        weights=_frozen(weights, np.int64),
        compute_latency_s=_frozen(compute_s[arrived], np.float64),
        upload_latency_s=_frozen(upload_s[arrived], np.float64),
        round_latency_s=latency,
        objective=int(weights.sum()),
        dropped_device_ids=_frozen(device_ids[~arrived], np.int64),
        dropped_rb_ids=_frozen(rb_ids[~arrived], np.int64),
    )


def check_inputs(num_devices: int, num_rbs: int, round: int, channel_state: ChannelState, aoi_table: AoITable) -> None:
    """Raise ``ValueError`` when the round's inputs do not fit the system the scheduler was built for."""
    if int(round) < 0:
        raise ValueError(f"round must be >= 0, got {round}")
    if channel_state.num_devices != num_devices or channel_state.num_rbs != num_rbs:
        raise ValueError(
            f"channel state is {channel_state.num_devices} devices x {channel_state.num_rbs} RBs, "
            f"the scheduler was built for {num_devices} x {num_rbs}"
        )
    if aoi_table.num_devices != num_devices:
        raise ValueError(f"AoI table has {aoi_table.num_devices} devices, the scheduler was built for {num_devices}")
