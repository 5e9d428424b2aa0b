"""The simulated clock: the run's time axis, advanced by each round's simulated latency.

It measures (``sim_time_s`` of ``metrics.csv``, the evaluation grid of ``evaluation.every_sim_s``)
and never steers training, so it belongs to the recorder, which turns each round's report into
its row; the strategies only report how long their round took.
"""

from __future__ import annotations

from dataclasses import dataclass

from amp_fl.state import State, number


@dataclass
class SimulatedClock:
    """Seconds of simulated time since round 1 started."""

    now_s: float = 0.0

    def advance(self, seconds: float) -> float:
        """Move on by ``seconds`` (a round's latency, >= 0); returns the new time."""
        if not seconds >= 0:
            raise ValueError(f"seconds: must be >= 0, got {seconds}")
        self.now_s += float(seconds)
        return self.now_s

    def state_dict(self) -> State:
        return {"now_s": self.now_s}  # a JSON float keeps all 17 digits: the resumed clock is exact

    def load_state_dict(self, state: State) -> None:
        self.now_s = number(state, "now_s")
