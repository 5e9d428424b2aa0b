"""Issue 23, item 1: BatchNorm buffers are averaged as values, parameters take the gradient path.

A tiny residual net (1x1 stem conv + BatchNorm, one residual branch conv + BatchNorm added to the
stem's output, average pool, FC) whose coupled channel group has 3 channels. Every expected value
below is worked out by hand in the comments.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from strategy_doubles import ScriptedPolicy, ScriptedScheduler, SilentChannel, reply_to, setup
from torch import nn

from amp_fl import protocol as P
from amp_fl.client.settings import TrainSettings
from amp_fl.client.trainer import ModelInfo, SubModelTrainer, upload_of
from amp_fl.data.datasets import ArraySplit
from amp_fl.launch.inprocess import FIRST_NODE_ID, InProcessGrid
from amp_fl.models import registry
from amp_fl.pruning.maps import region_map_for
from amp_fl.pruning.submodel import module_arrays
from amp_fl.strategy.aggregation import apply_global_step
from amp_fl.strategy.amp_fl import AmpFlSettings, AmpFlStrategy
from amp_fl.strategy.buffers import StateSplit, average_buffers
from amp_fl.strategy.server_optimizer import ServerOptimizerSettings

NAME = "tiny_residual_test"
INPUT = (1, 2, 2)
WIDTH = 3


class TinyResidual(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, WIDTH, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTH)
        self.conv2 = nn.Conv2d(WIDTH, WIDTH, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(WIDTH)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(WIDTH, num_classes)

    def forward(self, x):
        a = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(self.pool(torch.relu(a + self.bn2(self.conv2(a)))).flatten(1))


@pytest.fixture(name="registered")
def registered_fixture(monkeypatch):
    """The tiny net in the model registry for one test (the registry's list stays as other tests expect it)."""
    monkeypatch.setitem(
        registry._REGISTRY,
        NAME,
        registry.ModelSpec(NAME, lambda *, num_classes, input_shape: TinyResidual(input_shape[0], num_classes), INPUT),
    )


def tiny() -> tuple[TinyResidual, object, list[np.ndarray]]:
    torch.manual_seed(0)
    model = TinyResidual()
    return model, region_map_for(model, INPUT), module_arrays(model)


def test_the_residual_add_couples_stem_and_branch_into_one_group():
    _, regions, _ = tiny()
    assert [(g.size, g.members) for g in regions.groups] == [(WIDTH, ("conv1", "conv2"))]
    split = StateSplit.of(regions)
    names = regions.param_names
    assert [names[i] for i in split.buffers] == [
        f"{bn}.{b}" for bn in ("bn1", "bn2") for b in ("running_mean", "running_var", "num_batches_tracked")
    ]


def test_trainer_uploads_gradients_of_parameters_and_trained_values_of_buffers(registered):
    _, regions, arrays = tiny()
    names = regions.param_names
    arrays[names.index("conv1.weight")] = np.array([1.0, 2.0, 0.0], dtype=np.float32).reshape(3, 1, 1, 1)
    # Two 2x2 images 0..3 and 4..7: the stem's channel c sees w_c * x, batch mean 3.5 w_c and unbiased
    # variance 6 w_c^2 (sum of squared deviations of 0..7 is 42, over 7). One step, momentum 0.1:
    # running_mean = 0.1 * 3.5 w_c, running_var = 0.9 + 0.1 * 6 w_c^2, num_batches_tracked 0 -> 1.
    images = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)
    data = ArraySplit(images, np.array([0, 1], dtype=np.int64))
    trainer = SubModelTrainer(data, ModelInfo(NAME, INPUT, 2), regions)
    eta = 0.1
    settings = TrainSettings(learning_rate=eta, local_steps=1, batch_size=2)
    result = trainer.fit(arrays, regions.full_kept(), settings, np.random.default_rng(0))
    up = dict(zip(names, result.gradient, strict=True))
    np.testing.assert_allclose(up["bn1.running_mean"], [0.35, 0.7, 0.0], rtol=1e-6)
    np.testing.assert_allclose(up["bn1.running_var"], [1.5, 3.3, 0.9], rtol=1e-6)
    assert up["bn1.num_batches_tracked"].dtype == np.int64 and int(up["bn1.num_batches_tracked"]) == 1
    # Parameters: (w_start - w_end) / eta, i.e. the weights' own change divided by eta.
    end = dict(zip(names, result.weights, strict=True))
    start = dict(zip(names, arrays, strict=True))
    np.testing.assert_allclose(up["fc.weight"], (start["fc.weight"] - end["fc.weight"]) / eta, rtol=1e-5)
    assert np.any(up["fc.weight"] != 0)


def test_upload_of_leaves_buffers_as_values():
    start = [np.array([1.0, 2.0], np.float32), np.array(3, np.int64)]
    end = [np.array([0.5, 1.0], np.float32), np.array(11, np.int64)]
    up = upload_of(start, end, 0.5, [True, False])
    np.testing.assert_array_equal(up[0], [1.0, 2.0])  # (1 - 0.5) / 0.5, (2 - 1) / 0.5
    assert up[1].dtype == np.int64 and up[1].shape == () and int(up[1]) == 11


def test_average_buffers_by_hand():
    current = [np.array([0.0, 0.0, 9.0], np.float32), np.array(4, np.int64)]
    values = [[np.array([10.0, 0.0, 0.0]), np.array(6)], [np.array([30.0, 40.0, 0.0]), np.array(9)]]
    held = [[np.array([True, False, False]), np.array(True)], [np.array([True, True, False]), np.array(True)]]
    mean, counter = average_buffers(current, values, held)
    np.testing.assert_array_equal(mean, [20.0, 40.0, 9.0])  # (10+30)/2, 40 alone, nobody: kept
    assert mean.dtype == np.float32
    assert isinstance(counter, np.ndarray) and counter.dtype == np.int64 and int(counter) == 8  # rint(7.5) = 8


def test_apply_global_step_keeps_zero_dim_arrays_arrays():
    # A 0-d array minus a 0-d array is a NumPy scalar, which ArrayRecord rejects (the resnet18 crash).
    out = apply_global_step([np.array(2.0, np.float32)], [np.array(1.0)], 0.5)
    assert isinstance(out[0], np.ndarray) and out[0].shape == () and float(out[0]) == 1.5


def _buffer_client(sent: dict[int, dict[str, float]], gradient: float):
    """Every parameter entry uploads ``gradient``; device k's buffers upload ``sent[k][name]``."""
    from flwr.app import Context, Message
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        device = P.partition_id(context.node_config)
        instruction = P.TrainInstruction.from_content(msg.content)
        arrays = [
            np.full_like(a, sent[device].get(name.rsplit(".", 1)[1], gradient))
            for name, a in zip(instruction.names, instruction.arrays, strict=True)
        ]
        return reply_to(instruction, device, arrays).to_reply(msg)

    return app


@pytest.mark.parametrize(
    "server",
    [None, ServerOptimizerSettings("adam", lr=0.01)],
    ids=["sgd", "adam"],
)
def test_amp_fl_averages_buffers_over_holders_and_steps_only_parameters(server):
    _, regions, weights = tiny()
    names = regions.param_names
    # Device 0 holds channel 0, device 1 channels 0 and 1; channel 2 is held by nobody.
    plan = {1: [(0, [np.array([0])]), (1, [np.array([0, 1])])]}
    strategy = AmpFlStrategy(
        region_map=regions,
        initial_weights=weights,
        scheduler=ScriptedScheduler(plan),
        channel=SilentChannel(),
        policy=ScriptedPolicy(plan),
        device_nodes={k: FIRST_NODE_ID + k for k in range(2)},
        train_setup=setup(2),
        settings=AmpFlSettings(0.5, compensation="all", server=server),
    )
    assert strategy.cache is not None and len(strategy.cache.shapes) == len(StateSplit.of(regions).parameters)
    sent = {
        0: {"running_mean": 10.0, "running_var": 20.0, "num_batches_tracked": 6.0},
        1: {"running_mean": 30.0, "running_var": 50.0, "num_batches_tracked": 9.0},
    }
    grid = InProcessGrid(_buffer_client(sent, gradient=1.0), 2)
    from flwr.app import ArrayRecord, ConfigRecord

    replies = grid.send_and_receive(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), grid))
    record, _ = strategy.aggregate_train(1, replies)
    assert record is not None  # an ArrayRecord of every array: no NumPy scalar in it
    new = dict(zip(names, strategy.weights, strict=True))
    for bn in ("bn1", "bn2"):
        np.testing.assert_array_equal(new[f"{bn}.running_mean"], [20.0, 30.0, 0.0])  # (10+30)/2, 30, kept 0
        np.testing.assert_array_equal(new[f"{bn}.running_var"], [35.0, 50.0, 1.0])  # (20+50)/2, 50, kept 1
        counter = new[f"{bn}.num_batches_tracked"]
        assert counter.dtype == np.int64 and counter.shape == () and int(counter) == 8  # rint(7.5), not stepped
    # The gradient path: fc.bias is held by both (g = 1 each); compensation "all" over K = 2 devices
    # gives direction 1, and the step moves it by 0.5 (sgd) or by lr = 0.01 (Adam's first step: m/sqrt(v) = 1).
    step = 0.5 if server is None else 0.01
    old = dict(zip(names, weights, strict=True))
    np.testing.assert_allclose(new["fc.bias"], old["fc.bias"] - step, rtol=1e-5)
    assert strategy.cache.total[0].shape == old["conv1.weight"].shape  # the cache holds parameters only


def test_amp_fl_state_round_trips_integer_counters():
    _, regions, weights = tiny()
    plan = {1: [(0, [np.arange(WIDTH)])]}
    strategy = AmpFlStrategy(
        region_map=regions,
        initial_weights=weights,
        scheduler=ScriptedScheduler(plan),
        channel=SilentChannel(),
        policy=ScriptedPolicy(plan),
        device_nodes={0: FIRST_NODE_ID},
        train_setup=setup(1),
        settings=AmpFlSettings(0.5),
    )
    state = strategy.state_dict()
    strategy.load_state_dict(state)
    counters = [w for n, w in zip(regions.param_names, strategy.weights, strict=True) if n.endswith("tracked")]
    assert all(c.dtype == np.int64 for c in counters)


def _masked_buffer_client(regions):
    """Sparse FedAvg device k: update k + 1 on every surviving parameter entry; buffers
    running_mean 10 (k + 1), running_var 20 (k + 1), num_batches_tracked 3 k + 5."""
    from flwr.app import Context, Message
    from flwr.clientapp import ClientApp

    from amp_fl.client.sparse_fedavg import prunable_arrays
    from amp_fl.protocol.sparse_fedavg import MaskedTrainInstruction, MaskedTrainReply
    from amp_fl.pruning.sparse_encoding import pack_values

    app = ClientApp()

    @app.train("masked")
    def train(msg: Message, context: Context) -> Message:
        k = P.partition_id(context.node_config)
        instruction = MaskedTrainInstruction.from_content(msg.content)
        arrays, masks = instruction.decode(regions.param_names, regions.shapes, prunable_arrays(regions))
        buffer = {"running_mean": 10.0 * (k + 1), "running_var": 20.0 * (k + 1), "num_batches_tracked": 3.0 * k + 5}
        update = [
            np.full(a.shape, buffer.get(name.rsplit(".", 1)[1], k + 1.0), dtype=np.float32)
            for name, a in zip(regions.param_names, arrays, strict=True)
        ]
        values = tuple(pack_values(u, m) for u, m in zip(update, masks, strict=True))
        reply = MaskedTrainReply(k, tuple(regions.param_names), values, 4, 1.0, 0.0, instruction.round)
        return reply.to_reply(msg)

    return app


def test_sparse_fedavg_over_the_air_averages_buffers_exactly_and_noises_only_parameters():
    from conftest import make_train_setup
    from flwr.app import ArrayRecord, ConfigRecord

    from amp_fl.client.sparse_fedavg import prunable_arrays
    from amp_fl.pruning.magnitude import MagnitudePruner
    from amp_fl.strategy.sparse_fedavg import SparseFedAvgStrategy
    from amp_fl.wireless.over_the_air import OtaSettings, OverTheAirChannel

    _, regions, weights = tiny()
    strategy = SparseFedAvgStrategy(
        region_map=regions,
        initial_weights=weights,
        pruner=MagnitudePruner(regions.shapes, prunable_arrays(regions), method="one_shot", target=0.5),
        device_nodes={k: FIRST_NODE_ID + k for k in range(4)},
        train_setup=make_train_setup(num_devices=4),
        seed=0,
        participants=4,
        over_the_air=OverTheAirChannel(OtaSettings(snr_db=10.0, truncation_threshold=0.01, normalise=False), seed=3),
    )
    grid = InProcessGrid(_masked_buffer_client(regions), 4)
    messages = list(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), grid))
    strategy.aggregate_train(1, grid.send_and_receive(messages))
    # PIU 0 is silent in this round (its |h|^2 fell under g_th): the buffers are the transmitters' mean.
    assert strategy.history[-1].transmitters == (1, 2, 3)
    new = dict(zip(regions.param_names, strategy.weights, strict=True))
    old = dict(zip(regions.param_names, weights, strict=True))
    for bn in ("bn1", "bn2"):
        np.testing.assert_array_equal(new[f"{bn}.running_mean"], [30.0] * WIDTH)  # 10 * mean(2, 3, 4)
        np.testing.assert_array_equal(new[f"{bn}.running_var"], [60.0] * WIDTH)  # 20 * mean(2, 3, 4)
        counter = new[f"{bn}.num_batches_tracked"]
        assert counter.dtype == np.int64 and int(counter) == 11  # mean(8, 11, 14)
    # Parameters: the mean update 3 = mean(2, 3, 4) received through a 10 dB channel (constant updates: no
    # normalisation, which would divide by their zero spread): near, not equal (noise sd 1.05 = sqrt(N0 / rho) / 3).
    step = new["fc.bias"] - old["fc.bias"]
    assert np.all(np.abs(step - 3.0) < 6.0) and np.any(step != np.float32(3.0))
    # The analog upload carries the parameters only: one channel use per surviving parameter entry.
    # 32 parameter entries (3 + 9 conv, 6 + 2 fc, 4 x 3 BatchNorm affine), less the 9 of the 18 conv/fc
    # weights one-shot pruned before round 1; the 14 buffer entries travel apart.
    assert strategy.history[-1].channel_uses == 32 - 9
