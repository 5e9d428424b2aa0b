"""FedBuff's server maths (Nguyen et al., 2022, "Federated Learning with Buffered Asynchronous
Aggregation"), pure NumPy: the updates in flight ordered by their simulated arrival time, the
staleness weights and the buffered direction.

- A device that received model version ``v`` at simulated time ``t0`` has its update arrive at
  ``t0 + compute + upload`` (:mod:`amp_fl.scheduling.asynchronous`). The :class:`ArrivalQueue` holds
  every update in flight and gives them back in arrival order (ties: the order they were pushed).
- The server takes the ``B`` earliest arrivals (its buffer) and applies one step. An update is
  ``staleness = V - v`` versions old, ``V`` the server's version before the step, and weighs
  ``(1 + staleness)^-a`` (:func:`staleness_weights`; the paper's ``a = 1/2``: ``1/sqrt(1 + s)``).
- The direction is ``d = (1/B) sum_i s(tau_i) g_i`` (:func:`buffered_direction`) over the clients'
  cumulative gradients ``g_i = (w_received - w_i) / eta``; the server optimiser's step
  ``w - lr d`` (:mod:`amp_fl.strategy.server_optimizer`) with ``lr = eta_g * eta`` is the paper's
  ``w + eta_g (1/B) sum_i s(tau_i) Delta_i`` with ``Delta_i = w_i - w_received``.

:class:`FedBuffSettings` is the run config's ``fedbuff`` section (read with ``algorithm=fedbuff``);
its checks are the only ones.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from amp_fl.errors import check_argument
from amp_fl.scheduling.asynchronous import DISPATCH_SELECTIONS, DispatchSelection
from amp_fl.state import State, StateValue, as_arrays, integer, number


@dataclass(frozen=True)
class FedBuffSettings:
    """FedBuff's settings; also the run config's ``fedbuff`` section (``amp_fl.config`` names the key it rejects).

    Parameters
    ----------
    buffer_size : int, default 3
        B: the server steps once every B arrivals.
    concurrency : int or None, default None
        How many devices train at once (each holds one RB until its update arrives), in
        [B, min(K, R)]; ``None``: one per RB, ``min(K, R)``.
    staleness_exponent : float, default 0.5
        a of the staleness weight ``(1 + staleness)^-a``; 0.5 is the paper's ``1/sqrt(1 + s)``, 0 no discount.
    selection : {"rate", "random"}, default "rate"
        How idle devices are dispatched to free RBs (:mod:`amp_fl.scheduling.asynchronous`).
    """

    buffer_size: int = 3
    concurrency: int | None = None
    staleness_exponent: float = 0.5
    selection: DispatchSelection = "rate"

    def __post_init__(self) -> None:
        check_argument(self.buffer_size >= 1, "buffer_size", f"must be >= 1, got {self.buffer_size}")
        check_argument(
            self.concurrency is None or self.concurrency >= self.buffer_size,
            "concurrency",
            f"must be >= buffer_size={self.buffer_size} (the buffer could never fill), got {self.concurrency}",
        )
        check_argument(
            math.isfinite(self.staleness_exponent) and self.staleness_exponent >= 0,
            "staleness_exponent",
            f"must be a finite number >= 0, got {self.staleness_exponent}",
        )
        check_argument(
            self.selection in DISPATCH_SELECTIONS,
            "selection",
            f"choose from {', '.join(DISPATCH_SELECTIONS)}, got {self.selection!r}",
        )

    def slots(self, num_devices: int, num_rbs: int) -> int:
        """The concurrency for K devices and R RBs (``ArgumentError`` naming ``concurrency`` or ``buffer_size``)."""
        most = min(num_devices, num_rbs)
        if self.concurrency is None:
            check_argument(
                self.buffer_size <= most,
                "buffer_size",
                f"must be <= min(K, R) = {most} devices training at once, got {self.buffer_size}",
            )
            return most
        check_argument(
            self.concurrency <= most,
            "concurrency",
            f"at most min(K, R) = {most} devices train at once (each holds an RB), got {self.concurrency}",
        )
        return self.concurrency


def staleness_weights(staleness: np.ndarray, exponent: float) -> np.ndarray:
    """``(1 + staleness)^-exponent`` per update (float64); staleness counts server versions, >= 0."""
    staleness = np.asarray(staleness, dtype=np.float64)
    check_argument(bool(np.all(staleness >= 0)), "staleness", "must be >= 0 for every update")
    return (1.0 + staleness) ** -float(exponent)


@dataclass(frozen=True, eq=False)  # holds arrays
class Arrival:
    """One device's update in flight: when it arrives, on which model version it was trained, what it carries."""

    arrival_s: float  # simulated time the server receives it
    device: int
    rb: int
    version: int  # the server's model version the device trained on
    update: list[np.ndarray]  # the cumulative gradient g, full-model shaped, in the region map's order
    train_loss: float
    uplink_bytes: int

    def state_dict(self) -> State:
        return {
            "arrival_s": self.arrival_s,  # a JSON float keeps all 17 digits: the order survives a resume
            "device": self.device,
            "rb": self.rb,
            "version": self.version,
            "update": list(self.update),
            "train_loss": self.train_loss,
            "uplink_bytes": self.uplink_bytes,
        }

    @classmethod
    def from_state(cls, state: State) -> Arrival:
        return cls(
            arrival_s=number(state, "arrival_s"),
            device=integer(state, "device"),
            rb=integer(state, "rb"),
            version=integer(state, "version"),
            update=[np.array(a, dtype=np.float32) for a in as_arrays(state.get("update"), "'update'")],
            train_loss=number(state, "train_loss"),
            uplink_bytes=integer(state, "uplink_bytes"),
        )


class ArrivalQueue:
    """The updates in flight, kept in order of ``(arrival_s, push order)``."""

    def __init__(self) -> None:
        self._entries: list[tuple[float, int, Arrival]] = []
        self._pushed = 0  # push counter: the tie-break between equal arrival times

    def __len__(self) -> int:
        return len(self._entries)

    def push(self, arrival: Arrival) -> None:
        check_argument(math.isfinite(arrival.arrival_s), "arrival", f"arrives at {arrival.arrival_s} s")
        bisect.insort(self._entries, (arrival.arrival_s, self._pushed, arrival), key=lambda e: e[:2])
        self._pushed += 1

    def pop(self, count: int) -> list[Arrival]:
        """The ``count`` earliest arrivals, earliest first, removed from the queue."""
        check_argument(0 <= count <= len(self), "count", f"must be in [0, {len(self)}], got {count}")
        taken, self._entries = self._entries[:count], self._entries[count:]
        return [arrival for _, _, arrival in taken]

    def in_flight(self) -> list[Arrival]:
        """Every update in flight, earliest first (not a copy of the updates)."""
        return [arrival for _, _, arrival in self._entries]

    def state_dict(self) -> State:
        entries: list[StateValue] = [{"order": order, **arrival.state_dict()} for _, order, arrival in self._entries]
        return {"pushed": self._pushed, "entries": entries}

    def load_state_dict(self, state: State) -> None:
        entries = state.get("entries")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError("state: 'entries' must list the updates in flight")
        restored = [(Arrival.from_state(e), integer(e, "order")) for e in entries if isinstance(e, dict)]
        self._pushed = integer(state, "pushed")
        self._entries = sorted(((a.arrival_s, order, a) for a, order in restored), key=lambda e: e[:2])


def buffered_direction(
    arrivals: Sequence[Arrival], version: int, exponent: float, shapes: Sequence[tuple[int, ...]]
) -> list[np.ndarray]:
    """``(1/B) sum_i (1 + version - v_i)^-exponent g_i`` over the B buffered ``arrivals`` (float64)."""
    check_argument(len(arrivals) >= 1, "arrivals", "the buffer is empty")
    staleness = np.array([version - a.version for a in arrivals], dtype=np.int64)
    weights = staleness_weights(staleness, exponent)
    direction = [np.zeros(shape, dtype=np.float64) for shape in shapes]
    for weight, arrival in zip(weights, arrivals, strict=True):
        for total, g in zip(direction, arrival.update, strict=True):
            total += weight * np.asarray(g, dtype=np.float64)
    return [total / len(arrivals) for total in direction]
