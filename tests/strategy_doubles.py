"""Test doubles for driving :class:`AmpFlStrategy` through its real hooks with hand-chosen inputs.

A scripted scheduler and pruning policy return the schedules and kept regions a test lists per
round, so expected AoI tables, caches and global steps can be written down by hand; ClientApps
are real Flower ``ClientApp`` objects run by :class:`~amp_fl.launch.inprocess.InProcessGrid`.
"""

from __future__ import annotations

import numpy as np
from conftest import make_train_setup
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from amp_fl import protocol as P
from amp_fl.launch.inprocess import FIRST_NODE_ID
from amp_fl.pruning.policies import PruningPolicy, SelectionContext
from amp_fl.scheduling.schedule import Schedule
from amp_fl.strategy.amp_fl import AmpFlSettings, AmpFlStrategy
from amp_fl.strategy.report import RoundReport
from amp_fl.wireless.channel import ChannelState

LR = 0.5


class ScriptedScheduler:
    """Returns the schedule listed for each round: ``plan[round] = [(device, kept per layer), ...]``."""

    name = "scripted"

    def __init__(self, plan):
        self.plan = plan

    def schedule(self, round, channel_state, aoi_table):
        entries = self.plan[round]
        sizes = tuple(aoi_table.layer_sizes)
        n = len(entries)
        return Schedule(
            round=round,
            layer_sizes=sizes,
            device_ids=np.array([d for d, _ in entries], dtype=np.int64),
            rb_ids=np.arange(n),
            keep_fraction=np.ones(n),
            keep_counts=np.array([[len(k) for k in kept] for _, kept in entries]).reshape(n, len(sizes)),
            kept_indices=tuple(tuple(np.asarray(k) for k in kept) for _, kept in entries),
            weights=np.zeros(n, dtype=np.int64),
            compute_latency_s=np.full(n, 0.01),
            upload_latency_s=np.full(n, 0.02),
            round_latency_s=0.03,
            objective=0,
        )


class ScriptedPolicy(PruningPolicy):
    """Keeps, for each (round, device), the regions the plan lists; records what it was asked."""

    name = "scripted"

    def __init__(self, plan):
        super().__init__(0)
        self.plan = plan
        self.contexts: list[SelectionContext] = []

    def _select(self, keep_counts, ctx: SelectionContext):
        self.contexts.append(ctx)
        return dict(self.plan[ctx.server_round])[ctx.device_id]


class SilentChannel:
    def observe(self, round):
        return ChannelState(gains=np.ones(2), interference_w=np.ones(1))


def setup(num_devices: int, memory_friendly: bool = False) -> P.TrainSetup:
    return make_train_setup(
        num_devices=num_devices,
        learning_rate=LR,
        memory_friendly=memory_friendly,
    )


def make_strategy(cnn, plan, num_devices: int = 2, **settings) -> tuple[AmpFlStrategy, list[RoundReport]]:
    """The strategy under test (real hooks) and the list its ``on_round_end`` hook appends reports to."""
    regions, weights = cnn
    reports: list[RoundReport] = []
    strategy = AmpFlStrategy(
        region_map=regions,
        initial_weights=weights,
        scheduler=ScriptedScheduler(plan),
        channel=SilentChannel(),
        policy=ScriptedPolicy(plan),
        device_nodes={k: FIRST_NODE_ID + k for k in range(num_devices)},
        train_setup=setup(num_devices, settings.get("memory_friendly", False)),
        settings=AmpFlSettings(LR, **settings),
        on_round_end=reports.append,
    )
    return strategy, reports


def run_round(strategy: AmpFlStrategy, grid, server_round: int):
    messages = strategy.configure_train(server_round, ArrayRecord(), ConfigRecord(), grid)
    replies = grid.send_and_receive(messages)
    return strategy.aggregate_train(server_round, replies)


def reply_to(instruction: P.TrainInstruction, device: int, arrays, loss: float = 1.0) -> P.TrainReply:
    """A well-formed reply to ``instruction`` carrying ``arrays``."""
    return P.TrainReply(
        device=device,
        names=tuple(instruction.names),
        gradient=tuple(np.asarray(a, dtype=np.float32) for a in arrays),
        num_examples=1,
        train_loss=loss,
        fit_seconds=0.0,
        round=instruction.round,
    )


def constant_client(values_by_device) -> ClientApp:
    """A ClientApp whose device k sends the constant ``values_by_device[k]`` in every array."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        device = P.partition_id(context.node_config)
        instruction = P.TrainInstruction.from_content(msg.content)
        arrays = [np.full_like(a, values_by_device[device]) for a in instruction.arrays]
        return reply_to(instruction, device, arrays).to_reply(msg)

    return app
