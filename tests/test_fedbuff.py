"""Issue 20: FedBuff (buffered asynchronous aggregation) on the simulated clock, against hand-built cases.

The system of the strategy tests is chosen so that every latency is a simple fraction: full-model
compute ``1e9 FLOPs / f_k`` takes 1, 1/2 and 1/4 s on devices 0, 1, 2; their SNRs 7, 3 and 1 give
rates of 3, 2 and 1 Mbit/s, so the 1 Mbit upload takes 1/3, 1/2 and 1 s. A device's update arrives
``4/3``, ``1`` and ``5/4`` s after it received the model.
"""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import make_train_setup
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from amp_fl import protocol as P
from amp_fl.config import load_config
from amp_fl.errors import ArgumentError, ConfigError
from amp_fl.launch.inprocess import FIRST_NODE_ID, InProcessGrid, run_in_process
from amp_fl.scheduling.asynchronous import AsyncDispatcher
from amp_fl.server import checkpoint as C
from amp_fl.strategy.buffered import Arrival, ArrivalQueue, FedBuffSettings, buffered_direction, staleness_weights
from amp_fl.strategy.fedbuff import FedBuffStrategy
from amp_fl.strategy.report import RoundReport
from amp_fl.strategy.server_optimizer import ServerOptimizerSettings
from amp_fl.wireless.channel import ChannelState
from amp_fl.wireless.config import LatencyConfig, WirelessConfig
from amp_fl.wireless.devices import DevicePopulation
from amp_fl.wireless.latency import SystemModel

SNR = (7.0, 3.0, 1.0)  # rates 3, 2, 1 Mbit/s on a 1 MHz RB
CPU_HZ = (1e9, 2e9, 4e9)  # compute 1, 1/2, 1/4 s
LATENCY_S = (1.0 + 1 / 3, 0.5 + 0.5, 0.25 + 1.0)


def system(num_rbs: int = 3, snr=SNR, cpu_hz=CPU_HZ) -> SystemModel:
    k = len(snr)
    wireless = WirelessConfig(num_devices=k, num_rbs=num_rbs, bandwidth_hz=1e6)
    latency = LatencyConfig(num_params=31_250, flops_per_sample=1e9, t_max_s=1.0, local_steps=1, batch_size=1)
    population = DevicePopulation(
        cpu_hz=np.array(cpu_hz), flops_per_cycle=np.ones(k), tx_power_w=np.ones(k), distance_m=np.ones(k)
    )
    return SystemModel(wireless, latency, population)


class FixedChannel:
    """Every round the same gains (SNR ``snr`` over the noise, p_k = 1 W) and no interference."""

    def __init__(self, model: SystemModel, snr=SNR) -> None:
        self.state = ChannelState(
            gains=np.array(snr) * model.wireless.noise_power_w, interference_w=np.zeros(model.num_rbs)
        )

    def observe(self, round):
        return self.state


# ------------------------------------------------------------------ pure maths
def test_staleness_weights_are_one_over_the_root_of_one_plus_the_staleness():
    np.testing.assert_allclose(staleness_weights(np.array([0, 1, 3, 8]), 0.5), [1.0, 1 / math.sqrt(2), 0.5, 1 / 3])
    np.testing.assert_array_equal(staleness_weights(np.array([0, 5]), 0.0), [1.0, 1.0])  # no discount
    np.testing.assert_allclose(staleness_weights(np.array([1, 3]), 1.0), [0.5, 0.25])
    with pytest.raises(ArgumentError, match="staleness"):
        staleness_weights(np.array([-1]), 0.5)


def _arrival(t: float, device: int, version: int = 0, value: float = 0.0) -> Arrival:
    update = [np.full(2, value, np.float32)]
    return Arrival(t, device, rb=device, version=version, update=update, train_loss=1.0, uplink_bytes=8)


def test_the_queue_gives_arrivals_back_in_time_order_ties_in_push_order_and_survives_its_state():
    queue = ArrivalQueue()
    for t, device in ((0.3, 0), (0.1, 1), (0.3, 2), (0.2, 3), (0.3, 4)):
        queue.push(_arrival(t, device))
    assert [a.device for a in queue.pop(2)] == [1, 3]
    restored = ArrivalQueue()
    restored.load_state_dict(queue.state_dict())
    restored.push(_arrival(0.3, 5))  # pushed after the others: last of the tie
    queue.push(_arrival(0.3, 5))
    assert [a.device for a in restored.pop(4)] == [a.device for a in queue.pop(4)] == [0, 2, 4, 5]
    assert len(restored) == len(queue) == 0
    with pytest.raises(ArgumentError, match="count"):
        queue.pop(1)


def test_the_buffered_direction_weighs_each_update_by_its_staleness_and_divides_by_b():
    # The server is at version 3: the first update is fresh (weight 1), the second 3 versions old (1/2).
    arrivals = [
        Arrival(1.0, 0, 0, 3, [np.array([2.0, 4.0], np.float32)], 0.5, 8),
        Arrival(2.0, 1, 1, 0, [np.array([6.0, -2.0], np.float32)], 0.5, 8),
    ]
    direction = buffered_direction(arrivals, version=3, exponent=0.5, shapes=[(2,)])
    np.testing.assert_array_equal(direction[0], [(2 + 0.5 * 6) / 2, (4 + 0.5 * -2) / 2])  # [2.5, 1.5]


def test_settings_are_checked_once_by_the_settings_and_named_by_the_config():
    assert FedBuffSettings().slots(num_devices=100, num_rbs=10) == 10  # one device per RB
    assert FedBuffSettings(buffer_size=2, concurrency=4).slots(num_devices=6, num_rbs=5) == 4
    for kwargs, name in (
        ({"buffer_size": 0}, "buffer_size"),
        ({"buffer_size": 3, "concurrency": 2}, "concurrency"),
        ({"staleness_exponent": -0.5}, "staleness_exponent"),
    ):
        with pytest.raises(ArgumentError) as info:
            FedBuffSettings(**kwargs)
        assert info.value.name == name
    base = {"algorithm": "fedbuff", "strategy": {"compensation": "none"}, "wireless": {"num_devices": 6, "num_rbs": 4}}
    for section, key in (({"concurrency": 5}, "fedbuff.concurrency"), ({"buffer_size": 5}, "fedbuff.buffer_size")):
        with pytest.raises(ConfigError, match=rf"^invalid config {key}: .*min\(K, R\) = 4"):
            load_config({**base, "fedbuff": section})
    with pytest.raises(ConfigError, match=r"^invalid config fedbuff.selection"):
        load_config({**base, "fedbuff": {"selection": "aoi"}})
    with pytest.raises(ConfigError, match=r"^invalid config strategy.compensation: algorithm=fedbuff keeps no"):
        load_config({**base, "strategy": {"compensation": "all"}})


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"strategy": {"compensation": "none", "memory_friendly": True}}, "strategy.memory_friendly"),
        ({"strategy": {"compensation": "none", "max_update_norm": 10.0}}, "strategy.max_update_norm"),
        ({"strategy": {"compensation": "none", "personal_eval_interval": 5}}, "strategy.personal_eval_interval"),
        ({"strategy": {"compensation": "none"}, "aggregation": "over_the_air"}, "aggregation"),
    ],
)
def test_amp_fl_options_fedbuff_does_not_read_fail_at_load(values, key):
    with pytest.raises(ConfigError) as info:
        load_config({"algorithm": "fedbuff", **values})
    assert info.value.key == key


# ------------------------------------------------------------------ dispatch
def test_rate_dispatch_fills_the_free_rbs_with_the_fastest_idle_uplinks_and_their_table_i_latencies():
    model = system(num_rbs=2, snr=(7.0, 3.0, 1.0, 15.0), cpu_hz=(1e9, 2e9, 4e9, 1e9))
    dispatcher = AsyncDispatcher(model, seed=0, selection="rate")
    state = FixedChannel(model, snr=(7.0, 3.0, 1.0, 15.0)).observe(1)
    # Device 3 (the best uplink) is in flight on RB 1: RB 0 goes to device 0, the best idle one.
    one = dispatcher.dispatch(1, state, busy_devices=[3], busy_rbs=[1], slots=1)
    assert one.device_ids.tolist() == [0] and one.rb_ids.tolist() == [0]
    np.testing.assert_allclose(one.compute_s, [1.0])
    np.testing.assert_allclose(one.upload_s, [1 / 3])
    both = dispatcher.dispatch(1, state, busy_devices=[], busy_rbs=[], slots=2)
    assert sorted(both.device_ids.tolist()) == [0, 3] and sorted(both.rb_ids.tolist()) == [0, 1]
    np.testing.assert_allclose(both.latency_s[np.argsort(both.device_ids)], [1 + 1 / 3, 1 + 1 / 4])  # 4 Mbit/s
    assert dispatcher.dispatch(1, state, busy_devices=[0, 3], busy_rbs=[0, 1], slots=2).size == 0  # no free RB
    fewer = dispatcher.dispatch(1, state, busy_devices=[], busy_rbs=[], slots=1)  # concurrency < R: the best pair
    assert fewer.device_ids.tolist() == [3]


def test_random_dispatch_is_seeded_per_round_and_never_picks_busy_or_unreachable_devices():
    snr = (7.0, 3.0, 0.0, 1.0, 2.0, 5.0)  # device 2 has gain 0: its update would never arrive
    model = system(num_rbs=4, snr=snr, cpu_hz=(1e9,) * 6)
    state = FixedChannel(model, snr=snr).observe(1)
    a, b = (AsyncDispatcher(model, seed=7, selection="random") for _ in range(2))
    picks = [a.dispatch(r, state, busy_devices=[5], busy_rbs=[2], slots=3) for r in range(1, 30)]
    again = [b.dispatch(r, state, busy_devices=[5], busy_rbs=[2], slots=3) for r in range(1, 30)]
    for one, two in zip(picks, again, strict=True):
        assert one.device_ids.tolist() == two.device_ids.tolist() and one.rb_ids.tolist() == two.rb_ids.tolist()
        assert one.size == 3 and not {2, 5} & set(one.device_ids.tolist()) and 2 not in one.rb_ids.tolist()
        assert len(set(one.rb_ids.tolist())) == 3
    assert len({tuple(p.device_ids.tolist()) for p in picks}) > 1  # a new draw each round
    assert {d for p in picks for d in p.device_ids.tolist()} == {0, 1, 3, 4}


# ------------------------------------------------------------------ the strategy, hand-built
LR = 0.5
VALUES = (4.0, 2.0, 6.0)  # device k's "gradient": VALUES[k] in every entry


def recording_client(received: dict[tuple[int, int], float], fails: tuple[int, int] | None = None) -> ClientApp:
    """Device k replies VALUES[k] everywhere; records the first entry of the model it was sent, by (round, device).

    ``fails = (round, device)``: that device's ClientApp raises in that round.
    """
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        device = P.partition_id(context.node_config)
        instruction = P.TrainInstruction.from_content(msg.content)
        if (instruction.round, device) == fails:
            raise RuntimeError("the board crashed")
        received[(instruction.round, device)] = float(instruction.arrays[0].flat[0])
        gradient = tuple(np.full_like(a, VALUES[device]) for a in instruction.arrays)
        reply = P.TrainReply(device, instruction.names, gradient, 1, float(device), 0.0, instruction.round)
        return reply.to_reply(msg)

    return app


def hand_built(cnn, buffer_size: int) -> tuple[FedBuffStrategy, list[RoundReport]]:
    """The strategy on the hand-built system (K = R = C = 3), sgd at LR, and the list of its round reports."""
    regions, weights = cnn
    model = system()
    reports: list[RoundReport] = []
    strategy = FedBuffStrategy(
        region_map=regions,
        initial_weights=weights,
        dispatcher=AsyncDispatcher(model, seed=0),
        channel=FixedChannel(model),
        device_nodes={k: FIRST_NODE_ID + k for k in range(3)},
        train_setup=make_train_setup(num_devices=3, learning_rate=LR),
        settings=FedBuffSettings(buffer_size=buffer_size),
        optimizer=ServerOptimizerSettings("sgd", LR),
        on_round_end=reports.append,
    )
    return strategy, reports


def run_round(strategy: FedBuffStrategy, grid: InProcessGrid, server_round: int) -> None:
    messages = strategy.configure_train(server_round, ArrayRecord(), ConfigRecord(), grid)
    strategy.aggregate_train(server_round, grid.send_and_receive(messages))


def test_three_server_steps_by_hand(cnn):
    """K = R = C = 3, B = 2. Round 1 (t = 0): all three start on version 0 and arrive at 1 (device 1),
    5/4 (device 2) and 4/3 (device 0); the step takes devices 1 and 2 (fresh): d = (2 + 6) / 2 = 4, t = 5/4.
    Round 2: devices 1 and 2 restart at 5/4 on version 1 (arriving at 9/4 and 5/2); the step takes device 0
    (1 version stale, weight 1/sqrt 2) and device 1 (fresh): d = (4 / sqrt 2 + 2) / 2, t = 9/4.
    Round 3: devices 0 and 1 restart at 9/4 on version 2 (arriving at 43/12 and 13/4); the step takes device 2
    (1 stale) and device 1: d = (6 / sqrt 2 + 2) / 2, t = 13/4."""
    _, weights = cnn
    strategy, reports = hand_built(cnn, buffer_size=2)
    received: dict[tuple[int, int], float] = {}
    grid = InProcessGrid(recording_client(received), 3)
    w0 = float(weights[0].flat[0])
    directions = [4.0, (4 / math.sqrt(2) + 2) / 2, (6 / math.sqrt(2) + 2) / 2]
    expected_w = np.cumsum([w0] + [-LR * d for d in directions])
    for server_round in (1, 2, 3):
        run_round(strategy, grid, server_round)
        assert strategy.version == server_round
        step = LR * sum(directions[:server_round])  # every entry takes the same steps
        for now, initial in zip(strategy.weights, weights, strict=True):
            np.testing.assert_allclose(now, initial - step, rtol=1e-6, atol=1e-6)
    # Who started when, on which model (the version current at the round's start).
    assert [sorted(r.sent_devices) for r in reports] == [[0, 1, 2], [1, 2], [0, 1]]
    for (server_round, _), first in received.items():
        assert first == pytest.approx(expected_w[server_round - 1], rel=1e-6)
    # Who arrived in which step, in arrival order, and the simulated time each step happened at.
    assert [r.received_devices for r in reports] == [(1, 2), (0, 1), (2, 1)]
    np.testing.assert_allclose([r.round_latency_s for r in reports], [5 / 4, 1.0, 1.0])
    assert strategy.now_s == pytest.approx(13 / 4)
    latency = {p.device: p.compute_latency_s + p.upload_latency_s for p in reports[0].participants}
    np.testing.assert_allclose([latency[k] for k in range(3)], LATENCY_S)
    assert all(p.keep_fraction == 1.0 and p.kept_ratio == 1.0 for r in reports for p in r.participants)
    assert reports[0].train_loss == {1: 1.0, 2: 2.0} and reports[0].uplink_bytes == 2 * 4 * sum(w.size for w in weights)
    # Still in flight after round 3: device 0, on version 2, arriving at 9/4 + 4/3.
    [left] = strategy.queue.in_flight()
    assert (left.device, left.version) == (0, 2) and left.arrival_s == pytest.approx(9 / 4 + 4 / 3)


def test_a_failed_device_is_idle_at_once_and_a_short_buffer_waits(cnn):
    """B = 3, device 1 raises in round 1: two updates are in flight, too few for a step (no time passes, the
    model stays). Round 2 (still t = 0) dispatches only device 1, on version 0; it arrives first (at 1) and
    completes the buffer: d = (2 + 6 + 4) / 3 = 4, all fresh, at t = 4/3."""
    _, weights = cnn
    strategy, reports = hand_built(cnn, buffer_size=3)
    grid = InProcessGrid(recording_client({}, fails=(1, 1)), 3)
    run_round(strategy, grid, 1)
    assert (strategy.version, strategy.now_s, len(strategy.queue)) == (0, 0.0, 2)
    first = reports[0]
    assert first.failure_kinds == {1: "error"} and first.received_devices == () and first.round_latency_s == 0.0
    for now, initial in zip(strategy.weights, weights, strict=True):
        np.testing.assert_array_equal(now, initial)
    run_round(strategy, grid, 2)
    assert reports[1].sent_devices == (1,) and reports[1].received_devices == (1, 2, 0)
    assert reports[1].round_latency_s == pytest.approx(4 / 3) and strategy.version == 1
    for now, initial in zip(strategy.weights, weights, strict=True):
        np.testing.assert_allclose(now, initial - LR * 4.0, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ the run: exact resume
BASE = {
    "algorithm": "fedbuff",
    "strategy": {"compensation": "none"},
    "dataset": {"name": "mnist5k"},
    "wireless": {"num_devices": 6, "num_rbs": 4},
    "fedbuff": {"buffer_size": 2, "selection": "random"},
    "num_rounds": 6,
    "seed": 5,
    "checkpoint": {"every_s": 0.0},  # the resume test crashes at a chosen round: every round checkpoints
}


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in csv.DictReader(f)]


class Crash(BaseException):
    """Stands for the server being killed (BaseException: nothing in the runner may swallow it)."""


def test_a_resumed_fedbuff_run_equals_the_uninterrupted_one(tmp_path, monkeypatch):
    """Crash after round 3, when two updates (trained on older versions) are still in flight: the resumed
    run pops them at the same simulated times with the same staleness, so every row and the final model agree."""
    whole = run_in_process(load_config(BASE), tmp_path / "whole")
    rows = _rows(whole)
    assert [int(r["num_received"]) for r in rows[1:]] == [2] * 6  # one step of B = 2 updates per round
    assert [int(r["num_scheduled"]) for r in rows[1:]] == [4, 2, 2, 2, 2, 2]  # 4 slots, then the 2 freed
    times = [float(r["sim_time_s"]) for r in rows]
    assert all(b > a for a, b in itertools.pairwise(times))

    original = C.Checkpointer.__call__

    def crash_after_round_3(self, r):
        original(self, r)
        if r == 3:
            raise Crash(r)

    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(C.Checkpointer, "__call__", crash_after_round_3)
        with pytest.raises(Crash):
            run_in_process(load_config(BASE), run)
    saved = C.load_checkpoint(run)
    queue = saved.parts["strategy"]["queue"]["entries"]
    assert saved.round == 3 and len(queue) == 2  # updates in flight are part of the checkpoint
    assert (
        saved.parts["strategy"]["now_s"] == saved.parts["clock"]["now_s"] == pytest.approx(float(rows[3]["sim_time_s"]))
    )
    run_in_process(C.resume_config(run), run)
    assert _rows(run) == rows
    with np.load(run / "final_model.npz") as a, np.load(whole / "final_model.npz") as b:
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])


def test_reports_name_fedbuff_runs_fedbuff_not_synchronous_fl():
    from amp_fl.config import config_to_dict
    from amp_fl.report.runs import describe_method

    fedbuff = load_config({**BASE, "scheduling": {"name": "full_model"}})
    assert describe_method(config_to_dict(fedbuff)) == "FedBuff"
    synchronous = load_config({"strategy": {"compensation": "none"}, "scheduling": {"name": "full_model"}})
    assert describe_method(config_to_dict(synchronous)) == "Synchronous FL"


def test_injected_client_failures_leave_steps_of_b_or_none_and_the_run_completes(tmp_path):
    """The AMP-FL ClientApp's failure injector acts under FedBuff too: a failed device holds no slot."""
    cfg = load_config({**BASE, "num_rounds": 8, "failures": {"raise_prob": 0.3}, "checkpoint": {"every": 0}})
    rows = _rows(run_in_process(cfg, tmp_path / "run"))[1:]
    assert sum(int(r["failed_error"]) for r in rows) > 0
    for row in rows:
        assert int(row["num_received"]) in (0, 2)
        assert (float(row["round_latency_s"]) == 0) == (int(row["num_received"]) == 0)  # no step, no time
