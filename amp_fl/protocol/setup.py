"""The vocabulary of a run's local-training setup that travels in every instruction: local objectives and
the failure injector's settings (:mod:`amp_fl.client.objectives`, :mod:`amp_fl.client.failures` act on them)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from amp_fl.errors import check_argument

LocalObjective = Literal["sgd", "fedprox", "apfl"]
"""What a device minimises locally: plain SGD, FedProx's proximal objective, or APFL's pair of models."""
LOCAL_OBJECTIVES: tuple[LocalObjective, ...] = get_args(LocalObjective)

TrainDevice = Literal["auto", "cpu", "cuda", "mps"]
"""Where a device trains (and the server evaluates): ``auto`` takes an accelerator the process sees (CUDA, then
MPS), else the CPU; each process resolves it on its own hardware (:func:`amp_fl.client.device.resolve_device`)."""
TRAIN_DEVICES: tuple[TrainDevice, ...] = get_args(TrainDevice)


@dataclass(frozen=True)
class FailureSettings:
    """Per scheduled PIU and round: the probability of each failure mode (they exclude each other).

    Also the run config's ``failures`` section: its checks are the only ones, and ``amp_fl.config``
    reports them under ``failures.<field>``.

    Parameters
    ----------
    raise_prob, late_prob, corrupt_prob : float
        In [0, 1], summing to at most 1.
    late_delay_s : float
        How long a ``late`` device waits before replying (make it exceed the reply timeout).
    """

    raise_prob: float = 0.0
    late_prob: float = 0.0
    corrupt_prob: float = 0.0
    late_delay_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("raise_prob", "late_prob", "corrupt_prob"):
            value = getattr(self, name)
            check_argument(math.isfinite(value) and 0.0 <= value <= 1.0, name, f"must be in [0, 1], got {value}")
        check_argument(self.total <= 1.0, "raise_prob", f"raise_prob + late_prob + corrupt_prob = {self.total} > 1")
        check_argument(
            math.isfinite(self.late_delay_s) and self.late_delay_s >= 0,
            "late_delay_s",
            f"must be a finite number of seconds >= 0, got {self.late_delay_s}",
        )

    @property
    def total(self) -> float:
        return self.raise_prob + self.late_prob + self.corrupt_prob

    @property
    def enabled(self) -> bool:
        return self.total > 0
