"""The personal-evaluation instruction and its reply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from amp_fl.errors import InvalidReplyError
from amp_fl.protocol.fields import (
    arrays_of,
    check_shapes,
    config_fields,
    in_order,
    metrics_fields,
    to_array_record,
    wire_arrays,
)
from amp_fl.protocol.keys import (
    ARRAYS,
    CONFIG,
    DEVICE,
    EVAL_BATCH_SIZE,
    METRICS,
    NUM_EXAMPLES,
    PERSONAL_ACCURACY,
    PERSONAL_LOSS,
    PERSONALISED,
    ROUND,
    WIRE_DTYPE,
)
from amp_fl.protocol.train import TrainSetup
from amp_fl.pruning.regions import RegionMap


# ------------------------------------------------------------------------------ evaluate
@dataclass(frozen=True, eq=False)  # holds arrays
class EvaluateInstruction:
    """Server -> every node at a personal-evaluation round: score your personalised model.

    ``arrays`` are the full global model's float32 arrays named ``names`` (the region map's
    ``param_names``); ``batch_size`` is the evaluation batch.
    """

    MESSAGE_TYPE: ClassVar[str] = MessageType.EVALUATE

    round: int
    device: int
    setup: TrainSetup
    batch_size: int
    names: tuple[str, ...]
    arrays: tuple[np.ndarray, ...]

    def to_content(self) -> RecordDict:
        config = ConfigRecord(
            {
                **self.setup.to_config(),
                ROUND: int(self.round),
                DEVICE: int(self.device),
                EVAL_BATCH_SIZE: int(self.batch_size),
            }
        )
        arrays = to_array_record(self.names, [np.asarray(a, dtype=WIRE_DTYPE) for a in self.arrays])
        return RecordDict({ARRAYS: arrays, CONFIG: config})

    def to_message(self, dst_node_id: int) -> Message:
        return Message(self.to_content(), dst_node_id=dst_node_id, message_type=self.MESSAGE_TYPE)

    @classmethod
    def from_content(cls, content: RecordDict) -> EvaluateInstruction:
        """Parse and check an evaluate instruction (``ValueError`` naming the key, record or array)."""
        where = "evaluate instruction"
        f = config_fields(content, where, ValueError)
        setup = TrainSetup._from_fields(f)
        names, arrays = wire_arrays(arrays_of(content, ARRAYS, where, ValueError), where, ValueError)
        return cls(
            round=f.integer(ROUND, minimum=1),
            device=f.integer(DEVICE),
            setup=setup,
            batch_size=f.integer(EVAL_BATCH_SIZE, minimum=1),
            names=names,
            arrays=arrays,
        )

    def for_model(self, region_map: RegionMap) -> list[np.ndarray]:
        """The arrays in ``region_map.param_names`` order, checked to be the full model's shapes."""
        where = "evaluate instruction"
        arrays = in_order(self.names, self.arrays, region_map.param_names, where, ValueError)
        check_shapes(region_map.param_names, arrays, region_map.shapes, where, ValueError)
        return arrays


@dataclass(frozen=True)
class EvaluateReply:
    """Node -> server: its personalised model's label-weighted test accuracy and loss.

    ``num_examples`` is the number of test samples scored; ``personalised`` is ``True`` when the
    device scored its own personalised model (APFL, after its first training round) and ``False``
    when it scored the global model.
    """

    device: int
    accuracy: float
    loss: float
    num_examples: int
    personalised: bool

    def to_content(self) -> RecordDict:
        metrics = MetricRecord(
            {
                DEVICE: int(self.device),
                PERSONAL_ACCURACY: float(self.accuracy),
                PERSONAL_LOSS: float(self.loss),
                NUM_EXAMPLES: int(self.num_examples),
                PERSONALISED: int(self.personalised),
            }
        )
        return RecordDict({METRICS: metrics})

    def to_reply(self, instruction: Message) -> Message:
        return Message(self.to_content(), reply_to=instruction)

    @classmethod
    def from_content(cls, content: RecordDict) -> EvaluateReply:
        """Parse and check an evaluate reply (:class:`InvalidReplyError` naming the key)."""
        where = "evaluate reply"
        f = metrics_fields(content, where, InvalidReplyError)
        personalised = f.integer(PERSONALISED)
        if personalised > 1:
            raise f.fail(PERSONALISED, f"must be 0 or 1, got {personalised}")
        return cls(
            device=f.integer(DEVICE),
            accuracy=f.number(PERSONAL_ACCURACY, minimum=0.0, maximum=1.0),
            loss=f.number(PERSONAL_LOSS, minimum=0.0),
            num_examples=f.integer(NUM_EXAMPLES, minimum=1),
            personalised=bool(personalised),
        )
