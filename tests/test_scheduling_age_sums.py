"""Incremental Omega (sorted-age sums kept across rounds) against from-scratch computation and brute force."""

from __future__ import annotations

import numpy as np
import pytest
from test_scheduling_amp import brute_force_best

from amp_fl.pruning.counts import keep_counts
from amp_fl.scheduling import AmpScheduler, AoITable, aoi_weight_matrix, max_weight_matching, top_square_sums
from amp_fl.scheduling.age_sums import SortedAgeSums
from amp_fl.scheduling.amp import candidate_weights
from amp_fl.wireless import DevicePopulation, RayleighChannel, SystemModel, WirelessConfig, paper_latency_config

LAYER_SIZES = [3, 8, 20]


def random_update(rng: np.random.Generator, table: AoITable, max_devices: int) -> None:
    """One round of Eq. (9) for a random set of devices keeping random regions."""
    devices = rng.choice(table.num_devices, size=int(rng.integers(0, max_devices + 1)), replace=False)
    kept = [tuple(np.flatnonzero(rng.random(size) < rng.random()) for size in table.layer_sizes) for _ in devices]
    table.update(devices, kept)


def from_scratch(table: AoITable, counts: np.ndarray) -> np.ndarray:
    """Omega of every device at ``counts`` (K, m, L), by sorting the table now."""
    return sum(top_square_sums(ages, counts[..., layer]) for layer, ages in enumerate(table.layers()))


def simulated_system(seed: int, num_devices: int, num_rbs: int) -> tuple[SystemModel, RayleighChannel]:
    wireless = WirelessConfig(num_devices=num_devices, num_rbs=num_rbs)
    devices = DevicePopulation.simulated(wireless, seed)
    system = SystemModel(wireless, paper_latency_config("cnn", t_max_s=0.1), devices)
    return system, RayleighChannel(wireless, devices.distance_m, seed)


@pytest.mark.parametrize("seed", range(4))
def test_incremental_sums_equal_from_scratch_over_rounds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    table = AoITable.from_array(rng.integers(0, 40, (30, sum(LAYER_SIZES))), LAYER_SIZES)
    sums = SortedAgeSums(grid_steps=8)
    grid_counts = keep_counts(np.arange(9) / 8, LAYER_SIZES)
    for _ in range(12):
        sums.sync(table)
        counts = np.stack([rng.integers(0, size + 1, (30, 5)) for size in LAYER_SIZES], axis=-1)
        np.testing.assert_array_equal(sums.omega(np.arange(30)[:, None], counts), from_scratch(table, counts))
        every_grid_point = np.broadcast_to(grid_counts, (30, *grid_counts.shape))
        np.testing.assert_array_equal(sums.omega_on_grid(), from_scratch(table, every_grid_point))
        random_update(rng, table, max_devices=6)


def test_sums_move_to_int64_before_int32_overflows() -> None:
    # (age + 1)^2 * 20 regions passes 2^31 - 1 at age 10,362.
    table = AoITable.from_array(np.full((4, sum(LAYER_SIZES)), 10_355), LAYER_SIZES)
    sums = SortedAgeSums(grid_steps=4)
    counts = np.broadcast_to(np.array(LAYER_SIZES), (4, 1, 3))
    for _ in range(10):
        sums.sync(table)
        np.testing.assert_array_equal(sums.omega(np.arange(4)[:, None], counts), from_scratch(table, counts))
        table.update([0], [(np.array([0]), np.array([], dtype=int), np.array([1, 2]))])
    assert sums._p2.dtype == np.int64


@pytest.mark.parametrize("seed", range(6))
def test_bounded_matching_equals_brute_force_over_rounds(seed: int) -> None:
    # K > 2R, so the scheduler rules pairs out by their grid bounds.
    system, channel = simulated_system(seed, num_devices=9, num_rbs=3)
    rng = np.random.default_rng(seed)
    table = AoITable.from_array(rng.integers(0, 8, (9, sum(LAYER_SIZES))), LAYER_SIZES)
    scheduler = AmpScheduler(system, seed)
    for round in range(6):
        state = channel.observe(round)
        omega = aoi_weight_matrix(system.pair_costs(state).keep_fraction, table.layers())
        schedule = scheduler.schedule(round, state, table)
        assert schedule.objective == brute_force_best(omega)
        table.update(schedule.device_ids, schedule.kept_indices)


@pytest.mark.parametrize("seed", range(3))
def test_candidate_rows_keep_the_full_matrix_optimum(seed: int) -> None:
    system, channel = simulated_system(seed, num_devices=400, num_rbs=10)
    rng = np.random.default_rng(seed)
    table = AoITable.from_array(rng.integers(0, 30, (400, sum(LAYER_SIZES))), LAYER_SIZES)
    sums = SortedAgeSums(grid_steps=64)
    for round in range(5):
        kappa = system.pair_costs(channel.observe(round)).keep_fraction
        sums.sync(table)
        rows, weights = candidate_weights(kappa, sums, LAYER_SIZES)
        full = aoi_weight_matrix(kappa, table.layers())
        kept = weights > 0
        np.testing.assert_array_equal(weights[kept], full[rows][kept])
        assert np.all(weights[~kept] <= full[rows][~kept])
        assert rows.size < 400  # the bound did rule devices out
        d, r = max_weight_matching(weights)
        fd, fr = max_weight_matching(full)
        assert weights[d, r].sum() == full[fd, fr].sum()
        random_update(rng, table, max_devices=10)


def test_fresh_scheduler_on_a_loaded_table_schedules_as_the_warm_one() -> None:
    # Resume: the checkpoint holds the ages; a new scheduler rebuilds its sums from them.
    system, channel = simulated_system(3, num_devices=300, num_rbs=8)
    table = AoITable(300, LAYER_SIZES)
    warm = AmpScheduler(system, seed=3)
    for round in range(8):
        state = channel.observe(round)
        schedule = warm.schedule(round, state, table)
        resumed = AmpScheduler(system, seed=3).schedule(round, state, AoITable.from_array(table.ages, LAYER_SIZES))
        for field in ("device_ids", "rb_ids", "keep_counts", "weights", "keep_fraction"):
            np.testing.assert_array_equal(getattr(schedule, field), getattr(resumed, field))
        assert all(
            np.array_equal(x, y)
            for a, b in zip(schedule.kept_indices, resumed.kept_indices, strict=True)
            for x, y in zip(a, b, strict=True)
        )
        assert schedule.num_scheduled > 0
        table.update(schedule.device_ids, schedule.kept_indices)
