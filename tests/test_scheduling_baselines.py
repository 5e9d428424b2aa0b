"""Scheduling baselines and the registry: constraints, documented rules, seeding, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from amp_fl.pruning.counts import keep_counts
from amp_fl.scheduling import (
    FIXED_RATIO_SELECTIONS,
    FULL_MODEL_SELECTIONS,
    PR_ASSIGNMENTS,
    AmpScheduler,
    AoITable,
    CScheduler,
    FixedRatioScheduler,
    FullModelScheduler,
    PRScheduler,
    RandomScheduler,
    Schedule,
    Scheduler,
    available_schedulers,
    build_scheduler,
    fixed_keep_counts,
    kept_weights,
    register_scheduler,
)
from amp_fl.wireless import (
    ChannelState,
    DevicePopulation,
    RayleighChannel,
    SystemModel,
    WirelessConfig,
    paper_latency_config,
    realised_keep_fraction,
)


def instance(
    seed: int, num_devices: int = 12, num_rbs: int = 4, sizes: tuple[int, ...] = (3, 6, 10), t_max_s: float = 0.12
) -> tuple[SystemModel, ChannelState, AoITable]:
    rng = np.random.default_rng(seed)
    wireless = WirelessConfig(num_devices=num_devices, num_rbs=num_rbs)
    devices = DevicePopulation.simulated(wireless, seed)
    system = SystemModel(wireless, paper_latency_config("cnn", t_max_s=t_max_s), devices)
    state = RayleighChannel(wireless, devices.distance_m, seed).observe(0)
    table = AoITable.from_array(rng.integers(0, 8, (num_devices, sum(sizes))), list(sizes))
    return system, state, table


def assert_basic(schedule: Schedule, system: SystemModel, table: AoITable) -> None:
    """One RB per device, one device per RB, kept indices sorted/unique with the stated counts, weights consistent."""
    assert np.unique(schedule.device_ids).size == schedule.num_scheduled
    assert np.unique(schedule.rb_ids).size == schedule.num_scheduled <= system.num_rbs
    for s in range(schedule.num_scheduled):
        for layer, kept in enumerate(schedule.kept_indices[s]):
            assert kept.size == schedule.keep_counts[s, layer] and np.all(np.diff(kept) > 0)
    np.testing.assert_array_equal(schedule.weights, kept_weights(table, schedule.device_ids, schedule.kept_indices))


def assert_aoi_pruned_at_kappa(schedule: Schedule, system: SystemModel, state: ChannelState, table: AoITable) -> None:
    """Deadline met, counts = floor(kappa I_l) >= 1, the oldest regions kept."""
    costs = system.pair_costs(state)
    assert np.all(schedule.latency_s <= system.latency.t_max_s * (1 + 1e-12))
    np.testing.assert_array_equal(schedule.keep_fraction, costs.keep_fraction[schedule.device_ids, schedule.rb_ids])
    np.testing.assert_array_equal(schedule.keep_counts, keep_counts(schedule.keep_fraction, table.layer_sizes))
    assert np.all(schedule.keep_counts >= 1)
    for s, device in enumerate(schedule.device_ids):
        for layer_ages, kept in zip(table.layers(), schedule.kept_indices[s], strict=True):
            rest = np.setdiff1d(np.arange(layer_ages.shape[1]), kept)
            if rest.size:
                assert layer_ages[device, kept].min() >= layer_ages[device, rest].max()


def feasible_and_keep(system: SystemModel, state: ChannelState, table: AoITable) -> tuple[np.ndarray, np.ndarray]:
    counts = keep_counts(system.pair_costs(state).keep_fraction, table.layer_sizes)
    return counts.min(axis=-1) >= 1, realised_keep_fraction(counts, table.layer_sizes)


# ---------------------------------------------------------------- scheduling baselines (Figs. 6-7)
@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("name", ["pr", "pr_matching", "channel", "random"])
def test_scheduling_baselines_respect_constraints(name: str, seed: int) -> None:
    system, state, table = instance(seed, t_max_s=float(np.random.default_rng(seed).uniform(0.05, 0.2)))
    if name == "pr_matching":
        scheduler = PRScheduler(system, seed, assignment="matching")
    else:
        scheduler = build_scheduler(name, system, seed=seed)
    schedule = scheduler.schedule(0, state, table)
    assert_basic(schedule, system, table)
    assert_aoi_pruned_at_kappa(schedule, system, state, table)
    feasible, _ = feasible_and_keep(system, state, table)
    # Every baseline's assignment is maximal: a free RB and an idle device feasible on it never coexist.
    free_rbs = np.setdiff1d(np.arange(system.num_rbs), schedule.rb_ids)
    idle = np.setdiff1d(np.arange(system.num_devices), schedule.device_ids)
    assert not feasible[np.ix_(idle, free_rbs)].any()


def test_pr_greedy_rule() -> None:
    system, state, table = instance(3)
    feasible, keep = feasible_and_keep(system, state, table)
    schedule = PRScheduler(system, seed=0).schedule(0, state, table)
    # The first pick is the feasible pair with the smallest pruning ratio (largest kept fraction).
    best = np.max(np.where(feasible, keep, -1.0))
    assert np.max(schedule.realised_keep_fraction) == best


@pytest.mark.parametrize("seed", range(10))
def test_pr_matching_is_min_sum_pruning_ratio_among_largest_schedules(seed: int) -> None:
    system, state, table = instance(seed, num_devices=6, num_rbs=3, t_max_s=0.09)
    feasible, keep = feasible_and_keep(system, state, table)
    best_size, best_keep = 0, 0.0
    for size in range(1, 4):
        for rbs in itertools.permutations(range(3), size):
            for devices in itertools.permutations(range(6), size):
                if all(feasible[k, r] for k, r in zip(devices, rbs, strict=True)):
                    total = sum(keep[k, r] for k, r in zip(devices, rbs, strict=True))
                    if (size, total) > (best_size, best_keep):
                        best_size, best_keep = size, total
    schedule = PRScheduler(system, seed, assignment="matching").schedule(0, state, table)
    assert schedule.num_scheduled == best_size
    assert schedule.realised_keep_fraction.sum() == pytest.approx(best_keep, rel=1e-12)


def test_c_scheduling_picks_strongest_devices_and_cleanest_rbs() -> None:
    system, state, table = instance(2, num_devices=15, num_rbs=4, t_max_s=1.0)  # generous: every pair feasible
    feasible, _ = feasible_and_keep(system, state, table)
    assert feasible.all()
    schedule = CScheduler(system, seed=0).schedule(0, state, table)
    strongest = np.sort(np.argsort(-state.gains)[:4])
    np.testing.assert_array_equal(schedule.device_ids, strongest)
    # Visiting devices strongest first, each takes the least-interfered free RB.
    by_gain = schedule.device_ids[np.argsort(-state.gains[schedule.device_ids])]
    rb_of = dict(zip(schedule.device_ids.tolist(), schedule.rb_ids.tolist(), strict=True))
    np.testing.assert_array_equal([rb_of[k] for k in by_gain], np.argsort(state.interference_w))


def test_random_scheduling_is_seeded() -> None:
    system, state, table = instance(4, num_devices=30, num_rbs=5, t_max_s=1.0)
    a = RandomScheduler(system, seed=1).schedule(2, state, table)
    b = RandomScheduler(system, seed=1).schedule(2, state, table)
    np.testing.assert_array_equal(a.device_ids, b.device_ids)
    np.testing.assert_array_equal(a.rb_ids, b.rb_ids)
    picks = {tuple(RandomScheduler(system, seed=s).schedule(2, state, table).device_ids) for s in range(5)}
    assert len(picks) > 1


# ---------------------------------------------------------------- fixed-ratio mode (Figs. 2-5)
def test_fixed_keep_counts() -> None:
    np.testing.assert_array_equal(fixed_keep_counts(0.1, [6, 16, 128]), [5, 14, 115])
    np.testing.assert_array_equal(fixed_keep_counts(0.71, [100]), [29])  # 0.29 * 100 = 28.999... in floats
    np.testing.assert_array_equal(fixed_keep_counts(0.43, [100]), [57])
    np.testing.assert_array_equal(fixed_keep_counts(0.0, [3, 4]), [3, 4])
    with pytest.raises(ValueError, match="^pruning_ratio: 0.9 leaves a layer of 6 regions empty"):
        fixed_keep_counts(0.9, [6, 16])


@pytest.mark.parametrize("selection", ["aoi", "random"])
def test_fixed_ratio_schedules_exactly_s_devices(selection: str) -> None:
    system, state, table = instance(5, num_devices=20, num_rbs=6, sizes=(6, 16, 128))
    scheduler = FixedRatioScheduler(system, 0, pruning_ratio=0.1, num_scheduled=5, selection=selection)
    schedule = scheduler.schedule(0, state, table)
    assert_basic(schedule, system, table)
    assert schedule.num_scheduled == 5
    assert np.all(schedule.keep_counts == [5, 14, 115])
    np.testing.assert_allclose(schedule.keep_fraction, 0.9)
    np.testing.assert_allclose(schedule.pruning_ratio, 1 - 134 / 150)


def test_fixed_ratio_aoi_selection_takes_largest_weights() -> None:
    system, state, table = instance(6, num_devices=20, num_rbs=6, sizes=(6, 16, 128))
    schedule = FixedRatioScheduler(system, 0, pruning_ratio=0.3, num_scheduled=4).schedule(0, state, table)
    counts = fixed_keep_counts(0.3, table.layer_sizes)
    omega = np.zeros(20, dtype=np.int64)
    for layer, c in zip(table.layers(), counts, strict=True):
        for k in range(20):
            omega[k] += sum((a + 1) ** 2 for a in sorted(layer[k].tolist(), reverse=True)[:c])
    others = np.setdiff1d(np.arange(20), schedule.device_ids)
    assert omega[schedule.device_ids].min() >= omega[others].max()
    np.testing.assert_array_equal(schedule.weights, omega[schedule.device_ids])


def test_fixed_ratio_random_is_seeded_and_aoi_breaks_ties_by_seed() -> None:
    system, state, _ = instance(7, num_devices=40, num_rbs=5)
    table = AoITable(40, [3, 6, 10])  # all equal: the AoI pick is a seeded tie-break
    for selection in ("aoi", "random"):
        a = FixedRatioScheduler(system, 3, 0.2, 5, selection).schedule(1, state, table)
        b = FixedRatioScheduler(system, 3, 0.2, 5, selection).schedule(1, state, table)
        np.testing.assert_array_equal(a.device_ids, b.device_ids)
        picks = {
            tuple(FixedRatioScheduler(system, s, 0.2, 5, selection).schedule(1, state, table).device_ids)
            for s in range(4)
        }
        assert len(picks) > 1


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        ({"pruning_ratio": 1.0, "num_scheduled": 2}, "pruning_ratio"),
        ({"pruning_ratio": -0.1, "num_scheduled": 2}, "pruning_ratio"),
        ({"pruning_ratio": 0.1, "num_scheduled": 0}, "num_scheduled"),
        ({"pruning_ratio": 0.1, "num_scheduled": 5}, "num_scheduled"),  # more than R = 4
        ({"pruning_ratio": 0.1, "num_scheduled": 2, "selection": "best"}, "selection"),
    ],
)
def test_fixed_ratio_option_errors(options: dict[str, object], parameter: str) -> None:
    system, _, _ = instance(0)
    with pytest.raises(ValueError, match=f"^{parameter}: "):
        build_scheduler("fixed_ratio", system, seed=0, **options)


# ---------------------------------------------------------------- full model (Synchronous FL, Figs. 8-9)
def test_full_model_max_sum_rate() -> None:
    system, state, table = instance(8, num_devices=6, num_rbs=3)
    rates = system.rates(state)
    best = max(
        sum(rates[k, r] for k, r in zip(devices, range(3), strict=True))
        for devices in itertools.permutations(range(6), 3)
    )
    schedule = FullModelScheduler(system, seed=0).schedule(0, state, table)
    assert_basic(schedule, system, table)
    assert rates[schedule.device_ids, schedule.rb_ids].sum() == pytest.approx(best, rel=1e-12)
    assert np.all(schedule.keep_counts == table.layer_sizes) and np.all(schedule.keep_fraction == 1.0)
    for kept in schedule.kept_indices:
        for layer, indices in enumerate(kept):
            np.testing.assert_array_equal(indices, np.arange(table.layer_sizes[layer]))
    costs = system.pair_costs(state)
    full_latency = costs.compute_full_s[schedule.device_ids] + costs.upload_full_s[schedule.device_ids, schedule.rb_ids]
    np.testing.assert_allclose(schedule.latency_s, full_latency, rtol=1e-12)
    assert schedule.round_latency_s == schedule.latency_s.max()
    assert schedule.objective == int(((table.ages[schedule.device_ids].astype(np.int64) + 1) ** 2).sum())


def test_full_model_deadline_drops_late_devices() -> None:
    system, state, table = instance(9, num_devices=10, num_rbs=4)
    full = FullModelScheduler(system, seed=0).schedule(0, state, table)
    deadline = float(np.median(full.latency_s))
    cut = FullModelScheduler(system, seed=0, deadline_s=deadline).schedule(0, state, table)
    late = full.device_ids[full.latency_s > deadline]
    np.testing.assert_array_equal(cut.dropped_device_ids, late)
    np.testing.assert_array_equal(cut.device_ids, full.device_ids[full.latency_s <= deadline])
    assert cut.round_latency_s == deadline and np.all(cut.latency_s <= deadline)
    # Dropped devices' ages are not reset.
    table.update(cut.device_ids, cut.kept_indices)
    assert np.all(table.ages[late] >= 1)


def test_full_model_random_selection() -> None:
    system, state, table = instance(10, num_devices=30, num_rbs=5)
    a = FullModelScheduler(system, seed=1, selection="random").schedule(0, state, table)
    b = FullModelScheduler(system, seed=1, selection="random").schedule(0, state, table)
    assert a.num_scheduled == 5
    assert_basic(a, system, table)
    np.testing.assert_array_equal(a.device_ids, b.device_ids)
    np.testing.assert_array_equal(a.rb_ids, b.rb_ids)


def test_full_model_option_errors() -> None:
    system, _, _ = instance(0)
    for options, parameter in (
        ({"selection": "fast"}, "selection"),
        ({"deadline_s": 0.0}, "deadline_s"),
    ):
        with pytest.raises(ValueError, match=f"^{parameter}: "):
            build_scheduler("full_model", system, seed=0, **options)


# ---------------------------------------------------------------- registry
SCHEDULERS = ["amp", "channel", "fixed_ratio", "full_model", "levels", "paper_route", "pr", "random"]


def test_registry_builds_every_scheduler() -> None:
    system, state, table = instance(11)
    assert available_schedulers() == SCHEDULERS
    for name in available_schedulers():
        options = {"pruning_ratio": 0.2, "num_scheduled": 2} if name == "fixed_ratio" else {}
        if name == "levels":
            options = {"levels": (1.0, 0.5)}  # the default 1/4 empties this table's 3-region layer
        scheduler = build_scheduler(name, system, seed=0, **options)
        assert isinstance(scheduler, Scheduler) and scheduler.name == name
        assert_basic(scheduler.schedule(0, state, table), system, table)


def test_registry_errors() -> None:
    system, _, _ = instance(0)
    with pytest.raises(ValueError, match="^unknown scheduler 'fedcs'; choose from amp, channel"):
        build_scheduler("fedcs", system, seed=0)
    with pytest.raises(ValueError, match="^unknown scheduler option 'pruning_ratio' for 'amp'; accepted: none$"):
        build_scheduler("amp", system, seed=0, pruning_ratio=0.1)
    with pytest.raises(ValueError, match="^unknown scheduler option 'foo' for 'pr'; accepted: assignment$"):
        build_scheduler("pr", system, seed=0, foo=1)
    with pytest.raises(ValueError, match="^scheduler 'fixed_ratio' needs option 'pruning_ratio'"):
        build_scheduler("fixed_ratio", system, seed=0, num_scheduled=2)
    with pytest.raises(ValueError, match="^assignment: must be one of"):
        build_scheduler("pr", system, seed=0, assignment="hungarian")
    with pytest.raises(ValueError, match="^seed: must be a non-negative integer"):
        build_scheduler("amp", system, seed=-1)


def test_register_scheduler_by_class_name() -> None:
    class Duplicate(PRScheduler):
        name = "amp"

    with pytest.raises(ValueError, match="'amp' is already registered"):
        register_scheduler(Duplicate)
    with pytest.raises(TypeError, match="needs a non-empty class attribute 'name'"):
        register_scheduler(Scheduler)
    assert available_schedulers() == SCHEDULERS
    assert issubclass(AmpScheduler, Scheduler)
    with pytest.raises(TypeError):
        Scheduler(instance(0)[0], 0)  # abstract: schedule() is not implemented


def test_option_choices_are_exported_for_config_validation() -> None:
    assert FIXED_RATIO_SELECTIONS == ("aoi", "random")
    assert FULL_MODEL_SELECTIONS == ("rate", "random")
    assert PR_ASSIGNMENTS == ("greedy", "matching")
