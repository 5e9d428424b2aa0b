"""The ``aoi`` pruning policy, called per device by the strategy, keeps exactly what every scheduler chose.

Algorithm 1's tie-break jitter derives from (seed, round, device) alone, so a scheduler's batched
choice and ``AoIPolicy(seed).select(keep_counts[s], ctx)`` for one device agree region for region,
even when most ages are tied.
"""

from __future__ import annotations

import numpy as np
import pytest

from amp_fl.pruning.maps import region_map
from amp_fl.pruning.policies import SelectionContext, build_policy
from amp_fl.pruning.regions import RegionMap
from amp_fl.scheduling import AoITable, Schedule, build_scheduler
from amp_fl.wireless import DevicePopulation, RayleighChannel, SystemModel, WirelessConfig, paper_latency_config

VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "amp": ("amp", {}),
    "pr": ("pr", {}),
    "pr_matching": ("pr", {"assignment": "matching"}),
    "channel": ("channel", {}),
    "random": ("random", {}),
    "fixed_ratio": ("fixed_ratio", {"pruning_ratio": 0.3, "num_scheduled": 4}),
    "fixed_ratio_random": ("fixed_ratio", {"pruning_ratio": 0.5, "num_scheduled": 3, "selection": "random"}),
    "paper_route": ("paper_route", {}),
    "full_model": ("full_model", {}),
}


@pytest.fixture(scope="module")
def cnn_map() -> RegionMap:
    return region_map("cnn", (1, 28, 28), 10)  # groups of 6, 16 and 128 regions


def policy_kept(seed: int, schedule: Schedule, table: AoITable, regions: RegionMap) -> list[list[np.ndarray]]:
    """What the strategy's uniform call returns for every scheduled device."""
    policy = build_policy("aoi", seed)
    kept = []
    for row, device in enumerate(int(d) for d in schedule.device_ids):
        ctx = SelectionContext(
            regions,
            server_round=schedule.round,
            device_id=device,
            ages=[layer[device].copy() for layer in table.layers()],
        )
        kept.append(list(policy.select([int(c) for c in schedule.keep_counts[row]], ctx)))
    return kept


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_aoi_policy_reproduces_every_schedulers_kept_indices(variant: str, seed: int, cnn_map: RegionMap) -> None:
    rng = np.random.default_rng(seed)
    wireless = WirelessConfig(num_devices=16, num_rbs=5)
    devices = DevicePopulation.simulated(wireless, seed)
    system = SystemModel(wireless, paper_latency_config("cnn", t_max_s=0.1), devices)
    state = RayleighChannel(wireless, devices.distance_m, seed).observe(2)
    # Ages 0..2: most regions of a layer share their age with many others, so ties decide.
    table = AoITable.from_array(rng.integers(0, 3, (16, cnn_map.num_regions)), cnn_map.layer_sizes)
    server_round = int(rng.integers(1, 50))
    name, options = VARIANTS[variant]
    schedule = build_scheduler(name, system, seed=seed, **options).schedule(server_round, state, table)
    assert schedule.num_scheduled > 0
    if name != "full_model":  # sub-models keep part of every layer, so the tie-break matters
        assert np.all(schedule.keep_counts < np.array(cnn_map.layer_sizes))
    by_policy = policy_kept(seed, schedule, table, cnn_map)
    for device, ours, theirs in zip(schedule.device_ids, schedule.kept_indices, by_policy, strict=True):
        assert len(ours) == len(theirs) == len(cnn_map.layer_sizes)
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"{variant}: device {device}, round {server_round}")


def test_agreement_is_not_trivial(cnn_map: RegionMap) -> None:
    """With another seed the policy picks other regions among the ties: the agreement is the shared rule."""
    wireless = WirelessConfig(num_devices=16, num_rbs=5)
    devices = DevicePopulation.simulated(wireless, 0)
    system = SystemModel(wireless, paper_latency_config("cnn", t_max_s=0.1), devices)
    state = RayleighChannel(wireless, devices.distance_m, 0).observe(2)
    table = AoITable(16, cnn_map.layer_sizes)  # all ages 0: every kept set is a pure tie-break
    schedule = build_scheduler("amp", system, seed=0).schedule(1, state, table)
    assert schedule.num_scheduled > 0 and np.any(schedule.keep_counts < np.array(cnn_map.layer_sizes))
    np.testing.assert_array_equal(
        np.concatenate([np.concatenate(k) for k in policy_kept(0, schedule, table, cnn_map)]),
        np.concatenate([np.concatenate(k) for k in schedule.kept_indices]),
    )
    other = policy_kept(1, schedule, table, cnn_map)
    assert any(
        not np.array_equal(a, b)
        for ours, theirs in zip(schedule.kept_indices, other, strict=True)
        for a, b in zip(ours, theirs, strict=True)
    )


def test_aoi_policy_takes_the_schedulers_choice_only_when_its_counts_match(cnn_map: RegionMap) -> None:
    """The strategy hands ``aoi`` the scheduler's regions (the agreement above makes them the same), no others."""
    ages = np.zeros(cnn_map.num_regions, dtype=np.int64)
    policy = build_policy("aoi", 3)
    counts = [3, 8, 64]
    scheduled = tuple(np.arange(c, dtype=np.int64) for c in counts)
    ctx = SelectionContext(cnn_map, server_round=2, device_id=1, ages=ages, scheduled=scheduled)
    assert all(a is b for a, b in zip(policy.select(counts, ctx), scheduled, strict=True))
    # Other counts (a policy asked for another sub-model): computed, as without the scheduler's choice.
    computed = policy.select([2, 8, 64], ctx)
    alone = policy.select([2, 8, 64], SelectionContext(cnn_map, server_round=2, device_id=1, ages=ages))
    for a, b in zip(computed, alone, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(computed[1], scheduled[1])  # the tie-break, not the first indices
    # Other policies ignore it.
    rolled = build_policy("random", 3).select(counts, ctx)
    assert any(not np.array_equal(a, b) for a, b in zip(rolled, scheduled, strict=True))
