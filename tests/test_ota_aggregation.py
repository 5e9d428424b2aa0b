"""Issue 10: over-the-air aggregation against exact FedAvg, the closed-form noise variance, and truncation.

Tolerance of the variance test: the pooled sample variance of ``n`` Gaussian errors has relative
standard deviation ``sqrt(2 / (n - 1))``; each group pools ``n = 2,000 draws x 40 entries = 80,000``
errors (0.5 %), and the test allows 3 % (six standard deviations).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from amp_fl.wireless.over_the_air import (
    OtaSettings,
    OverTheAirChannel,
    channel_from_gains,
    draw_channel,
    noise_error_variance,
    silence_probability,
    superpose,
)


def _updates(num, shapes, seed=0, scale=1.0, shift=0.0):
    rng = np.random.default_rng(seed)
    return [[shift + scale * rng.standard_normal(s) for s in shapes] for _ in range(num)]


def _strong_channel(settings, num):
    """Every PIU well above the threshold (gains of magnitude 1, random phases): all transmit."""
    rng = np.random.default_rng(9)
    gains = np.exp(1j * rng.uniform(0, 2 * np.pi, num))
    return channel_from_gains(settings, list(range(num)), gains)


@pytest.mark.parametrize("normalise", [True, False])
def test_noiseless_with_everyone_transmitting_equals_fedavg(normalise):
    shapes = [(4, 3), (5,), ()]
    updates = _updates(6, shapes, scale=0.01, shift=0.3)
    settings = OtaSettings(snr_db=None, truncation_threshold=0.05, normalise=normalise)
    result = superpose(settings, _strong_channel(settings, 6), updates, None, np.random.default_rng(0))
    assert result.channel.transmitters == tuple(range(6))
    for a, est in enumerate(result.estimate):
        np.testing.assert_allclose(est, np.mean([u[a] for u in updates], axis=0), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(result.counts[a], 6)
    assert result.channel_uses == 12 + 5 + 1


def test_noiseless_through_the_seeded_channel_equals_fedavg():
    """The run's channel with a tiny threshold: every PIU transmits (P(silent) ~ 1e-12 each), estimate = mean."""
    shapes = [(3, 3), (2,)]
    updates = _updates(10, shapes, seed=3)
    channel = OverTheAirChannel(OtaSettings(snr_db=None, truncation_threshold=1e-12), seed=4)
    result = channel.aggregate(7, list(range(10)), updates)
    assert result.channel.silent == ()
    for a, est in enumerate(result.estimate):
        np.testing.assert_allclose(est, np.mean([u[a] for u in updates], axis=0), rtol=0, atol=1e-12)


def test_per_region_aggregation_divides_by_the_holders():
    """AMP-FL's sub-models: each entry averaged over the PIUs that held it; nobody held it -> 0."""
    shape = (2, 3)
    values = [[np.full(shape, 1.0)], [np.full(shape, 2.0)], [np.full(shape, 6.0)]]
    held = [
        [np.array([[1, 1, 0], [0, 0, 0]], bool)],
        [np.array([[1, 0, 1], [0, 0, 0]], bool)],
        [np.array([[1, 0, 0], [1, 0, 0]], bool)],
    ]
    settings = OtaSettings(snr_db=None)
    result = superpose(settings, _strong_channel(settings, 3), values, held, np.random.default_rng(0))
    np.testing.assert_array_equal(result.counts[0], [[3, 1, 1], [1, 0, 0]])
    np.testing.assert_allclose(result.estimate[0], [[3.0, 1.0, 2.0], [6.0, 0.0, 0.0]], atol=1e-12)
    assert result.channel_uses == 4


@pytest.mark.parametrize("normalise", [True, False])
def test_noise_variance_matches_the_closed_form(normalise):
    """Fixed channel, 2,000 receiver-noise draws: per-entry error variance = v^2 N0 / (rho c^2)."""
    shape = (4, 10)  # 40 entries per group
    num = 5
    updates = _updates(num, [shape], seed=1, scale=0.02, shift=-0.1)
    # Entries of row r are held by the first r + 2 PIUs: c = 2, 3, 4, 5 by row.
    held = [[np.repeat((np.arange(4) + 2 > k)[:, None], 10, axis=1)] for k in range(num)]
    settings = OtaSettings(snr_db=10.0, power_budget=2.0, truncation_threshold=0.2, normalise=normalise)
    channel = _strong_channel(settings, num)
    exact = superpose(OtaSettings(snr_db=None, normalise=normalise), channel, updates, held, np.random.default_rng(0))
    draws = 2000
    errors = np.empty((draws, *shape))
    for i in range(draws):
        result = superpose(settings, channel, updates, held, np.random.default_rng(100 + i))
        errors[i] = result.estimate[0] - exact.estimate[0]
    scale = result.scales[0]
    if not normalise:
        assert scale == 1.0
    expected = noise_error_variance(settings, result.counts[0], scale)
    np.testing.assert_array_equal(result.counts[0][:, 0], [2, 3, 4, 5])
    for row, c in enumerate((2, 3, 4, 5)):
        closed = scale**2 * (2.0 / 10.0) / (2.0 * 0.2 * c**2)  # N0 = P0 / SNR, rho = P0 g_th
        assert expected[row, 0] == pytest.approx(closed)
        empirical = float(np.mean(errors[:, row, :] ** 2))
        assert empirical == pytest.approx(closed, rel=0.03)
        assert abs(float(np.mean(errors[:, row, :]))) < 6 * math.sqrt(closed / (draws * 10))  # unbiased


def test_silent_pius_contribute_nothing():
    """A PIU below the threshold stays silent: its (huge) update leaves no trace, it is not counted."""
    shapes = [(3,), (2, 2)]
    updates = _updates(4, shapes, seed=2)
    updates[1] = [np.full(s, 1e6) for s in shapes]
    settings = OtaSettings(snr_db=None, truncation_threshold=0.3)
    gains = np.array([1.0, math.sqrt(0.29), -1.0j, 2.0])  # |h|^2 = 1, 0.29 < 0.3, 1, 4
    channel = channel_from_gains(settings, [10, 11, 12, 13], gains)
    assert channel.silent == (11,) and channel.transmitters == (10, 12, 13)
    result = superpose(settings, channel, updates, None, np.random.default_rng(0))
    for a, est in enumerate(result.estimate):
        np.testing.assert_allclose(est, np.mean([updates[k][a] for k in (0, 2, 3)], axis=0), atol=1e-9)
        np.testing.assert_array_equal(result.counts[a], 3)
    assert set(result.transmit_power) == {10, 12, 13}


def test_transmit_power_respects_the_budget_when_normalised():
    """rho |s|^2 / |h|^2 <= P0 * mean(s^2) <= P0: the weakest transmitter, at the threshold, spends at most P0."""
    settings = OtaSettings(snr_db=20.0, power_budget=0.5, truncation_threshold=0.25)
    updates = _updates(3, [(50,)], seed=5, scale=3.0, shift=2.0)
    channel = channel_from_gains(settings, [0, 1, 2], np.array([0.5, 1.0, 3.0]))  # |h|^2 = 0.25 (at g_th), 1, 9
    result = superpose(settings, channel, updates, None, np.random.default_rng(0))
    assert max(result.transmit_power.values()) <= 0.5 + 1e-12
    assert result.transmit_power[0] > result.transmit_power[1] > result.transmit_power[2]


def test_truncation_probability_is_one_minus_exp_of_minus_the_threshold():
    settings = OtaSettings(truncation_threshold=0.3)
    silent = total = 0
    for t in range(1, 201):
        draw = draw_channel(settings, seed=11, server_round=t, devices=range(50))
        silent += len(draw.silent)
        total += 50
    p = silence_probability(0.3)
    assert p == pytest.approx(1 - math.exp(-0.3))
    assert abs(silent / total - p) < 4 * math.sqrt(p * (1 - p) / total)


def test_draws_are_seeded_per_device_and_round():
    settings = OtaSettings(estimation_error_var=0.1)
    a = draw_channel(settings, 3, 5, [0, 1, 2, 3])
    b = draw_channel(settings, 3, 5, [2, 0])  # another participant set: the same PIU has the same channel
    np.testing.assert_array_equal(a.gain[[2, 0]], b.gain)
    np.testing.assert_array_equal(a.estimate[[2, 0]], b.estimate)
    c = draw_channel(settings, 3, 6, [0, 1, 2, 3])
    assert not np.allclose(a.gain, c.gain)
    assert not np.allclose(a.gain, draw_channel(settings, 4, 5, [0, 1, 2, 3]).gain)


def test_estimation_error_enters_as_the_real_gain_h_over_h_hat():
    """Noiseless, imperfect CSI: estimate = sum a_k u_k / c + m (1 - mean a_k), a_k = Re(h_k / h^_k)."""
    shapes = [(6,)]
    updates = _updates(3, shapes, seed=8, scale=0.5, shift=1.0)
    settings = OtaSettings(snr_db=None, truncation_threshold=0.1)
    gains = np.array([1.0 + 0.2j, -0.7j, 1.3])
    estimates = gains + np.array([0.1 - 0.05j, 0.08j, -0.2])
    channel = channel_from_gains(settings, [0, 1, 2], gains, estimates)
    a = np.real(gains / estimates)
    np.testing.assert_allclose(channel.coefficient, a)
    result = superpose(settings, channel, updates, None, np.random.default_rng(0))
    m = result.offsets[0]
    assert m == pytest.approx(np.mean([u[0] for u in updates]))
    expected = sum(a[k] * updates[k][0] for k in range(3)) / 3 + m * (1 - a.mean())
    np.testing.assert_allclose(result.estimate[0], expected, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"truncation_threshold": 0.0}, "truncation_threshold"),
        ({"power_budget": -1.0}, "power_budget"),
        ({"estimation_error_var": -0.1}, "estimation_error_var"),
        ({"snr_db": float("inf")}, "snr_db"),
    ],
)
def test_settings_name_the_bad_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        OtaSettings(**kwargs)
