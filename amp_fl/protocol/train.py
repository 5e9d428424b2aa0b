"""The train instruction (sliced sub-model, kept indices, run setup) and its reply."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from amp_fl.errors import ArgumentError, InvalidReplyError
from amp_fl.protocol.arrays import decode_array
from amp_fl.protocol.fields import (
    Fields,
    arrays_of,
    check_shapes,
    config_fields,
    in_order,
    metrics_fields,
    to_array_record,
    wire_arrays,
)
from amp_fl.protocol.keys import (
    APFL_ALPHA,
    APFL_ALPHA_LR,
    ARRAYS,
    BATCH_SIZE,
    CONFIG,
    DATA_ROOT,
    DATASET,
    DEVICE,
    FAIL_CORRUPT_PROB,
    FAIL_LATE_DELAY_S,
    FAIL_LATE_PROB,
    FAIL_RAISE_PROB,
    FIT_SECONDS,
    INPUT_SHAPE,
    KEPT,
    KEPT_DTYPE,
    KEPT_INDEX_BYTES,
    LEARNING_RATE,
    LOCAL_OBJECTIVE,
    LOCAL_STEPS,
    MEMORY_FRIENDLY,
    METRICS,
    MODEL,
    NUM_CLASSES,
    NUM_DEVICES,
    NUM_EXAMPLES,
    PARTITION,
    PROXIMAL_MU,
    ROUND,
    SEED,
    SHARDS_PER_DEVICE,
    TRAIN_DEVICE,
    TRAIN_LOSS,
    VALIDATION_FRACTION,
    WIRE_DTYPE,
)
from amp_fl.protocol.setup import LOCAL_OBJECTIVES, TRAIN_DEVICES, FailureSettings, LocalObjective, TrainDevice
from amp_fl.pruning.counts import submodel_shapes
from amp_fl.pruning.regions import KeptIndices, RegionMap, check_kept, keep_counts_of


# ------------------------------------------------------------------------------ train
@dataclass(frozen=True)
class TrainSetup:
    """The run-wide part of every train and evaluate instruction: data, model and local-training settings.

    ``local_objective`` is what a device minimises (:mod:`amp_fl.client.objectives`);
    ``proximal_mu`` is FedProx's mu (read by ``fedprox`` only), ``apfl_alpha`` APFL's mixing
    weight (read by ``apfl`` only; with ``apfl_alpha_lr`` > 0 its initial value, adapted each step with
    that step size, Deng et al.'s adaptive alpha). ``validation_fraction``: the share of the training set held out
    for validation before partitioning (:mod:`amp_fl.data.validation`); devices train on the rest.
    """

    seed: int
    dataset: str
    data_root: str
    num_devices: int
    partition: str
    shards_per_device: int
    model: str
    input_shape: tuple[int, int, int]
    num_classes: int
    learning_rate: float
    local_steps: int
    batch_size: int
    memory_friendly: bool
    local_objective: LocalObjective = "sgd"
    proximal_mu: float = 0.0
    apfl_alpha: float = 0.0
    apfl_alpha_lr: float = 0.0
    failures: FailureSettings = field(default_factory=FailureSettings)
    validation_fraction: float = 0.0
    # train.device as configured, not resolved: the server's hardware is not the device's, so each
    # ClientApp process resolves it on its own (a Ray actor sees a GPU only with simulation.client_gpus > 0).
    device: TrainDevice = "cpu"

    def to_config(self) -> dict[str, int | float | str | bool | list[int]]:
        return {
            SEED: int(self.seed),
            DATASET: self.dataset,
            DATA_ROOT: self.data_root,
            NUM_DEVICES: int(self.num_devices),
            PARTITION: self.partition,
            SHARDS_PER_DEVICE: int(self.shards_per_device),
            MODEL: self.model,
            INPUT_SHAPE: [int(d) for d in self.input_shape],
            NUM_CLASSES: int(self.num_classes),
            LEARNING_RATE: float(self.learning_rate),
            LOCAL_STEPS: int(self.local_steps),
            BATCH_SIZE: int(self.batch_size),
            MEMORY_FRIENDLY: bool(self.memory_friendly),
            LOCAL_OBJECTIVE: self.local_objective,
            PROXIMAL_MU: float(self.proximal_mu),
            APFL_ALPHA: float(self.apfl_alpha),
            APFL_ALPHA_LR: float(self.apfl_alpha_lr),
            FAIL_RAISE_PROB: float(self.failures.raise_prob),
            FAIL_LATE_PROB: float(self.failures.late_prob),
            FAIL_CORRUPT_PROB: float(self.failures.corrupt_prob),
            FAIL_LATE_DELAY_S: float(self.failures.late_delay_s),
            VALIDATION_FRACTION: float(self.validation_fraction),
            TRAIN_DEVICE: self.device,
        }

    @classmethod
    def _from_fields(cls, f: Fields) -> TrainSetup:
        c, h, w = f.positive_ints(INPUT_SHAPE, 3)
        return cls(
            seed=f.integer(SEED),
            dataset=f.text(DATASET),
            data_root=f.text(DATA_ROOT),
            num_devices=f.integer(NUM_DEVICES, minimum=1),
            partition=f.text(PARTITION),
            shards_per_device=f.integer(SHARDS_PER_DEVICE, minimum=1),
            model=f.text(MODEL),
            input_shape=(c, h, w),
            num_classes=f.integer(NUM_CLASSES, minimum=1),
            learning_rate=f.number(LEARNING_RATE, positive=True),
            local_steps=f.integer(LOCAL_STEPS, minimum=1),
            batch_size=f.integer(BATCH_SIZE, minimum=1),
            memory_friendly=f.flag(MEMORY_FRIENDLY),
            local_objective=_local_objective(f.choice(LOCAL_OBJECTIVE, LOCAL_OBJECTIVES)),
            proximal_mu=f.number(PROXIMAL_MU, minimum=0.0),
            apfl_alpha=f.number(APFL_ALPHA, minimum=0.0, maximum=1.0),
            apfl_alpha_lr=f.number(APFL_ALPHA_LR, minimum=0.0),
            failures=_failure_settings(f),
            validation_fraction=f.number(VALIDATION_FRACTION, minimum=0.0, maximum=1.0),
            device=_train_device(f.choice(TRAIN_DEVICE, TRAIN_DEVICES)),
        )


def _failure_settings(f: Fields) -> FailureSettings:
    """The injector's settings: the wire gives numbers, :class:`FailureSettings` checks their values (its one check)."""
    keys = {
        "raise_prob": FAIL_RAISE_PROB,
        "late_prob": FAIL_LATE_PROB,
        "corrupt_prob": FAIL_CORRUPT_PROB,
        "late_delay_s": FAIL_LATE_DELAY_S,
    }
    values = {name: f.number(key) for name, key in keys.items()}
    try:
        return FailureSettings(**values)
    except ArgumentError as exc:
        raise f.fail(keys[exc.name], exc.problem) from exc


def _local_objective(name: str) -> LocalObjective:
    for objective in LOCAL_OBJECTIVES:  # narrows the checked string to the Literal type
        if objective == name:
            return objective
    raise ValueError(f"unknown local objective {name!r}")


def _train_device(name: str) -> TrainDevice:
    for device in TRAIN_DEVICES:  # narrows the checked string to the Literal type
        if device == name:
            return device
    raise ValueError(f"unknown train device {name!r}")


@dataclass(frozen=True, eq=False)  # holds arrays
class TrainInstruction:
    """Server -> one scheduled node: train this sub-model in this round.

    ``arrays`` are the sliced float32 sub-model arrays named ``names`` (the region map's
    ``param_names``); ``kept`` holds one sorted index array per region group.
    """

    MESSAGE_TYPE: ClassVar[str] = MessageType.TRAIN

    round: int
    device: int
    setup: TrainSetup
    names: tuple[str, ...]
    arrays: tuple[np.ndarray, ...]
    kept: tuple[np.ndarray, ...]

    @property
    def downlink_bytes(self) -> int:
        """float32 sub-model bytes plus 4 bytes (int32) per kept region index."""
        return sum(WIRE_DTYPE.itemsize * int(a.size) for a in self.arrays) + KEPT_INDEX_BYTES * sum(
            int(k.size) for k in self.kept
        )

    def to_content(self) -> RecordDict:
        config = ConfigRecord({**self.setup.to_config(), ROUND: int(self.round), DEVICE: int(self.device)})
        arrays = to_array_record(self.names, [np.asarray(a, dtype=WIRE_DTYPE) for a in self.arrays])
        kept = to_array_record([str(g) for g in range(len(self.kept))], [np.asarray(k, KEPT_DTYPE) for k in self.kept])
        return RecordDict({ARRAYS: arrays, KEPT: kept, CONFIG: config})

    def to_message(self, dst_node_id: int) -> Message:
        return Message(self.to_content(), dst_node_id=dst_node_id, message_type=self.MESSAGE_TYPE)

    @classmethod
    def from_content(cls, content: RecordDict) -> TrainInstruction:
        """Parse and check an instruction (``ValueError`` naming the key, record or array).

        Checks what the message alone determines; :meth:`for_model` then checks it against the
        model's region map (names, group count, index range, sub-model shapes).
        """
        where = "train instruction"
        f = config_fields(content, where, ValueError)
        setup = TrainSetup._from_fields(f)
        names, arrays = wire_arrays(arrays_of(content, ARRAYS, where, ValueError), where, ValueError)
        kept_record = arrays_of(content, KEPT, where, ValueError)
        groups = [str(g) for g in range(len(kept_record))]
        if sorted(kept_record.keys()) != sorted(groups):
            raise ValueError(f"{where}: {KEPT!r} entries must be named 0..{len(groups) - 1}, got {list(kept_record)}")
        kept = []
        for g in groups:
            idx = decode_array(kept_record[g], g, f"{where}: {KEPT!r}", ValueError)
            if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(
                    f"{where}: {KEPT!r} entry {g} must be a 1-d integer array, got {idx.dtype} {idx.shape}"
                )
            kept.append(idx.astype(np.int64))
        return cls(
            round=f.integer(ROUND, minimum=1),
            device=f.integer(DEVICE),
            setup=setup,
            names=names,
            arrays=arrays,
            kept=tuple(kept),
        )

    def for_model(self, region_map: RegionMap) -> tuple[list[np.ndarray], KeptIndices]:
        """The arrays in ``region_map.param_names`` order and the checked kept indices.

        Raises ``ValueError`` when the instruction does not describe a sub-model of that model.
        """
        where = "train instruction"
        try:
            kept = check_kept(region_map, self.kept)
        except ValueError as exc:
            raise ValueError(f"{where}: {KEPT!r}: {exc}") from exc
        arrays = in_order(self.names, self.arrays, region_map.param_names, where, ValueError)
        expected = submodel_shapes(region_map, keep_counts_of(kept))
        check_shapes(region_map.param_names, arrays, expected, where, ValueError)
        return arrays, kept


@dataclass(frozen=True, eq=False)  # holds arrays
class TrainReply:
    """Node -> server: the sub-model's cumulative gradient (or ``g - G_k``) and training metrics."""

    device: int
    names: tuple[str, ...]
    gradient: tuple[np.ndarray, ...]
    num_examples: int
    train_loss: float
    fit_seconds: float
    round: int  # echoes the instruction's round, so a reply delayed into a later round is recognised

    @property
    def uplink_bytes(self) -> int:
        """float32 gradient bytes (no indices: the server knows what it sent)."""
        return sum(WIRE_DTYPE.itemsize * int(g.size) for g in self.gradient)

    def to_content(self) -> RecordDict:
        metrics = MetricRecord(
            {
                NUM_EXAMPLES: int(self.num_examples),
                TRAIN_LOSS: float(self.train_loss),
                DEVICE: int(self.device),
                FIT_SECONDS: float(self.fit_seconds),
                ROUND: int(self.round),
            }
        )
        arrays = to_array_record(self.names, [np.asarray(g, dtype=WIRE_DTYPE) for g in self.gradient])
        return RecordDict({ARRAYS: arrays, METRICS: metrics})

    def to_reply(self, instruction: Message) -> Message:
        return Message(self.to_content(), reply_to=instruction)

    @classmethod
    def from_content(cls, content: RecordDict) -> TrainReply:
        """Parse and check a reply (:class:`InvalidReplyError` naming the key, record or array)."""
        where = "train reply"
        f = metrics_fields(content, where, InvalidReplyError)
        device = f.integer(DEVICE)
        num_examples = f.integer(NUM_EXAMPLES, minimum=1)
        train_loss = f.number(TRAIN_LOSS, minimum=0.0)
        fit_seconds = f.number(FIT_SECONDS, minimum=0.0)
        server_round = f.integer(ROUND, minimum=1)
        names, gradient = wire_arrays(arrays_of(content, ARRAYS, where, InvalidReplyError), where, InvalidReplyError)
        return cls(
            device=device,
            names=names,
            gradient=gradient,
            num_examples=num_examples,
            train_loss=train_loss,
            fit_seconds=fit_seconds,
            round=server_round,
        )

    def for_model(self, region_map: RegionMap, kept: KeptIndices) -> list[np.ndarray]:
        """The gradient in ``region_map.param_names`` order, checked against the sub-model ``kept`` describes.

        The client sends no indices back (they would cost uplink), so a reply trained on other keep
        counts than were sent shows as arrays of another sub-model's shape: the error says so.
        """
        where = f"train reply of device {self.device}"
        arrays = in_order(self.names, self.gradient, region_map.param_names, where, InvalidReplyError)
        counts = keep_counts_of(kept)
        expected = submodel_shapes(region_map, counts)
        try:
            check_shapes(region_map.param_names, arrays, expected, where, InvalidReplyError)
        except InvalidReplyError as exc:
            raise InvalidReplyError(f"{exc} for the keep counts sent {[int(c) for c in counts]}") from None
        return arrays

    def norm(self) -> float:
        """L2 norm of the whole upload (all arrays together), in float64 so a large update cannot overflow."""
        return math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in self.gradient))
