"""The result of one round's scheduling, the scheduler interface, and helpers every scheduler shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from amp_fl.pruning.regions import KeptIndices
from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.wireless.channel import ChannelState
from amp_fl.wireless.latency import PairCosts, SystemModel, device_latencies, realised_keep_fraction, round_latency
from amp_fl.wireless.seeding import check_seed, derive_rng


def _frozen(array: np.ndarray, dtype: type) -> np.ndarray:
    out: np.ndarray = np.array(array, dtype=dtype)
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
        The fraction the sub-model was sized from: kappa of Eq. (16) for AMP-FL and its
        scheduling baselines, ``1 - beta`` in fixed-ratio mode, 1 for the full model.
    keep_counts : (S, L) int array
        Regions kept per layer, ``floor(keep_fraction * I_l)``
        (:func:`~amp_fl.pruning.counts.keep_counts`).
    kept_indices : tuple (per device) of :data:`~amp_fl.pruning.regions.KeptIndices`
        Each device's sorted local indices of the kept regions of every layer.
    weights : (S,) int array
        Omega of each device's sub-model, ``sum over kept i of (tau_i + 1)^2`` (Eq. (18)).
    compute_latency_s, upload_latency_s : (S,) float arrays
        Eqs. (6), (7) at the realised pruning ratio (Eq. (3)).
    round_latency_s : float
        Length of the round on the simulated clock.
    objective : int
        Sum of ``weights``, the value of problem P~ (Eq. (14)) this schedule reaches.
    dropped_device_ids, dropped_rb_ids : int arrays
        Devices that were selected and transmitted but missed a round deadline (full-model
        baseline only); their updates are not aggregated and their ages are not reset.
    local_steps : (S,) int array or None
        Each device's local steps when they differ from the run's lambda
        (:class:`~amp_fl.scheduling.spare_steps.SpareStepsScheduler`); ``None``: lambda for all.
    """

    round: int
    layer_sizes: tuple[int, ...]
    device_ids: np.ndarray
    rb_ids: np.ndarray
    keep_fraction: np.ndarray
    keep_counts: np.ndarray
    kept_indices: tuple[KeptIndices, ...]
    weights: np.ndarray
    compute_latency_s: np.ndarray
    upload_latency_s: np.ndarray
    round_latency_s: float
    objective: int
    dropped_device_ids: np.ndarray = field(default_factory=lambda: _frozen(np.zeros(0), np.int64))
    dropped_rb_ids: np.ndarray = field(default_factory=lambda: _frozen(np.zeros(0), np.int64))
    local_steps: np.ndarray | None = None

    @property
    def num_scheduled(self) -> int:
        return int(self.device_ids.size)

    @property
    def realised_keep_fraction(self) -> np.ndarray:
        """``1 - beta`` of each sub-model: kept regions over all regions (Eq. (3))."""
        return realised_keep_fraction(self.keep_counts, self.layer_sizes)

    @property
    def pruning_ratio(self) -> np.ndarray:
        """beta of each sub-model (Eq. (3))."""
        return 1.0 - self.realised_keep_fraction

    @property
    def latency_s(self) -> np.ndarray:
        """Compute plus upload time of each scheduled device."""
        return self.compute_latency_s + self.upload_latency_s

    def kept_for(self, device_id: int) -> KeptIndices:
        """Kept indices per layer of ``device_id`` (``KeyError`` if it is not scheduled)."""
        where = np.flatnonzero(self.device_ids == device_id)
        if where.size == 0:
            raise KeyError(f"device {device_id} is not scheduled in round {self.round}")
        return self.kept_indices[int(where[0])]


class Scheduler(ABC):
    """Picks devices, RBs and sub-models for one round; what every scheduler shares.

    Subclasses set :attr:`name` (their registry name) and implement :meth:`schedule`. A round's
    random draws come from :meth:`round_rng`, a generator derived from (seed, "scheduler.<name>",
    round), and Algorithm 1's tie-breaks from the per-device generators of
    :func:`~amp_fl.pruning.policies.aoi.tie_break_jitter`, so a round's schedule depends only on
    its inputs and the seed (and survives a restart).

    Parameters
    ----------
    system : SystemModel
        Devices, radio and latency budget.
    seed : int
        Run seed (non-negative).
    """

    name: ClassVar[str]

    def __init__(self, system: SystemModel, seed: int) -> None:
        self.system = system
        self.seed = check_seed(seed)

    @abstractmethod
    def schedule(self, round: int, channel_state: ChannelState, aoi_table: AoITable) -> Schedule:
        """Schedule round ``round`` given this round's channel and the ages before it (tau_{t-1})."""

    def round_costs(self, round: int, channel_state: ChannelState, aoi_table: AoITable) -> PairCosts:
        """Validate this round's inputs; rates, full-model latencies and keep fractions of all pairs."""
        check_inputs(self.system.num_devices, self.system.num_rbs, round, channel_state, aoi_table)
        return self.system.pair_costs(channel_state, round)

    def round_rng(self, round: int) -> np.random.Generator:
        """This scheduler's generator for round ``round`` (device and RB draws, not region tie-breaks)."""
        return derive_rng(self.seed, f"scheduler.{self.name}", int(round))


def kept_weights(
    aoi_table: AoITable, device_ids: Sequence[int] | np.ndarray, kept_indices: Sequence[KeptIndices]
) -> np.ndarray:
    """Omega of each device's kept regions, ``sum (tau + 1)^2`` (Eq. (18)), exact in int64."""
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
    kept_indices: Sequence[KeptIndices],
    deadline_s: float | None = None,
    weights: np.ndarray | None = None,
) -> Schedule:
    """Build a :class:`Schedule` from chosen pairs and sub-models: latencies, weights, objective.

    ``weights`` (Omega per device, Eq. (18)) is recomputed from the kept regions unless the
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
