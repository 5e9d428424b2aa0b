"""Issue 22: ``strategy.cache_granularity`` (Eq. (2) per entry, the default, or per region, the paper's reading)."""

from __future__ import annotations

import numpy as np
import pytest
from test_strategy import LR, SETUP, ScriptedPolicy, ScriptedScheduler, SilentChannel, _kept, _round, scripted_client
from torch import nn

from amp_fl.config import load_config
from amp_fl.errors import ConfigError
from amp_fl.launch.inprocess import FIRST_NODE_ID, InProcessGrid
from amp_fl.pruning.maps import region_map_for
from amp_fl.pruning.submodel import extract_arrays, region_held_masks, scatter_arrays
from amp_fl.strategy.aggregation import DeviceUpdate, GradientCache
from amp_fl.strategy.amp_fl import AmpFlSettings, AmpFlStrategy
from amp_fl.strategy.staleness import EntryAges, entry_ages


@pytest.fixture(name="tiny")
def tiny_fixture():
    """fc1 3 -> 2 (regions a0, a1), fc2 2 -> 2 (regions b0, b1), class layer 2 -> 2 (never pruned)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    regions = region_map_for(model, (1, 1, 3))
    assert regions.param_names == ["1.weight", "1.bias", "3.weight", "3.bias", "5.weight", "5.bias"]
    return regions


KEPT = [np.array([0]), np.array([1])]  # a0 and b1 kept; a1 and b0 pruned


def _cache_after(regions, held):
    """Device 0's cache: 5 everywhere (a full-model upload), then this sub-model's upload of 1s."""
    cache = GradientCache(1, regions.shapes)
    ones = [np.ones(s, dtype=np.float32) for s in regions.shapes]
    cache.update(DeviceUpdate(0, [5 * o for o in ones], [np.ones(s, dtype=bool) for s in regions.shapes]))
    sub = extract_arrays(ones, regions, KEPT)
    full, entry_held = scatter_arrays(sub, regions, KEPT, regions.shapes)
    cache.update(DeviceUpdate(0, full, held if held is not None else entry_held))
    return dict(zip(regions.param_names, (np.asarray(g) for g in cache.get(0)), strict=True))


def test_entry_granularity_refreshes_only_the_entries_the_sub_model_held(tiny):
    g = _cache_after(tiny, None)
    np.testing.assert_array_equal(g["1.weight"], [[1, 1, 1], [5, 5, 5]])  # the first layer takes every input
    np.testing.assert_array_equal(g["1.bias"], [1, 5])
    np.testing.assert_array_equal(g["3.weight"], [[5, 5], [1, 5]])  # only (b1, a0) was held
    np.testing.assert_array_equal(g["3.bias"], [5, 1])
    np.testing.assert_array_equal(g["5.weight"], [[5, 1], [5, 1]])  # class layer: only the b1 column
    np.testing.assert_array_equal(g["5.bias"], [1, 1])


def test_region_granularity_refreshes_every_kept_region_whole_with_zeros_on_its_pruned_inputs(tiny):
    held = dict(zip(tiny.param_names, region_held_masks(tiny, KEPT), strict=True))
    np.testing.assert_array_equal(held["3.weight"], [[False, False], [True, True]])
    np.testing.assert_array_equal(held["5.weight"], np.ones((2, 2), dtype=bool))
    g = _cache_after(tiny, region_held_masks(tiny, KEPT))
    np.testing.assert_array_equal(g["1.weight"], [[1, 1, 1], [5, 5, 5]])  # same as entry: no pruned input
    np.testing.assert_array_equal(g["1.bias"], [1, 5])
    # Region b1 kept: its row is refreshed whole; (b1, a1)'s gradient in the masked model is 0 (a1 silent).
    np.testing.assert_array_equal(g["3.weight"], [[5, 5], [1, 0]])
    np.testing.assert_array_equal(g["3.bias"], [5, 1])
    np.testing.assert_array_equal(g["5.weight"], [[0, 1], [0, 1]])  # the class layer: whole, b0's column 0
    np.testing.assert_array_equal(g["5.bias"], [1, 1])


def test_region_entry_ages_are_the_output_regions(tiny):
    ages = np.array([3, 7, 2, 9])  # a0, a1, b0, b1; the device's age: 2
    entry = dict(zip(tiny.param_names, entry_ages(tiny, ages), strict=True))
    region = dict(zip(tiny.param_names, entry_ages(tiny, ages, "region"), strict=True))
    np.testing.assert_array_equal(entry["3.weight"], [[3, 7], [9, 9]])  # max(out, in)
    np.testing.assert_array_equal(region["3.weight"], [[2, 2], [9, 9]])  # out only
    np.testing.assert_array_equal(entry["5.weight"], [[2, 9], [2, 9]])  # in axis only
    np.testing.assert_array_equal(region["5.weight"], [[2, 2], [2, 2]])  # no own region: the device's age
    flat = EntryAges(tiny, "region")(ages, out=np.zeros(sum(a.size for a in region.values()), dtype=np.int64))
    np.testing.assert_array_equal(flat, np.concatenate([a.ravel() for a in region.values()]))


def test_strategy_round_by_hand_per_region(cnn):
    """Round 1: both devices train the full model (values 1 and 3); round 2: device 0 a sub-model.

    Scope ``all``: direction (G_0 + G_1) / 2. Entries device 0 held: (1 + 3) / 2 = 2; entries of
    kept regions whose input region was pruned: per entry 2 (G_0 stale, 1), per region
    (0 + 3) / 2 = 1.5 (refreshed with the masked model's zero); the rest 2 in both.
    """
    regions, w0 = cnn
    sub = _kept(regions, [[0, 3], [1, 2, 9], list(range(0, 128, 4))])
    full = regions.full_kept()
    plan = {1: [(0, full), (1, full)], 2: [(0, sub)]}
    entry_held = scatter_arrays(extract_arrays(w0, regions, sub), regions, sub, regions.shapes)[1]
    region_held = region_held_masks(regions, sub)
    for granularity in ("entry", "region"):
        strategy = AmpFlStrategy(
            region_map=regions,
            initial_weights=w0,
            scheduler=ScriptedScheduler(plan),
            channel=SilentChannel(),
            policy=ScriptedPolicy(plan),
            device_nodes={0: FIRST_NODE_ID, 1: FIRST_NODE_ID + 1},
            train_setup=SETUP,
            settings=AmpFlSettings(LR, "all", cache_granularity=granularity),
        )
        grid = InProcessGrid(scripted_client({0: 1.0, 1: 3.0}), 2)
        _round(strategy, grid, 1)
        before = [w.copy() for w in strategy.weights]
        _round(strategy, grid, 2)
        for b, a, e, r in zip(before, strategy.weights, entry_held, region_held, strict=True):
            zeroed = r & ~e
            expected = np.where(zeroed, 1.5 if granularity == "region" else 2.0, 2.0)
            np.testing.assert_allclose((b - a) / LR, expected, atol=1e-5)
    assert any((r & ~e).any() for e, r in zip(entry_held, region_held, strict=True))  # the case occurs


def test_region_needs_a_server_cache():
    assert load_config({}).strategy.cache_granularity == "entry"
    with pytest.raises(ConfigError, match="strategy.cache_granularity"):
        load_config({"strategy": {"cache_granularity": "region", "compensation": "none"}})
    with pytest.raises(ConfigError, match="strategy.cache_granularity"):
        load_config({"strategy": {"cache_granularity": "block"}})
    with pytest.raises(ValueError, match="cache_granularity"):
        AmpFlSettings(LR, "all", memory_friendly=True, cache_granularity="region")
