"""Wire messages of sparse (masked) FedAvg: the ``train.masked`` instruction and its reply.

The counterpart of :mod:`amp_fl.protocol` for the OTA-FL / IMP strategy
(:mod:`amp_fl.strategy.sparse_fedavg`) and its client handler (:mod:`amp_fl.client.sparse_fedavg`);
it reuses that module's field readers and :class:`~amp_fl.protocol.TrainSetup`, and its record
and key names are the constants below (they appear nowhere else).

``train.masked`` (every participating node)
    server -> :class:`MaskedTrainInstruction`: the global model, every array in the smallest of
    the encodings of :mod:`amp_fl.pruning.sparse_encoding` (dense, or surviving values plus a
    bitmap or an index list), the format of each (one byte per array) and the run's
    :class:`~amp_fl.protocol.TrainSetup`;
    client -> :class:`MaskedTrainReply`: its update ``w_end - w_start`` as the surviving values
    only (the server knows the mask it sent), plus the usual training metrics and the round it answers.

Byte accounting (measured: ``nbytes`` of the buffers each message carries)
    downlink = values + index buffers + the format bytes; uplink = the update's values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from amp_fl import protocol as P
from amp_fl.errors import InvalidReplyError
from amp_fl.pruning.sparse_encoding import FORMAT_CODES, FORMATS, EncodedTensor, decode, unpack_values

MASKED_ACTION = "masked"  # Flower routes message_type "train.masked" to @app.train("masked")
INDEX = "sparse-index"  # array record: the index buffer of every sparse-encoded array, by array name
FORMAT_TAGS = "sparse-formats"  # array record: one uint8 format code per array, in ``names`` order
FORMATS_KEY = "formats"


@dataclass(frozen=True, eq=False)  # holds arrays
class MaskedTrainInstruction:
    """Server -> one participating node: train the (masked) global model ``tensors`` in this round."""

    MESSAGE_TYPE: ClassVar[str] = f"{MessageType.TRAIN}.{MASKED_ACTION}"

    round: int
    device: int
    setup: P.TrainSetup
    names: tuple[str, ...]
    tensors: tuple[EncodedTensor, ...]

    @property
    def format_codes(self) -> np.ndarray:
        return np.asarray([FORMAT_CODES[t.format] for t in self.tensors], dtype=np.uint8)

    @property
    def downlink_bytes(self) -> int:
        """Measured: value and index buffers of every array, plus one format byte per array."""
        return sum(t.nbytes for t in self.tensors) + int(self.format_codes.nbytes)

    def to_content(self) -> RecordDict:
        config = ConfigRecord({**self.setup.to_config(), P.ROUND: int(self.round), P.DEVICE: int(self.device)})
        arrays = P.to_array_record(self.names, [t.values for t in self.tensors])
        sparse = [(n, t.index) for n, t in zip(self.names, self.tensors, strict=True) if t.format != "dense"]
        index = P.to_array_record([n for n, _ in sparse], [i for _, i in sparse])
        tags = P.to_array_record([FORMATS_KEY], [self.format_codes])
        return RecordDict({P.ARRAYS: arrays, INDEX: index, FORMAT_TAGS: tags, P.CONFIG: config})

    def to_message(self, dst_node_id: int) -> Message:
        return Message(self.to_content(), dst_node_id=dst_node_id, message_type=self.MESSAGE_TYPE)

    @classmethod
    def from_content(cls, content: RecordDict) -> MaskedTrainInstruction:
        """Parse and check (``ValueError`` naming the key, record or array); shapes are checked by :meth:`decode`."""
        where = "masked train instruction"
        f = P.config_fields(content, where, ValueError)
        setup = P.TrainSetup._from_fields(f)
        names, values = P.wire_arrays(P.arrays_of(content, P.ARRAYS, where, ValueError), where, ValueError)
        codes = P.arrays_of(content, FORMAT_TAGS, where, ValueError)
        if FORMATS_KEY not in codes:
            raise ValueError(f"{where}: record {FORMAT_TAGS!r} has no {FORMATS_KEY!r} array")
        formats = P.decode_array(codes[FORMATS_KEY], FORMATS_KEY, where, ValueError)
        if formats.dtype != np.uint8 or formats.shape != (len(names),) or np.any(formats >= len(FORMATS)):
            raise ValueError(f"{where}: {FORMATS_KEY!r} must be {len(names)} uint8 codes < {len(FORMATS)}")
        index = P.arrays_of(content, INDEX, where, ValueError)
        sparse = {n for n, c in zip(names, formats, strict=True) if FORMATS[int(c)] != "dense"}
        if set(index.keys()) != sparse:
            raise ValueError(f"{where}: {INDEX!r} must hold exactly the sparse-encoded arrays")
        tensors = []
        for name, value, code in zip(names, values, formats, strict=True):
            if value.ndim != 1:
                raise ValueError(f"{where}: array {name!r} must be 1-d on the wire, got shape {value.shape}")
            idx = (
                P.decode_array(index[name], name, f"{where}: {INDEX!r}", ValueError)
                if name in sparse
                else np.zeros(0, dtype=np.uint8)
            )
            tensors.append(EncodedTensor((value.size,), FORMATS[int(code)], value, idx))  # real shapes: decode()
        return cls(
            round=f.integer(P.ROUND, minimum=1),
            device=f.integer(P.DEVICE),
            setup=setup,
            names=names,
            tensors=tuple(tensors),
        )

    def decode(
        self, names: list[str], shapes: list[tuple[int, ...]], prunable: list[bool]
    ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        """Full float32 arrays in ``names`` order and their masks (``None`` for arrays that are never pruned).

        Raises ``ValueError`` when the encoding does not describe a model of those shapes, or
        when an array that is never pruned arrives with entries missing.
        """
        where = "masked train instruction"
        by_name = dict(zip(self.names, self.tensors, strict=True))
        if sorted(by_name) != sorted(names):
            missing, extra = sorted(set(names) - set(by_name)), sorted(set(by_name) - set(names))
            raise ValueError(
                f"{where}: array names differ from the model's (missing {missing[:3]}, unexpected {extra[:3]})"
            )
        tensors = [by_name[n] for n in names]
        arrays: list[np.ndarray] = []
        masks: list[np.ndarray | None] = []
        for name, tensor, shape, can_prune in zip(names, tensors, shapes, prunable, strict=True):
            sized = EncodedTensor(tuple(shape), tensor.format, tensor.values, tensor.index)
            if tensor.format == "dense" and tensor.values.size != math.prod(shape):
                raise ValueError(f"{where}: array {name!r}: {tensor.values.size} values for shape {tuple(shape)}")
            try:
                array, mask = decode(sized)
            except ValueError as exc:
                raise ValueError(f"{where}: array {name!r}: {exc}") from exc
            if not can_prune and not mask.all():
                raise ValueError(f"{where}: array {name!r} is never pruned but arrived with a mask")
            arrays.append(array)
            masks.append(mask if can_prune else None)
        return arrays, masks


@dataclass(frozen=True, eq=False)  # holds arrays
class MaskedTrainReply:
    """Node -> server: the update's surviving values (flat float32 per array) and training metrics."""

    device: int
    names: tuple[str, ...]
    values: tuple[np.ndarray, ...]
    num_examples: int
    train_loss: float
    fit_seconds: float
    round: int  # echoes the instruction's round, so a reply delayed into a later round is recognised

    @property
    def uplink_bytes(self) -> int:
        """Measured: the update's value buffers (no index: the server knows the mask)."""
        return sum(int(v.nbytes) for v in self.values)

    def to_content(self) -> RecordDict:
        metrics = MetricRecord(
            {
                P.NUM_EXAMPLES: int(self.num_examples),
                P.TRAIN_LOSS: float(self.train_loss),
                P.DEVICE: int(self.device),
                P.FIT_SECONDS: float(self.fit_seconds),
                P.ROUND: int(self.round),
            }
        )
        arrays = P.to_array_record(self.names, [np.asarray(v, dtype=P.WIRE_DTYPE).reshape(-1) for v in self.values])
        return RecordDict({P.ARRAYS: arrays, P.METRICS: metrics})

    def to_reply(self, instruction: Message) -> Message:
        return Message(self.to_content(), reply_to=instruction)

    @classmethod
    def from_content(cls, content: RecordDict) -> MaskedTrainReply:
        """Parse and check (:class:`InvalidReplyError` naming the key, record or array)."""
        where = "masked train reply"
        f = P.metrics_fields(content, where, InvalidReplyError)
        device = f.integer(P.DEVICE)
        num_examples = f.integer(P.NUM_EXAMPLES, minimum=1)
        train_loss = f.number(P.TRAIN_LOSS, minimum=0.0)
        fit_seconds = f.number(P.FIT_SECONDS, minimum=0.0)
        server_round = f.integer(P.ROUND, minimum=1)
        names, values = P.wire_arrays(
            P.arrays_of(content, P.ARRAYS, where, InvalidReplyError), where, InvalidReplyError
        )
        return cls(device, names, values, num_examples, train_loss, fit_seconds, server_round)

    def for_model(
        self, names: list[str], shapes: list[tuple[int, ...]], masks: list[np.ndarray | None]
    ) -> list[np.ndarray]:
        """The update as full float32 arrays (0 at pruned entries), checked against the masks the server sent."""
        where = f"masked train reply of device {self.device}"
        ordered = P.in_order(self.names, list(self.values), names, where, InvalidReplyError)
        out = []
        for name, value, shape, mask in zip(names, ordered, shapes, masks, strict=True):
            try:
                out.append(unpack_values(np.asarray(value).reshape(-1), shape, mask))
            except ValueError as exc:
                raise InvalidReplyError(f"{where}: array {name!r}: {exc}") from exc
        return out
