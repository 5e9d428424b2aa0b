"""Sparse FedAvg with global magnitude pruning (IMP or one-shot), optionally over the air (Flower Message API).

The setting of the IIoT OTA-FL paper (spec section 6): every round a set of PIUs (all of them,
or a seeded random fraction) receives the masked global model in a compact sparse encoding,
trains it with the pruned entries held at zero (:mod:`amp_fl.client.sparse_fedavg`) and sends back its
update ``w_k - w`` (parameters; buffers as values: :mod:`amp_fl.strategy.buffers`); the server averages
the updates, digitally (exact mean) or over the air
(:mod:`amp_fl.wireless.over_the_air`: the superposition of every transmitting PIU's analog
signal plus receiver noise, truncated channel inversion), adds the average to the global model,
and prunes it on the schedule of a :class:`~amp_fl.pruning.magnitude.MagnitudePruner` (IMP:
``rate`` of what remains every ``interval`` rounds; one-shot: the target at once), optionally
rewinding the survivors to their values after an early round.

Round hooks: ``configure_train`` samples the participants and sends each a
:class:`~amp_fl.protocol.sparse_fedavg.MaskedTrainInstruction` (``train.masked``);
``aggregate_train`` checks the replies (:func:`~amp_fl.strategy.replies.collect_replies`: node,
device, round, the masks sent), aggregates, applies the update and any pruning step, and hands a
:class:`~amp_fl.strategy.report.RoundReport` to ``on_round_end`` (the run recorder of AMP-FL runs,
so ``metrics.csv`` and ``schedule.jsonl`` have the same columns). In that report the participants
are the sampled PIUs (one shared band: every ``rb`` is 0; the full model shape: keep fraction 1),
there is no scheduler objective and no AoI table (``None``), ``received_devices`` are the PIUs
whose update reached the server, ``failed`` the others and why (a failed reply, or silent under
truncation), and the uplink bytes count the PIUs that transmitted (a silent PIU trained but sent
nothing). :meth:`SparseFedAvgStrategy.state_dict` saves what a resume needs. The simulated clock charges each
round the slowest participant's dense compute time (unstructured sparsity does not shorten dense
kernels) plus, over the air, the analog upload: one real entry per channel use, ``channel uses / B``
seconds, all PIUs at once; digital aggregation charges no upload time (it is the accuracy
reference, not a latency model). The maths lives in the pruning and wireless packages; this module is glue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from amp_fl import protocol as P
from amp_fl.errors import check_argument
from amp_fl.protocol.sparse_fedavg import MaskedTrainInstruction, MaskedTrainReply
from amp_fl.pruning.magnitude import MagnitudePruner, PruningStep, rewind
from amp_fl.pruning.regions import RegionMap
from amp_fl.pruning.sparse_encoding import encode
from amp_fl.state import State, StateValue, arrays, integer, number, optional_arrays, part
from amp_fl.strategy.buffers import StateSplit, average_buffers, server_array
from amp_fl.strategy.replies import SILENT_REASON, Failure, collect_replies, pending_for
from amp_fl.strategy.report import Participant, RoundReport
from amp_fl.wireless.over_the_air import OtaResult, OverTheAirChannel
from amp_fl.wireless.seeding import check_seed, derive_rng

log = logging.getLogger(__name__)

PARTICIPATION_STREAM = "sparse_fedavg.participation"


def participants_per_round(participation: float, num_devices: int) -> int:
    """PIUs per round for a participation fraction: ``max(1, round(participation * K))``."""
    check_argument(0.0 < participation <= 1.0, "participation", f"must be in (0, 1], got {participation}")
    check_argument(num_devices >= 1, "num_devices", f"must be >= 1, got {num_devices}")
    return max(1, round(participation * num_devices))


def sample_participants(seed: int, server_round: int, devices: Sequence[int], count: int) -> list[int]:
    """``count`` distinct devices drawn uniformly for ``server_round`` (all of them when ``count`` covers them).

    A pure function of ``(seed, server_round)``: from the generator ``("sparse_fedavg.participation", round)``.
    """
    pool = sorted(int(d) for d in devices)
    check_argument(1 <= count <= len(pool), "count", f"must be in [1, {len(pool)}], got {count}")
    if count == len(pool):
        return pool
    rng = derive_rng(check_seed(seed), PARTICIPATION_STREAM, int(server_round))
    picks = rng.choice(len(pool), size=count, replace=False)
    return sorted(pool[int(i)] for i in picks)


@dataclass(frozen=True)
class SparseRound:
    """What the pruning and the channel did in one round (kept in :attr:`SparseFedAvgStrategy.history`)."""

    round: int
    participants: tuple[int, ...]
    transmitters: tuple[int, ...]
    sparsity: float  # of the prunable entries, after this round's pruning step
    pruning_step: PruningStep | None
    channel_uses: int  # over the air: real channel uses of the upload; digital: 0
    max_transmit_power: float  # over the air: the largest mean power per channel use of a transmitter

    def state_dict(self) -> State:
        step = self.pruning_step
        return {
            "round": self.round,
            "participants": list(self.participants),
            "transmitters": list(self.transmitters),
            "sparsity": float(self.sparsity),
            "pruning_step": None if step is None else step.state_dict(),
            "channel_uses": int(self.channel_uses),
            "max_transmit_power": float(self.max_transmit_power),
        }

    @classmethod
    def from_state(cls, state: State) -> SparseRound:
        step = state.get("pruning_step")
        if step is not None and not isinstance(step, dict):
            raise ValueError("state: a round's pruning step must be a dict or None")
        return cls(
            round=integer(state, "round"),
            participants=tuple(_integers(state, "participants")),
            transmitters=tuple(_integers(state, "transmitters")),
            sparsity=number(state, "sparsity"),
            pruning_step=None if step is None else PruningStep.from_state(step),
            channel_uses=integer(state, "channel_uses"),
            max_transmit_power=number(state, "max_transmit_power"),
        )


def _integers(state: State, key: str) -> list[int]:
    value = state.get(key)
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        raise ValueError(f"state: {key!r} must be a list of integers")
    return [int(v) for v in value if isinstance(v, int)]


@dataclass
class _PendingRound:
    round: int
    devices: list[int]
    masks: list[np.ndarray | None]
    downlink_bytes: int = 0
    sent: dict[int, int] = field(default_factory=dict)  # device -> downlink bytes


class SparseFedAvgStrategy(Strategy):
    """FedAvg over masked models with global magnitude pruning, digital or over-the-air aggregation.

    Parameters
    ----------
    region_map : RegionMap
        The model's arrays (names, shapes, which are conv / linear weights).
    initial_weights : sequence of np.ndarray
        The global model, in ``region_map.param_names`` order.
    pruner : MagnitudePruner
        Masks and pruning schedule over the prunable arrays.
    device_nodes : dict[int, int]
        Device id -> Flower node id.
    train_setup : amp_fl.protocol.TrainSetup
        The run-wide part of every instruction (plain SGD only).
    seed : int
        Run seed (participant sampling; the channel has its own).
    participants : int
        PIUs per round (``len(device_nodes)``: full participation).
    over_the_air : OverTheAirChannel, optional
        Aggregate over the analog channel; ``None``: the exact mean.
    rewind_round : int, optional
        Rewind the survivors to the global model after this round (0: the initial model) at
        every pruning step after it; ``None``: no rewinding.
    compute_latency_s : np.ndarray, optional
        Dense local-training time of every device (index = device id) for the simulated clock.
    bandwidth_hz : float
        The analog upload's band (one real entry per channel use: ``uses / B`` seconds).
    on_round_end : callable, optional
        Called with the round's :class:`RoundReport` at the end of ``aggregate_train``.
    """

    def __init__(
        self,
        *,
        region_map: RegionMap,
        initial_weights: Sequence[np.ndarray],
        pruner: MagnitudePruner,
        device_nodes: Mapping[int, int],
        train_setup: P.TrainSetup,
        seed: int,
        participants: int,
        over_the_air: OverTheAirChannel | None = None,
        rewind_round: int | None = None,
        compute_latency_s: np.ndarray | None = None,
        bandwidth_hz: float = 1e6,
        on_round_end: Callable[[RoundReport], None] | None = None,
    ) -> None:
        names = region_map.param_names
        check_argument(len(initial_weights) == len(names), "initial_weights", f"{len(initial_weights)} arrays")
        check_argument(
            pruner.shapes == [tuple(s) for s in region_map.shapes], "pruner", "shapes differ from the model's"
        )
        check_argument(len(device_nodes) >= 1, "device_nodes", "must map at least one device")
        check_argument(1 <= participants <= len(device_nodes), "participants", f"must be in [1, {len(device_nodes)}]")
        check_argument(
            train_setup.local_objective == "sgd" and not train_setup.memory_friendly,
            "train_setup",
            "sparse FedAvg trains with plain local SGD only",
        )
        check_argument(rewind_round is None or rewind_round >= 0, "rewind_round", f"must be >= 0, got {rewind_round}")
        first = pruner.plan.steps()[0].round if pruner.plan.steps() else None
        check_argument(
            rewind_round is None or first is None or rewind_round <= first,
            "rewind_round",
            f"must be <= the first pruning round ({first}), got {rewind_round}",
        )
        check_argument(bandwidth_hz > 0, "bandwidth_hz", f"must be > 0, got {bandwidth_hz}")
        if compute_latency_s is not None:
            compute_latency_s = np.asarray(compute_latency_s, dtype=np.float64)
            check_argument(
                compute_latency_s.shape == (max(device_nodes) + 1,),
                "compute_latency_s",
                f"needs one entry per device id, got shape {compute_latency_s.shape}",
            )
        self.region_map = region_map
        self.names = names
        self.shapes = [tuple(s) for s in region_map.shapes]
        self.pruner = pruner
        self.device_nodes = dict(device_nodes)
        self.node_devices = {node: device for device, node in self.device_nodes.items()}
        self.train_setup = train_setup
        self.seed = check_seed(seed)
        self.participants = int(participants)
        self.over_the_air = over_the_air
        self.rewind_round = rewind_round
        self.compute_latency_s = compute_latency_s
        self.bandwidth_hz = float(bandwidth_hz)
        self.on_round_end = on_round_end
        self.split = StateSplit.of(region_map)
        self.weights = [server_array(w) for w in initial_weights]
        self._snapshot: list[np.ndarray] | None = None
        self._save_snapshot(0)
        self.history: list[SparseRound] = []
        self._pending: _PendingRound | None = None
        self._prune_after(0)  # one-shot / IMP at round 0: prune the initial model

    # ------------------------------------------------------------------ state
    def state_dict(self) -> State:
        """The global model, the pruner's masks and steps, the rewind snapshot and the history (not copies).

        Participation and the channel are derived from ``(seed, stream, round)``: nothing to save.
        """
        history: list[StateValue] = [r.state_dict() for r in self.history]
        return {
            "weights": list(self.weights),
            "pruner": self.pruner.state_dict(),
            "rewind_snapshot": None if self._snapshot is None else list(self._snapshot),
            "history": history,
        }

    def load_state_dict(self, state: State) -> None:
        """Continue from :meth:`state_dict` of a strategy built from the same configuration."""
        weights = arrays(state, "weights")
        if [w.shape for w in weights] != self.shapes:
            raise ValueError("state: the weights' shapes differ from the model's")
        snapshot = optional_arrays(state, "rewind_snapshot")
        history = state.get("history")
        if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
            raise ValueError("state: 'history' must list the rounds so far")
        self.pruner.load_state_dict(part(state, "pruner"))
        self.weights = [server_array(w) for w in weights]
        self._snapshot = None if snapshot is None else [server_array(w) for w in snapshot]
        self.history = [SparseRound.from_state(r) for r in history if isinstance(r, dict)]

    # ------------------------------------------------------------------ pruning
    def _save_snapshot(self, server_round: int) -> None:
        if self.rewind_round == server_round:
            self._snapshot = [w.copy() for w in self.weights]

    def _prune_after(self, server_round: int) -> PruningStep | None:
        step = self.pruner.prune_after(server_round, self.weights)
        if step is None:
            return None
        if self._snapshot is not None:
            self.weights = rewind(self.weights, self._snapshot, self.pruner.masks)
        else:
            self.weights = self.pruner.apply(self.weights)
        log.info(
            "round %d: pruned %d more weights (%s step), sparsity %.4f",
            server_round,
            step.count,
            self.pruner.plan.method,
            self.pruner.sparsity,
        )
        return step

    # ------------------------------------------------------------------ train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        devices = sample_participants(self.seed, server_round, list(self.device_nodes), self.participants)
        masks = self.pruner.masks
        tensors = tuple(encode(w, m) for w, m in zip(self.weights, masks, strict=True))
        pending = _PendingRound(server_round, devices, masks)
        messages = []
        for device in devices:
            instruction = MaskedTrainInstruction(server_round, device, self.train_setup, tuple(self.names), tensors)
            pending.sent[device] = instruction.downlink_bytes
            pending.downlink_bytes += instruction.downlink_bytes
            messages.append(instruction.to_message(self.device_nodes[device]))
        self._pending = pending
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        pending = pending_for(self._pending, server_round)
        collected = collect_replies(
            replies,
            server_round=server_round,
            node_devices=self.node_devices,
            sent=pending.sent,
            decode=MaskedTrainReply.from_content,
            round_of=lambda reply: reply.round,
            accept=lambda device, reply: (reply.for_model(self.names, self.shapes, pending.masks), reply),
        )
        failures = dict(collected.failures)
        updates = {device: update for device, (update, _) in collected.accepted.items()}
        uplink = {device: reply.uplink_bytes for device, (_, reply) in collected.accepted.items()}
        replied = sorted(updates)
        received: tuple[int, ...] = tuple(replied)
        ota: OtaResult | None = None
        if replied:
            split = self.split
            values = [split.parameters_of(updates[d]) for d in replied]
            parameter_masks = split.parameters_of(pending.masks)
            shapes = split.parameters_of(self.shapes)
            if self.over_the_air is not None:
                held = [
                    [np.ones(s, dtype=bool) if m is None else m for s, m in zip(shapes, parameter_masks, strict=True)]
                ] * len(replied)
                ota = self.over_the_air.aggregate(server_round, replied, values, held)
                direction = ota.estimate
                received = ota.channel.transmitters
                for device in ota.channel.silent:  # it trained but sent nothing: no uplink bytes
                    failures[device] = Failure("silent", SILENT_REASON)
                    uplink.pop(device, None)
            else:
                direction = [
                    np.asarray(np.mean(np.stack([v[i] for v in values]), axis=0, dtype=np.float64))
                    for i in range(len(shapes))
                ]
            parameters = [
                np.asarray((w.astype(np.float64) + d).astype(w.dtype))
                for w, d in zip(split.parameters_of(self.weights), direction, strict=True)
            ]
            # Buffers: the exact mean of the transmitters' values (a digital side channel of 2 floats per
            # BatchNorm channel; running statistics are no update the analog sum could carry).
            sent = [split.buffers_of(updates[d]) for d in received]
            buffers = average_buffers(
                split.buffers_of(self.weights), sent, [[np.ones(np.shape(b), dtype=bool) for b in v] for v in sent]
            )
            self.weights = self.pruner.apply(split.merge(parameters, buffers))
        self._save_snapshot(server_round)
        step = self._prune_after(server_round)
        self._pending = None
        self.history.append(
            SparseRound(
                round=server_round,
                participants=tuple(pending.devices),
                transmitters=received,
                sparsity=self.pruner.sparsity,
                pruning_step=step,
                channel_uses=ota.channel_uses if ota is not None else 0,
                max_transmit_power=max(ota.transmit_power.values(), default=0.0) if ota is not None else 0.0,
            )
        )
        participants = self._participants(pending.devices, ota)
        report = RoundReport(
            round=server_round,
            participants=participants,
            round_latency_s=max((p.compute_latency_s + p.upload_latency_s for p in participants), default=0.0),
            objective=None,  # no scheduler
            received_devices=received,
            failed=dict(sorted(failures.items())),
            downlink_bytes=pending.downlink_bytes,
            uplink_bytes_per_device=uplink,
            train_loss={device: reply.train_loss for device, (_, reply) in collected.accepted.items()},
            client_fit_s={device: reply.fit_seconds for device, (_, reply) in collected.accepted.items()},
            mean_aoi=None,  # no AoI table
        )
        if self.on_round_end is not None:
            self.on_round_end(report)
        metrics = P.RoundMetrics(num_updates=len(received), num_failures=len(failures))
        return P.model_record(self.weights), metrics.to_record()

    def _participants(self, devices: list[int], ota: OtaResult | None) -> tuple[Participant, ...]:
        """Every PIU gets the full-shape (masked) model on the one shared band; its dense compute, the analog upload."""
        sizes = tuple(int(n) for n in self.region_map.layer_sizes)
        upload = (ota.channel_uses / self.bandwidth_hz) if ota is not None else 0.0
        return tuple(
            Participant(
                device=device,
                rb=0,
                keep_fraction=1.0,
                keep_counts=sizes,
                kept_ratio=1.0,
                compute_latency_s=float(self.compute_latency_s[device]) if self.compute_latency_s is not None else 0.0,
                upload_latency_s=upload,
            )
            for device in devices
        )

    # ------------------------------------------------------------- evaluation
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """No federated evaluation: the global model is evaluated centrally (``evaluate_fn``)."""
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None

    def summary(self) -> None:
        plan = self.pruner.plan
        log.info(
            "sparse FedAvg: %d devices, %d per round, %s pruning to %.3f (rate %.3f every %d rounds from round %d), "
            "rewind %s, %s aggregation",
            len(self.device_nodes),
            self.participants,
            plan.method,
            plan.target,
            plan.rate,
            plan.interval,
            plan.first_round,
            self.rewind_round,
            "over-the-air" if self.over_the_air is not None else "digital",
        )
