"""AMP-FL scheduler (Algorithms 1-2): hand case, brute-force optimality, P4 agreement, invariants, seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from amp_fl.pruning.policies.aoi import tie_break_jitter, top_aoi_indices
from amp_fl.scheduling import (
    AmpScheduler,
    AoITable,
    PaperRouteScheduler,
    Schedule,
    aoi_weight_matrix,
    kept_weights,
    max_weight_matching,
    solve_p4,
    top_square_sums,
)
from amp_fl.wireless import (
    ChannelState,
    DevicePopulation,
    LatencyConfig,
    RayleighChannel,
    SystemModel,
    WirelessConfig,
    paper_latency_config,
)

NOISE_W = 1e6 * 10 ** (-20.4)
FLOOR_SLACK = 1e-9  # the documented rounding of Eq. (16)'s counts (amp_fl.pruning.counts.keep_counts)


# ---------------------------------------------------------------- helpers
def random_instance(
    seed: int, num_devices: int, num_rbs: int, layer_sizes: list[int], max_age: int = 6
) -> tuple[SystemModel, ChannelState, AoITable]:
    """Simulated devices and channel, a deadline that leaves some pairs infeasible, small ages (many ties)."""
    rng = np.random.default_rng(seed)
    wireless = WirelessConfig(num_devices=num_devices, num_rbs=num_rbs)
    devices = DevicePopulation.simulated(wireless, seed)
    system = SystemModel(wireless, paper_latency_config("cnn", t_max_s=float(rng.uniform(0.03, 0.3))), devices)
    state = RayleighChannel(wireless, devices.distance_m, seed).observe(int(rng.integers(100)))
    table = AoITable.from_array(rng.integers(0, max_age + 1, (num_devices, sum(layer_sizes))), layer_sizes)
    return system, state, table


def reference_omega(kappa: np.ndarray, table: AoITable) -> np.ndarray:
    """Eq. (18) straight from its definition, in plain Python: sort, keep floor(kappa I_l), sum (tau+1)^2."""
    num_devices, num_rbs = kappa.shape
    omega = np.zeros((num_devices, num_rbs), dtype=np.int64)
    for k in range(num_devices):
        for r in range(num_rbs):
            counts = [math.floor(kappa[k, r] * size + FLOOR_SLACK) for size in table.layer_sizes]
            if min(counts) == 0:
                continue
            for layer, c in zip(table.layers(), counts, strict=True):
                omega[k, r] += sum((a + 1) ** 2 for a in sorted(layer[k].tolist(), reverse=True)[:c])
    return omega


def brute_force_best(weights: np.ndarray) -> int:
    """Best total weight over every partial injective assignment of RBs to devices."""
    num_devices, num_rbs = weights.shape
    best = 0
    used = [False] * num_devices

    def visit(rb: int, total: int) -> None:
        nonlocal best
        if rb == num_rbs:
            best = max(best, total)
            return
        visit(rb + 1, total)  # RB left empty
        for k in range(num_devices):
            if not used[k] and weights[k, rb] > 0:
                used[k] = True
                visit(rb + 1, total + int(weights[k, rb]))
                used[k] = False

    visit(0, 0)
    return best


def assert_valid(schedule: Schedule, system: SystemModel, state: ChannelState, table: AoITable) -> None:
    """Constraints Eqs. (8a)-(8d), keep counts from Eq. (16), top-AoI kept regions, consistent weights."""
    costs = system.pair_costs(state)
    devices, rbs = schedule.device_ids, schedule.rb_ids
    assert np.unique(devices).size == devices.size  # Eq. (8b): one RB per device
    assert np.unique(rbs).size == rbs.size  # Eq. (8c): one device per RB
    assert np.all((rbs >= 0) & (rbs < system.num_rbs)) and np.all(np.diff(devices) > 0)
    # Eq. (8a): compute + upload at the realised pruning ratio within T_max.
    assert np.all(schedule.latency_s <= system.latency.t_max_s * (1 + 1e-12))
    if devices.size:
        assert schedule.round_latency_s == pytest.approx(schedule.latency_s.max(), rel=1e-15)
    np.testing.assert_array_equal(schedule.keep_fraction, costs.keep_fraction[devices, rbs])
    expected_counts = np.floor(schedule.keep_fraction[:, None] * np.array(table.layer_sizes) + FLOOR_SLACK)
    np.testing.assert_array_equal(schedule.keep_counts, expected_counts.astype(int))
    assert np.all(schedule.keep_counts >= 1)
    for s, device in enumerate(devices):
        for layer, (layer_ages, kept) in enumerate(zip(table.layers(), schedule.kept_indices[s], strict=True)):
            assert kept.size == schedule.keep_counts[s, layer]
            assert np.all(np.diff(kept) > 0)
            dropped = np.setdiff1d(np.arange(layer_ages.shape[1]), kept)
            if kept.size and dropped.size:
                assert layer_ages[device, kept].min() >= layer_ages[device, dropped].max()  # Algorithm 1: oldest kept
    np.testing.assert_array_equal(schedule.weights, kept_weights(table, devices, schedule.kept_indices))
    assert schedule.objective == int(schedule.weights.sum())
    assert np.all(schedule.weights > 0)


# ---------------------------------------------------------------- the hand-built 2 x 2 case
def hand_case() -> tuple[SystemModel, ChannelState, AoITable]:
    # Same radio and devices as tests/test_wireless_model.py: kappa counts on layers [4, 10]
    # are (0,0) [2, 7], (0,1) [2, 5], (1,0) [3, 9], (1,1) [3, 8].
    wireless = WirelessConfig(num_devices=2, num_rbs=2)
    devices = DevicePopulation(
        np.array([1e9, 2e9]), np.array([4.0, 4.0]), np.array([1.0, 1.0]), np.array([100.0, 200.0])
    )
    system = SystemModel(wireless, LatencyConfig(num_params=6_250, flops_per_sample=781_250.0, t_max_s=0.1), devices)
    state = ChannelState(gains=np.array([3.0, 9.0]) * NOISE_W, interference_w=np.array([0.0, 2.0]) * NOISE_W)
    ages = np.array(
        [
            [5, 0, 3, 3, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            [1, 1, 1, 1, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6],
        ]
    )
    return system, state, AoITable.from_array(ages, [4, 10])


def test_hand_case_weights_and_matching() -> None:
    system, state, table = hand_case()
    costs = system.pair_costs(state)
    # Omega (Eq. (18)), sum of (tau + 1)^2 over the kept oldest regions:
    # (0,0): layer 0 top 2 {5, 3} -> 36 + 16 = 52; layer 1 top 7 {9..3} -> 100+81+64+49+36+25+16 = 371 -> 423
    # (0,1): 52 + top 5 {9..5} -> 100+81+64+49+36 = 330 -> 382
    # (1,0): 3 * 4 + 9 * 49 = 453      (1,1): 3 * 4 + 8 * 49 = 404
    omega = aoi_weight_matrix(costs.keep_fraction, table.layers())
    np.testing.assert_array_equal(omega, [[423, 382], [453, 404]])
    # Matchings: {(0,0), (1,1)} = 827 < {(0,1), (1,0)} = 835.
    schedule = AmpScheduler(system, seed=0).schedule(0, state, table)
    np.testing.assert_array_equal(schedule.device_ids, [0, 1])
    np.testing.assert_array_equal(schedule.rb_ids, [1, 0])
    assert schedule.objective == 835
    np.testing.assert_array_equal(schedule.weights, [382, 453])
    np.testing.assert_array_equal(schedule.keep_counts, [[2, 5], [3, 9]])
    np.testing.assert_allclose(schedule.keep_fraction, [0.5773502691896257, 0.9525710573034134], rtol=1e-12)
    np.testing.assert_allclose(schedule.realised_keep_fraction, [7 / 14, 12 / 14], rtol=1e-15)
    # Device 0 keeps 7/14 = 1/2: compute 0.1/4 = 0.025 s, upload 0.2/4 = 0.05 s.
    # Device 1 keeps 12/14 = 6/7: compute 0.05 * 36/49, upload (0.2/log2(10)) * 36/49.
    np.testing.assert_allclose(schedule.compute_latency_s, [0.025, 0.036734693877551024], rtol=1e-12)
    np.testing.assert_allclose(schedule.upload_latency_s, [0.05, 0.044232978954707444], rtol=1e-12)
    assert schedule.round_latency_s == pytest.approx(0.08096767283225847, rel=1e-12)
    # Kept regions: device 0's layer 1 keeps its five oldest (indices 5..9); layer 0 keeps region
    # 0 (age 5) and one of the tied regions 2, 3 (age 3).
    kept0 = schedule.kept_for(0)
    np.testing.assert_array_equal(kept0[1], [5, 6, 7, 8, 9])
    assert kept0[0][0] == 0 and kept0[0][1] in (2, 3)
    assert schedule.kept_for(1)[0].size == 3 and schedule.kept_for(1)[1].size == 9
    assert_valid(schedule, system, state, table)


def test_hand_case_paper_route_agrees() -> None:
    system, state, table = hand_case()
    schedule = PaperRouteScheduler(system, seed=0).schedule(0, state, table)
    assert schedule.objective == 835
    np.testing.assert_array_equal(schedule.rb_ids, [1, 0])


# ---------------------------------------------------------------- optimality
@pytest.mark.parametrize("seed", range(150))
def test_objective_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(10_000 + seed)
    num_devices, num_rbs = int(rng.integers(1, 9)), int(rng.integers(1, 5))
    sizes = [int(s) for s in rng.integers(1, 7, size=int(rng.integers(1, 4)))]
    system, state, table = random_instance(seed, num_devices, num_rbs, sizes)
    costs = system.pair_costs(state)
    omega = aoi_weight_matrix(costs.keep_fraction, table.layers())
    np.testing.assert_array_equal(omega, reference_omega(costs.keep_fraction, table))
    schedule = AmpScheduler(system, seed=seed).schedule(3, state, table)
    assert schedule.objective == brute_force_best(omega)
    assert_valid(schedule, system, state, table)


@pytest.mark.parametrize("seed", range(8))
def test_objective_equals_lp_optimum_on_larger_instances(seed: int) -> None:
    rng = np.random.default_rng(20_000 + seed)
    num_devices, num_rbs = int(rng.integers(20, 50)), int(rng.integers(4, 13))
    system, state, table = random_instance(seed, num_devices, num_rbs, [3, 8, 20], max_age=30)
    costs = system.pair_costs(state)
    omega = aoi_weight_matrix(costs.keep_fraction, table.layers())
    _, lp_optimum = solve_p4(omega)
    amp = AmpScheduler(system, seed=seed).schedule(0, state, table)
    paper = PaperRouteScheduler(system, seed=seed).schedule(0, state, table)
    assert amp.objective == paper.objective
    assert amp.objective == pytest.approx(lp_optimum, rel=1e-9, abs=1e-6)
    assert_valid(amp, system, state, table)
    assert_valid(paper, system, state, table)


def test_more_rbs_than_devices_and_nobody_feasible() -> None:
    system, state, table = random_instance(1, 2, 6, [2, 3])
    schedule = AmpScheduler(system, seed=0).schedule(0, state, table)
    assert schedule.objective == brute_force_best(
        aoi_weight_matrix(system.pair_costs(state).keep_fraction, table.layers())
    )
    assert PaperRouteScheduler(system, seed=0).schedule(0, state, table).objective == schedule.objective
    # With an impossible deadline no pair is feasible and nobody is scheduled.
    tight = SystemModel(system.wireless, paper_latency_config("cnn", t_max_s=1e-6), system.devices)
    empty = AmpScheduler(tight, seed=0).schedule(0, state, table)
    assert empty.num_scheduled == 0 and empty.objective == 0 and empty.round_latency_s == 0.0
    assert PaperRouteScheduler(tight, seed=0).schedule(0, state, table).num_scheduled == 0


def test_weight_matrix_with_large_ages_and_infeasible_rows() -> None:
    rng = np.random.default_rng(5)
    table = AoITable.from_array(rng.integers(0, 100_000, (30, 40)), [7, 33])
    kappa = rng.uniform(0.0, 1.0, (30, 5))
    kappa[3] = 0.1  # 0.7 regions of the 7-region layer: infeasible on every RB
    omega = aoi_weight_matrix(kappa, table.layers())
    np.testing.assert_array_equal(omega, reference_omega(kappa, table))
    assert np.all(omega[3] == 0)


@pytest.mark.parametrize("age", [32_766, 32_767, 3_000_000])
def test_top_square_sums_near_int32_limit(age: int) -> None:
    # Two regions of age 32,766: row sum 2 * 32,767^2 = 2,147,352,578 still fits int32; one more
    # round of age does not and the int64 path takes over. Both must be exact.
    ages = np.array([[age, age], [0, age]])
    counts = np.array([[0, 1, 2], [0, 1, 2]])
    square = (age + 1) ** 2
    np.testing.assert_array_equal(top_square_sums(ages, counts), [[0, square, 2 * square], [0, square, square + 1]])


def test_matching_ignores_zero_weight_pairs() -> None:
    devices, rbs = max_weight_matching(np.array([[0, 0], [5, 0], [0, 0]]))
    np.testing.assert_array_equal(devices, [1])
    np.testing.assert_array_equal(rbs, [0])
    devices, _ = max_weight_matching(np.zeros((3, 2), dtype=np.int64))
    assert devices.size == 0


# ---------------------------------------------------------------- tie rule and seeding
def test_top_aoi_indices_of_one_device_equal_its_row_of_a_batch() -> None:
    """Algorithm 1 in a batch gives each device what a batch of one (the policy's call) gives it."""
    table = AoITable.from_array(np.random.default_rng(0).integers(0, 3, (6, 30)), [5, 10, 15])
    devices = np.array([4, 0, 2])
    counts = np.array([[2, 7, 4], [5, 1, 15], [0, 10, 3]])
    batch = top_aoi_indices(
        [layer[devices] for layer in table.layers()], counts, tie_break_jitter(3, 9, devices, table.num_regions)
    )
    for s, device in enumerate(devices):
        (alone,) = top_aoi_indices(
            [layer[device : device + 1] for layer in table.layers()],
            counts[s : s + 1],
            tie_break_jitter(3, 9, [device], table.num_regions),
        )
        for layer, (a, b) in enumerate(zip(batch[s], alone, strict=True)):
            np.testing.assert_array_equal(a, b)
            assert a.size == counts[s, layer] and np.all(np.diff(a) > 0)
            rest = np.setdiff1d(np.arange(table.layer_sizes[layer]), a)
            if a.size and rest.size:
                assert table.layer(layer)[device, a].min() >= table.layer(layer)[device, rest].max()


def test_tie_break_jitter_is_per_device_in_layer_order() -> None:
    """Row s is the device's own generator, (seed, round, device), drawn for all layers at once."""
    jitter = tie_break_jitter(5, 2, [7, 1], 12)
    for row, device in zip(jitter, [7, 1], strict=True):
        rng = np.random.default_rng(np.random.SeedSequence([5, 2, device]))
        np.testing.assert_array_equal(row, np.concatenate([rng.random(4), rng.random(8)]))
    np.testing.assert_array_equal(tie_break_jitter(5, 2, [1], 12)[0], jitter[1])
    assert not np.array_equal(tie_break_jitter(5, 3, [1], 12), jitter[1:])


def test_top_aoi_indices_rejects_bad_counts_and_keeps_ties_deterministic() -> None:
    ages = [np.array([[1, 1, 1, 0]])]
    with pytest.raises(ValueError, match="keep_counts"):
        top_aoi_indices(ages, [[5]], np.zeros((1, 4)))
    with pytest.raises(ValueError, match="jitter"):
        top_aoi_indices(ages, [[1]], np.zeros((1, 3)))
    # Equal priorities at the threshold (equal age and equal jitter): the lower indices are kept.
    (kept,) = top_aoi_indices(ages, [[2]], np.zeros((1, 4)))
    np.testing.assert_array_equal(kept[0], [0, 1])


def test_scheduler_uses_the_per_device_tie_break() -> None:
    system, state, table = random_instance(3, 12, 3, [4, 6])
    schedule = AmpScheduler(system, seed=21).schedule(7, state, table)
    assert schedule.num_scheduled > 0
    jitter = tie_break_jitter(21, 7, schedule.device_ids, table.num_regions)
    rows = [layer[schedule.device_ids] for layer in table.layers()]
    expected = top_aoi_indices(rows, schedule.keep_counts, jitter)
    for ours, theirs in zip(schedule.kept_indices, expected, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a, b)


def test_same_seed_same_schedule_different_seed_different_ties() -> None:
    wireless = WirelessConfig(num_devices=30, num_rbs=5)
    devices = DevicePopulation.simulated(wireless, seed=4)
    system = SystemModel(wireless, paper_latency_config("cnn"), devices)
    table = AoITable(30, [6, 16, 128])  # all ages 0: every kept set is a pure tie-break

    def run(seed: int) -> Schedule:
        state = RayleighChannel(wireless, devices.distance_m, seed=seed).observe(0)
        return AmpScheduler(system, seed=seed).schedule(0, state, table)

    a, b, c = run(1), run(1), run(2)
    for field in ("device_ids", "rb_ids", "keep_counts", "weights", "compute_latency_s", "upload_latency_s"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.objective == b.objective and a.round_latency_s == b.round_latency_s
    for ours, theirs in zip(a.kept_indices, b.kept_indices, strict=True):
        for x, y in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(x, y)
    kept_a = [x for per_device in a.kept_indices for x in per_device]
    kept_c = [x for per_device in c.kept_indices for x in per_device]
    assert not np.array_equal(a.device_ids, c.device_ids) or any(
        not np.array_equal(x, y) for x, y in zip(kept_a, kept_c, strict=True)
    )


def test_schedule_then_update_resets_kept_regions() -> None:
    system, state, table = random_instance(8, 10, 3, [4, 6], max_age=9)
    before = table.ages.copy()
    schedule = AmpScheduler(system, seed=0).schedule(0, state, table)
    table.update(schedule.device_ids, schedule.kept_indices)
    expected = before + 1
    for device, kept in zip(schedule.device_ids, schedule.kept_indices, strict=True):
        expected[device, np.concatenate([kept[0], kept[1] + 4])] = 0
    np.testing.assert_array_equal(table.ages, expected)


def test_rejects_mismatched_inputs() -> None:
    system, state, table = random_instance(0, 5, 2, [3])
    scheduler = AmpScheduler(system, seed=0)
    with pytest.raises(ValueError, match="AoI table"):
        scheduler.schedule(0, state, AoITable(4, [3]))
    with pytest.raises(ValueError, match="channel state"):
        scheduler.schedule(0, ChannelState(np.ones(5), np.zeros(3)), table)
    with pytest.raises(ValueError, match="round"):
        scheduler.schedule(-1, state, table)
