"""Issue 9: staleness-aware compensation (scope ``discounted``) against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from test_strategy import LR, SETUP, ScriptedPolicy, ScriptedScheduler, SilentChannel, _kept, _round, scripted_client

from amp_fl.launch.inprocess import FIRST_NODE_ID, InProcessGrid
from amp_fl.pruning.submodel import extract_arrays, scatter_arrays
from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.strategy.aggregation import DeviceUpdate, GradientCache
from amp_fl.strategy.amp_fl import AmpFlSettings, AmpFlStrategy
from amp_fl.strategy.server_optimizer import ServerOptimizerSettings
from amp_fl.strategy.staleness import DiscountedSums, EntryAges, discounted_mean, entry_ages


def _cache(values_and_held):
    cache = GradientCache(len(values_and_held), [(2,)])
    for device, (values, held) in enumerate(values_and_held):
        if values is not None:
            cache.update(DeviceUpdate(device, [np.asarray(values, np.float32)], [np.asarray(held)]))
    return cache


def test_three_devices_by_hand():
    """gamma = 1/2. Device 0: G = [1, 2], ages [0, 2]; device 1: G = [4, 0], ages [1, 0]; device 2 never
    uploaded (G = 0), ages [3, 3].

    entry 0: (1*1 + 0.5*4 + 0.125*0) / (1 + 0.5 + 0.125) = 3 / 1.625 = 24/13
    entry 1: (0.25*2 + 1*0 + 0.125*0) / (0.25 + 1 + 0.125) = 0.5 / 1.375 = 4/11
    """
    cache = _cache([([1, 2], [True, True]), ([4, 0], [True, True]), (None, None)])
    ages = {0: [np.array([0, 2])], 1: [np.array([1, 0])], 2: [np.array([3, 3])]}
    (got,) = discounted_mean(cache, ages.__getitem__, 0.5)
    np.testing.assert_allclose(got, [24 / 13, 4 / 11], rtol=1e-12)


def test_decay_one_is_scope_all_and_old_caches_never_underflow():
    cache = _cache([([1, 2], [True, True]), ([4, 0], [True, False]), (None, None)])
    ages = {0: [np.array([0, 2])], 1: [np.array([1, 0])], 2: [np.array([3, 3])]}
    (got,) = discounted_mean(cache, ages.__getitem__, 1.0)
    np.testing.assert_allclose(got, cache.mean_over_all()[0], rtol=1e-12)
    # Ages of 10^5 rounds: gamma^a underflows, gamma^(a - youngest) does not; same ratio as ages [0, 1].
    old = {0: [np.array([100_000, 100_000])], 1: [np.array([100_001, 100_001])], 2: [np.array([10**6, 10**6])]}
    (got,) = discounted_mean(cache, old.__getitem__, 0.5)
    np.testing.assert_allclose(got, [(1 + 0.5 * 4) / 1.5, 2 / 1.5], rtol=1e-12)


def test_entry_ages_map_regions_to_entries(cnn):
    """conv1 (6) -> conv2 (16) -> fc1 (128, input 16 channels x 4 x 4) -> fc2 (class layer, not pruned)."""
    regions, _ = cnn
    assert regions.layer_sizes == [6, 16, 128]
    ages = np.arange(regions.num_regions) + 5  # region r has age r + 5; the device's age is 5
    a0, a1, a2 = ages[:6], ages[6:22], ages[22:]
    by_name = dict(zip(regions.param_names, entry_ages(regions, ages), strict=True))
    np.testing.assert_array_equal(by_name["features.0.weight"][:, 0, 2, 3], a0)  # out axis only
    np.testing.assert_array_equal(by_name["features.0.bias"], a0)
    # conv2.weight[i, j]: the older of out region i and in region j (here always i's: a1 > a0).
    np.testing.assert_array_equal(by_name["features.3.weight"][:, :, 1, 1], np.maximum.outer(a1, a0))
    # fc1's input feature c*16 + p belongs to conv2 channel c; fc1 regions are older than conv2's.
    fc1 = by_name["classifier.1.weight"]
    assert fc1.shape == (128, 256)
    np.testing.assert_array_equal(fc1[:, 5 * 16 + 7], a2)
    reversed_ages = ages[::-1].copy()  # now conv2's regions are older than fc1's
    fc1_rev = dict(zip(regions.param_names, entry_ages(regions, reversed_ages), strict=True))["classifier.1.weight"]
    oldest = max(reversed_ages[22], reversed_ages[6 + 5])
    np.testing.assert_array_equal(fc1_rev[0, 5 * 16 : 6 * 16], np.full(16, oldest))
    np.testing.assert_array_equal(by_name["classifier.3.weight"][3], a2)  # in axis only
    np.testing.assert_array_equal(by_name["classifier.3.bias"], np.full(10, 5))  # no axis: the device's age


def test_strategy_discounted_round_by_hand(cnn):
    """Round 1: both devices train the full model (values 1 and 3). Round 2: only device 0, a sub-model.

    After round 2's AoI update, device 0's held entries have age 0 and every other entry of either
    device age 1. gamma = 1/2: held entries (1*1 + 0.5*3) / 1.5 = 5/3; the rest (1 + 3) / 2 = 2.
    gamma = 1 gives 2 everywhere, scope ``all``.
    """
    regions, w0 = cnn
    sub = _kept(regions, [[0, 3], [1, 2, 9], list(range(0, 128, 4))])
    full = regions.full_kept()
    plan = {1: [(0, full), (1, full)], 2: [(0, sub)]}
    held = scatter_arrays(extract_arrays(w0, regions, sub), regions, sub, regions.shapes)[1]
    for gamma, fresh, stale in ((0.5, 5 / 3, 2.0), (1.0, 2.0, 2.0)):
        strategy = AmpFlStrategy(
            region_map=regions,
            initial_weights=w0,
            scheduler=ScriptedScheduler(plan),
            channel=SilentChannel(),
            policy=ScriptedPolicy(plan),
            device_nodes={0: FIRST_NODE_ID, 1: FIRST_NODE_ID + 1},
            train_setup=SETUP,
            settings=AmpFlSettings(LR, "discounted", staleness_decay=gamma),
        )
        grid = InProcessGrid(scripted_client({0: 1.0, 1: 3.0}), 2)
        _round(strategy, grid, 1)
        before = [w.copy() for w in strategy.weights]
        _round(strategy, grid, 2)
        for b, a, h in zip(before, strategy.weights, held, strict=True):
            np.testing.assert_allclose((b - a) / LR, np.where(h, fresh, stale), atol=1e-5)


def test_strategy_momentum_on_the_direction(cnn):
    """Two rounds, both devices full model, scope none: d = 2 both rounds; momentum 0.5:
    w2 = w0 - LR * 2 - LR * (0.5 * 2 + 2)."""
    regions, w0 = cnn
    full = regions.full_kept()
    plan = {1: [(0, full), (1, full)], 2: [(0, full), (1, full)]}
    strategy = AmpFlStrategy(
        region_map=regions,
        initial_weights=w0,
        scheduler=ScriptedScheduler(plan),
        channel=SilentChannel(),
        policy=ScriptedPolicy(plan),
        device_nodes={0: FIRST_NODE_ID, 1: FIRST_NODE_ID + 1},
        train_setup=SETUP,
        settings=AmpFlSettings(LR, "none", server=ServerOptimizerSettings("momentum", LR, momentum=0.5)),
    )
    grid = InProcessGrid(scripted_client({0: 1.0, 1: 3.0}), 2)
    _round(strategy, grid, 1)
    _round(strategy, grid, 2)
    for w, start in zip(strategy.weights, w0, strict=True):
        np.testing.assert_allclose(w, start - LR * 2.0 - LR * 3.0, atol=1e-5)
    assert strategy.server_state.step == 2


def test_bad_decay_is_rejected():
    with pytest.raises(ValueError, match="staleness_decay"):
        AmpFlSettings(LR, "discounted", staleness_decay=0.0)


def _random_round(rng, regions, cache, aoi, sums, num_devices):
    """One round of random uploads through the cache, the AoI table and the incremental sums."""
    devices = rng.choice(num_devices, size=rng.integers(0, 3), replace=False)
    kept = [
        [np.sort(rng.choice(size, size=rng.integers(1, size + 1), replace=False)) for size in regions.layer_sizes]
        for _ in devices
    ]
    ages_before = aoi.ages[devices]
    aoi.update(devices, kept)
    sums.advance()
    for device, k, row in zip(devices, kept, ages_before, strict=True):
        values = [rng.standard_normal(s).astype(np.float32) for s in regions.shapes]
        full, held = scatter_arrays(extract_arrays(values, regions, k), regions, k, regions.shapes)
        before = cache.row(int(device)).copy()
        cache.update(DeviceUpdate(int(device), full, held))
        sums.replace(before, cache.row(int(device)), row, aoi.ages[device])


def test_incremental_sums_equal_the_direct_mean_over_a_long_run(cnn):
    """200 rounds of random uploads at gamma = 0.01: the sums rebase past 75 rounds and stay equal
    to :func:`discounted_mean` recomputed from scratch; a state round trip and a rebuild agree too."""
    regions, _ = cnn
    num_devices, gamma = 5, 0.01
    cache = GradientCache(num_devices, regions.shapes)
    aoi = AoITable(num_devices, regions.layer_sizes)
    sums = DiscountedSums(regions, num_devices, gamma)
    assert sums.max_shift == 75
    rng = np.random.default_rng(3)
    for t in range(1, 201):
        _random_round(rng, regions, cache, aoi, sums, num_devices)
        if t % 40 == 0 or t == 1:
            direct = discounted_mean(cache, lambda k, ages=aoi.ages: entry_ages(regions, ages[k]), gamma)
            for got, want in zip(sums.mean(), direct, strict=True):
                np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert max(int(r.max()) for r in sums.reference) < 200  # rebased at least once
    restored = DiscountedSums(regions, num_devices, gamma)
    restored.load_state_dict(sums.state_dict())
    rebuilt = DiscountedSums(regions, num_devices, gamma)
    rebuilt.rebuild(cache, aoi.ages)
    for a, b, c in zip(sums.mean(), restored.mean(), rebuilt.mean(), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-9, atol=1e-12)


def test_flat_entry_ages_equal_entry_ages(cnn):
    regions, _ = cnn
    flat = EntryAges(regions)
    rng = np.random.default_rng(0)
    for row in [rng.integers(0, 50, regions.num_regions) for _ in range(5)]:
        want = np.concatenate([a.ravel() for a in entry_ages(regions, row)])
        np.testing.assert_array_equal(flat(row, out=np.zeros(want.size, dtype=np.int64)), want)
        older = np.concatenate([a.ravel() for a in entry_ages(regions, row + 3)])  # every region 3 rounds older
        np.testing.assert_array_equal(flat(row, out=np.zeros(want.size, dtype=np.int64), older_by=3), older)


def test_cache_views_share_one_table(cnn):
    regions, _ = cnn
    cache = GradientCache(3, regions.shapes)
    held = [np.ones(s, dtype=bool) for s in regions.shapes]
    values = [np.full(s, i + 1.0, dtype=np.float32) for i, s in enumerate(regions.shapes)]
    cache.update(DeviceUpdate(1, values, held))
    np.testing.assert_array_equal(cache.row(1), np.concatenate([v.ravel() for v in values]))
    assert not cache.row(0).any() and not cache.row(2).any()
