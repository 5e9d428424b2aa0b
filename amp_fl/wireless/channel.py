"""Uplink channel: per-round gains and interference, and the Shannon rates they give (Eq. (7)).

``Channel.observe(round)`` is the one hook the server calls per round. ``RayleighChannel``
simulates Sec. V's model; ``MeasuredChannel`` carries gains reported by a real deployment.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from amp_fl.errors import check_argument
from amp_fl.wireless.config import WirelessConfig
from amp_fl.wireless.seeding import check_seed, derive_rng


def _nonnegative_vector(values: ArrayLike, name: str) -> np.ndarray:
    array = np.array(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if not (np.all(np.isfinite(array)) and np.all(array >= 0)):
        raise ValueError(f"{name} must be finite and non-negative")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class ChannelState:
    """What the server knows about the uplink in one round.

    Parameters
    ----------
    gains : (K,) float array
        Linear power gain ``h_k`` of every device (constant within the round, Eq. (7)). A gain of
        0 means the device cannot transmit this round: its rate is 0 and it is never scheduled.
    interference_w : (R,) float array
        Inter-cell interference power ``I_r`` on every RB, in watts.
    """

    gains: np.ndarray
    interference_w: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "gains", _nonnegative_vector(self.gains, "gains"))
        object.__setattr__(self, "interference_w", _nonnegative_vector(self.interference_w, "interference_w"))

    @property
    def num_devices(self) -> int:
        return int(self.gains.size)

    @property
    def num_rbs(self) -> int:
        return int(self.interference_w.size)


def shannon_rates(
    gains: np.ndarray,
    tx_power_w: np.ndarray,
    interference_w: np.ndarray,
    bandwidth_hz: float,
    noise_power_w: float,
) -> np.ndarray:
    """Rate of every device on every RB, ``B log2(1 + p_k h_k / (I_r + B N0))`` (Eq. (7)), shape (K, R).

    The received power ``p_k h_k`` is a column and the RB's noise-plus-interference a row, so
    one broadcast gives the whole K x R matrix.
    """
    received = (np.asarray(tx_power_w, dtype=np.float64) * np.asarray(gains, dtype=np.float64))[:, None]
    denominator = (np.asarray(interference_w, dtype=np.float64) + noise_power_w)[None, :]
    return bandwidth_hz * np.log2(1.0 + received / denominator)


class Channel(ABC):
    """Source of per-round channel states for ``num_devices`` devices and ``num_rbs`` RBs."""

    def __init__(self, num_devices: int, num_rbs: int) -> None:
        check_argument(int(num_devices) >= 1, "num_devices", f"must be >= 1, got {num_devices!r}")
        check_argument(int(num_rbs) >= 1, "num_rbs", f"must be >= 1, got {num_rbs!r}")
        self.num_devices = int(num_devices)
        self.num_rbs = int(num_rbs)

    @abstractmethod
    def observe(self, round: int) -> ChannelState:
        """The channel of round ``round`` (gains constant within a round, independent across rounds)."""


class RayleighChannel(Channel):
    """Simulated channel of Sec. V: ``h_k = h0 rho_k d_k^-2``, ``rho_k ~ Exp(1)``, ``I_r ~ U[lo, hi] B N0``.

    Fading is drawn per device per round; interference per RB per round, or once per run when
    ``cfg.redraw_interference`` is false. Round ``t``'s draws come from a generator derived
    from ``(seed, t)``, so ``observe(t)`` is repeatable and independent of earlier calls.

    Parameters
    ----------
    cfg : WirelessConfig
        Supplies K, R, h0, B, N0 and the interference range.
    distance_m : (K,) array
        Device distances, e.g. ``DevicePopulation.distance_m``.
    seed : int
        The run seed.
    """

    def __init__(self, cfg: WirelessConfig, distance_m: ArrayLike, seed: int) -> None:
        cfg.validate()
        super().__init__(cfg.num_devices, cfg.num_rbs)
        distance = np.asarray(distance_m, dtype=np.float64)
        check_argument(
            distance.shape == (cfg.num_devices,),
            "distance_m",
            f"must have one entry per device ({cfg.num_devices}), got shape {distance.shape}",
        )
        check_argument(bool(np.all(np.isfinite(distance)) and np.all(distance > 0)), "distance_m", "must be positive")
        self.cfg = cfg
        self.seed = check_seed(seed)
        # Large-scale gain h0 d^-2 is fixed per device; only rho changes per round.
        self._mean_gain = cfg.path_loss_linear / distance**2
        self._fixed_interference = (
            None if cfg.redraw_interference else self._draw_interference(derive_rng(self.seed, "channel.interference"))
        )

    def _draw_interference(self, rng: np.random.Generator) -> np.ndarray:
        lo, hi = self.cfg.interference_range
        return rng.uniform(lo, hi, size=self.num_rbs) * self.cfg.noise_power_w

    def observe(self, round: int) -> ChannelState:
        check_argument(int(round) >= 0, "round", f"must be >= 0, got {round!r}")
        rho = derive_rng(self.seed, "channel.fading", int(round)).exponential(1.0, size=self.num_devices)
        if self._fixed_interference is None:
            interference = self._draw_interference(derive_rng(self.seed, "channel.interference", int(round)))
        else:
            interference = self._fixed_interference
        return ChannelState(gains=self._mean_gain * rho, interference_w=interference)


class MeasuredChannel(Channel):
    """Channel fed by measurements from a real deployment.

    Devices report their gain for a round (``report_gain``), the server reports the measured
    interference per RB (``report_interference``) or gives a constant default. A device that
    has not reported for a round gets gain 0 and so cannot be scheduled in it. Reports for
    rounds before the last observed one are dropped to bound memory.
    """

    def __init__(self, num_devices: int, num_rbs: int, default_interference_w: ArrayLike | None = None) -> None:
        super().__init__(num_devices, num_rbs)
        self._default_interference = (
            None if default_interference_w is None else self._checked_interference(default_interference_w)
        )
        self._gains: dict[int, np.ndarray] = {}
        self._interference: dict[int, np.ndarray] = {}

    def _checked_interference(self, values: ArrayLike) -> np.ndarray:
        interference = _nonnegative_vector(values, "interference_w")
        if interference.size != self.num_rbs:
            raise ValueError(f"interference_w must have {self.num_rbs} entries (one per RB), got {interference.size}")
        return interference

    def report_gain(self, round: int, device_id: int, gain: float) -> None:
        """Record device ``device_id``'s measured linear power gain for round ``round``."""
        if not 0 <= int(device_id) < self.num_devices:
            raise ValueError(f"device_id must be in [0, {self.num_devices}), got {device_id}")
        if not (np.isfinite(gain) and gain >= 0):
            raise ValueError(f"gain must be finite and non-negative, got {gain}")
        self._gains.setdefault(int(round), np.zeros(self.num_devices))[int(device_id)] = float(gain)

    def report_interference(self, round: int, interference_w: ArrayLike) -> None:
        """Record the measured interference power per RB for round ``round``."""
        self._interference[int(round)] = self._checked_interference(interference_w)

    def observe(self, round: int) -> ChannelState:
        round = int(round)
        interference = self._interference.get(round, self._default_interference)
        if interference is None:
            raise LookupError(f"no interference reported for round {round} and no default_interference_w given")
        gains = self._gains.get(round, np.zeros(self.num_devices))
        for stale in [t for t in self._gains if t < round]:
            del self._gains[stale]
        for stale in [t for t in self._interference if t < round]:
            del self._interference[stale]
        return ChannelState(gains=gains, interference_w=interference)
