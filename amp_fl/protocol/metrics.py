"""The metrics the ServerApp hands back to Flower."""

from __future__ import annotations

from dataclasses import dataclass

from flwr.app import MetricRecord

from amp_fl.protocol.keys import (
    ACCURACY,
    LOSS,
    NUM_DEVICES,
    NUM_FAILURES,
    NUM_UPDATES,
    PERSONAL_ACCURACY,
    PERSONAL_LOSS,
)


# ------------------------------------------------------------------------------ metrics to Flower
@dataclass(frozen=True)
class RoundMetrics:
    """What ``aggregate_train`` returns to Flower."""

    num_updates: int
    num_failures: int

    def to_record(self) -> MetricRecord:
        return MetricRecord({NUM_UPDATES: int(self.num_updates), NUM_FAILURES: int(self.num_failures)})


@dataclass(frozen=True)
class PersonalMetrics:
    """What ``aggregate_evaluate`` returns to Flower: the mean personalised accuracy and loss over devices."""

    accuracy: float
    loss: float
    num_devices: int

    def to_record(self) -> MetricRecord:
        return MetricRecord(
            {
                PERSONAL_ACCURACY: float(self.accuracy),
                PERSONAL_LOSS: float(self.loss),
                NUM_DEVICES: int(self.num_devices),
            }
        )


@dataclass(frozen=True)
class EvaluationMetrics:
    """What the central evaluation (``evaluate_fn``) returns to Flower."""

    accuracy: float
    loss: float

    def to_record(self) -> MetricRecord:
        return MetricRecord({ACCURACY: float(self.accuracy), LOSS: float(self.loss)})
