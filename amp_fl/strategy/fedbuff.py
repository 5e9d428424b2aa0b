"""FedBuff (buffered asynchronous aggregation) on Flower's synchronous rounds and the simulated clock.

Devices train the full model at their own pace: a device's update arrives at the simulated time
it received the model plus its compute and upload latency (Table I,
:mod:`amp_fl.scheduling.asynchronous`), and the server steps once every ``B`` arrivals with
staleness-weighted updates (:mod:`amp_fl.strategy.buffered`). Each Flower round is one server step:

- ``configure_train``: the server's clock stands at its last step (``now_s``). Free slots (up to
  ``concurrency`` devices in flight, each holding an RB) are filled with idle devices, which
  receive the current global model (version ``V``) now;
- the dispatched devices train in this Flower round and reply; ``aggregate_train`` checks the
  replies (:func:`~amp_fl.strategy.replies.collect_replies`) and pushes each update into the
  :class:`~amp_fl.strategy.buffered.ArrivalQueue` at ``now_s + compute + upload``. A device whose
  reply failed is idle again at once (it holds no slot);
- the ``B`` earliest arrivals in the queue are popped and applied in one server step (the server
  optimiser on the buffered direction), the clock moves to the last of them (the round's latency
  is that time minus the previous step's), and those ``B`` devices are idle again: the next round
  sends them the new model at that time. Updates still in flight stay queued, with the version
  they were trained on, and count their staleness when they are popped.

A device is computed when it is dispatched (its reply depends only on the model it received), so
the simulated order of events is exact: every queued arrival lies at or after ``now_s``. One
difference from the paper remains: FedBuff hands a finished client's slot to a new client at once
(on the not yet updated model), here the slots of the buffered devices wait for the step that
their arrival completes (at most ``B - 1`` arrivals), since a device started earlier could
arrive before that step and would then need a model this round has not yet computed.

So a metrics row is one server step (model version ``round``), its ``sim_time_s`` the simulated
time at which that model exists, ``num_scheduled`` the devices dispatched in it and
``num_received`` the updates it applied (``B``, or 0 in a round whose replies failed so that
fewer than ``B`` updates are in flight: no step, no time passes).

:meth:`FedBuffStrategy.state_dict` holds the global model, its version, the clock of the last
step, the queue with every update in flight (arrays, arrival times, versions, RBs) and the server
optimiser's moments; which devices and RBs are busy is read off the queue, and the dispatch draws
come from ``(seed, round)``: a resumed run continues exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from amp_fl import protocol as P
from amp_fl.errors import DivergedError
from amp_fl.pruning.regions import RegionMap
from amp_fl.scheduling.asynchronous import AsyncDispatcher, Dispatch
from amp_fl.state import State, arrays, integer, number, part
from amp_fl.strategy.buffered import Arrival, ArrivalQueue, FedBuffSettings, buffered_direction
from amp_fl.strategy.replies import collect_replies, pending_for
from amp_fl.strategy.report import Participant, RoundReport
from amp_fl.strategy.server_optimizer import ServerOptimizerSettings, ServerOptimizerState, server_step
from amp_fl.wireless.channel import Channel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _PendingRound:
    """What ``configure_train`` sent, for ``aggregate_train``."""

    round: int
    dispatch: Dispatch
    version: int
    start_s: float
    downlink_bytes: int


class FedBuffStrategy(Strategy):
    """FedBuff: asynchronous full-model training, one buffered, staleness-weighted step per round.

    Parameters
    ----------
    region_map : RegionMap
        The global model's arrays (every device trains all of them).
    initial_weights : sequence of np.ndarray
        The global model, in ``region_map.param_names`` order.
    dispatcher : AsyncDispatcher
        Picks idle devices and free RBs and gives their latencies.
    channel : Channel
        The uplink channel of each dispatch round.
    device_nodes : dict[int, int]
        Device id -> Flower node id.
    train_setup : amp_fl.protocol.TrainSetup
        The run-wide part of every train instruction.
    settings : FedBuffSettings
        B, concurrency, staleness exponent, selection.
    optimizer : ServerOptimizerSettings
        The server step on the buffered direction (sgd with ``lr = eta_g * eta`` is the paper's).
    on_round_end : callable, optional
        Called with the round's :class:`RoundReport` at the end of ``aggregate_train``.
    """

    def __init__(
        self,
        *,
        region_map: RegionMap,
        initial_weights: Sequence[np.ndarray],
        dispatcher: AsyncDispatcher,
        channel: Channel,
        device_nodes: dict[int, int],
        train_setup: P.TrainSetup,
        settings: FedBuffSettings,
        optimizer: ServerOptimizerSettings,
        on_round_end: Callable[[RoundReport], None] | None = None,
    ) -> None:
        system = dispatcher.system
        if len(device_nodes) != system.num_devices:
            raise ValueError(f"device_nodes: {len(device_nodes)} nodes for {system.num_devices} devices")
        self.region_map = region_map
        self.weights = [np.array(w, dtype=np.float32) for w in initial_weights]
        self.shapes = [w.shape for w in self.weights]
        self.dispatcher = dispatcher
        self.channel = channel
        self.device_nodes = dict(device_nodes)
        self.node_devices = {node: device for device, node in self.device_nodes.items()}
        self.train_setup = train_setup
        self.settings = settings
        self.concurrency = settings.slots(system.num_devices, system.num_rbs)
        self.optimizer = optimizer
        self.on_round_end = on_round_end
        self.version = 0  # server steps taken: the version of ``weights``
        self.now_s = 0.0  # simulated time of the last step (advanced as the recorder's clock is)
        self.queue = ArrivalQueue()
        self.server_state = ServerOptimizerState()
        self._everything: tuple[np.ndarray, ...] = tuple(np.arange(size) for size in region_map.layer_sizes)
        self._pending: _PendingRound | None = None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> State:
        """The global model and its version, the clock, the updates in flight, the server optimiser (not copies)."""
        return {
            "weights": list(self.weights),
            "version": self.version,
            "now_s": self.now_s,
            "queue": self.queue.state_dict(),
            "server_optimizer": self.server_state.state_dict(),
        }

    def load_state_dict(self, state: State) -> None:
        """Continue from :meth:`state_dict` of a strategy built from the same configuration."""
        weights = arrays(state, "weights")
        if [w.shape for w in weights] != self.shapes:
            raise ValueError("state: the weights' shapes differ from the model's")
        self.weights = [np.array(w, dtype=np.float32) for w in weights]
        self.version = integer(state, "version")
        self.now_s = number(state, "now_s")
        self.queue.load_state_dict(part(state, "queue"))
        self.server_state.load_state_dict(part(state, "server_optimizer"))

    # ------------------------------------------------------------------ train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        in_flight = self.queue.in_flight()
        dispatch = self.dispatcher.dispatch(
            server_round,
            self.channel.observe(server_round),
            busy_devices=[a.device for a in in_flight],
            busy_rbs=[a.rb for a in in_flight],
            slots=self.concurrency - len(in_flight),
        )
        names = tuple(self.region_map.param_names)
        messages, downlink = [], 0
        for device in (int(d) for d in dispatch.device_ids):
            instruction = P.TrainInstruction(
                round=server_round,
                device=device,
                setup=self.train_setup,
                names=names,
                arrays=tuple(self.weights),
                kept=self._everything,
            )
            downlink += instruction.downlink_bytes
            messages.append(instruction.to_message(self.device_nodes[device]))
        self._pending = _PendingRound(server_round, dispatch, self.version, self.now_s, downlink)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        pending = pending_for(self._pending, server_round)
        dispatch = pending.dispatch
        rows = {int(d): i for i, d in enumerate(dispatch.device_ids)}
        collected = collect_replies(
            replies,
            server_round=server_round,
            node_devices=self.node_devices,
            sent=rows,
            decode=P.TrainReply.from_content,
            round_of=lambda reply: reply.round,
            accept=lambda device, reply: (reply.for_model(self.region_map, self._everything), reply),
        )
        for device, (update, reply) in collected.accepted.items():
            i = rows[device]
            self.queue.push(
                Arrival(
                    arrival_s=pending.start_s + float(dispatch.latency_s[i]),
                    device=device,
                    rb=int(dispatch.rb_ids[i]),
                    version=pending.version,
                    update=update,
                    train_loss=reply.train_loss,
                    uplink_bytes=reply.uplink_bytes,
                )
            )
        applied, latency = self._step(server_round) if len(self.queue) >= self.settings.buffer_size else ([], 0.0)
        self._pending = None
        report = RoundReport(
            round=server_round,
            participants=self._participants(dispatch),
            round_latency_s=latency,
            objective=None,  # no scheduler objective
            received_devices=tuple(a.device for a in applied),
            failed=collected.failures,
            downlink_bytes=pending.downlink_bytes,
            uplink_bytes_per_device={a.device: a.uplink_bytes for a in applied},
            train_loss={a.device: a.train_loss for a in applied},
            client_fit_s={d: reply.fit_seconds for d, (_, reply) in collected.accepted.items()},
            mean_aoi=None,  # no AoI table
        )
        if self.on_round_end is not None:
            self.on_round_end(report)
        metrics = P.RoundMetrics(num_updates=len(applied), num_failures=len(collected.failures))
        return P.model_record(self.weights), metrics.to_record()

    def _step(self, server_round: int) -> tuple[list[Arrival], float]:
        """Apply the ``B`` earliest arrivals; returns them and the simulated time since the last step."""
        applied = self.queue.pop(self.settings.buffer_size)
        direction = buffered_direction(applied, self.version, self.settings.staleness_exponent, self.shapes)
        weights = server_step(self.optimizer, self.server_state, self.weights, direction)
        for name, values in zip(self.region_map.param_names, weights, strict=True):
            if not np.all(np.isfinite(values)):  # the replies were finite: the sum or the step overflowed
                raise DivergedError(server_round, f"the global model has NaN or infinite values in {name!r}")
        # Never negative: ``now_s + (t - now_s)`` may round one ulp above ``t``, and a tie may follow.
        latency = max(0.0, applied[-1].arrival_s - self.now_s)
        self.weights = weights
        self.version += 1
        self.now_s += latency  # the recorder's clock adds the same latency: both read the same time
        devices, staleness = [a.device for a in applied], [self.version - 1 - a.version for a in applied]
        log.info("round %d: version %d from devices %s, staleness %s", server_round, self.version, devices, staleness)
        return applied, latency

    def _participants(self, dispatch: Dispatch) -> tuple[Participant, ...]:
        sizes = tuple(int(n) for n in self.region_map.layer_sizes)
        return tuple(
            Participant(
                device=int(dispatch.device_ids[i]),
                rb=int(dispatch.rb_ids[i]),
                keep_fraction=1.0,
                keep_counts=sizes,
                kept_ratio=1.0,
                compute_latency_s=float(dispatch.compute_s[i]),
                upload_latency_s=float(dispatch.upload_s[i]),
            )
            for i in range(dispatch.size)
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
        log.info(
            "FedBuff: %d devices, %d training at once, buffer %d, staleness weight (1 + s)^-%g, %s dispatch, "
            "server optimiser %s",
            len(self.device_nodes),
            self.concurrency,
            self.settings.buffer_size,
            self.settings.staleness_exponent,
            self.settings.selection,
            self.optimizer,
        )
