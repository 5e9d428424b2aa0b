"""Pruning policies: exact counts, valid indices, and each policy's own rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from amp_fl.pruning.counts import keep_counts, keep_counts_for_fraction
from amp_fl.pruning.maps import region_map
from amp_fl.pruning.policies import (
    SelectionContext,
    available_policies,
    build_policy,
    device_rng,
    infeasible_layers,
    is_feasible,
    rolling_window,
    tie_break_jitter,
    top_aoi_indices,
)
from amp_fl.pruning.regions import RegionMap


@pytest.fixture(scope="module")
def cnn_map() -> RegionMap:
    return region_map("cnn", (1, 28, 28), 7)


@pytest.fixture(scope="module")
def resnet_map() -> RegionMap:
    return region_map("resnet18", (3, 8, 8), 7)


_ARRAYS: dict[int, list[np.ndarray]] = {}


def random_arrays(rm: RegionMap) -> list[np.ndarray]:
    """Random global arrays, drawn once per map (resnet18 has 11M entries)."""
    if id(rm) not in _ARRAYS:
        rng = np.random.default_rng(0)
        _ARRAYS[id(rm)] = [rng.standard_normal(shape, dtype=np.float32) for shape in rm.shapes]
    return _ARRAYS[id(rm)]


def full_context(rm: RegionMap, seed: int, server_round: int = 3, device_id: int = 11) -> SelectionContext:
    rng = np.random.default_rng(seed)
    ages = [rng.integers(0, 5, size=s) for s in rm.layer_sizes]  # small range: many ties
    return SelectionContext(
        rm, server_round=server_round, device_id=device_id, ages=ages, global_arrays=random_arrays(rm)
    )


def test_registry_lists_every_policy_and_rejects_unknown_names() -> None:
    assert available_policies() == ["aoi", "fedrolex", "importance", "random", "rolling", "static"]
    assert [build_policy(n, seed=1).name for n in available_policies()] == available_policies()
    with pytest.raises(ValueError, match="unknown pruning policy 'fedavg'; available: aoi, fedrolex, importance"):
        build_policy("fedavg")


@pytest.mark.parametrize("name", ["aoi", "importance", "random", "rolling", "static"])
@pytest.mark.parametrize("map_name", ["cnn_map", "resnet_map"])
def test_policies_return_exactly_the_requested_counts(name: str, map_name: str, request: pytest.FixtureRequest) -> None:
    rm: RegionMap = request.getfixturevalue(map_name)
    policy = build_policy(name, seed=4)
    rng = np.random.default_rng(0)
    for trial in range(4):
        counts = [int(rng.integers(1, s + 1)) for s in rm.layer_sizes]
        counts[trial % len(counts)] = 1
        kept = policy.select(counts, full_context(rm, trial, server_round=trial))
        assert [len(k) for k in kept] == counts
        for k, size in zip(kept, rm.layer_sizes, strict=True):
            assert k.dtype == np.int64 and np.all(np.diff(k) > 0) and k[0] >= 0 and k[-1] < size


def test_counts_are_validated(cnn_map: RegionMap) -> None:
    policy = build_policy("static")
    ctx = SelectionContext(cnn_map)
    with pytest.raises(ValueError, match="'features.3' keeps no region: the sub-model is infeasible"):
        policy.select([3, 0, 64], ctx)
    with pytest.raises(ValueError, match=r"'classifier.1' must be in \[1, 128\], got 129"):
        policy.select([3, 8, 129], ctx)
    with pytest.raises(ValueError, match="expected 3 keep counts"):
        policy.select([3, 8], ctx)
    with pytest.raises(ValueError, match="needs the device's AoI"):
        build_policy("aoi").select([3, 8, 64], ctx)
    with pytest.raises(ValueError, match="needs the current global arrays"):
        build_policy("importance").select([3, 8, 64], ctx)
    with pytest.raises(ValueError, match="must be non-negative"):
        SelectionContext(cnn_map, device_id=-1)


def test_aoi_keeps_the_oldest_regions(cnn_map: RegionMap) -> None:
    rng = np.random.default_rng(2)
    ages = [rng.permutation(s) * 3 for s in cnn_map.layer_sizes]  # distinct ages: no ties
    counts = [2, 5, 40]
    kept = build_policy("aoi", seed=0).select(counts, SelectionContext(cnn_map, ages=ages))
    for k, a, c in zip(kept, ages, counts, strict=True):
        np.testing.assert_array_equal(k, np.sort(np.argsort(-a)[:c]))


def test_aoi_breaks_ties_with_the_shared_seeded_rule(cnn_map: RegionMap) -> None:
    ages = [np.array([1, 3, 3, 3, 0, 3]), np.zeros(16, dtype=int), np.arange(128) % 2]
    counts = [2, 4, 60]
    ctx = SelectionContext(cnn_map, server_round=5, device_id=9, ages=ages)
    kept = build_policy("aoi", seed=21).select(counts, ctx)
    # Same picks as Algorithm 1's batched function with the jitter of (seed, round, device),
    # drawn for all groups in group order from the device's own generator.
    jitter = device_rng(21, 5, 9).random(sum(a.size for a in ages))
    np.testing.assert_array_equal(jitter, tie_break_jitter(21, 5, [9], jitter.size)[0])
    (batched,) = top_aoi_indices([a[None] for a in ages], [counts], jitter[None])
    for k, b in zip(kept, batched, strict=True):
        np.testing.assert_array_equal(k, b)
    assert set(kept[0]) < {1, 2, 3, 5}  # the two kept are among the four age-3 regions
    assert np.all(ages[2][kept[2]] == 1)  # 60 of the 64 odd (age-1) neurons
    flat = SelectionContext(cnn_map, server_round=5, device_id=9, ages=np.concatenate(ages))
    for a, b in zip(kept, build_policy("aoi", seed=21).select(counts, flat), strict=True):
        np.testing.assert_array_equal(a, b)
    next_round = SelectionContext(cnn_map, server_round=6, device_id=9, ages=ages)
    other_round = build_policy("aoi", seed=21).select(counts, next_round)
    assert any(not np.array_equal(a, b) for a, b in zip(kept, other_round, strict=True))


def test_importance_keeps_largest_l1_norm_summed_over_coupled_layers(resnet_map: RegionMap) -> None:
    arrays = [np.zeros(shape, dtype=np.float32) for shape in resnet_map.shapes]
    index = {name: i for i, name in enumerate(resnet_map.param_names)}
    # Stream group of stage 1 = conv1 + layer1.0.conv2 + layer1.1.conv2.
    arrays[index["conv1.weight"]][7] = 3.0 / 27  # filter 7: norm 3 in one layer
    arrays[index["conv1.weight"]][2] = 2.0 / 27  # filter 2: norm 2 + 2 = 4 across two layers
    arrays[index["layer1.1.conv2.weight"]][2] = 2.0 / (64 * 9)
    arrays[index["layer1.0.conv2.weight"]][40, 5, 1, 1] = -2.5  # filter 40: |-2.5| in one kernel entry
    arrays[index["bn1.weight"]][:] = 100.0  # BatchNorm parameters do not count
    counts = [3] + [1] * (len(resnet_map.groups) - 1)
    ctx = SelectionContext(resnet_map, global_arrays=arrays)
    kept = build_policy("importance").select(counts, ctx)
    np.testing.assert_array_equal(kept[0], [2, 7, 40])
    assert build_policy("importance").select([2, *counts[1:]], ctx)[0].tolist() == [2, 7]
    assert build_policy("importance").select([1, *counts[1:]], ctx)[0].tolist() == [2]
    assert kept[1].tolist() == [0]  # all-zero group: ties go to the lowest index


def test_importance_of_fc_neuron_uses_its_input_weights(cnn_map: RegionMap) -> None:
    arrays = [np.ones(shape, dtype=np.float32) for shape in cnn_map.shapes]
    fc1 = cnn_map.param_names.index("classifier.1.weight")
    arrays[fc1][[9, 90]] *= 2.0  # rows = neurons' input weights
    arrays[cnn_map.param_names.index("classifier.3.weight")][:, 5] = 50.0  # outgoing weights do not count
    kept = build_policy("importance").select([6, 16, 2], SelectionContext(cnn_map, global_arrays=arrays))
    assert kept[2].tolist() == [9, 90]


def test_static_keeps_the_first_regions(resnet_map: RegionMap) -> None:
    counts = [1 + g for g in range(len(resnet_map.groups))]
    kept = build_policy("static").select(counts, SelectionContext(resnet_map, server_round=9))
    assert [k.tolist() for k in kept] == [list(range(c)) for c in counts]


@pytest.mark.parametrize(("size", "count"), [(6, 1), (6, 4), (16, 3), (128, 64), (128, 50), (512, 511), (7, 7)])
def test_rolling_covers_every_region_within_ceil_rounds(size: int, count: int) -> None:
    for first_round in (0, 1, 13):
        rounds = range(first_round, first_round + math.ceil(size / count))
        covered = np.concatenate([rolling_window(size, count, r) for r in rounds])
        assert set(covered.tolist()) == set(range(size))
    assert rolling_window(10, 4, 2).tolist() == [0, 1, 8, 9]  # starts at 8 and wraps around


def test_rolling_policy_moves_its_window(cnn_map: RegionMap) -> None:
    policy = build_policy("rolling")
    picks = [policy.select([3, 8, 32], SelectionContext(cnn_map, server_round=r))[2].tolist() for r in range(4)]
    assert picks == [list(range(32 * r, 32 * r + 32)) for r in range(4)]


def test_random_is_reproducible_per_seed_and_varies_across_seeds_devices_rounds(resnet_map: RegionMap) -> None:
    counts = [s // 2 for s in resnet_map.layer_sizes]

    def picks(seed: int, server_round: int = 1, device_id: int = 0) -> list[list[int]]:
        ctx = SelectionContext(resnet_map, server_round=server_round, device_id=device_id)
        return [k.tolist() for k in build_policy("random", seed=seed).select(counts, ctx)]

    assert picks(3) == picks(3)
    assert picks(3) != picks(4)
    assert picks(3, device_id=1) != picks(3, device_id=2)
    assert picks(3, server_round=1) != picks(3, server_round=2)
    # Asking for other devices first does not change a device's picks.
    policy = build_policy("random", seed=3)
    for device in (5, 6, 7):
        policy.select(counts, SelectionContext(resnet_map, server_round=1, device_id=device))
    assert [k.tolist() for k in policy.select(counts, SelectionContext(resnet_map, server_round=1))] == picks(3)


def test_keep_counts_floor_and_flag_zero_layers() -> None:
    assert keep_counts_for_fraction([6, 16, 128], 0.5) == [3, 8, 64]
    assert keep_counts_for_fraction([6, 16, 128], 0.1) == [0, 1, 12]
    assert keep_counts_for_fraction([100], 0.29) == [29]  # 0.29 * 100 = 28.999999999999996 in floats
    assert keep_counts_for_fraction([6, 16, 128], 1.0) == [6, 16, 128]
    assert infeasible_layers(keep_counts_for_fraction([6, 16, 128], 0.1)) == [0]
    assert not is_feasible([0, 1, 12]) and is_feasible([1, 1, 1])
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"^kappa: keep fractions must be in \[0, 1\]"):
            keep_counts_for_fraction([6], bad)
    with pytest.raises(ValueError, match="^layer_sizes: "):
        keep_counts(0.5, [6, 0])


def test_keep_counts_is_vectorised_over_any_shape_of_kappa() -> None:
    kappa = np.array([[0.5, 0.1], [0.29, 1.0], [0.0, 0.57]])
    counts = keep_counts(kappa, [6, 16, 100])
    assert counts.shape == (3, 2, 3) and counts.dtype == np.int64
    for index in np.ndindex(kappa.shape):
        assert counts[index].tolist() == keep_counts_for_fraction([6, 16, 100], float(kappa[index]))
    assert counts[1, 0].tolist() == [1, 4, 29] and counts[2, 1].tolist() == [3, 9, 57]
    assert keep_counts(0.5, [6]).shape == (1,)
