"""Issue 8, Regularized FL (FedProx): the proximal gradient against hand-computed values, its plumbing.

The tiny model is ``y_hat = w . x`` (``nn.Linear(2, 1, bias=False)``) with the squared error
``f(w) = (w . x - y)^2`` on one sample ``x = (1, 1)``, ``y = 0``; so ``grad f(w) = 2 (w . x) x``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_linear import LR, X, Y, linear, weights_of
from torch import nn

from amp_fl.client.objectives import add_proximal_gradient, fedprox_step, proximal_gradient, sgd_step
from amp_fl.client.settings import TrainSettings
from amp_fl.client.trainer import ModelInfo, SubModelTrainer
from amp_fl.data.datasets import ArraySplit, load_dataset
from amp_fl.models import build_model
from amp_fl.pruning.maps import region_map
from amp_fl.pruning.submodel import module_arrays
from amp_fl.wireless.seeding import derive_rng


def test_proximal_gradient_is_mu_times_the_distance_to_the_global_model():
    got = proximal_gradient([np.array([1.0, 2.0]), np.array([[-1.0]])], [np.array([0.0, 1.0]), np.array([[1.0]])], 0.5)
    np.testing.assert_allclose(got[0], [0.5, 0.5])
    np.testing.assert_allclose(got[1], [[-1.0]])
    assert all(np.all(g == 0) for g in proximal_gradient([np.ones(3)], [np.ones(3)], 7.0))  # at the anchor
    with pytest.raises(ValueError, match="^mu: must be a finite number >= 0"):
        proximal_gradient([np.ones(1)], [np.ones(1)], -0.1)


def test_add_proximal_gradient_adds_to_the_data_gradient():
    p = torch.tensor([1.0, 2.0], requires_grad=True)
    p.grad = torch.tensor([6.0, 6.0])
    add_proximal_gradient([p], [torch.tensor([0.0, 1.0])], 0.5)
    assert p.grad.tolist() == [6.5, 6.5]
    q = torch.tensor([3.0], requires_grad=True)  # no data gradient yet
    add_proximal_gradient([q], [torch.tensor([1.0])], 0.25)
    assert q.grad.tolist() == [0.5]


def test_one_fedprox_step_by_hand():
    """w = (1, 2), w_g = (0, 1), mu = 0.5: grad f = 2*3*(1, 1) = (6, 6), proximal (0.5, 0.5) -> w - 0.1*(6.5, 6.5)."""
    model = linear([1.0, 2.0])
    optimiser = torch.optim.SGD(model.parameters(), lr=LR)
    loss = fedprox_step(model, optimiser, X, Y, nn.MSELoss(), anchor=[torch.tensor([[0.0, 1.0]])], mu=0.5)
    assert loss == pytest.approx(9.0)  # the data loss f(w) = 3^2, without the proximal term
    assert weights_of(model) == pytest.approx([0.35, 1.35], abs=1e-6)


def test_two_fedprox_steps_from_the_global_model_by_hand():
    """Step 1 starts at w_g (no pull): w1 = (1, 2) - 0.1*(6, 6) = (0.4, 1.4).

    Step 2: w1 . x = 1.8, grad f = (3.6, 3.6), proximal 0.5*(w1 - w_g) = (-0.3, -0.3), so
    w2 = w1 - 0.1*(3.3, 3.3) = (0.07, 1.07); plain SGD would reach (0.04, 1.04).
    """
    model = linear([1.0, 2.0])
    anchor = [p.detach().clone() for p in model.parameters()]
    optimiser = torch.optim.SGD(model.parameters(), lr=LR)
    losses = [fedprox_step(model, optimiser, X, Y, nn.MSELoss(), anchor=anchor, mu=0.5) for _ in range(2)]
    assert losses == pytest.approx([9.0, 3.24])
    assert weights_of(model) == pytest.approx([0.07, 1.07], abs=1e-6)

    plain = linear([1.0, 2.0])
    plain_optimiser = torch.optim.SGD(plain.parameters(), lr=LR)
    for _ in range(2):
        sgd_step(plain, plain_optimiser, X, Y, nn.MSELoss())
    assert weights_of(plain) == pytest.approx([0.04, 1.04], abs=1e-6)


@pytest.fixture(scope="module")
def device_data():
    data = load_dataset("mnist5k", download=False)
    return ArraySplit(data.train.images[:64], data.train.labels[:64])


def _fit(device_data, settings):
    regions = region_map("cnn", (1, 28, 28), 10)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        weights = module_arrays(build_model("cnn", num_classes=10))
    trainer = SubModelTrainer(device_data, ModelInfo("cnn", (1, 28, 28), 10), regions)
    return weights, trainer.fit(weights, regions.full_kept(), settings, derive_rng(0, "test", 1))


def test_trainer_fedprox_with_mu_zero_is_plain_sgd_and_mu_pulls_towards_the_global_model(device_data):
    weights, sgd = _fit(device_data, TrainSettings(0.05, 4, 16))
    _, prox0 = _fit(device_data, TrainSettings(0.05, 4, 16, objective="fedprox", proximal_mu=0.0))
    _, prox = _fit(device_data, TrainSettings(0.05, 4, 16, objective="fedprox", proximal_mu=5.0))
    for a, b in zip(sgd.gradient, prox0.gradient, strict=True):
        np.testing.assert_array_equal(a, b)
    assert prox0.train_loss == sgd.train_loss
    # The trained weights are the start minus eta times the cumulative gradient.
    for w, end, g in zip(weights, prox.weights, prox.gradient, strict=True):
        np.testing.assert_allclose(end, w - 0.05 * g, atol=1e-6)

    def distance(result):
        return float(np.sqrt(sum(np.sum((e - w) ** 2) for e, w in zip(result.weights, weights, strict=True))))

    assert 0 < distance(prox) < distance(sgd)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"objective": "fedavg"}, "objective"),
        ({"objective": "fedprox", "proximal_mu": -0.01}, "proximal_mu"),
        ({"objective": "fedprox", "proximal_mu": float("inf")}, "proximal_mu"),
    ],
)
def test_train_settings_name_the_bad_parameter(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}: "):
        TrainSettings(0.05, 1, 1, **kwargs)
