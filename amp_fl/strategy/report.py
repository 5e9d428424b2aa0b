"""What a strategy tells the run recorder about each round, in a form every strategy fills honestly.

:class:`RoundReport` (the ``on_round_end`` hook) says who was sent work on which uplink resource
with which sub-model, what the simulated round cost, who got through and why the others did
not; :class:`PersonalEvaluation` (the ``on_personal_evaluation`` hook) carries the devices'
personalised scores. Fields a strategy has no value for are ``None`` (sparse FedAvg runs no
scheduler, so no objective; it keeps no AoI table, so no mean age).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from amp_fl.scheduling.schedule import Schedule
from amp_fl.strategy.replies import FAILURE_KINDS, Failure, FailureKind


@dataclass(frozen=True)
class Participant:
    """One device sent work this round: its uplink resource, its sub-model and its simulated time.

    ``rb`` is the resource block of its upload (sparse FedAvg: 0, the one band every PIU shares);
    ``keep_fraction`` is the fraction its sub-model was sized from (AMP-FL's kappa of Eq. (16); 1
    for the full model), ``keep_counts`` the regions kept per layer and ``kept_ratio`` the realised
    ``1 - beta``: kept regions over all regions (Eq. (3)). ``local_steps``: its local steps when the
    scheduler traded them against the keep ratio (``scheduling.max_local_steps``); ``None``: the
    run's ``train.local_steps``.
    """

    device: int
    rb: int
    keep_fraction: float
    keep_counts: tuple[int, ...]
    kept_ratio: float
    compute_latency_s: float
    upload_latency_s: float
    local_steps: int | None = None


def participants_of(schedule: Schedule) -> tuple[Participant, ...]:
    """The scheduler's decision, one :class:`Participant` per scheduled device (in schedule order)."""
    realised = schedule.realised_keep_fraction
    return tuple(
        Participant(
            device=int(schedule.device_ids[i]),
            rb=int(schedule.rb_ids[i]),
            keep_fraction=float(schedule.keep_fraction[i]),
            keep_counts=tuple(int(c) for c in schedule.keep_counts[i]),
            kept_ratio=float(realised[i]),
            compute_latency_s=float(schedule.compute_latency_s[i]),
            upload_latency_s=float(schedule.upload_latency_s[i]),
            local_steps=None if schedule.local_steps is None else int(schedule.local_steps[i]),
        )
        for i in range(schedule.num_scheduled)
    )


@dataclass(frozen=True)
class RoundReport:
    """What happened in one round, handed to the ``on_round_end`` hook after the global update.

    Device-keyed mappings are keyed by device id; ``failed`` may hold
    :data:`~amp_fl.strategy.replies.UNKNOWN_DEVICE`.
    """

    round: int
    participants: tuple[Participant, ...]  # every device sent work, in send order
    round_latency_s: float  # simulated duration of the round (what the clock advances by)
    objective: float | None  # the scheduler's objective for this round; None: no scheduler
    received_devices: tuple[int, ...]
    failed: Mapping[int, Failure]
    downlink_bytes: int
    uplink_bytes_per_device: Mapping[int, int]
    train_loss: Mapping[int, float]  # mean local training loss, as reported
    client_fit_s: Mapping[int, float]  # wall time of local training, as reported
    mean_aoi: float | None  # mean age over all devices and regions after Eq. (9); None: no AoI table

    @property
    def sent_devices(self) -> tuple[int, ...]:
        return tuple(p.device for p in self.participants)

    @property
    def failures(self) -> dict[int, str]:
        """Why each failed device did not count, in words."""
        return {device: f.reason for device, f in self.failed.items()}

    @property
    def failure_kinds(self) -> dict[int, FailureKind]:
        return {device: f.kind for device, f in self.failed.items()}

    @property
    def failure_counts(self) -> dict[FailureKind, int]:
        """How many devices failed this round, per kind (every kind present, 0 when none)."""
        counts = dict.fromkeys(FAILURE_KINDS, 0)
        for failure in self.failed.values():
            counts[failure.kind] += 1
        return counts

    @property
    def uplink_bytes(self) -> int:
        return sum(self.uplink_bytes_per_device.values())

    @property
    def mean_train_loss(self) -> float:
        return float(np.mean(list(self.train_loss.values()))) if self.train_loss else math.nan

    @property
    def mean_kept_ratio(self) -> float:
        """Mean realised keep ratio over the participants; NaN when nobody was sent work."""
        return float(np.mean([p.kept_ratio for p in self.participants])) if self.participants else math.nan


@dataclass(frozen=True)
class PersonalEvaluation:
    """The devices' personalised scores in one round, handed to the ``on_personal_evaluation`` hook.

    ``accuracy`` and ``loss`` are label-weighted (each device on its own label distribution,
    :mod:`amp_fl.client.personal`), keyed by device; ``personalised`` lists the devices that
    scored their own personalised model (APFL, after their first training round) rather than the
    global model; ``failed`` maps a device (or ``UNKNOWN_DEVICE``) to why its reply was dropped.
    """

    round: int
    accuracy: Mapping[int, float]
    loss: Mapping[int, float]
    personalised: tuple[int, ...]
    failed: Mapping[int, Failure]

    @property
    def failures(self) -> dict[int, str]:
        return {device: f.reason for device, f in self.failed.items()}

    @property
    def mean_accuracy(self) -> float:
        """Unweighted mean over the devices that replied (each device counts once); NaN if none did."""
        return float(np.mean(list(self.accuracy.values()))) if self.accuracy else math.nan

    @property
    def mean_loss(self) -> float:
        return float(np.mean(list(self.loss.values()))) if self.loss else math.nan
