"""Issue 10: AMP-FL over the air, per-region aggregation of sub-models, through the strategy's real hooks.

A scripted scheduler / policy / ClientApp (constant gradients c_k on each device's sub-model)
makes the expected global step computable by hand: with a noiseless channel, every entry moves
by ``-eta * mean of c_k over the transmitting devices whose sub-model held it``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_train_setup
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from amp_fl import protocol as P
from amp_fl.config import ConfigError, load_config
from amp_fl.launch.inprocess import FIRST_NODE_ID, InProcessGrid
from amp_fl.pruning.policies import PruningPolicy
from amp_fl.pruning.submodel import extract_arrays, scatter_arrays
from amp_fl.scheduling.schedule import Schedule
from amp_fl.strategy.amp_fl import AmpFlSettings, AmpFlStrategy
from amp_fl.strategy.report import RoundReport
from amp_fl.wireless.channel import ChannelState
from amp_fl.wireless.over_the_air import OtaSettings, channel_from_gains, superpose

LR = 0.5
SETUP = make_train_setup(
    num_devices=3,
    learning_rate=LR,
)


class OneRound:
    """Scheduler and policy double: the given devices with the given kept regions, every round."""

    name = "one-round"

    def __init__(self, plan):
        self.plan = plan  # list of (device, kept per layer)

    def schedule(self, round, channel_state, aoi_table):
        n = len(self.plan)
        sizes = tuple(aoi_table.layer_sizes)
        return Schedule(
            round=round,
            layer_sizes=sizes,
            device_ids=np.array([d for d, _ in self.plan], dtype=np.int64),
            rb_ids=np.arange(n),
            keep_fraction=np.ones(n),
            keep_counts=np.array([[len(k) for k in kept] for _, kept in self.plan]),
            kept_indices=tuple(tuple(np.asarray(k) for k in kept) for _, kept in self.plan),
            weights=np.zeros(n, dtype=np.int64),
            compute_latency_s=np.zeros(n),
            upload_latency_s=np.zeros(n),
            round_latency_s=0.0,
            objective=0,
        )


class PlanPolicy(PruningPolicy):
    name = "plan"

    def __init__(self, plan):
        super().__init__(0)
        self.plan = dict(plan)

    def _select(self, keep_counts, ctx):
        return self.plan[ctx.device_id]


class FixedChannel:
    def observe(self, round):
        return ChannelState(gains=np.ones(3), interference_w=np.ones(1))


class FixedOverTheAir:
    """An over-the-air channel double with chosen gains (the strategy calls ``aggregate``)."""

    def __init__(self, settings, gains):
        self.settings, self.gains = settings, gains

    def aggregate(self, server_round, devices, values, held=None):
        channel = channel_from_gains(self.settings, devices, self.gains[list(devices)])
        return superpose(self.settings, channel, values, held, np.random.default_rng(server_round))


def constant_client(values_by_device):
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        device = P.partition_id(context.node_config)
        instruction = P.TrainInstruction.from_content(msg.content)
        arrays = tuple(np.full_like(a, values_by_device[device]) for a in instruction.arrays)
        reply = P.TrainReply(device, instruction.names, arrays, 1, 1.0, 0.0, instruction.round)
        return reply.to_reply(msg)

    return app


def _plan(regions):
    small = [np.array([0, 2]), np.array([1, 3, 4]), np.arange(0, 128, 3)]
    other = [np.array([2, 5]), np.array([3, 9]), np.arange(0, 128, 2)]
    return [(0, small), (1, other), (2, regions.full_kept())]


def _run(cnn, over_the_air, compensation="none"):
    regions, w0 = cnn
    plan = _plan(regions)
    reports: list[RoundReport] = []
    strategy = AmpFlStrategy(
        region_map=regions,
        initial_weights=w0,
        scheduler=OneRound(plan),
        channel=FixedChannel(),
        policy=PlanPolicy(plan),
        device_nodes={k: FIRST_NODE_ID + k for k in range(3)},
        train_setup=SETUP,
        settings=AmpFlSettings(LR, compensation),
        on_round_end=reports.append,
        over_the_air=over_the_air,
    )
    grid = InProcessGrid(constant_client({0: 1.0, 1: 2.0, 2: 6.0}), 3)
    messages = strategy.configure_train(1, ArrayRecord(), ConfigRecord(), grid)
    strategy.aggregate_train(1, grid.send_and_receive(messages))
    held = {d: scatter_arrays(extract_arrays(w0, regions, k), regions, k, regions.shapes)[1] for d, k in plan}
    return strategy, reports, held


def test_noiseless_over_the_air_is_the_per_region_mean_over_holders(cnn):
    _, w0 = cnn
    ota = FixedOverTheAir(OtaSettings(snr_db=None, truncation_threshold=0.1), np.ones(3, dtype=complex))
    strategy, reports, held = _run(cnn, ota)
    values = {0: 1.0, 1: 2.0, 2: 6.0}
    for i, (w, start) in enumerate(zip(strategy.weights, w0, strict=True)):
        total = sum(values[d] * held[d][i] for d in values)
        count = sum(held[d][i].astype(int) for d in values)
        np.testing.assert_allclose(w, start - LR * total / count, atol=1e-5)  # device 2 holds everything: count >= 1
    assert reports[-1].received_devices == (0, 1, 2) and reports[-1].failures == {}


def test_a_silent_piu_is_left_out_and_keeps_its_ages(cnn):
    _, w0 = cnn
    gains = np.array([1.0, 0.1, 1.0], dtype=complex)  # |h_1|^2 = 0.01 < 0.1: device 1 stays silent
    strategy, reports, held = _run(cnn, FixedOverTheAir(OtaSettings(snr_db=None, truncation_threshold=0.1), gains))
    values = {0: 1.0, 2: 6.0}
    for i, (w, start) in enumerate(zip(strategy.weights, w0, strict=True)):
        total = sum(values[d] * held[d][i] for d in values)
        count = sum(held[d][i].astype(int) for d in values)
        np.testing.assert_allclose(w, start - LR * total / count, atol=1e-5)
    report = reports[-1]
    assert report.received_devices == (0, 2) and report.failures[1].startswith("silent")
    assert np.all(strategy.aoi.ages[1] == 1)  # its regions were not refreshed (Eq. (9) counts arrivals)
    assert np.all(strategy.aoi.ages[2] == 0)


def test_over_the_air_needs_compensation_none(cnn):
    ota = FixedOverTheAir(OtaSettings(snr_db=None), np.ones(3, dtype=complex))
    with pytest.raises(ValueError, match="over_the_air"):
        _run(cnn, ota, compensation="all")


def test_config_names_the_key_when_ota_meets_a_cache():
    with pytest.raises(ConfigError, match="strategy.compensation"):
        load_config({"aggregation": "over_the_air"})
    cfg = load_config({"aggregation": "over_the_air", "strategy": {"compensation": "none"}})
    assert cfg.ota.noise_var == pytest.approx(1.0 / 100.0)
    with pytest.raises(ConfigError, match="ota.truncation_threshold"):
        load_config({"ota": {"truncation_threshold": 0.0}})
    with pytest.raises(ConfigError, match="num_rounds"):
        load_config(
            {
                "num_rounds": 10,
                "algorithm": "sparse_fedavg",
                "sparse_fedavg": {"target": 0.9, "rate": 0.2, "interval": 1},
            }
        )
    with pytest.raises(ConfigError, match="sparse_fedavg.rewind_round"):
        load_config({"algorithm": "sparse_fedavg", "sparse_fedavg": {"first_round": 2, "rewind_round": 3}})
    with pytest.raises(ConfigError, match="sparse_fedavg.method"):
        load_config({"sparse_fedavg": {"method": "lottery"}})
