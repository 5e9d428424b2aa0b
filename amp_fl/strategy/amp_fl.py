"""The AMP-FL Flower strategy (Message API).

It holds the server's state (global weights, AoI table, gradient cache or Gbar, the wireless
channel, the scheduler and the pruning policy) and fills Flower's round hooks:

- ``configure_train``: observe the channel, schedule devices / RBs / keep counts, choose the kept
  regions, and send each scheduled node its physically sliced sub-model;
- ``aggregate_train``: validate the replies, scatter them to full shape, update the gradient
  cache (2) or Gbar (Algorithm 3), the AoI table (9) and the global model;
- evaluation is central (``evaluate_fn`` of ``Strategy.start``), so ``configure_evaluate`` sends
  nothing.

The maths lives in ``amp_fl.strategy.aggregation`` and the other packages; this module is glue.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from amp_fl import protocol as P
from amp_fl.errors import InvalidReplyError
from amp_fl.pruning.counts import submodel_shapes
from amp_fl.pruning.policies import PruningPolicy, SelectionContext
from amp_fl.pruning.regions import RegionMap
from amp_fl.pruning.submodel import extract_arrays, scatter_arrays
from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.scheduling.schedule import Schedule, Scheduler
from amp_fl.strategy.aggregation import (
    DeviceUpdate,
    GradientCache,
    MemoryFriendlyAggregate,
    apply_global_step,
    fresh_mean,
)
from amp_fl.wireless.channel import Channel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AmpFlSettings:
    learning_rate: float
    compensation: str = "all"  # all | scheduled | none
    memory_friendly: bool = False
    reply_timeout_s: float = 600.0


@dataclass
class RoundReport:
    """What happened in one round, for the metrics file (filled by the hooks)."""

    round: int
    schedule: Schedule
    sent_devices: list[int] = field(default_factory=list)
    received_devices: list[int] = field(default_factory=list)
    failures: dict[int, str] = field(default_factory=dict)
    downlink_bytes: int = 0
    uplink_bytes: int = 0
    uplink_bytes_per_device: dict[int, int] = field(default_factory=dict)
    client_fit_s: dict[int, float] = field(default_factory=dict)  # wall time of local training, as reported
    mean_train_loss: float = float("nan")


class AmpFlStrategy(Strategy):
    """AMP-FL: AoI-driven scheduling and pruning with historical-gradient compensation."""

    def __init__(
        self,
        *,
        region_map: RegionMap,
        initial_weights: Sequence[np.ndarray],
        scheduler: Scheduler,
        channel: Channel,
        policy: PruningPolicy,
        device_nodes: dict[int, int],
        client_config: dict[str, object],
        settings: AmpFlSettings,
    ) -> None:
        self.region_map = region_map
        self.weights = [np.array(w, dtype=np.float32) for w in initial_weights]
        self.shapes = [w.shape for w in self.weights]
        self.scheduler = scheduler
        self.channel = channel
        self.policy = policy
        self.device_nodes = dict(device_nodes)
        self.node_devices = {node: device for device, node in self.device_nodes.items()}
        self.client_config = dict(client_config)
        self.settings = settings
        num_devices = len(device_nodes)
        self.aoi = AoITable(num_devices, region_map.layer_sizes)
        self.cache = GradientCache(num_devices, self.shapes) if not settings.memory_friendly else None
        self.gbar = MemoryFriendlyAggregate(num_devices, self.shapes) if settings.memory_friendly else None
        self._pending: dict[int, list[np.ndarray]] = {}
        self.reports: list[RoundReport] = []

    # ------------------------------------------------------------------ train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        schedule = self.scheduler.schedule(server_round, self.channel.observe(server_round), self.aoi)
        report = RoundReport(server_round, schedule)
        self.reports.append(report)
        self._pending = {}
        messages = []
        for row, device in enumerate(int(d) for d in schedule.device_ids):
            kept = self._kept_for(server_round, device, schedule, row)
            self._pending[device] = kept
            sub_arrays = extract_arrays(self.weights, self.region_map, kept)
            content = RecordDict(
                {
                    P.ARRAYS: P.arrays_to_record(self.region_map.param_names, sub_arrays),
                    P.KEPT: P.kept_to_record(kept),
                    P.CONFIG: ConfigRecord({**self.client_config, "round": server_round, "device": device}),
                }
            )
            report.downlink_bytes += sum(a.nbytes for a in sub_arrays) + sum(4 * len(k) for k in kept)
            report.sent_devices.append(device)
            messages.append(Message(content=content, message_type="train", dst_node_id=self.device_nodes[device]))
        return messages

    def _kept_for(self, server_round: int, device: int, schedule: Schedule, row: int) -> list[np.ndarray]:
        """The scheduler's AoI choice, or the configured policy's choice for the same keep counts."""
        if self.policy.name == "aoi":
            return [np.asarray(k, dtype=np.int64) for k in schedule.kept_indices[row]]
        ctx = SelectionContext(
            region_map=self.region_map,
            server_round=server_round,
            device_id=device,
            ages=[self.aoi.layer(layer)[device] for layer in range(self.aoi.num_layers)],
            global_arrays=self.weights,
        )
        return self.policy.select([int(c) for c in schedule.keep_counts[row]], ctx)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        report = self.reports[-1]
        updates, losses = [], []
        for reply in sorted(replies, key=lambda m: self.node_devices.get(m.metadata.src_node_id, -1)):
            device = self.node_devices.get(reply.metadata.src_node_id)
            try:
                update, loss, nbytes = self._parse_reply(reply, device)
            except InvalidReplyError as exc:
                report.failures[-1 if device is None else device] = str(exc)
                log.warning("round %d: dropped reply of device %s: %s", server_round, device, exc)
                continue
            updates.append(update)
            losses.append(loss)
            report.uplink_bytes += nbytes
            report.uplink_bytes_per_device[update.device] = nbytes
            report.received_devices.append(update.device)
        for device in sorted(set(report.sent_devices) - set(report.received_devices) - set(report.failures)):
            report.failures[device] = "no reply"
        self.weights = apply_global_step(self.weights, self._direction(updates), self.settings.learning_rate)
        self._update_ages(updates)
        report.mean_train_loss = float(np.mean(losses)) if losses else float("nan")
        metrics = MetricRecord({"num-updates": len(updates), "num-failures": len(report.failures)})
        return ArrayRecord(self.weights), metrics

    def _parse_reply(self, reply: Message, device: int | None) -> tuple[DeviceUpdate, float, int]:
        """Check a reply against what was sent; scatter it to full shape."""
        if device is None or device not in self._pending:
            raise InvalidReplyError(f"reply from node {reply.metadata.src_node_id}, which was not sent work this round")
        if reply.has_error():
            raise InvalidReplyError(f"client error: {reply.error.reason}")
        if P.ARRAYS not in reply.content.array_records:
            raise InvalidReplyError(f"reply has no {P.ARRAYS!r} record")
        kept = self._pending[device]
        record = reply.content.array_records[P.ARRAYS]
        values = P.record_to_arrays(record, self.region_map.param_names)
        expected = submodel_shapes(self.region_map, [len(k) for k in kept])
        for name, got, want in zip(self.region_map.param_names, values, expected, strict=True):
            if got.shape != want:
                raise InvalidReplyError(f"array {name!r} has shape {got.shape}, expected {want}")
            if not np.all(np.isfinite(got)):
                raise InvalidReplyError(f"array {name!r} contains NaN or infinite values")
        full, held = scatter_arrays(values, self.region_map, kept, self.shapes)
        metrics = reply.content.metric_records.get(P.METRICS)
        loss = float(metrics["train-loss"]) if metrics is not None and "train-loss" in metrics else float("nan")
        if metrics is not None and "fit-seconds" in metrics:
            self.reports[-1].client_fit_s[device] = float(metrics["fit-seconds"])
        return DeviceUpdate(device, full, held), loss, sum(v.nbytes for v in values)

    def _direction(self, updates: list[DeviceUpdate]) -> list[np.ndarray]:
        """The aggregate the global step subtracts, per compensation scope."""
        if self.gbar is not None:
            return self.gbar.apply(updates)
        if self.settings.compensation == "none":
            return fresh_mean(updates, self.shapes)
        assert self.cache is not None
        for update in updates:
            self.cache.update(update)
        if self.settings.compensation == "scheduled":
            return self.cache.mean_over([u.device for u in updates])
        return self.cache.mean_over_all()

    def _update_ages(self, updates: list[DeviceUpdate]) -> None:
        """Eq. (9) for the devices whose update actually arrived."""
        received = {u.device for u in updates}
        devices = [d for d in self._pending if d in received]
        self.aoi.update(np.asarray(devices, dtype=np.int64), [self._pending[d] for d in devices])

    # ------------------------------------------------------------- evaluation
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return []  # the global model is evaluated centrally on the server's test set

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None

    def summary(self) -> None:
        log.info(
            "AMP-FL: %d devices, %d region groups (%d regions), compensation=%s, memory_friendly=%s, policy=%s",
            len(self.device_nodes),
            len(self.region_map.groups),
            self.region_map.num_regions,
            self.settings.compensation,
            self.settings.memory_friendly,
            self.policy.name,
        )
