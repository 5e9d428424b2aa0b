"""Wireless system model: hand-computed rates, latencies and keep fractions; channels; device profiles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from amp_fl.pruning.counts import keep_counts
from amp_fl.wireless import (
    ChannelState,
    DevicePopulation,
    DeviceProfile,
    LatencyConfig,
    MeasuredChannel,
    RayleighChannel,
    SystemModel,
    WirelessConfig,
    dbm_to_watt,
    feasible_pairs,
    paper_latency_config,
    realised_keep_fraction,
    round_latency,
    shannon_rates,
    simulated_device_profile,
)

# ---------------------------------------------------------------- the hand-built 2 x 2 case
# B = 1 MHz, N0 = -174 dBm/Hz  ->  B N0 = 1e6 * 10^(-20.4) W.  p = 30 dBm = 1 W.
# RB 0: I = 0 (noise only, B N0);  RB 1: I = 2 B N0 (3 B N0 in all).
# Device 0: h = 3 B N0 -> SNR 3 on RB 0, 1 on RB 1 -> rates 2 Mbit/s, 1 Mbit/s.
# Device 1: h = 9 B N0 -> SNR 9 on RB 0, 3 on RB 1 -> rates log2(10) Mbit/s, 2 Mbit/s.
# lambda L_b C = 8 * 64 * 781,250 = 4e8 FLOPs; f n = 4e9 (device 0), 8e9 (device 1)
#   -> full compute 0.1 s and 0.05 s.  Q q = 6,250 * 32 = 2e5 bits.
# Full upload: device 0: 0.1 s, 0.2 s;  device 1: 0.2 / log2(10) = 0.0602059991... s, 0.1 s.
# T_max = 0.1 s -> kappa = sqrt(0.1 / (compute + upload)):
#   (0,0) sqrt(0.1/0.2) = 0.70710678...   (0,1) sqrt(0.1/0.3) = 0.57735026...
#   (1,0) sqrt(0.1/0.11020599...) = 0.95257105...   (1,1) sqrt(0.1/0.15) = 0.81649658...
# Layers [4, 10]: counts floor(kappa I_l):
#   (0,0) [2, 7]   (0,1) [2, 5]   (1,0) [3, 9]   (1,1) [3, 8]
NOISE_W = 1e6 * 10 ** (-20.4)
HAND_LAYERS = [4, 10]


def hand_system() -> SystemModel:
    wireless = WirelessConfig(num_devices=2, num_rbs=2)
    latency = LatencyConfig(num_params=6_250, flops_per_sample=781_250.0, t_max_s=0.1)
    devices = DevicePopulation(
        cpu_hz=np.array([1e9, 2e9]),
        flops_per_cycle=np.array([4.0, 4.0]),
        tx_power_w=np.array([1.0, 1.0]),
        distance_m=np.array([100.0, 200.0]),
    )
    return SystemModel(wireless, latency, devices)


def hand_state() -> ChannelState:
    return ChannelState(gains=np.array([3.0, 9.0]) * NOISE_W, interference_w=np.array([0.0, 2.0]) * NOISE_W)


def test_noise_and_power_units() -> None:
    cfg = WirelessConfig()
    assert cfg.noise_power_w == pytest.approx(3.981071705534972e-15, rel=1e-12)
    assert cfg.tx_power_w == pytest.approx(1.0, rel=1e-15)
    assert cfg.path_loss_linear == pytest.approx(1e-3, rel=1e-15)
    assert dbm_to_watt(0.0) == pytest.approx(1e-3, rel=1e-15)


def test_hand_case_rates() -> None:
    rates = hand_system().rates(hand_state())
    expected = np.array([[2e6, 1e6], [3_321_928.0948873623, 2e6]])  # 1e6 * log2(10) = 3,321,928.09...
    np.testing.assert_allclose(rates, expected, rtol=1e-12)


def test_shannon_rates_broadcast_shape() -> None:
    rates = shannon_rates(np.ones(5), np.ones(5), np.zeros(3), 1.0, 1.0)
    assert rates.shape == (5, 3)
    np.testing.assert_allclose(rates, 1.0)  # log2(1 + 1)


def test_hand_case_latencies_and_keep_fraction() -> None:
    costs = hand_system().pair_costs(hand_state())
    np.testing.assert_allclose(costs.compute_full_s, [0.1, 0.05], rtol=1e-12)
    np.testing.assert_allclose(costs.upload_full_s, [[0.1, 0.2], [0.06020599913279624, 0.1]], rtol=1e-12)
    expected_kappa = [[0.7071067811865476, 0.5773502691896257], [0.9525710573034134, 0.816496580927726]]
    np.testing.assert_allclose(costs.keep_fraction, expected_kappa, rtol=1e-12)
    counts = keep_counts(costs.keep_fraction, HAND_LAYERS)
    np.testing.assert_array_equal(counts, [[[2, 7], [2, 5]], [[3, 9], [3, 8]]])
    expected_kept = [[9 / 14, 7 / 14], [12 / 14, 11 / 14]]
    np.testing.assert_allclose(realised_keep_fraction(counts, HAND_LAYERS), expected_kept, rtol=1e-15)
    assert feasible_pairs(costs.keep_fraction, HAND_LAYERS).all()


def test_keep_fraction_capped_at_one_and_zero_rate() -> None:
    system = hand_system()
    generous = SystemModel(system.wireless, LatencyConfig(6_250, 781_250.0, t_max_s=10.0), system.devices)
    state = ChannelState(gains=np.array([3.0, 0.0]) * NOISE_W, interference_w=np.array([0.0, 2.0]) * NOISE_W)
    costs = generous.pair_costs(state)
    np.testing.assert_array_equal(costs.keep_fraction[0], [1.0, 1.0])
    # Gain 0: rate 0, upload time infinite, kappa 0, infeasible.
    np.testing.assert_array_equal(costs.upload_full_s[1], [np.inf, np.inf])
    np.testing.assert_array_equal(costs.keep_fraction[1], [0.0, 0.0])
    assert not feasible_pairs(costs.keep_fraction, HAND_LAYERS)[1].any()


def test_infeasible_when_a_layer_would_be_empty() -> None:
    # A 1-region layer keeps floor(kappa) = 0 regions whenever kappa < 1.
    costs = hand_system().pair_costs(hand_state())
    assert not feasible_pairs(costs.keep_fraction, [1, 10]).any()
    # A layer of 2 regions keeps floor(2 kappa): 1 for kappa = 0.577, so the pair stays feasible.
    assert feasible_pairs(costs.keep_fraction, [2, 10]).all()


def test_round_latency_is_slowest_device() -> None:
    assert round_latency(np.array([0.01, 0.05]), np.array([0.04, 0.01])) == pytest.approx(0.06)
    assert round_latency(np.zeros(0), np.zeros(0)) == 0.0


def test_paper_presets() -> None:
    cnn = paper_latency_config("cnn")
    vgg = paper_latency_config("vgg11")
    assert (cnn.num_params, cnn.flops_per_sample, cnn.t_max_s) == (36_758, 782_816.0, 0.1)
    assert (vgg.num_params, vgg.flops_per_sample, vgg.t_max_s) == (9_287_434, 362_285_568.0, 20.0)
    assert (cnn.local_steps, cnn.batch_size, cnn.bits_per_param) == (8, 64, 32)
    assert paper_latency_config("cnn", t_max_s=0.2).t_max_s == 0.2


# ---------------------------------------------------------------- device profiles
def test_simulated_profile_depends_only_on_seed_and_index() -> None:
    small = WirelessConfig(num_devices=3)
    large = WirelessConfig(num_devices=500)
    assert simulated_device_profile(2, seed=7, cfg=small) == simulated_device_profile(2, seed=7, cfg=large)
    assert simulated_device_profile(2, seed=7, cfg=small) != simulated_device_profile(2, seed=8, cfg=small)
    population = DevicePopulation.simulated(large, seed=7)
    assert population.cpu_hz[2] == simulated_device_profile(2, 7, small).cpu_hz


def test_simulated_population_matches_table_one() -> None:
    cfg = WirelessConfig(num_devices=2000)
    population = DevicePopulation.simulated(cfg, seed=0)
    assert set(np.unique(population.cpu_hz)) == {0.85e9, 1.12e9, 1.2e9, 1.3e9}
    assert np.all(population.flops_per_cycle == 4.0)
    np.testing.assert_allclose(population.tx_power_w, 1.0, rtol=1e-15)
    assert population.distance_m.min() >= 1.0 and population.distance_m.max() <= 500.0
    # Uniform in area: P(d <= 250 m) = 1/4 (up to the 1 m inner radius); 2000 samples -> sd 0.01.
    assert abs(np.mean(population.distance_m <= 250.0) - 0.25) < 0.05


def test_profile_position_matches_distance() -> None:
    profile = simulated_device_profile(0, seed=3, cfg=WirelessConfig())
    assert profile.position_m is not None
    assert math.hypot(*profile.position_m) == pytest.approx(profile.distance_m, rel=1e-12)


def test_population_from_measured_profiles() -> None:
    measured = [DeviceProfile(cpu_hz=1.5e9, flops_per_cycle=8.0, tx_power_w=0.2, distance_m=42.0)]
    population = DevicePopulation.from_profiles(measured)
    assert population.num_devices == 1 and population.flops_per_cycle[0] == 8.0


# ---------------------------------------------------------------- channels
def test_rayleigh_channel_seeded_and_repeatable() -> None:
    cfg = WirelessConfig(num_devices=20, num_rbs=4)
    distance = DevicePopulation.simulated(cfg, seed=0).distance_m
    a = RayleighChannel(cfg, distance, seed=11)
    b = RayleighChannel(cfg, distance, seed=11)
    c = RayleighChannel(cfg, distance, seed=12)
    a5 = a.observe(5)
    np.testing.assert_array_equal(a5.gains, b.observe(5).gains)
    np.testing.assert_array_equal(a5.interference_w, b.observe(5).interference_w)
    assert not np.array_equal(a5.gains, c.observe(5).gains)
    assert not np.array_equal(a5.interference_w, c.observe(5).interference_w)
    # A round's channel does not depend on what was observed before it.
    a.observe(6)
    np.testing.assert_array_equal(a.observe(5).gains, a5.gains)
    assert not np.array_equal(a.observe(6).gains, a5.gains)


def test_rayleigh_channel_statistics() -> None:
    cfg = WirelessConfig(num_devices=4000, num_rbs=50)
    distance = np.full(cfg.num_devices, 100.0)
    state = RayleighChannel(cfg, distance, seed=0).observe(0)
    rho = state.gains / (1e-3 * 100.0**-2)
    assert abs(rho.mean() - 1.0) < 0.06  # Exp(1): mean 1, sd of the mean 1/sqrt(4000)
    ratio = state.interference_w / cfg.noise_power_w
    assert ratio.min() >= 1e2 and ratio.max() <= 1e5


def test_fixed_interference_option() -> None:
    cfg = WirelessConfig(num_devices=3, num_rbs=4, redraw_interference=False)
    channel = RayleighChannel(cfg, np.full(3, 50.0), seed=1)
    np.testing.assert_array_equal(channel.observe(0).interference_w, channel.observe(9).interference_w)
    redraw = RayleighChannel(WirelessConfig(num_devices=3, num_rbs=4), np.full(3, 50.0), seed=1)
    assert not np.array_equal(redraw.observe(0).interference_w, redraw.observe(9).interference_w)


def test_measured_channel() -> None:
    channel = MeasuredChannel(num_devices=3, num_rbs=2)
    channel.report_gain(4, device_id=0, gain=1e-9)
    channel.report_gain(4, device_id=2, gain=2e-9)
    with pytest.raises(LookupError):
        channel.observe(4)
    channel.report_interference(4, [1e-13, 2e-13])
    state = channel.observe(4)
    np.testing.assert_array_equal(state.gains, [1e-9, 0.0, 2e-9])  # device 1 did not report
    np.testing.assert_array_equal(state.interference_w, [1e-13, 2e-13])
    with_default = MeasuredChannel(num_devices=1, num_rbs=2, default_interference_w=[0.0, 1e-13])
    np.testing.assert_array_equal(with_default.observe(0).gains, [0.0])
    with pytest.raises(ValueError):
        channel.report_gain(5, device_id=3, gain=1.0)
    with pytest.raises(ValueError):
        channel.report_gain(5, device_id=0, gain=-1.0)
    with pytest.raises(ValueError):
        channel.report_interference(5, [1.0])


def test_channel_state_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        ChannelState(gains=np.array([-1.0]), interference_w=np.array([0.0]))
    with pytest.raises(ValueError):
        ChannelState(gains=np.array([np.nan]), interference_w=np.array([0.0]))
    with pytest.raises(ValueError):
        ChannelState(gains=np.ones((2, 2)), interference_w=np.array([0.0]))


def test_system_rejects_mismatched_state() -> None:
    with pytest.raises(ValueError, match="channel state"):
        hand_system().rates(ChannelState(gains=np.ones(3), interference_w=np.zeros(2)))
