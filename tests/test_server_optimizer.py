"""Issue 9: server optimisers on the AMP-FL direction, against hand-computed steps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from amp_fl.strategy.aggregation import apply_global_step
from amp_fl.strategy.server_optimizer import ServerOptimizerSettings, ServerOptimizerState, server_step


def _w():
    return [np.array([1.0, -2.0], dtype=np.float32), np.array([[0.5]], dtype=np.float32)]


DIRECTIONS = [
    [np.array([1.0, 2.0]), np.array([[-4.0]])],
    [np.array([3.0, 0.0]), np.array([[2.0]])],
    [np.array([-1.0, 1.0]), np.array([[0.0]])],
]


def test_sgd_is_the_papers_step_bit_for_bit():
    rng = np.random.default_rng(3)
    weights = [rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(5).astype(np.float32)]
    direction = [rng.standard_normal((4, 3)), rng.standard_normal(5)]
    state = ServerOptimizerState()
    got = server_step(ServerOptimizerSettings("sgd", 0.05), state, weights, direction)
    for a, b in zip(got, apply_global_step(weights, direction, 0.05), strict=True):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    assert state.step == 1 and state.first_moment == [] and state.second_moment == []


def test_momentum_three_steps_by_hand():
    """m1 = d1, m2 = 0.5 m1 + d2, m3 = 0.5 m2 + d3; w_t = w_{t-1} - 0.1 m_t."""
    settings = ServerOptimizerSettings("momentum", 0.1, momentum=0.5)
    state, w = ServerOptimizerState(), _w()
    for d in DIRECTIONS:
        w = server_step(settings, state, w, d)
    # entry 0: m = 1, 3.5, 0.75 -> w = 1 - 0.1*(5.25) = 0.475
    # entry 1: m = 2, 1, -0.5+... = 0.5*1 + 1 = 1.5 -> w = -2 - 0.1*(2 + 1 + 1.5) = -2.45
    # entry 2: m = -4, 0, 0 -> w = 0.5 - 0.1*(-4) = 0.9
    np.testing.assert_allclose(w[0], [0.475, -2.45], atol=1e-6)
    np.testing.assert_allclose(w[1], [[0.9]], atol=1e-6)
    np.testing.assert_allclose(state.first_moment[0], [0.75, 1.5])
    assert state.step == 3 and w[0].dtype == np.float32


def test_momentum_first_step_equals_sgd():
    w = _w()
    a = server_step(ServerOptimizerSettings("momentum", 0.1), ServerOptimizerState(), w, DIRECTIONS[0])
    b = server_step(ServerOptimizerSettings("sgd", 0.1), ServerOptimizerState(), w, DIRECTIONS[0])
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_adam_two_steps_by_hand():
    """b1 = 0.5, b2 = 0.75, eps = 0.01, lr = 0.1, on one entry with d1 = 2, d2 = -1.

    Step 1: m = 1, v = 1; mhat = 1 / 0.5 = 2, vhat = 1 / 0.25 = 4; step = 2 / (2 + 0.01).
    Step 2: m = 0.5 - 0.5 = 0, v = 0.75 + 0.25 = 1; mhat = 0 -> no move.
    """
    settings = ServerOptimizerSettings("adam", 0.1, betas=(0.5, 0.75), eps=0.01)
    state = ServerOptimizerState()
    w = [np.array([1.0], dtype=np.float32)]
    w = server_step(settings, state, w, [np.array([2.0])])
    w1 = 1.0 - 0.1 * 2.0 / 2.01
    np.testing.assert_allclose(w[0], [w1], atol=1e-7)
    w = server_step(settings, state, w, [np.array([-1.0])])
    np.testing.assert_allclose(w[0], [w1], atol=1e-7)
    np.testing.assert_allclose(state.first_moment[0], [0.0])
    np.testing.assert_allclose(state.second_moment[0], [1.0])
    # Step 3 with d3 = 4: m = 2, v = 0.75 + 4 = 4.75; mhat = 2 / 0.875, vhat = 4.75 / (1 - 0.75^3).
    w = server_step(settings, state, w, [np.array([4.0])])
    expected = w1 - 0.1 * (2 / 0.875) / (math.sqrt(4.75 / (1 - 0.75**3)) + 0.01)
    np.testing.assert_allclose(w[0], [expected], atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "nesterov", "lr": 0.1}, "name"),
        ({"name": "sgd", "lr": 0.0}, "lr"),
        ({"name": "momentum", "lr": 0.1, "momentum": 1.0}, "momentum"),
        ({"name": "adam", "lr": 0.1, "betas": (0.9, 1.0)}, "betas"),
        ({"name": "adam", "lr": 0.1, "eps": 0.0}, "eps"),
    ],
)
def test_bad_settings_are_rejected_naming_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ServerOptimizerSettings(**kwargs)
