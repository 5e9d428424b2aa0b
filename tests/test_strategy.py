"""Issue 5: AMP-FL aggregation semantics, on hand-built cases with closed-form expectations.

The strategy runs its real hooks; the scheduler, the pruning policy and the ClientApp are replaced
by small test doubles that return chosen schedules, chosen kept regions and chosen gradients, so
every expected value can be written down by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_train_setup
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.clientapp import ClientApp
from strategy_doubles import LR, ScriptedPolicy, ScriptedScheduler, SilentChannel, reply_to
from strategy_doubles import constant_client as scripted_client

from amp_fl import protocol as P
from amp_fl.launch.inprocess import FIRST_NODE_ID, InProcessGrid
from amp_fl.pruning.submodel import extract_arrays, scatter_arrays
from amp_fl.scheduling.schedule import Schedule
from amp_fl.strategy.aggregation import (
    COMPENSATION_SCOPES,
    DeviceUpdate,
    GradientCache,
    MemoryFriendlyAggregate,
    fresh_mean,
)
from amp_fl.strategy.amp_fl import AmpFlSettings, AmpFlStrategy
from amp_fl.strategy.report import RoundReport

SETUP = make_train_setup(
    learning_rate=LR,
)


def _strategy(cnn, plan, compensation="all", memory_friendly=False):
    """The strategy under test and the list its ``on_round_end`` hook appends each round's report to."""
    regions, weights = cnn
    reports: list[RoundReport] = []
    strategy = AmpFlStrategy(
        region_map=regions,
        initial_weights=weights,
        scheduler=ScriptedScheduler(plan),
        channel=SilentChannel(),
        policy=ScriptedPolicy(plan),
        device_nodes={0: FIRST_NODE_ID, 1: FIRST_NODE_ID + 1},
        train_setup=SETUP,
        settings=AmpFlSettings(LR, compensation, memory_friendly),
        on_round_end=reports.append,
    )
    return strategy, reports


def _round(strategy, grid, server_round):
    messages = strategy.configure_train(server_round, ArrayRecord(), ConfigRecord(), grid)
    replies = grid.send_and_receive(messages)
    return strategy.aggregate_train(server_round, replies)


def _kept(regions, per_layer):
    return [np.asarray(k, dtype=np.int64) for k in per_layer]


def test_two_devices_cache_aoi_and_global_step_by_hand(cnn):
    """Round 1: device 0 trains a sub-model, device 1 idles. Round 2: device 1 trains the full model.

    Gradients are constants (device 0 sends 1.0, device 1 sends 3.0), so by Eq. (2) and step 8:
    after round 1, w = w0 - LR * (1/2) * (1.0 on device 0's held entries);
    after round 2, w = that - LR * (1/2) * (1.0 on held_0 + 3.0 everywhere) (device 0's stale
    gradient is compensated again).
    """
    regions, w0 = cnn
    sub0 = _kept(regions, [[0, 2, 5], [1, 3, 4, 8], list(range(0, 128, 2))])
    full = regions.full_kept()
    strategy, reports = _strategy(cnn, {1: [(0, sub0)], 2: [(1, full)]})
    grid = InProcessGrid(scripted_client({0: 1.0, 1: 3.0}), 2)
    held0 = scatter_arrays(extract_arrays(w0, regions, sub0), regions, sub0, regions.shapes)[1]

    _round(strategy, grid, 1)
    for w, w_start, h in zip(strategy.weights, w0, held0, strict=True):
        np.testing.assert_allclose(w, w_start - LR * 0.5 * np.where(h, 1.0, 0.0), rtol=0, atol=1e-6)
    # AoI, Eq. (9): device 0's kept regions reset to 0, its pruned ones and all of device 1's are 1.
    ages = strategy.aoi.ages
    expected0 = np.ones(regions.num_regions, dtype=int)
    for g, kept in enumerate(sub0):
        expected0[regions.offsets[g] + kept] = 0
    np.testing.assert_array_equal(ages[0], expected0)
    np.testing.assert_array_equal(ages[1], np.ones(regions.num_regions))
    assert reports[-1].round == 1 and reports[-1].mean_aoi == pytest.approx(ages.mean())

    _round(strategy, grid, 2)
    for w, w_start, h in zip(strategy.weights, w0, held0, strict=True):
        step1 = LR * 0.5 * np.where(h, 1.0, 0.0)
        step2 = LR * 0.5 * (np.where(h, 1.0, 0.0) + 3.0)
        np.testing.assert_allclose(w, w_start - step1 - step2, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(strategy.aoi.ages[0], expected0 + 1)
    np.testing.assert_array_equal(strategy.aoi.ages[1], np.zeros(regions.num_regions))
    # The cache holds device 0's gradient only where it was held, zero elsewhere.
    for g, h in zip(strategy.cache.get(0), held0, strict=True):
        np.testing.assert_array_equal(g, np.where(h, 1.0, 0.0))


@pytest.mark.parametrize(
    ("compensation", "expected_direction"),
    [
        # device 0 held entries: fresh value 1; device 1 (full model) fresh value 3.
        ("none", lambda h: (np.where(h, 1.0, 0.0) + 3.0) / 2),  # mean of fresh gradients over S_t
        ("scheduled", lambda h: (np.where(h, 1.0, 0.0) + 3.0) / 2),  # caches were empty: same as none
        ("all", lambda h: (np.where(h, 1.0, 0.0) + 3.0) / 2),  # K = |S_t| = 2 here
    ],
)
def test_compensation_scopes_when_everyone_is_scheduled(cnn, compensation, expected_direction):
    regions, w0 = cnn
    sub0 = _kept(regions, [[1], [0, 15], [7]])
    strategy, _ = _strategy(cnn, {1: [(0, sub0), (1, regions.full_kept())]}, compensation)
    _round(strategy, InProcessGrid(scripted_client({0: 1.0, 1: 3.0}), 2), 1)
    held0 = scatter_arrays(extract_arrays(w0, regions, sub0), regions, sub0, regions.shapes)[1]
    for w, w_start, h in zip(strategy.weights, w0, held0, strict=True):
        np.testing.assert_allclose(w, w_start - LR * expected_direction(h), atol=1e-6)


def test_scopes_differ_on_stale_devices(cnn):
    """Round 2 schedules only device 0 (sub-model): `all` reuses device 1's round-1 gradient,
    `scheduled` fills device 0's pruned entries from its own cache, `none` uses zeros there."""
    regions, w0 = cnn
    sub = _kept(regions, [[0], [0], [0]])
    plan = {1: [(0, regions.full_kept()), (1, regions.full_kept())], 2: [(0, sub)]}
    values = {0: 1.0, 1: 3.0}
    results = {}
    for scope in ("all", "scheduled", "none"):
        strategy, _ = _strategy(cnn, plan, scope)
        grid = InProcessGrid(scripted_client(values), 2)
        _round(strategy, grid, 1)
        before = [w.copy() for w in strategy.weights]
        _round(strategy, grid, 2)
        results[scope] = [(b - a) / LR for a, b in zip(strategy.weights, before, strict=True)]
    held = scatter_arrays(extract_arrays(w0, regions, sub), regions, sub, regions.shapes)[1]
    for r_all, r_sched, r_none, h in zip(results["all"], results["scheduled"], results["none"], held, strict=True):
        np.testing.assert_allclose(r_all, (1.0 + 3.0) / 2, atol=1e-5)  # G_0 = 1 everywhere, G_1 = 3
        np.testing.assert_allclose(r_sched, 1.0, atol=1e-5)  # only device 0: fresh 1 + cached 1
        np.testing.assert_allclose(r_none, np.where(h, 1.0, 0.0), atol=1e-5)


def test_uplink_bytes_are_four_per_parameter_and_downlink_adds_indices(cnn):
    regions, _w0 = cnn
    sub0 = _kept(regions, [[0, 1, 2], [0, 1, 2, 3, 4, 5, 6, 7], list(range(64))])
    strategy, reports = _strategy(cnn, {1: [(0, sub0)]})
    _round(strategy, InProcessGrid(scripted_client({0: 1.0, 1: 1.0}), 2), 1)
    (report,) = reports
    # Sub-model: conv1 3x1x5x5+3, conv2 8x3x5x5+8, fc1 64x(8*4*4)+64, fc2 10x64+10.
    params = (3 * 25 + 3) + (8 * 3 * 25 + 8) + (64 * 128 + 64) + (10 * 64 + 10)
    assert report.uplink_bytes_per_device == {0: 4 * params}
    assert report.downlink_bytes == 4 * params + 4 * (3 + 8 + 64)


def test_malformed_replies_are_dropped_not_aggregated(cnn):
    regions, w0 = cnn
    app = ClientApp()

    @app.train()
    def bad(msg, context):
        device = P.partition_id(context.node_config)
        instruction = P.TrainInstruction.from_content(msg.content)
        reply = reply_to(instruction, device, [np.zeros((1,), dtype=np.float32) for _ in instruction.names])
        content = reply.to_content()  # wrong shapes
        if device == 1:
            nan = [np.full_like(a, np.nan) for a in instruction.arrays]
            content[P.ARRAYS] = ArrayRecord({n: Array(a) for n, a in zip(instruction.names, nan, strict=True)})
        return Message(content, reply_to=msg)

    full = regions.full_kept()
    strategy, reports = _strategy(cnn, {1: [(0, full), (1, full)]})
    _round(strategy, InProcessGrid(app, 2), 1)
    (report,) = reports
    assert "shape" in report.failures[0] and "NaN" in report.failures[1]
    assert report.received_devices == ()
    for w, w_start in zip(strategy.weights, w0, strict=True):
        np.testing.assert_array_equal(w, w_start)  # nothing aggregated
    np.testing.assert_array_equal(strategy.aoi.ages, np.ones_like(strategy.aoi.ages))  # nobody's ages reset


def test_reply_without_metrics_or_from_the_wrong_device_is_dropped(cnn):
    regions, _w0 = cnn
    app = ClientApp()

    @app.train()
    def odd(msg, context):
        device = P.partition_id(context.node_config)
        instruction = P.TrainInstruction.from_content(msg.content)
        if device == 0:  # claims to be device 1
            return reply_to(instruction, 1, instruction.arrays).to_reply(msg)
        content = reply_to(instruction, device, instruction.arrays).to_content()
        del content[P.METRICS]
        return Message(content, reply_to=msg)

    full = regions.full_kept()
    strategy, reports = _strategy(cnn, {1: [(0, full), (1, full)]})
    metrics = _round(strategy, InProcessGrid(app, 2), 1)[1]
    (report,) = reports
    assert "device 1" in report.failures[0]
    assert repr(P.METRICS) in report.failures[1]
    assert metrics[P.NUM_FAILURES] == 2 and metrics[P.NUM_UPDATES] == 0


def test_every_policy_is_asked_the_same_way(cnn):
    """One uniform call: keep counts from the schedule, this device's ages per layer and the global model."""
    regions, _w0 = cnn
    sub = _kept(regions, [[1, 2], [0, 15], [7]])
    strategy, _ = _strategy(cnn, {1: [(0, regions.full_kept()), (1, sub)], 2: [(1, sub)]})
    grid = InProcessGrid(scripted_client({0: 1.0, 1: 2.0}), 2)
    _round(strategy, grid, 1)
    ages_before_round_2 = strategy.aoi.ages.copy()
    _round(strategy, grid, 2)
    contexts = strategy.policy.contexts
    assert [(c.server_round, c.device_id) for c in contexts] == [(1, 0), (1, 1), (2, 1)]
    last = contexts[-1]
    assert last.region_map is regions
    assert [a.shape for a in last.group_ages()] == [(s,) for s in regions.layer_sizes]
    np.testing.assert_array_equal(np.concatenate(last.group_ages()), ages_before_round_2[1])
    assert len(last.global_arrays) == len(regions.param_names)


def test_aoi_policy_keeps_what_the_amp_scheduler_chose(tmp_path, monkeypatch):
    """With the ``aoi`` policy the uniform policy call returns the AMP scheduler's own ``kept_indices``."""
    import json

    from amp_fl.config import load_config
    from amp_fl.launch.inprocess import run_in_process

    cfg = load_config(
        {"dataset": {"name": "mnist5k"}, "wireless": {"num_devices": 4, "num_rbs": 2}, "num_rounds": 3, "seed": 5}
    )
    assert (cfg.scheduling.name, cfg.pruning.policy) == ("amp", "aoi")
    sent: list[tuple[Schedule, dict]] = []
    configure_train = AmpFlStrategy.configure_train

    def spy(self, server_round, arrays, config, grid):
        messages = list(configure_train(self, server_round, arrays, config, grid))
        sent.append((self._pending.schedule, dict(self._pending.kept)))
        return messages

    monkeypatch.setattr(AmpFlStrategy, "configure_train", spy)
    run = run_in_process(cfg, tmp_path)
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert len(sent) == 3
    for schedule, kept_by_policy in sent:
        for device, kept in zip(schedule.device_ids, schedule.kept_indices, strict=True):
            got = [k.tolist() for k in kept_by_policy[int(device)]]
            assert got == [np.asarray(k).tolist() for k in kept], f"round {schedule.round}, device {device}"


def test_settings_reject_unknown_scope_and_bad_learning_rate():
    assert COMPENSATION_SCOPES == ("all", "scheduled", "none", "discounted")
    with pytest.raises(ValueError, match="compensation"):
        AmpFlSettings(0.1, "some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="learning_rate"):
        AmpFlSettings(0.0)
    with pytest.raises(ValueError, match="memory_friendly"):
        AmpFlSettings(0.1, "none", memory_friendly=True)


def test_memory_friendly_aggregate_equals_cache_by_theorem_2():
    rng = np.random.default_rng(0)
    shapes = [(4, 3), (5,)]
    cache, gbar = GradientCache(3, shapes), MemoryFriendlyAggregate(3, shapes)
    device_caches = {k: [np.zeros(s, np.float32) for s in shapes] for k in range(3)}
    for _ in range(6):
        updates_c, updates_m = [], []
        for k in rng.choice(3, size=2, replace=False):
            values = [rng.normal(size=s).astype(np.float32) for s in shapes]
            held = [rng.random(s) < 0.5 for s in shapes]
            updates_c.append(DeviceUpdate(int(k), values, held))
            cached = device_caches[k]
            diffs = [np.where(h, v - c, 0).astype(np.float32) for v, c, h in zip(values, cached, held, strict=True)]
            updates_m.append(DeviceUpdate(int(k), diffs, held))
            for c, v, h in zip(device_caches[k], values, held, strict=True):
                c[h] = v[h]
        for u in updates_c:
            cache.update(u)
        direction_m = gbar.apply(updates_m)
        for a, b in zip(cache.mean_over_all(), direction_m, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_fresh_mean_is_zero_outside_held_entries():
    held = [np.array([True, False, True])]
    out = fresh_mean(
        [
            DeviceUpdate(0, [np.array([2.0, 9.0, 4.0])], held),
            DeviceUpdate(1, [np.array([4.0, 9.0, 0.0])], [np.array([True, False, False])]),
        ],
        [(3,)],
    )
    np.testing.assert_allclose(out[0], [3.0, 0.0, 2.0])
