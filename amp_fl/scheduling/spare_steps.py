"""Local steps traded against the keep ratio under T_max (beyond the paper, which fixes lambda).

Eq. (16) sizes a device's sub-model to meet T_max at lambda local steps, but caps the keep
fraction at 1: a device whose full model finishes early (fast CPU, good channel), or whose
sub-model's floor left slack, idles for the rest of the round. :class:`SpareStepsScheduler` lets
it spend that time on more local steps instead. For each scheduled device, at its realised keep
fraction, with compute time ``T^L_k`` at lambda steps and upload time ``T^U_k``:

    lambda_k = clip(floor(lambda * (T_max - T^U_k) / T^L_k), lambda, lambda_max)

the most steps whose compute plus upload still fits T_max (compute time is linear in the steps,
Eq. (6)), never fewer than lambda (a device already over T_max keeps lambda) and at most
``max_local_steps``. The sub-model is unchanged; its compute time becomes ``T^L_k lambda_k /
lambda``, and the round lasts as long as its slowest device (never past T_max because of the
extra steps).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from amp_fl.errors import check_argument
from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.scheduling.schedule import Schedule, Scheduler
from amp_fl.wireless.channel import ChannelState
from amp_fl.wireless.latency import round_latency

_SLACK = 1e-9  # a budget of exactly k steps (up to rounding) is k steps


def spare_local_steps(
    compute_s: np.ndarray, upload_s: np.ndarray, t_max_s: float, local_steps: int, max_local_steps: int
) -> np.ndarray:
    """lambda_k of every device (see the module docstring), (S,) int64; ``compute_s`` is at ``local_steps``."""
    compute = np.asarray(compute_s, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero compute time: any number of steps fits
        spare = (t_max_s - np.asarray(upload_s, dtype=np.float64)) / compute
        budget = np.floor(local_steps * spare + _SLACK)
    budget = np.nan_to_num(budget, nan=local_steps, posinf=max_local_steps, neginf=local_steps)
    return np.clip(budget, local_steps, max_local_steps).astype(np.int64)


class SpareStepsScheduler(Scheduler):
    """Wraps a scheduler: the same devices, RBs and sub-models, with each device's local steps raised to fill T_max.

    Parameters
    ----------
    inner : Scheduler
        Chooses devices, RBs and sub-models (at ``local_steps``).
    local_steps : int
        lambda, the steps ``inner``'s latencies are computed at.
    max_local_steps : int
        lambda_max >= lambda.
    """

    name = "spare_steps"

    def __init__(self, inner: Scheduler, local_steps: int, max_local_steps: int) -> None:
        check_argument(local_steps >= 1, "local_steps", f"must be >= 1, got {local_steps}")
        check_argument(
            max_local_steps >= local_steps,
            "max_local_steps",
            f"must be >= the local steps ({local_steps}), got {max_local_steps}",
        )
        super().__init__(inner.system, inner.seed)
        self.inner = inner
        self.local_steps = int(local_steps)
        self.max_local_steps = int(max_local_steps)

    def schedule(self, round: int, channel_state: ChannelState, aoi_table: AoITable) -> Schedule:
        base = self.inner.schedule(round, channel_state, aoi_table)
        steps = spare_local_steps(
            base.compute_latency_s,
            base.upload_latency_s,
            self.system.t_max_at(round),
            self.local_steps,
            self.max_local_steps,
        )
        compute = base.compute_latency_s * (steps / self.local_steps)
        compute.setflags(write=False)
        steps.setflags(write=False)
        latency = max(base.round_latency_s, round_latency(compute, base.upload_latency_s))
        return dataclasses.replace(base, compute_latency_s=compute, round_latency_s=latency, local_steps=steps)
