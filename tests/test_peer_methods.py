"""Issue 20: HeteroFL and FedRolex as methods, and the rules beyond the paper, on hand-built cases.

Aggregation rules (holders' mean, FedStale's stale weight), the FedRolex window, HeteroFL's width
levels, its Scaler and static BatchNorm, a T_max schedule and local steps traded against the keep
ratio; each against values written down by hand. The Flower runs are in test_e2e_peer_methods.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord
from strategy_doubles import LR, constant_client, make_strategy, run_round

from amp_fl import protocol as P
from amp_fl.config import check_keep_counts, load_config
from amp_fl.errors import ArgumentError, ConfigError
from amp_fl.launch.inprocess import InProcessGrid
from amp_fl.models import build_model
from amp_fl.models.registry import split_model_name
from amp_fl.pruning.policies import FedRolexPolicy, SelectionContext, fedrolex_window
from amp_fl.pruning.submodel import build_submodel, extract_arrays, kept_rates, scatter_arrays
from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.scheduling.full_model import FullModelScheduler
from amp_fl.scheduling.levels import WidthLevelScheduler, capability_levels, channel_levels, check_levels
from amp_fl.scheduling.spare_steps import SpareStepsScheduler, spare_local_steps
from amp_fl.strategy.aggregation import (
    DeviceUpdate,
    GradientCache,
    check_fresh_rules,
    fresh_mean,
    holders_mean,
    stale_weighted_mean,
)
from amp_fl.strategy.amp_fl import AmpFlSettings
from amp_fl.wireless import DevicePopulation, RayleighChannel, SystemModel, WirelessConfig, paper_latency_config
from amp_fl.wireless.t_max import TmaxSchedule

SHAPES = [(3,)]


def _update(device, values, held):
    return DeviceUpdate(device, [np.array(values, dtype=np.float32)], [np.array(held, dtype=bool)])


# ------------------------------------------------------------------ aggregation rules
def test_holders_mean_divides_each_entry_by_its_holders():
    """Device 0 holds entries 0, 1 (values 2, 4), device 1 holds entry 0 (value 6); nobody holds entry 2."""
    updates = [_update(0, [2, 4, 99], [1, 1, 0]), _update(1, [6, 99, 99], [1, 0, 0])]
    np.testing.assert_array_equal(holders_mean(updates, SHAPES)[0], [4.0, 4.0, 0.0])  # (2+6)/2, 4/1, none
    np.testing.assert_array_equal(fresh_mean(updates, SHAPES)[0], [4.0, 2.0, 0.0])  # the paper's: / |S_t| = 2


def test_holders_mean_of_full_models_is_the_fresh_mean():
    updates = [_update(0, [1, 2, 3], [1, 1, 1]), _update(1, [3, 4, 7], [1, 1, 1])]
    np.testing.assert_array_equal(holders_mean(updates, SHAPES)[0], fresh_mean(updates, SHAPES)[0])


def _cache_after_round():
    """K = 3. Device 2's cache is [10, 20] from before; this round device 0 sends [1, .] holding entry 0 only,
    device 1 sends [3, 4] holding both."""
    cache = GradientCache(3, [(2,)])
    cache.update(DeviceUpdate(2, [np.array([10, 20], dtype=np.float32)], [np.ones(2, dtype=bool)]))
    updates = [
        DeviceUpdate(0, [np.array([1, 99], dtype=np.float32)], [np.array([True, False])]),
        DeviceUpdate(1, [np.array([3, 4], dtype=np.float32)], [np.ones(2, dtype=bool)]),
    ]
    for update in updates:
        cache.update(update)
    return cache, updates


@pytest.mark.parametrize(
    ("beta", "expected"),
    [
        # entry 0: fresh 1 + 3 (n = 2), stale 10; entry 1: fresh 4 (n = 1), stale 0 (device 0 never held it) + 20
        (0.5, [(4 + 0.5 * 10) / (2 + 0.5 * 1), (4 + 0.5 * 20) / (1 + 0.5 * 2)]),  # 3.6, 7
        (1.0, [14 / 3, 24 / 3]),  # Eq. (2): every cache over K
        (0.0, [2.0, 4.0]),  # fresh only: the holders' mean
    ],
)
def test_stale_weight_mixes_fresh_and_cached_gradients(beta, expected):
    cache, updates = _cache_after_round()
    np.testing.assert_allclose(stale_weighted_mean(cache, updates, beta)[0], expected, rtol=1e-12)
    if beta == 1.0:
        np.testing.assert_allclose(cache.mean_over_all()[0], expected, rtol=1e-12)
    if beta == 0.0:
        np.testing.assert_allclose(holders_mean(updates, [(2,)])[0], expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("compensation", "fresh", "beta", "name"),
    [
        ("all", "holders", 1.0, "fresh_mean"),
        ("none", "scheduled", 0.5, "stale_weight"),
        ("all", "x", 1.0, "fresh_mean"),
        ("all", "scheduled", 1.5, "stale_weight"),
        ("discounted", "scheduled", 0.5, "stale_weight"),
    ],
)
def test_the_rules_are_refused_where_no_scope_reads_them(compensation, fresh, beta, name):
    with pytest.raises(ArgumentError) as caught:
        check_fresh_rules(compensation, fresh, beta)
    assert caught.value.name == name


def test_the_strategy_applies_the_holders_mean_with_compensation_none(cnn):
    """Device 0 (gradient 1) trains a sub-model, device 1 (gradient 3) the full model: on device 0's entries
    the direction is (1 + 3) / 2, elsewhere 3 / 1 (HeteroFL), where the paper's scope none has 3 / 2."""
    regions, w0 = cnn
    sub0 = [np.array([1]), np.array([0, 15]), np.array([7])]
    plan = {1: [(0, sub0), (1, regions.full_kept())]}
    strategy, _ = make_strategy(cnn, plan, compensation="none", fresh_mean="holders")
    run_round(strategy, InProcessGrid(constant_client({0: 1.0, 1: 3.0}), 2), 1)
    held0 = scatter_arrays(extract_arrays(w0, regions, sub0), regions, sub0, regions.shapes)[1]
    for w, w_start, h in zip(strategy.weights, w0, held0, strict=True):
        np.testing.assert_allclose(w, w_start - LR * np.where(h, 2.0, 3.0), atol=1e-6)


def test_the_strategy_applies_the_stale_weight_to_compensation_all(cnn):
    """Round 1: device 1 sends 3 everywhere; round 2: device 0 sends 1 on its sub-model. With beta = 0.5,
    round 2's direction is (1 + 0.5 * 3) / (1 + 0.5) on device 0's entries and 3 (stale only) elsewhere."""
    regions, w0 = cnn
    sub0 = [np.array([1]), np.array([0, 15]), np.array([7])]
    plan = {1: [(1, regions.full_kept())], 2: [(0, sub0)]}
    strategy, _ = make_strategy(cnn, plan, compensation="all", stale_weight=0.5)
    grid = InProcessGrid(constant_client({0: 1.0, 1: 3.0}), 2)
    run_round(strategy, grid, 1)  # device 0 never sent: (0 + 3 * 1) / (1 + 0.5 * 1) = 2 everywhere
    after1 = [w.copy() for w in strategy.weights]
    for w, w_start in zip(after1, w0, strict=True):
        np.testing.assert_allclose(w, w_start - LR * 2.0, atol=1e-5)
    run_round(strategy, grid, 2)
    held0 = scatter_arrays(extract_arrays(w0, regions, sub0), regions, sub0, regions.shapes)[1]
    # Elsewhere: the caches are device 0's 0 (never held) and device 1's 3, both stale: (0.5 * 3) / (0.5 * 2).
    for w, w_start, h in zip(strategy.weights, after1, held0, strict=True):
        np.testing.assert_allclose(w, w_start - LR * np.where(h, 2.5 / 1.5, 1.5), atol=1e-5)


def test_settings_check_the_rules_once():
    with pytest.raises(ArgumentError, match="needs compensation=none"):
        AmpFlSettings(LR, compensation="all", fresh_mean="holders")
    with pytest.raises(ArgumentError, match="Algorithm 3"):
        AmpFlSettings(LR, compensation="all", memory_friendly=True, stale_weight=0.5)


# ------------------------------------------------------------------ FedRolex
def test_fedrolex_window_advances_by_one_region_per_round_and_wraps():
    windows = [fedrolex_window(5, 2, r).tolist() for r in range(1, 7)]
    assert windows == [[0, 1], [1, 2], [2, 3], [3, 4], [0, 4], [0, 1]]


def test_fedrolex_policy_gives_every_device_the_same_window(cnn):
    regions, _ = cnn
    policy = FedRolexPolicy()
    kept = [policy.select([3, 8, 64], SelectionContext(regions, server_round=5, device_id=d)) for d in (0, 7)]
    for per_device in kept:
        assert [k.tolist() for k in per_device] == [[0, 4, 5], list(range(4, 12)), list(range(4, 68))]


# ------------------------------------------------------------------ width levels
def test_capability_levels_give_the_fastest_devices_the_widest_level():
    # Sorted by compute time (ties by id): devices 1, 3 (1 s), 2 (2 s) | 0 (3 s), 4 (5 s).
    levels = capability_levels(np.array([3.0, 1.0, 2.0, 1.0, 5.0]), (1.0, 0.5))
    np.testing.assert_array_equal(levels, [0.5, 1.0, 1.0, 1.0, 0.5])


def test_channel_levels_take_the_largest_level_not_above_kappa():
    np.testing.assert_array_equal(
        channel_levels(np.array([1.0, 0.7, 0.5, 0.3, 0.1]), (1.0, 0.5, 0.25)), [1.0, 0.5, 0.5, 0.25, 0.25]
    )


def test_levels_are_checked():
    assert check_levels([0.25, 1, 0.5]) == (1.0, 0.5, 0.25)
    for bad in ([], [0.0], [1.5], [0.5, 0.5]):
        with pytest.raises(ArgumentError, match="levels"):
            check_levels(bad)


def _system(num_devices=6, num_rbs=3, t_max_s=0.1, t_max_schedule=None):
    wireless = WirelessConfig(num_devices=num_devices, num_rbs=num_rbs)
    devices = DevicePopulation.simulated(wireless, 3)
    return SystemModel(wireless, paper_latency_config("cnn", t_max_s=t_max_s), devices, t_max_schedule)


def _round_inputs(system, round_):
    state = RayleighChannel(system.wireless, system.devices.distance_m, 4).observe(round_)
    return state, AoITable(system.num_devices, (6, 16, 128))


@pytest.mark.parametrize("assignment", ["fixed", "channel"])
def test_levels_scheduler_sizes_each_device_at_its_level(assignment):
    system = _system()
    scheduler = WidthLevelScheduler(system, seed=1, levels=(1.0, 0.5, 0.25), assignment=assignment)
    state, aoi = _round_inputs(system, 2)
    schedule = scheduler.schedule(2, state, aoi)
    costs = system.pair_costs(state, 2)
    expected = (
        scheduler.fixed_levels[schedule.device_ids]
        if assignment == "fixed"
        else channel_levels(costs.keep_fraction[schedule.device_ids, schedule.rb_ids], (1.0, 0.5, 0.25))
    )
    np.testing.assert_array_equal(schedule.keep_fraction, expected)
    counts = {1.0: [6, 16, 128], 0.5: [3, 8, 64], 0.25: [1, 4, 32]}
    assert [counts[float(f)] for f in schedule.keep_fraction] == schedule.keep_counts.tolist()
    assert schedule.num_scheduled == 3  # one device per RB, as Synchronous FL


def test_one_full_level_schedules_as_synchronous_fl():
    system = _system()
    state, aoi = _round_inputs(system, 1)
    levels = WidthLevelScheduler(system, seed=1, levels=(1.0,)).schedule(1, state, aoi)
    full = FullModelScheduler(system, seed=1).schedule(1, state, aoi)
    for name in ("device_ids", "rb_ids", "keep_counts", "compute_latency_s", "upload_latency_s"):
        np.testing.assert_array_equal(getattr(levels, name), getattr(full, name))
    assert levels.round_latency_s == full.round_latency_s


def test_a_level_that_empties_a_layer_is_refused():
    system = _system()
    state, aoi = _round_inputs(system, 1)
    with pytest.raises(ArgumentError, match="level 0.125 leaves a layer of 6 regions empty"):
        WidthLevelScheduler(system, seed=1, levels=(1.0, 0.125)).schedule(1, state, aoi)
    # ... and before any Flower process starts (the launcher's preflight), naming the key.
    cfg = load_config({"scheduling": {"name": "levels", "levels": [1.0, 0.125]}})
    with pytest.raises(ConfigError, match="level 0.125 leaves a layer of 6 regions empty") as caught:
        check_keep_counts(cfg, (6, 16, 128))
    assert caught.value.key == "scheduling.levels"
    check_keep_counts(load_config({"scheduling": {"name": "levels"}}), (6, 16, 128))  # the default levels fit


# ------------------------------------------------------------------ Scaler
def test_scaler_divides_each_pruned_layer_by_its_kept_rate_in_training_only(cnn):
    regions, weights = cnn
    kept = [np.array([0, 4]), np.array([1, 2, 3, 9]), np.arange(32)]  # rates 2/6, 4/16, 32/128
    assert kept_rates(regions, [2, 4, 32]) == {"features.0": 1 / 3, "features.3": 0.25, "classifier.1": 0.25}
    arrays = extract_arrays(weights, regions, kept)
    plain = build_submodel("cnn", (1, 28, 28), 10, regions, kept, arrays=arrays)
    scaled = build_submodel("cnn+scaler", (1, 28, 28), 10, regions, kept, arrays=arrays)
    assert list(scaled.state_dict()) == list(plain.state_dict())  # hooks only: the same state on the wire
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    h = torch.randn(3, 64, generator=torch.Generator().manual_seed(1))  # the first FC's input: 4 channels x 4 x 4
    hidden = torch.randn(3, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for module in (plain, scaled):
            module.train()
        torch.testing.assert_close(scaled.features[0](x), plain.features[0](x) * 3, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(scaled.classifier[1](h), plain.classifier[1](h) * 4, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(scaled.classifier[3](hidden), plain.classifier[3](hidden))  # the class layer
        for module in (plain, scaled):
            module.eval()
        torch.testing.assert_close(scaled(x), plain(x))  # evaluation: the identity


def test_scaler_leaves_the_full_model_as_it_is(cnn):
    regions, weights = cnn
    full = regions.full_kept()
    plain = build_submodel("cnn", (1, 28, 28), 10, regions, full, arrays=weights).train()
    scaled = build_submodel("cnn+scaler", (1, 28, 28), 10, regions, full, arrays=weights).train()
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(scaled(x), plain(x), rtol=0, atol=0)


def test_model_tags_are_checked():
    assert split_model_name("resnet18+static_bn+scaler") == ("resnet18", frozenset({"static_bn", "scaler"}))
    with pytest.raises(ValueError, match="unknown model tag 'dropout'"):
        split_model_name("cnn+dropout")


def test_static_batchnorm_keeps_no_running_statistics_and_normalises_with_the_batch():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("resnet18+static_bn", num_classes=10, input_shape=(3, 32, 32))
    assert not [name for name in model.state_dict() if "running" in name or "num_batches" in name]
    bn = model.bn1 if hasattr(model, "bn1") else next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    x = torch.randn(8, bn.num_features, 4, 4, generator=torch.Generator().manual_seed(1)) * 3 + 2
    with torch.no_grad():
        bn.eval()  # evaluation uses the batch's statistics too
        y = bn(x)
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + bn.eps) * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ T_max schedule
def test_t_max_schedules_by_hand():
    linear = TmaxSchedule("linear", 0.1, 0.3, 4)
    assert [linear.at(t) for t in (0, 1, 3, 5, 9)] == pytest.approx([0.1, 0.1, 0.2, 0.3, 0.3])
    step = TmaxSchedule("step", 0.1, 0.3, 2)
    assert [step.at(t) for t in (1, 2, 3, 10)] == [0.1, 0.1, 0.3, 0.3]
    assert TmaxSchedule("constant", 0.1).at(50) == 0.1
    with pytest.raises(ArgumentError, match="end_s"):
        TmaxSchedule("linear", 0.1, None, 4)
    with pytest.raises(ArgumentError, match="rounds"):
        TmaxSchedule("step", 0.1, 0.2, 0)
    with pytest.raises(ArgumentError, match="end_s"):
        TmaxSchedule("constant", 0.1, 0.2)


def test_the_system_sizes_sub_models_by_the_rounds_t_max():
    """kappa = min(sqrt(T_max / T_k), 1) (Eq. (16)): T_max 0.1 s -> 0.4 s doubles every kappa below 1/2."""
    system = _system(t_max_s=0.1, t_max_schedule=TmaxSchedule("step", 0.1, 0.4, 1))
    state, _ = _round_inputs(system, 1)
    first, later = system.pair_costs(state, 1).keep_fraction, system.pair_costs(state, 2).keep_fraction
    small = first < 0.5
    assert small.any()
    np.testing.assert_allclose(later[small], 2 * first[small], rtol=1e-12)
    np.testing.assert_array_equal(system.pair_costs(state).keep_fraction, first)  # no round: the constant T_max


# ------------------------------------------------------------------ local steps against the keep ratio
def test_spare_local_steps_by_hand():
    # lambda = 8, T_max = 0.1: (0.1 - 0.03) / 0.02 * 8 = 28 -> capped at 20; 0.06 / 0.05 * 8 = 9.6 -> 9;
    # 0.05 / 0.2 * 8 = 2 -> never fewer than 8.
    steps = spare_local_steps(np.array([0.02, 0.05, 0.2]), np.array([0.03, 0.04, 0.05]), 0.1, 8, 20)
    np.testing.assert_array_equal(steps, [20, 9, 8])


def test_spare_steps_scheduler_fills_t_max_with_local_steps():
    system = _system(num_devices=8, num_rbs=4, t_max_s=1.0)  # 1 s: most full models finish early
    state, aoi = _round_inputs(system, 1)
    inner = FullModelScheduler(system, seed=1)
    base = inner.schedule(1, state, aoi)
    traded = SpareStepsScheduler(inner, local_steps=8, max_local_steps=64).schedule(1, state, aoi)
    np.testing.assert_array_equal(traded.device_ids, base.device_ids)
    np.testing.assert_array_equal(traded.keep_counts, base.keep_counts)
    expected = spare_local_steps(base.compute_latency_s, base.upload_latency_s, 1.0, 8, 64)
    np.testing.assert_array_equal(traded.local_steps, expected)
    assert (expected > 8).any()
    np.testing.assert_allclose(traded.compute_latency_s, base.compute_latency_s * expected / 8, rtol=1e-12)
    more = expected > 8
    assert np.all(traded.latency_s[more] <= 1.0 + 1e-12)  # the extra steps fit T_max
    assert traded.round_latency_s == max(base.round_latency_s, float(traded.latency_s.max()))


def test_the_strategy_sends_each_device_its_local_steps(cnn):
    regions, _ = cnn
    plan = {1: [(0, regions.full_kept()), (1, regions.full_kept())]}
    strategy, _ = make_strategy(cnn, plan, compensation="none")
    scripted = strategy.scheduler

    class WithSteps:
        def schedule(self, round, channel_state, aoi_table):
            base = scripted.schedule(round, channel_state, aoi_table)
            return dataclasses.replace(base, local_steps=np.array([3, 11]))

    strategy.scheduler = WithSteps()
    messages = strategy.configure_train(1, ArrayRecord(), ConfigRecord(), InProcessGrid(constant_client({}), 2))
    steps = [P.TrainInstruction.from_content(m.content).setup.local_steps for m in messages]
    assert steps == [3, 11]


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"strategy": {"fresh_mean": "holders"}}, "strategy.fresh_mean"),
        ({"strategy": {"compensation": "none", "stale_weight": 0.5}}, "strategy.stale_weight"),
        ({"strategy": {"stale_weight": 0.5, "memory_friendly": True}}, "strategy.stale_weight"),
        ({"scheduling": {"levels": [1.0, 0.5]}}, "scheduling.levels"),
        ({"scheduling": {"name": "levels", "levels": [1.0, 1.0]}}, "scheduling.levels"),
        ({"scheduling": {"name": "levels", "assignment": "greedy"}}, "scheduling.assignment"),
        ({"scheduling": {"max_local_steps": 4}}, "scheduling.max_local_steps"),
        ({"pruning": {"scaler": True}, "train": {"batched_clients": True}}, "pruning.scaler"),
        ({"model": {"t_max_schedule": "linear", "t_max_end_s": 0.2}}, "model.t_max_rounds"),
        ({"model": {"t_max_end_s": 0.2}}, "model.t_max_end_s"),
    ],
)
def test_bad_settings_name_their_key(values, key):
    with pytest.raises(ConfigError) as caught:
        load_config(values)
    assert caught.value.key == key


def test_the_methods_settings_load():
    cfg = load_config(
        {
            "scheduling": {"name": "levels", "assignment": "channel", "levels": [1, 0.5], "max_local_steps": 16},
            "strategy": {"compensation": "none", "fresh_mean": "holders"},
            "pruning": {"policy": "fedrolex", "scaler": True},
            "model": {"static_bn": True, "t_max_schedule": "step", "t_max_end_s": 0.2, "t_max_rounds": 5},
        }
    )
    assert cfg.scheduling.options(cfg.pruning.ratio) == {"levels": (1.0, 0.5), "assignment": "channel"}
    assert cfg.model.t_max_plan(0.1) == TmaxSchedule("step", 0.1, 0.2, 5)


@pytest.mark.parametrize(("method", "policy"), [("heterofl", "static"), ("fedrolex", "fedrolex")])
def test_the_presets_choose_the_published_methods_parts(method, policy):
    from test_methods_config import _compose

    cfg = _compose([f"method={method}", "experiment=quick"])
    levels = (cfg.scheduling.name, cfg.scheduling.assignment, cfg.scheduling.levels)
    assert levels == ("levels", "fixed", (1.0, 0.5, 0.25))
    assert (cfg.pruning.policy, cfg.pruning.scaler, cfg.model.static_bn) == (policy, True, True)
    assert (cfg.strategy.compensation, cfg.strategy.fresh_mean, cfg.strategy.stale_weight) == ("none", "holders", 1.0)
    overrides = ["scheduling.assignment=channel", "scheduling.max_local_steps=16", "scheduling.levels=[1.0,0.5]"]
    channel = _compose([f"method={method}", *overrides])
    assert (channel.scheduling.assignment, channel.scheduling.max_local_steps) == ("channel", 16)
    assert channel.scheduling.levels == (1.0, 0.5)


def test_the_clients_trainer_builds_the_sub_model_the_model_name_tags(cnn):
    """The train instruction's model name carries the Scaler to the device's trainer (``cnn+scaler``): one
    SGD step of a sub-model then differs from the plain one; the full model (rate 1) trains the same."""
    from amp_fl.client.settings import TrainSettings
    from amp_fl.client.trainer import ModelInfo, SubModelTrainer
    from amp_fl.data.datasets import ArraySplit
    from amp_fl.server.build import model_name

    regions, weights = cnn
    rng = np.random.default_rng(0)
    data = ArraySplit(rng.standard_normal((16, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 16))
    settings = TrainSettings(0.05, 1, 8)
    kept = [np.arange(3), np.arange(8), np.arange(64)]

    def gradient(name, kept):
        trainer = SubModelTrainer(data, ModelInfo(name, (1, 28, 28), 10), regions)
        arrays = extract_arrays(weights, regions, kept)
        return trainer.fit(arrays, kept, settings, np.random.default_rng(1)).gradient

    tagged = load_config({"pruning": {"scaler": True}, "model": {"static_bn": True}})
    assert model_name(tagged) == "cnn+static_bn+scaler"
    plain, scaled = gradient("cnn", kept), gradient("cnn+scaler", kept)
    assert not np.allclose(plain[0], scaled[0])
    full = regions.full_kept()
    for a, b in zip(gradient("cnn", full), gradient("cnn+scaler", full), strict=True):
        np.testing.assert_array_equal(a, b)
