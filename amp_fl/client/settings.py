"""The settings of a device's local training, checked here once (no torch: the configuration builds them too)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from amp_fl.errors import check_argument
from amp_fl.protocol.setup import LOCAL_OBJECTIVES, TRAIN_DEVICES, LocalObjective, TrainDevice


def check_proximal_mu(mu: float, name: str = "proximal_mu") -> float:
    """``mu`` as a float after checking it is finite and >= 0 (``ValueError`` naming ``name``)."""
    check_argument(
        isinstance(mu, int | float) and not isinstance(mu, bool) and math.isfinite(mu) and mu >= 0,
        name,
        f"must be a finite number >= 0, got {mu!r}",
    )
    return float(mu)


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """``alpha`` as a float after checking it lies in [0, 1] (``ValueError`` naming ``name``)."""
    check_argument(
        isinstance(alpha, int | float) and not isinstance(alpha, bool) and 0.0 <= alpha <= 1.0,
        name,
        f"must be in [0, 1], got {alpha!r}",
    )
    return float(alpha)


@dataclass(frozen=True)
class TrainSettings:
    """Local training: ``local_steps`` steps of ``objective`` with step size ``learning_rate``.

    ``proximal_mu`` is FedProx's mu (used by ``objective="fedprox"``), ``alpha`` APFL's mixing
    weight (used by ``objective="apfl"``). ``device`` is where the steps run, as configured
    (``auto`` | ``cpu`` | ``cuda`` | ``mps``; resolved by :func:`amp_fl.client.device.resolve_device`
    where the training runs). The default is the CPU: the reference every equality test compares with.
    """

    learning_rate: float
    local_steps: int
    batch_size: int
    objective: LocalObjective = "sgd"
    proximal_mu: float = 0.0
    alpha: float = 0.0
    device: TrainDevice = "cpu"

    def __post_init__(self) -> None:
        check_argument(
            math.isfinite(self.learning_rate) and self.learning_rate > 0,
            "learning_rate",
            f"must be a finite number > 0, got {self.learning_rate}",
        )
        check_argument(self.local_steps >= 1, "local_steps", f"must be >= 1, got {self.local_steps}")
        check_argument(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check_argument(
            self.objective in LOCAL_OBJECTIVES,
            "objective",
            f"must be one of {', '.join(LOCAL_OBJECTIVES)}, got {self.objective!r}",
        )
        check_proximal_mu(self.proximal_mu)
        check_alpha(self.alpha)
        check_argument(
            self.device in TRAIN_DEVICES, "device", f"must be one of {', '.join(TRAIN_DEVICES)}, got {self.device!r}"
        )
