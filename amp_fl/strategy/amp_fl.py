"""The AMP-FL Flower strategy (Message API).

It holds the server's state (global weights, AoI table, gradient cache or Gbar, the wireless
channel, the scheduler and the pruning policy) and fills Flower's round hooks:

- ``configure_train``: observe the channel, schedule devices / RBs / keep counts, let the pruning
  policy choose the kept regions, and send each scheduled node its physically sliced sub-model;
- ``aggregate_train``: check the replies (:func:`~amp_fl.strategy.replies.collect_replies`, then
  the sub-model shapes and norm bounds), scatter them to full shape, update the gradient
  cache of Eq. (2) or Gbar (Algorithm 3), the AoI table (Eq. (9)) and the global model, then hand
  the round's :class:`RoundReport` to the ``on_round_end`` hook. Only parameters take that
  gradient path; BatchNorm buffers are averaged as values over the devices that held them
  (:mod:`amp_fl.strategy.buffers`);
- the global model is evaluated centrally (``evaluate_fn`` of ``Strategy.start``);
  ``configure_evaluate`` asks every device for its *personalised* accuracy (its own model on
  test samples of its own labels: APFL's mix of personal and global model, otherwise the global
  model) only every ``personal_eval_interval`` rounds and at the last round, and
  ``aggregate_evaluate`` hands the result to the ``on_personal_evaluation`` hook.

With ``scheduling=full_model`` and ``compensation="none"`` this strategy is Synchronous FL
(FedAvg over the scheduled devices: ``w - eta * mean(g_k) = mean(w_k)``); FedProx and APFL are
the same server with another local objective on the clients (``TrainSetup.local_objective``).

:meth:`AmpFlStrategy.state_dict` / :meth:`~AmpFlStrategy.load_state_dict` save and restore the
server's state for a checkpoint. The maths lives in ``amp_fl.strategy.aggregation`` and the other
packages, the message formats in ``amp_fl.protocol``; this module is glue.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from amp_fl import protocol as P
from amp_fl.errors import ArgumentError, DivergedError, InvalidReplyError
from amp_fl.pruning.policies import PruningPolicy, SelectionContext
from amp_fl.pruning.regions import KeptIndices, RegionMap
from amp_fl.pruning.submodel import extract_arrays, region_held_masks, scatter_arrays
from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.scheduling.schedule import Schedule, Scheduler
from amp_fl.state import State, array, arrays, part
from amp_fl.strategy.aggregation import (
    COMPENSATION_SCOPES,
    Compensation,
    DeviceUpdate,
    FreshMean,
    GradientCache,
    MemoryFriendlyAggregate,
    check_fresh_rules,
    fresh_mean,
    holders_mean,
    stale_weighted_mean,
)
from amp_fl.strategy.buffers import StateSplit, average_buffers, server_array
from amp_fl.strategy.replies import SILENT_REASON, Failure, collect_replies, pending_for
from amp_fl.strategy.report import PersonalEvaluation, RoundReport, participants_of
from amp_fl.strategy.server_optimizer import (
    ServerOptimizerSettings,
    ServerOptimizerState,
    server_learning_rate,
    server_step,
)
from amp_fl.strategy.staleness import CACHE_GRANULARITIES, CacheGranularity, DiscountedSums, check_decay
from amp_fl.wireless.channel import Channel
from amp_fl.wireless.over_the_air import OverTheAirChannel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AmpFlSettings:
    """The global step's settings.

    Parameters
    ----------
    learning_rate : float
        eta of the global step ``w <- w - eta * direction``.
    compensation : {"all", "scheduled", "none", "discounted"}
        Whose cached gradients fill pruned entries (:data:`~amp_fl.strategy.aggregation.COMPENSATION_SCOPES`).
    memory_friendly : bool
        Algorithm 3: clients keep their own caches and upload ``g - G_k``; needs ``compensation="all"``.
    personal_eval_interval : int or None
        Ask every device for its personalised accuracy every this many rounds and at the last
        round; ``None`` never asks.
    eval_batch_size : int
        Batch size of the devices' personalised evaluation.
    max_update_norm : float or None
        Reject a reply whose upload's L2 norm exceeds this (a board sending garbage); ``None`` accepts any finite norm.
    clip_update_norm : float or None
        Scale a reply whose upload's L2 norm exceeds this down to it (a guard against divergence); ``None``: off.
    staleness_decay : float, default 1.0
        gamma of ``compensation="discounted"`` (:mod:`amp_fl.strategy.staleness`), in (0, 1].
    cache_granularity : {"entry", "region"}, default "entry"
        What one upload refreshes in its device's cache (Eq. (2)): the entries its sub-model held
        (``entry``), or the whole of every region it kept (``region``, the paper's reading;
        :func:`~amp_fl.pruning.submodel.region_held_masks`). Needs a cache: not with
        ``compensation="none"`` or ``memory_friendly``.
    server : ServerOptimizerSettings, optional
        The server optimiser on the direction (:mod:`amp_fl.strategy.server_optimizer`); ``None``:
        the paper's step, sgd with ``learning_rate``.
    fresh_mean : {"scheduled", "holders"}, default "scheduled"
        Scope ``none``'s divisor: |S_t| (the paper) or, per entry, its holders (HeteroFL, FedRolex;
        :func:`~amp_fl.strategy.aggregation.holders_mean`).
    stale_weight : float, default 1.0
        FedStale's beta on the cached gradients of scope ``all``
        (:func:`~amp_fl.strategy.aggregation.stale_weighted_mean`); 1 is Eq. (2).
    """

    learning_rate: float
    compensation: Compensation = "all"
    memory_friendly: bool = False
    personal_eval_interval: int | None = None
    eval_batch_size: int = 1000
    max_update_norm: float | None = None
    clip_update_norm: float | None = None
    staleness_decay: float = 1.0
    server: ServerOptimizerSettings | None = None
    fresh_mean: FreshMean = "scheduled"
    stale_weight: float = 1.0
    cache_granularity: CacheGranularity = "entry"

    @property
    def optimizer(self) -> ServerOptimizerSettings:
        return self.server if self.server is not None else paper_step(self.learning_rate)

    def __post_init__(self) -> None:
        if self.server is None:
            paper_step(self.learning_rate)  # checks eta (the step's settings hold the check)
        if self.compensation not in COMPENSATION_SCOPES:
            raise ValueError(f"compensation: choose from {', '.join(COMPENSATION_SCOPES)}, got {self.compensation!r}")
        if self.memory_friendly and self.compensation != "all":
            raise ValueError("memory_friendly: Algorithm 3 reproduces compensation='all' only")
        if self.personal_eval_interval is not None and self.personal_eval_interval < 1:
            raise ValueError(f"personal_eval_interval: must be >= 1 or None, got {self.personal_eval_interval}")
        if self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size: must be >= 1, got {self.eval_batch_size}")
        for name in ("max_update_norm", "clip_update_norm"):
            bound = getattr(self, name)
            if bound is not None and not (math.isfinite(bound) and bound > 0):
                raise ValueError(f"{name}: must be a finite number > 0 or None, got {bound}")
        check_decay(self.staleness_decay)
        if self.cache_granularity not in CACHE_GRANULARITIES:
            raise ValueError(
                f"cache_granularity: choose from {', '.join(CACHE_GRANULARITIES)}, got {self.cache_granularity!r}"
            )
        if self.cache_granularity == "region" and (self.compensation == "none" or self.memory_friendly):
            raise ValueError(
                "cache_granularity: 'region' refreshes the server's cache; compensation='none' and "
                "memory_friendly keep none there"
            )
        check_fresh_rules(self.compensation, self.fresh_mean, self.stale_weight, self.memory_friendly)


def paper_step(learning_rate: float) -> ServerOptimizerSettings:
    """The paper's global step ``w - eta * d``: sgd at the clients' eta (``ArgumentError`` naming ``learning_rate``)."""
    try:
        return ServerOptimizerSettings("sgd", server_learning_rate("sgd", None, learning_rate))
    except ArgumentError as exc:
        raise ArgumentError("learning_rate", exc.problem) from exc


def personal_evaluation_due(server_round: int, interval: int | None, num_rounds: int | None) -> bool:
    """Whether round ``server_round`` asks the devices for their personalised accuracy.

    Every ``interval`` rounds and at the last round (``num_rounds``, when known); never when
    ``interval`` is ``None``.
    """
    if interval is None:
        return False
    return server_round % interval == 0 or server_round == num_rounds


@dataclass(frozen=True, eq=False)  # holds arrays
class _BufferUpload:
    """One device's trained buffers, scattered to full shape, and which entries it held."""

    values: list[np.ndarray]
    held: list[np.ndarray]


@dataclass
class _PendingRound:
    """What ``configure_train`` sent, for ``aggregate_train`` to check the replies against."""

    round: int
    schedule: Schedule
    kept: dict[int, KeptIndices] = field(default_factory=dict)  # device -> kept indices, in send order
    downlink_bytes: int = 0


class AmpFlStrategy(Strategy):
    """AMP-FL: AoI-driven scheduling and pruning with historical-gradient compensation.

    Parameters
    ----------
    region_map : RegionMap
        The global model's regions.
    initial_weights : sequence of np.ndarray
        The global model, in ``region_map.param_names`` order.
    scheduler : Scheduler
        Picks devices, RBs and keep counts each round.
    channel : Channel
        The wireless channel the scheduler observes.
    policy : PruningPolicy
        Chooses each scheduled device's kept regions for the scheduler's keep counts.
    device_nodes : dict[int, int]
        Device id -> Flower node id.
    train_setup : amp_fl.protocol.TrainSetup
        The run-wide part of every train instruction.
    settings : AmpFlSettings
        The global step's settings.
    on_round_end : callable, optional
        Called with the round's :class:`RoundReport` at the end of ``aggregate_train``.
    on_personal_evaluation : callable, optional
        Called with the round's :class:`PersonalEvaluation` at the end of ``aggregate_evaluate``,
        in the rounds that ask for one (before Flower's central ``evaluate_fn`` of that round).
    over_the_air : OverTheAirChannel, optional
        Aggregate over the analog channel (:mod:`amp_fl.wireless.over_the_air`): each entry is
        averaged over the transmitting PIUs whose sub-model held it, plus receiver noise; PIUs
        below the truncation threshold stay silent. Needs ``compensation="none"``.
    num_rounds : int, optional
        The run's last round (always asked for a personal evaluation); :meth:`start` sets it, a
        resumed run (which skips ``start``) passes it here.
    """

    def __init__(
        self,
        *,
        region_map: RegionMap,
        initial_weights: Sequence[np.ndarray],
        scheduler: Scheduler,
        channel: Channel,
        policy: PruningPolicy,
        device_nodes: dict[int, int],
        train_setup: P.TrainSetup,
        settings: AmpFlSettings,
        on_round_end: Callable[[RoundReport], None] | None = None,
        on_personal_evaluation: Callable[[PersonalEvaluation], None] | None = None,
        over_the_air: OverTheAirChannel | None = None,
        num_rounds: int | None = None,
    ) -> None:
        if over_the_air is not None and (settings.compensation != "none" or settings.memory_friendly):
            raise ValueError("over_the_air: needs compensation='none' (the server receives only the sum of updates)")
        self.over_the_air = over_the_air
        if train_setup.memory_friendly != settings.memory_friendly:
            raise ValueError(
                f"train_setup.memory_friendly ({train_setup.memory_friendly}) and settings.memory_friendly "
                f"({settings.memory_friendly}) must agree"
            )
        self.region_map = region_map
        self.split = StateSplit.of(region_map)
        self.weights = [server_array(w) for w in initial_weights]
        self.shapes = [w.shape for w in self.weights]
        # The gradient path (cache, Gbar, discounted sums, over the air, server optimiser) holds parameters only.
        self.parameter_shapes = [tuple(s) for s in self.split.parameter_map.shapes]
        self.scheduler = scheduler
        self.channel = channel
        self.policy = policy
        self.device_nodes = dict(device_nodes)
        self.node_devices = {node: device for device, node in self.device_nodes.items()}
        self.train_setup = train_setup
        self.settings = settings
        self.on_round_end = on_round_end
        self.on_personal_evaluation = on_personal_evaluation
        self.num_rounds = num_rounds  # the last round is always evaluated; ``start`` sets it too
        self._evaluating_round: int | None = None
        num_devices = len(device_nodes)
        self.aoi = AoITable(num_devices, region_map.layer_sizes)
        self.cache = GradientCache(num_devices, self.parameter_shapes) if not settings.memory_friendly else None
        self.gbar = MemoryFriendlyAggregate(num_devices, self.parameter_shapes) if settings.memory_friendly else None
        # Scope ``discounted`` keeps its sums up to date (O(|S_t| Q) a round); gamma = 1 is scope ``all``.
        discounting = settings.compensation == "discounted" and settings.staleness_decay < 1.0
        self.discounted = (
            DiscountedSums(self.split.parameter_map, num_devices, settings.staleness_decay, settings.cache_granularity)
            if discounting
            else None
        )
        self.server_state = ServerOptimizerState()  # the server optimiser's moments (a checkpoint saves it)
        self._pending: _PendingRound | None = None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> State:
        """What the server remembers between rounds: the global model, the AoI table, the gradient cache
        or Gbar, the server optimiser's moments (not copies: a checkpoint writes them out at once).

        Everything random is derived from ``(seed, stream, round)``, so nothing else is needed for the
        next round to draw what an uninterrupted run draws.
        """
        return {
            "weights": list(self.weights),
            "aoi": self.aoi.ages,
            "cache": None if self.cache is None else self.cache.state_dict(),
            "gbar": None if self.gbar is None else self.gbar.state_dict(),
            "discounted": None if self.discounted is None else self.discounted.state_dict(),
            "server_optimizer": self.server_state.state_dict(),
        }

    def load_state_dict(self, state: State) -> None:
        """Continue from :meth:`state_dict` of a strategy built from the same configuration."""
        weights = arrays(state, "weights")
        if [w.shape for w in weights] != self.shapes:
            raise ValueError("state: the weights' shapes differ from the model's")
        for name, kept in (("cache", self.cache), ("gbar", self.gbar)):
            if (state.get(name) is None) != (kept is None):
                have = "keeps no" if kept is None else "keeps a"
                raise ValueError(f"state: this strategy {have} {name!r}, the saved state disagrees")
        self.weights = [server_array(w) for w in weights]
        self.aoi = AoITable.from_array(array(state, "aoi"), self.region_map.layer_sizes)
        if self.cache is not None:
            self.cache.load_state_dict(part(state, "cache"))
        if self.gbar is not None:
            self.gbar.load_state_dict(part(state, "gbar"))
        if self.discounted is not None:
            assert self.cache is not None
            if state.get("discounted") is None:  # a checkpoint from before the sums were saved
                self.discounted.rebuild(self.cache, self.aoi.ages)
            else:
                self.discounted.load_state_dict(part(state, "discounted"))
        self.server_state.load_state_dict(part(state, "server_optimizer"))

    # ------------------------------------------------------------------ train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        schedule = self.scheduler.schedule(server_round, self.channel.observe(server_round), self.aoi)
        pending = _PendingRound(server_round, schedule)
        self._pending = pending
        messages = []
        for row, device in enumerate(int(d) for d in schedule.device_ids):
            context = SelectionContext(
                region_map=self.region_map,
                server_round=server_round,
                device_id=device,
                ages=[layer_ages[device].copy() for layer_ages in self.aoi.layers()],  # tau_{t-1}, frozen
                global_arrays=self.weights,
                scheduled=schedule.kept_indices[row],
            )
            kept = self.policy.select([int(c) for c in schedule.keep_counts[row]], context)
            setup = self.train_setup
            if schedule.local_steps is not None:  # steps traded against the keep ratio (SpareStepsScheduler)
                setup = dataclasses.replace(setup, local_steps=int(schedule.local_steps[row]))
            instruction = P.TrainInstruction(
                round=server_round,
                device=device,
                setup=setup,
                names=tuple(self.region_map.param_names),
                arrays=tuple(extract_arrays(self.weights, self.region_map, kept)),
                kept=tuple(kept),
            )
            pending.kept[device] = kept
            pending.downlink_bytes += instruction.downlink_bytes
            messages.append(instruction.to_message(self.device_nodes[device]))
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        pending = pending_for(self._pending, server_round)
        collected = collect_replies(
            replies,
            server_round=server_round,
            node_devices=self.node_devices,
            sent=pending.kept,
            decode=P.TrainReply.from_content,
            round_of=lambda reply: reply.round,
            accept=lambda device, reply: self._accept(device, reply, pending),
        )
        failures = dict(collected.failures)
        updates = [update for update, _, _ in collected.accepted.values()]
        replied = {update.device: reply for update, reply, _ in collected.accepted.values()}
        buffers = {update.device: upload for update, _, upload in collected.accepted.values()}
        if self.over_the_air is not None:
            direction, updates = self._over_the_air_direction(server_round, updates, failures)
            self._update_ages(updates, pending)  # only the PIUs that transmitted uploaded
        else:
            # Ages first: scope ``discounted`` weighs each cache by its age after this round (0 = fresh),
            # and replaces each uploader's term, weighed by its ages before.
            ages_before = self.aoi.ages[[u.device for u in updates]]  # a copy (fancy indexing)
            self._update_ages(updates, pending)
            direction = self._direction(updates, ages_before)
        parameters = server_step(
            self.settings.optimizer, self.server_state, self.split.parameters_of(self.weights), direction
        )
        # Buffers: the mean over the devices whose update counts this round (over the air: the transmitters).
        counted = [buffers[u.device] for u in updates]
        new_buffers = average_buffers(
            self.split.buffers_of(self.weights), [b.values for b in counted], [b.held for b in counted]
        )
        self._check_finite(server_round, direction, parameters, new_buffers)  # the model stays the last finite one
        self.weights = self.split.merge(parameters, new_buffers)
        self._pending = None
        received = tuple(u.device for u in updates)
        report = RoundReport(
            round=server_round,
            participants=participants_of(pending.schedule),
            round_latency_s=float(pending.schedule.round_latency_s),
            objective=float(pending.schedule.objective),
            received_devices=received,
            failed=failures,
            downlink_bytes=pending.downlink_bytes,
            uplink_bytes_per_device={d: r.uplink_bytes for d, r in replied.items()},
            train_loss={d: r.train_loss for d, r in replied.items()},
            client_fit_s={d: r.fit_seconds for d, r in replied.items()},
            mean_aoi=self.aoi.mean_age(),
        )
        if self.on_round_end is not None:
            self.on_round_end(report)
        metrics = P.RoundMetrics(num_updates=len(updates), num_failures=len(failures))
        return P.model_record(self.weights), metrics.to_record()

    def _accept(
        self, device: int, reply: P.TrainReply, pending: _PendingRound
    ) -> tuple[DeviceUpdate, P.TrainReply, _BufferUpload]:
        """Check a reply's arrays against the sub-model sent and the norm bounds; scatter it to full shape.

        The norm bounds measure the gradient (the parameters); buffers are values, not clipped.
        """
        kept = pending.kept[device]
        upload = reply.for_model(self.region_map, kept)
        values, buffer_values = self.split.parameters_of(upload), self.split.buffers_of(upload)
        bound, clip = self.settings.max_update_norm, self.settings.clip_update_norm
        if bound is not None or clip is not None:  # the norm only serves these two (a float64 pass over the upload)
            norm = math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in values))
            if bound is not None and norm > bound:
                raise InvalidReplyError(f"update norm {norm:.6g} exceeds the bound max_update_norm={bound:g}")
            if clip is not None and norm > clip:
                values = [(v * (clip / norm)).astype(v.dtype) for v in values]  # direction kept, length clip
        full, held = scatter_arrays(values, self.split.parameter_map, kept, self.parameter_shapes)
        full_buffers, held_buffers = scatter_arrays(buffer_values, self.split.buffer_map, kept)
        if self.settings.cache_granularity == "region":  # Eq. (2) per region: zeros where the input was pruned
            held = region_held_masks(self.split.parameter_map, kept)
        return DeviceUpdate(device, full, held), reply, _BufferUpload(full_buffers, held_buffers)

    def _check_finite(
        self,
        server_round: int,
        direction: list[np.ndarray],
        parameters: list[np.ndarray],
        buffers: list[np.ndarray],
    ) -> None:
        """Raise :class:`DivergedError` naming the first array of the aggregate or the new model that is not finite.

        Every reply was checked finite, so this is an overflow of the sum or of the step itself.
        """
        names = self.split.parameter_map.param_names
        buffer_names = self.split.buffer_map.param_names
        for what, group, group_names in (
            ("the aggregate", direction, names),
            ("the global model", parameters, names),
            ("the global model", buffers, buffer_names),
        ):
            for name, values in zip(group_names, group, strict=True):
                if not np.all(np.isfinite(values)):
                    raise DivergedError(server_round, f"{what} has NaN or infinite values in {name!r}")

    def _direction(self, updates: list[DeviceUpdate], ages_before: np.ndarray) -> list[np.ndarray]:
        """The aggregate the global step subtracts, per compensation scope (``ages_before``: the
        uploaders' AoI rows before this round's update, in ``updates`` order)."""
        if self.gbar is not None:
            return self.gbar.apply(updates)
        if self.settings.compensation == "none":
            mean = holders_mean if self.settings.fresh_mean == "holders" else fresh_mean
            return mean(updates, self.parameter_shapes)
        assert self.cache is not None
        if self.discounted is not None:
            return self._discounted_direction(updates, ages_before)
        for update in updates:
            self.cache.update(update)
        if self.settings.compensation == "scheduled":
            return self.cache.mean_over([u.device for u in updates])
        if self.settings.stale_weight != 1.0:
            return stale_weighted_mean(self.cache, updates, self.settings.stale_weight)
        return self.cache.mean_over_all()  # scopes ``all`` and ``discounted`` with gamma = 1

    def _discounted_direction(self, updates: list[DeviceUpdate], ages_before: np.ndarray) -> list[np.ndarray]:
        """Scope ``discounted`` (:mod:`amp_fl.strategy.staleness`): each uploader's term is swapped in the sums."""
        assert self.cache is not None and self.discounted is not None
        self.discounted.advance()
        ages = self.aoi.ages
        for update, before_row in zip(updates, ages_before, strict=True):
            before = self.cache.row(update.device).copy()
            self.cache.update(update)
            self.discounted.replace(before, self.cache.row(update.device), before_row, ages[update.device])
        return self.discounted.mean()

    def _over_the_air_direction(
        self, server_round: int, updates: list[DeviceUpdate], failures: dict[int, Failure]
    ) -> tuple[list[np.ndarray], list[DeviceUpdate]]:
        """Per-region mean over the transmitting PIUs, received over the air; silent PIUs dropped (and listed)."""
        assert self.over_the_air is not None
        if not updates:
            return fresh_mean(updates, self.parameter_shapes), updates
        result = self.over_the_air.aggregate(
            server_round, [u.device for u in updates], [u.values for u in updates], [u.held for u in updates]
        )
        for device in result.channel.silent:
            failures[device] = Failure("silent", SILENT_REASON)
        sent = set(result.channel.transmitters)
        return result.estimate, [u for u in updates if u.device in sent]

    def _update_ages(self, updates: list[DeviceUpdate], pending: _PendingRound) -> None:
        """Eq. (9) for the devices whose update actually arrived."""
        received = {u.device for u in updates}
        devices = [d for d in pending.kept if d in received]
        self.aoi.update(np.asarray(devices, dtype=np.int64), [pending.kept[d] for d in devices])

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Flower's round loop (``Strategy.start``); remembers ``num_rounds`` so the last round is evaluated."""
        self.num_rounds = num_rounds
        return super().start(grid, initial_arrays, num_rounds, timeout, train_config, evaluate_config, evaluate_fn)

    # ------------------------------------------------------------- evaluation
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """At personal-evaluation rounds, send every device the global model to score its personalised model.

        (The global model itself is evaluated centrally, on the server's test set.) These messages
        measure; they are not part of the simulated wireless round and cost it no time or bytes.
        """
        if not personal_evaluation_due(server_round, self.settings.personal_eval_interval, self.num_rounds):
            self._evaluating_round = None
            return []
        self._evaluating_round = server_round
        names = tuple(self.region_map.param_names)
        messages = []
        for device, node in sorted(self.device_nodes.items()):
            instruction = P.EvaluateInstruction(
                round=server_round,
                device=device,
                setup=self.train_setup,
                batch_size=self.settings.eval_batch_size,
                names=names,
                arrays=tuple(self.weights),
            )
            messages.append(instruction.to_message(node))
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Collect the devices' personalised scores; ``None`` in rounds that asked for none."""
        if self._evaluating_round != server_round:
            return None
        self._evaluating_round = None
        collected = collect_replies(
            replies,
            server_round=server_round,
            node_devices=self.node_devices,
            sent=self.device_nodes,
            decode=P.EvaluateReply.from_content,
            round_of=None,  # an evaluate reply carries no round (evaluation is not part of the wireless round)
            accept=lambda device, reply: reply,
            what="evaluate reply",
        )
        scores = collected.accepted
        evaluation = PersonalEvaluation(
            round=server_round,
            accuracy={d: r.accuracy for d, r in scores.items()},
            loss={d: r.loss for d, r in scores.items()},
            personalised=tuple(d for d, r in scores.items() if r.personalised),
            failed=collected.failures,
        )
        if self.on_personal_evaluation is not None:
            self.on_personal_evaluation(evaluation)
        metrics = P.PersonalMetrics(evaluation.mean_accuracy, evaluation.mean_loss, len(scores))
        return metrics.to_record() if scores else None

    def summary(self) -> None:
        log.info(
            "AMP-FL: %d devices, %d region groups (%d regions), compensation=%s, memory_friendly=%s, policy=%s, "
            "local objective=%s, personal evaluation every %s rounds, server optimiser %s",
            len(self.device_nodes),
            len(self.region_map.groups),
            self.region_map.num_regions,
            self.settings.compensation,
            self.settings.memory_friendly,
            self.policy.name,
            self.train_setup.local_objective,
            self.settings.personal_eval_interval,
            self.settings.optimizer,
        )
