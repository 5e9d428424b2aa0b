"""The tiny model of the local-objective tests (FedProx, APFL), whose gradients are known by hand.

``y_hat = w . x`` (``nn.Linear(2, 1, bias=False)``) with the squared error ``f(w) = (w . x - y)^2``
on one sample ``x = (1, 1)``, ``y = 0``; so ``grad f(w) = 2 (w . x) x``.
"""

from __future__ import annotations

import torch
from torch import nn

X = torch.tensor([[1.0, 1.0]])
Y = torch.tensor([[0.0]])
LR = 0.1


def linear(weights) -> nn.Linear:
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([weights], dtype=torch.float32))
    return model


def weights_of(model: nn.Linear) -> list[float]:
    return model.weight.detach().numpy().ravel().tolist()
