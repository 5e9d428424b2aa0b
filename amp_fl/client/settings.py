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


class MixingWeight:
    """APFL's adaptive mixing weight of one device (Deng et al., 2020, Algorithm 1): alpha, moved by its gradient.

    Each local step, from the pre-step state and on the step's mini-batch::

        alpha <- clip(alpha - lr * d f(alpha v + (1 - alpha) w) / d alpha, 0, 1),
        d f / d alpha = <v - w, grad f(alpha v + (1 - alpha) w)>

    (:func:`amp_fl.client.objectives.apfl_step` computes the derivative). It is the device's state
    (kept in Flower's ``context.state`` between rounds, like the personal model v), so it is mutable.
    """

    def __init__(self, value: float, learning_rate: float) -> None:
        self.value = check_alpha(value, "alpha")
        check_argument(
            math.isfinite(learning_rate) and learning_rate > 0,
            "learning_rate",
            f"alpha's step size must be a finite number > 0, got {learning_rate}",
        )
        self.learning_rate = float(learning_rate)

    def step(self, gradient: float) -> float:
        """One gradient step on alpha, clipped to [0, 1]; returns the new alpha."""
        if not math.isfinite(gradient):
            raise ValueError(f"gradient: d f / d alpha must be finite, got {gradient}")
        self.value = min(max(self.value - self.learning_rate * gradient, 0.0), 1.0)
        return self.value


@dataclass(frozen=True)
class TrainSettings:
    """Local training: ``local_steps`` steps of ``objective`` with step size ``learning_rate``.

    ``proximal_mu`` is FedProx's mu (used by ``objective="fedprox"``), ``alpha`` APFL's mixing
    weight (used by ``objective="apfl"``): a fixed number, or a :class:`MixingWeight` the steps adapt.
    ``device`` is where the steps run, as configured
    (``auto`` | ``cpu`` | ``cuda`` | ``mps``; resolved by :func:`amp_fl.client.device.resolve_device`
    where the training runs). The default is the CPU: the reference every equality test compares with.
    """

    learning_rate: float
    local_steps: int
    batch_size: int
    objective: LocalObjective = "sgd"
    proximal_mu: float = 0.0
    alpha: float | MixingWeight = 0.0
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
        if not isinstance(self.alpha, MixingWeight):  # a MixingWeight checked its own value
            check_alpha(self.alpha)
        check_argument(
            self.device in TRAIN_DEVICES, "device", f"must be one of {', '.join(TRAIN_DEVICES)}, got {self.device!r}"
        )
