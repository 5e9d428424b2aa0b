"""A latency budget T_max that changes over rounds (beyond the paper, which holds it fixed).

Eq. (16) sizes each sub-model to meet the round's T_max: a small budget early gives many short
rounds of small sub-models, a larger one later gives larger sub-models. :class:`TmaxSchedule`
gives the budget of each round; :class:`~amp_fl.wireless.latency.SystemModel` reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from amp_fl.errors import check_argument

TmaxShape = Literal["constant", "linear", "step"]
T_MAX_SHAPES: tuple[TmaxShape, ...] = get_args(TmaxShape)


@dataclass(frozen=True)
class TmaxSchedule:
    """T_max of round t (Flower's rounds count from 1).

    ``constant``: ``start_s`` always (the paper). ``linear``: from ``start_s`` in round 1 to
    ``end_s`` in round ``1 + rounds``, on the straight line between them, then ``end_s``.
    ``step``: ``start_s`` up to round ``rounds``, ``end_s`` after it.
    """

    shape: TmaxShape
    start_s: float
    end_s: float | None = None
    rounds: int | None = None

    def __post_init__(self) -> None:
        shapes = ", ".join(T_MAX_SHAPES)
        check_argument(self.shape in T_MAX_SHAPES, "shape", f"choose from {shapes}, got {self.shape!r}")
        check_argument(math.isfinite(self.start_s) and self.start_s > 0, "start_s", f"must be > 0, got {self.start_s}")
        if self.shape == "constant":
            check_argument(self.end_s is None, "end_s", "a constant T_max takes no end value; set it to null")
            check_argument(self.rounds is None, "rounds", "a constant T_max takes no round count; set it to null")
            return
        check_argument(
            self.end_s is not None and math.isfinite(self.end_s) and self.end_s > 0,
            "end_s",
            f"a {self.shape} T_max needs an end value > 0, got {self.end_s}",
        )
        check_argument(
            self.rounds is not None and self.rounds >= 1,
            "rounds",
            f"a {self.shape} T_max needs a round count >= 1, got {self.rounds}",
        )

    def at(self, server_round: int) -> float:
        """T_max of round ``server_round`` (round 0 and earlier: ``start_s``)."""
        if self.shape == "constant" or server_round <= 1:
            return self.start_s
        assert self.end_s is not None and self.rounds is not None  # checked at construction
        if self.shape == "step":
            return self.start_s if server_round <= self.rounds else self.end_s
        progress = min(server_round - 1, self.rounds) / self.rounds
        return self.start_s + (self.end_s - self.start_s) * progress
