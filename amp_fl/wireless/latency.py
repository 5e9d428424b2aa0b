"""Latency model (Eqs. (3), (6), (7)) and the keep fraction that meets the deadline (Eq. (16)).

A sub-model keeping the fraction ``1 - beta`` of every layer's regions costs ``(1 - beta)^2``
of the full model's compute, Eq. (6), and upload, Eq. (7). Everything here is vectorised over devices
(rows) and RBs (columns). Regions kept per layer at a keep fraction are
:func:`amp_fl.pruning.counts.keep_counts`, the one rule shared with the schedulers and policies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from amp_fl.errors import check_argument
from amp_fl.pruning.counts import check_layer_sizes, keep_counts
from amp_fl.wireless.channel import ChannelState, shannon_rates
from amp_fl.wireless.config import LatencyConfig, WirelessConfig
from amp_fl.wireless.devices import DevicePopulation
from amp_fl.wireless.t_max import TmaxSchedule


def full_compute_latency(latency: LatencyConfig, cpu_hz: np.ndarray, flops_per_cycle: np.ndarray) -> np.ndarray:
    """Full-model compute time ``lambda L_b C / (f_k n_k)`` (Eq. (6) at beta = 0), shape (K,)."""
    return latency.flops_per_round / (
        np.asarray(cpu_hz, dtype=np.float64) * np.asarray(flops_per_cycle, dtype=np.float64)
    )


def full_upload_latency(latency: LatencyConfig, rates: np.ndarray) -> np.ndarray:
    """Full-model upload time ``Q q / r`` (Eq. (7) at beta = 0), shape of ``rates``; ``inf`` where the rate is 0."""
    rates = np.asarray(rates, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return latency.payload_bits / rates


def keep_fraction(t_max_s: float, compute_s: np.ndarray, upload_s: np.ndarray) -> np.ndarray:
    """Largest keep fraction meeting the deadline, ``min(sqrt(T_max / (T^L + T^U)), 1)`` (Eq. (16)).

    ``compute_s`` and ``upload_s`` are full-model times and broadcast against each other
    (a (K, 1) column of compute times against a (K, R) matrix of upload times). An infinite
    upload time (rate 0) gives 0.
    """
    total = np.asarray(compute_s, dtype=np.float64) + np.asarray(upload_s, dtype=np.float64)
    return np.minimum(np.sqrt(t_max_s / total), 1.0)


def feasible_pairs(kappa: np.ndarray, layer_sizes: Sequence[int]) -> np.ndarray:
    """Whether a keep fraction leaves every layer at least one region (shape of ``kappa``).

    A count ``floor(kappa * I_l + slack) >= 1`` holds for every layer exactly when it holds for
    the smallest one (floating-point multiplication by a positive number is monotone), so one
    layer decides.
    """
    return keep_counts(kappa, (min(check_layer_sizes(layer_sizes)),))[..., 0] >= 1


def realised_keep_fraction(counts: np.ndarray, layer_sizes: Sequence[int]) -> np.ndarray:
    """``1 - beta`` of a realised sub-model: kept regions over all regions (Eq. (3)), shape ``counts.shape[:-1]``."""
    return np.asarray(counts).sum(axis=-1) / float(sum(check_layer_sizes(layer_sizes)))


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class PairCosts:
    """Every device/RB pair's rate, full-model times and keep fraction in one round.

    Attributes
    ----------
    rates : (K, R) array, bit/s
    compute_full_s : (K,) array, full-model compute time, Eq. (6)
    upload_full_s : (K, R) array, full-model upload time, Eq. (7)
    keep_fraction : (K, R) array, kappa of Eq. (16)
    """

    rates: np.ndarray
    compute_full_s: np.ndarray
    upload_full_s: np.ndarray
    keep_fraction: np.ndarray


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class SystemModel:
    """The devices, the radio and the latency budget: everything a scheduler needs besides the AoI.

    Parameters
    ----------
    wireless : WirelessConfig
        B, N0 and R (K is taken from ``devices``).
    latency : LatencyConfig
        Q, C, T_max, lambda, L_b, q.
    devices : DevicePopulation
        Per-device f_k, n_k, p_k, d_k (simulated or measured).
    t_max_schedule : TmaxSchedule, optional
        T_max per round (beyond the paper); ``None``: ``latency.t_max_s`` every round.
    """

    wireless: WirelessConfig
    latency: LatencyConfig
    devices: DevicePopulation
    t_max_schedule: TmaxSchedule | None = None
    _compute_full_s: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.wireless.validate()
        self.latency.validate()
        check_argument(
            self.devices.num_devices == self.wireless.num_devices,
            "devices",
            f"has {self.devices.num_devices} device profiles but wireless.num_devices is {self.wireless.num_devices}",
        )
        # Compute time does not depend on the channel: compute it once.
        compute = full_compute_latency(self.latency, self.devices.cpu_hz, self.devices.flops_per_cycle)
        object.__setattr__(self, "_compute_full_s", compute)

    @property
    def num_devices(self) -> int:
        return self.devices.num_devices

    @property
    def num_rbs(self) -> int:
        return self.wireless.num_rbs

    @property
    def compute_full_s(self) -> np.ndarray:
        """Full-model compute time of every device, (K,)."""
        return self._compute_full_s

    def check_state(self, state: ChannelState) -> None:
        """Raise ``ValueError`` unless ``state`` has one gain per device and one interference per RB."""
        if state.num_devices != self.num_devices or state.num_rbs != self.num_rbs:
            raise ValueError(
                f"channel state is {state.num_devices} devices x {state.num_rbs} RBs, "
                f"the system has {self.num_devices} x {self.num_rbs}"
            )

    def rates(self, state: ChannelState) -> np.ndarray:
        """Shannon rate of every device on every RB, (K, R) (Eq. (7))."""
        self.check_state(state)
        radio = self.wireless
        power = self.devices.tx_power_w
        return shannon_rates(state.gains, power, state.interference_w, radio.bandwidth_hz, radio.noise_power_w)

    def t_max_at(self, server_round: int | None) -> float:
        """The round's latency budget: the schedule's value, else (or for ``None``) ``latency.t_max_s``."""
        if self.t_max_schedule is None or server_round is None:
            return self.latency.t_max_s
        return self.t_max_schedule.at(server_round)

    def pair_costs(self, state: ChannelState, server_round: int | None = None) -> PairCosts:
        """Rates, full-model latencies and keep fractions of all K x R pairs for this round."""
        rates = self.rates(state)
        upload = full_upload_latency(self.latency, rates)
        kappa = keep_fraction(self.t_max_at(server_round), self.compute_full_s[:, None], upload)
        return PairCosts(rates=rates, compute_full_s=self.compute_full_s, upload_full_s=upload, keep_fraction=kappa)


def device_latencies(
    costs: PairCosts, device_ids: np.ndarray, rb_ids: np.ndarray, kept_fraction: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Compute and upload time of each scheduled device at its realised keep fraction ``1 - beta``.

    Both scale with ``(1 - beta)^2`` (Eqs. (4)-(7)).
    """
    scale = np.asarray(kept_fraction, dtype=np.float64) ** 2
    return scale * costs.compute_full_s[device_ids], scale * costs.upload_full_s[device_ids, rb_ids]


def round_latency(compute_s: np.ndarray, upload_s: np.ndarray) -> float:
    """The round lasts as long as its slowest scheduled device; 0 when nobody is scheduled."""
    total = np.asarray(compute_s) + np.asarray(upload_s)
    return float(total.max()) if total.size else 0.0
