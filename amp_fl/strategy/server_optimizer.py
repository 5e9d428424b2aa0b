"""Server-side optimisers on the global direction (beyond the paper; issue 9).

The paper's global step is plain SGD on the aggregated direction ``d_t`` (Eq. (2) + step 8):
``w_{t+1} = w_t - eta * d_t``. Treating ``d_t`` as a pseudo-gradient and feeding it to a server
optimiser is the FedOpt family (Reddi et al., 2021, "Adaptive Federated Optimization"; FedAvgM,
Hsu et al., 2019). Three rules, each a pure function of (state, weights, direction):

- ``sgd``: ``w <- w - lr * d`` (bit-identical to :func:`~amp_fl.strategy.aggregation.apply_global_step`);
- ``momentum`` (heavy ball, PyTorch's ``SGD(momentum=beta)`` without dampening):
  ``m <- beta * m + d``; ``w <- w - lr * m`` (``m_0 = 0``, so the first step equals sgd's);
- ``adam`` (Kingma & Ba, with bias correction): ``m <- b1 m + (1 - b1) d``,
  ``v <- b2 v + (1 - b2) d^2``, ``w <- w - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``.
  Adam's step is about ``lr`` per entry whatever the scale of ``d``, so its ``lr`` is not the
  clients' learning rate: :func:`server_learning_rate` asks for it explicitly.

All state lives in one :class:`ServerOptimizerState` (float64 moments, like the cache's
accumulators) so that a checkpoint (issue 11) saves and restores it as one object.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from amp_fl.errors import check_argument
from amp_fl.state import State, arrays, integer
from amp_fl.strategy.aggregation import Arrays, apply_global_step

ServerOptimizerName = Literal["sgd", "momentum", "adam"]
SERVER_OPTIMIZERS: tuple[ServerOptimizerName, ...] = get_args(ServerOptimizerName)


@dataclass(frozen=True)
class ServerOptimizerSettings:
    """Which rule, and its hyper-parameters (each read only by the rule named beside it).

    Parameters
    ----------
    name : {"sgd", "momentum", "adam"}
    lr : float
        Server learning rate (:func:`server_learning_rate` gives the default: the clients' eta).
    momentum : float, default 0.9
        ``momentum``'s beta, in [0, 1).
    betas : tuple of float, default (0.9, 0.999)
        ``adam``'s (b1, b2), each in [0, 1).
    eps : float, default 1e-8
        ``adam``'s denominator floor, > 0.
    """

    name: ServerOptimizerName = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        check_argument(
            self.name in SERVER_OPTIMIZERS, "name", f"choose from {', '.join(SERVER_OPTIMIZERS)}, got {self.name!r}"
        )
        check_argument(math.isfinite(self.lr) and self.lr > 0, "lr", f"must be a finite number > 0, got {self.lr}")
        check_argument(0.0 <= self.momentum < 1.0, "momentum", f"must be in [0, 1), got {self.momentum}")
        check_argument(len(self.betas) == 2, "betas", f"two numbers (b1, b2), got {self.betas}")
        for beta in self.betas:
            check_argument(0.0 <= beta < 1.0, "betas", f"must be in [0, 1), got {beta}")
        check_argument(math.isfinite(self.eps) and self.eps > 0, "eps", f"must be a finite number > 0, got {self.eps}")


def server_learning_rate(name: ServerOptimizerName, lr: float | None, client_learning_rate: float) -> float:
    """The server step's learning rate: ``lr`` when given, else the clients' eta.

    The paper's global step ``w - eta * d`` uses the clients' eta, and momentum keeps that scale. Adam
    steps about ``lr`` per entry whatever the scale of ``d``, so eta is no default for it: it needs ``lr``.
    """
    if lr is not None:
        return lr
    check_argument(
        name != "adam",
        "lr",
        "adam steps about its learning rate per entry whatever the direction's scale, so the clients' "
        "learning rate is no default for it; set it (e.g. 0.001)",
    )
    return client_learning_rate


@dataclass
class ServerOptimizerState:
    """Everything a server optimiser remembers between rounds (what a checkpoint must save).

    ``step``: global steps taken; ``first_moment``: momentum's buffer ``m`` or Adam's ``m``;
    ``second_moment``: Adam's ``v``. Empty lists until the first step that needs them.
    """

    step: int = 0
    first_moment: Arrays = field(default_factory=list)
    second_moment: Arrays = field(default_factory=list)

    def state_dict(self) -> State:
        return {"step": self.step, "first_moment": list(self.first_moment), "second_moment": list(self.second_moment)}

    def load_state_dict(self, state: State) -> None:
        self.step = integer(state, "step")
        self.first_moment = [np.array(m, dtype=np.float64) for m in arrays(state, "first_moment")]
        self.second_moment = [np.array(v, dtype=np.float64) for v in arrays(state, "second_moment")]


def _zeros_like(arrays: Sequence[np.ndarray]) -> Arrays:
    return [np.zeros(np.shape(a), dtype=np.float64) for a in arrays]


def server_step(
    settings: ServerOptimizerSettings, state: ServerOptimizerState, weights: Arrays, direction: Arrays
) -> Arrays:
    """One global step: returns the new weights (in the weights' dtypes) and advances ``state`` in place."""
    state.step += 1
    if settings.name == "sgd":
        return apply_global_step(weights, direction, settings.lr)
    if not state.first_moment:
        state.first_moment = _zeros_like(weights)
    if settings.name == "momentum":
        for m, d in zip(state.first_moment, direction, strict=True):
            m *= settings.momentum
            m += d
        return apply_global_step(weights, state.first_moment, settings.lr)
    b1, b2 = settings.betas
    if not state.second_moment:
        state.second_moment = _zeros_like(weights)
    correction1, correction2 = 1.0 - b1**state.step, 1.0 - b2**state.step
    steps = []
    for m, v, d in zip(state.first_moment, state.second_moment, direction, strict=True):
        d64 = np.asarray(d, dtype=np.float64)
        m *= b1
        m += (1.0 - b1) * d64
        v *= b2
        v += (1.0 - b2) * d64 * d64
        steps.append((m / correction1) / (np.sqrt(v / correction2) + settings.eps))
    return apply_global_step(weights, steps, settings.lr)
