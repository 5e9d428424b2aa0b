"""Local objectives of the FL methods: one SGD step each, on torch modules (no Flower, no NumPy I/O).

``sgd``
    Plain local SGD on the device's loss f (Synchronous FL / FedAvg, and AMP-FL's sub-models).
``fedprox`` (Li et al., 2020, "Federated optimization in heterogeneous networks")
    SGD on ``f(w) + mu/2 ||w - w_g||^2``, where ``w_g`` is the model the device received this
    round: every step adds the proximal gradient ``mu (w - w_g)`` to each parameter's gradient.
``apfl`` (Deng et al., 2020, "Adaptive personalized federated learning"), mixing weight alpha
    The device also keeps a personal model ``v``; its personalised model is
    ``alpha v + (1 - alpha) w``. Each step, on the same mini-batch and from the same pre-step
    state (both gradients are taken before either model moves)::

        w <- w - eta * grad f(w)
        v <- v - eta * grad_v f(alpha v + (1 - alpha) w) = v - eta * alpha * grad f(mixed)

    Only ``w`` goes back to the server; ``v`` stays on the device. Alpha is fixed, or adaptive
    (a :class:`~amp_fl.client.settings.MixingWeight`, ``strategy.apfl_alpha_mode=adaptive``): then,
    from the same pre-step state, ``alpha <- clip(alpha - eta * <v - w, grad f(mixed)>, 0, 1)``.

Only trainable parameters enter the proximal term and the mixing. Buffers (BatchNorm running
statistics) are not mixed: the personal model keeps the statistics of its own (mixed) forward
passes, and :func:`mix_arrays` takes them from the personal model.

Every step uses :class:`PlainSGD` (no momentum, no weight decay): the arithmetic of
``torch.optim.SGD(foreach=True)`` bit for bit, so ``sgd`` is exactly the update the trainer made
before these objectives existed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from amp_fl.client.settings import MixingWeight, check_alpha, check_proximal_mu
from amp_fl.errors import check_argument

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------ NumPy maths
def proximal_gradient(weights: Sequence[np.ndarray], anchor: Sequence[np.ndarray], mu: float) -> list[np.ndarray]:
    """``mu * (w - w_g)``: the gradient of FedProx's proximal term ``mu/2 ||w - w_g||^2``."""
    mu = check_proximal_mu(mu, "mu")
    check_argument(len(weights) == len(anchor), "anchor", f"{len(anchor)} arrays for {len(weights)} weights")
    return [mu * (np.asarray(w) - np.asarray(a)) for w, a in zip(weights, anchor, strict=True)]


def mix_arrays(
    personal: Sequence[np.ndarray], global_arrays: Sequence[np.ndarray], alpha: float, trainable: Sequence[bool]
) -> list[np.ndarray]:
    """APFL's personalised model ``alpha * v + (1 - alpha) * w`` (float32) on trainable arrays.

    Non-trainable arrays (buffers: BatchNorm running statistics, counters) are the personal
    model's own (see the module docstring).
    """
    alpha = check_alpha(alpha)
    check_argument(
        len(personal) == len(global_arrays) == len(trainable),
        "personal",
        f"{len(personal)} personal arrays, {len(global_arrays)} global arrays, {len(trainable)} trainable flags",
    )
    mixed = []
    for v, w, learnable in zip(personal, global_arrays, trainable, strict=True):
        check_argument(np.shape(v) == np.shape(w), "personal", f"shape {np.shape(v)} against {np.shape(w)}")
        if learnable:
            mixed.append(
                (alpha * np.asarray(v, np.float64) + (1.0 - alpha) * np.asarray(w, np.float64)).astype(np.float32)
            )
        else:
            mixed.append(np.array(v, copy=True))
    return mixed


# ------------------------------------------------------------------------------ torch steps
class Optimiser(Protocol):
    """What a local step needs of an optimiser (:class:`PlainSGD`; ``torch.optim`` optimisers fit too)."""

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def step(self) -> None: ...


class PlainSGD:
    """SGD without momentum or weight decay: ``p -= lr * p.grad``, one foreach update over the parameters.

    The very update ``torch.optim.SGD(params, lr, foreach=True)`` makes
    (``torch._foreach_add_(params, grads, alpha=-lr)``, bit for bit, tested), without its per-step
    bookkeeping (about 27 us of a 5 ms CNN step here) and without the import of ``torch._dynamo``
    that constructing the first ``torch.optim`` optimiser costs every process that trains (1.4 s
    here: each Ray actor, each campaign worker, a board's first round). Parameters without a
    gradient are left alone, as ``torch.optim.SGD`` leaves them. The parameters share one device.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float) -> None:
        self.params = list(params)
        check_argument(all(p.is_leaf for p in self.params), "params", "must be leaf tensors")
        self.lr = float(lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        stepped, grads = [], []
        for p in self.params:
            if p.grad is not None:
                stepped.append(p)
                grads.append(p.grad)
        if stepped:
            torch._foreach_add_(stepped, grads, alpha=-self.lr)


def sgd_step(
    module: nn.Module, optimiser: Optimiser, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn
) -> float:
    """One SGD step on ``f``; returns the mini-batch loss ``f(w)`` before the step."""
    optimiser.zero_grad(set_to_none=True)
    loss = loss_fn(module(inputs), targets)
    loss.backward()
    optimiser.step()
    return float(loss.detach())


def add_proximal_gradient(params: Sequence[torch.Tensor], anchor: Sequence[torch.Tensor], mu: float) -> None:
    """``p.grad += mu * (p - anchor)`` for every parameter (FedProx), in place."""
    check_argument(len(params) == len(anchor), "anchor", f"{len(anchor)} tensors for {len(params)} parameters")
    with torch.no_grad():
        for p, a in zip(params, anchor, strict=True):
            term = mu * (p - a)
            if p.grad is None:
                p.grad = term
            else:
                p.grad.add_(term)


def fedprox_step(
    module: nn.Module,
    optimiser: Optimiser,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFn,
    *,
    anchor: Sequence[torch.Tensor],
    mu: float,
) -> float:
    """One SGD step on ``f(w) + mu/2 ||w - anchor||^2``; returns the data loss ``f(w)`` before the step.

    ``anchor`` holds one tensor per ``module.parameters()`` entry (the received model).
    """
    optimiser.zero_grad(set_to_none=True)
    loss = loss_fn(module(inputs), targets)
    loss.backward()
    add_proximal_gradient(list(module.parameters()), anchor, mu)
    optimiser.step()
    return float(loss.detach())


def apfl_step(
    module: nn.Module,
    optimiser: Optimiser,
    personal: nn.Module,
    personal_optimiser: Optimiser,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFn,
    *,
    alpha: float | MixingWeight,
) -> float:
    """One APFL step (module docstring): ``w`` by SGD on ``f(w)``, ``v`` by SGD on ``f(alpha v + (1 - alpha) w)``.

    ``module`` holds ``w`` and ``personal`` holds ``v`` (same architecture); both gradients are
    taken at the pre-step state. An adaptive ``alpha`` (:class:`MixingWeight`) then takes its own
    step, by ``d f(mixed) / d alpha`` at the pre-step alpha. Returns ``f(w)`` on the mini-batch, before the step.
    """
    global_params = dict(module.named_parameters())
    personal_params = dict(personal.named_parameters())
    check_argument(
        list(global_params) == list(personal_params),
        "personal",
        "must have the same parameters as module (same architecture and widths)",
    )
    optimiser.zero_grad(set_to_none=True)
    personal_optimiser.zero_grad(set_to_none=True)
    # The mixed model's parameters: w enters as a constant, so backward only reaches v (giving alpha * grad f)
    # and, when alpha adapts, alpha (giving sum over parameters of <v - w, grad f>).
    weight: float | torch.Tensor = (
        torch.tensor(alpha.value, dtype=torch.float32, requires_grad=True) if isinstance(alpha, MixingWeight) else alpha
    )
    mixed = {n: weight * personal_params[n] + (1.0 - weight) * w.detach() for n, w in global_params.items()}
    mixed_loss = loss_fn(functional_call(personal, mixed, (inputs,)), targets)
    mixed_loss.backward()
    if isinstance(alpha, MixingWeight):
        assert isinstance(weight, torch.Tensor) and weight.grad is not None
        alpha.step(float(weight.grad))
    loss = loss_fn(module(inputs), targets)
    loss.backward()
    optimiser.step()
    personal_optimiser.step()
    return float(loss.detach())
