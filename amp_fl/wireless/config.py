"""Typed configuration of the wireless system (Table I) and of the per-round latency budget.

Defaults are the paper's Table I / Sec. V values. :class:`WirelessConfig` is the ``wireless`` section
of the run config: its ``validate(prefix)`` raises :class:`~amp_fl.errors.ConfigError` naming the
offending key, e.g. ``wireless.num_rbs``. :class:`LatencyConfig` is derived from the model and
training settings, not written by users: it raises ``ValueError`` naming its field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from amp_fl.errors import check_argument, require


def dbm_to_watt(dbm: float) -> float:
    """Convert a power in dBm to watts (30 dBm = 1 W)."""
    return 10.0 ** ((dbm - 30.0) / 10.0)


def db_to_linear(db: float) -> float:
    """Convert a power ratio in dB to a linear factor (-30 dB = 1e-3)."""
    return 10.0 ** (db / 10.0)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class WirelessConfig:
    """The OFDMA uplink of one cell (paper Sec. II-C and V, Table I).

    Parameters
    ----------
    num_devices : int, default 100
        K, devices placed uniformly (in area) in the cell.
    num_rbs : int, default 10
        R, orthogonal resource blocks; a device uses at most one, an RB serves at most one device.
    cell_radius_m : float, default 500.0
        Radius of the disk around the server in which devices are placed.
    min_distance_m : float, default 1.0
        Devices are placed in the annulus ``[min_distance_m, cell_radius_m]``. The path-loss
        ``h0 * d^-2`` is referenced to 1 m and explodes as d -> 0; the paper's disk has no
        inner radius, and with 500 m the annulus differs from it with probability 4e-6.
    bandwidth_hz : float, default 1e6
        B, bandwidth of one RB.
    noise_psd_dbm_hz : float, default -174.0
        N0, noise power spectral density; the noise power of one RB is ``B * N0``.
    path_loss_db : float, default -30.0
        h0, path loss at the 1 m reference distance: ``h = h0 * rho * d^-2``.
    tx_power_dbm : float, default 30.0
        p_k, transmit power of every simulated device (1 W).
    cpu_freqs_hz : tuple of float, default (0.85e9, 1.12e9, 1.2e9, 1.3e9)
        f_k is drawn uniformly from these values once per device.
    flops_per_cycle : float, default 4.0
        n_k, FLOPs one CPU cycle processes.
    interference_range : (float, float), default (1e2, 1e5)
        I_r ~ U[lo, hi] * B * N0, drawn per RB.
    redraw_interference : bool, default True
        Redraw I_r every round (the project's default); ``False`` draws it once per run.
    """

    num_devices: int = 100
    num_rbs: int = 10
    cell_radius_m: float = 500.0
    min_distance_m: float = 1.0
    bandwidth_hz: float = 1e6
    noise_psd_dbm_hz: float = -174.0
    path_loss_db: float = -30.0
    tx_power_dbm: float = 30.0
    cpu_freqs_hz: tuple[float, ...] = (0.85e9, 1.12e9, 1.2e9, 1.3e9)
    flops_per_cycle: float = 4.0
    interference_range: tuple[float, float] = (1e2, 1e5)
    redraw_interference: bool = True

    @property
    def noise_power_w(self) -> float:
        """Noise power of one RB, ``B * N0``, in watts."""
        return self.bandwidth_hz * dbm_to_watt(self.noise_psd_dbm_hz)

    @property
    def tx_power_w(self) -> float:
        return dbm_to_watt(self.tx_power_dbm)

    @property
    def path_loss_linear(self) -> float:
        return db_to_linear(self.path_loss_db)

    def validate(self, prefix: str = "wireless") -> WirelessConfig:
        """Check every field; return ``self`` so that ``cfg = WirelessConfig(...).validate()`` reads well."""
        require(
            _positive_int(self.num_devices),
            f"{prefix}.num_devices",
            f"must be an integer >= 1, got {self.num_devices!r}",
        )
        require(_positive_int(self.num_rbs), f"{prefix}.num_rbs", f"must be an integer >= 1, got {self.num_rbs!r}")
        require(
            _finite(self.cell_radius_m) and self.cell_radius_m > 0,
            f"{prefix}.cell_radius_m",
            f"must be a finite positive distance, got {self.cell_radius_m!r}",
        )
        require(
            _finite(self.min_distance_m) and 0 < self.min_distance_m < self.cell_radius_m,
            f"{prefix}.min_distance_m",
            f"must lie in (0, cell_radius_m={self.cell_radius_m}), got {self.min_distance_m!r}",
        )
        require(
            _finite(self.bandwidth_hz) and self.bandwidth_hz > 0,
            f"{prefix}.bandwidth_hz",
            f"must be a finite positive bandwidth, got {self.bandwidth_hz!r}",
        )
        require(
            _finite(self.noise_psd_dbm_hz),
            f"{prefix}.noise_psd_dbm_hz",
            f"must be finite, got {self.noise_psd_dbm_hz!r}",
        )
        require(_finite(self.path_loss_db), f"{prefix}.path_loss_db", f"must be finite, got {self.path_loss_db!r}")
        # dBm may be negative (-10 dBm = 0.1 mW); only a non-finite value is impossible.
        require(_finite(self.tx_power_dbm), f"{prefix}.tx_power_dbm", f"must be finite, got {self.tx_power_dbm!r}")
        require(
            len(self.cpu_freqs_hz) >= 1 and all(_finite(f) and f > 0 for f in self.cpu_freqs_hz),
            f"{prefix}.cpu_freqs_hz",
            f"must be a non-empty list of positive frequencies, got {self.cpu_freqs_hz!r}",
        )
        require(
            _finite(self.flops_per_cycle) and self.flops_per_cycle > 0,
            f"{prefix}.flops_per_cycle",
            f"must be positive, got {self.flops_per_cycle!r}",
        )
        lo_hi = tuple(self.interference_range)
        require(
            len(lo_hi) == 2 and all(_finite(v) for v in lo_hi) and 0 <= lo_hi[0] <= lo_hi[1],
            f"{prefix}.interference_range",
            f"must be [lo, hi] with 0 <= lo <= hi (multiples of B*N0), got {self.interference_range!r}",
        )
        require(
            isinstance(self.redraw_interference, bool),
            f"{prefix}.redraw_interference",
            f"must be true or false, got {self.redraw_interference!r}",
        )
        return self


@dataclass(frozen=True)
class LatencyConfig:
    """What one round of local training and upload costs, Eqs. (6), (7) and the deadline (8a).

    Parameters
    ----------
    num_params : int
        Q, parameters of the full global model (uploaded as a gradient of the same size).
    flops_per_sample : float
        C, FLOPs to process one sample on the full model (forward and backward, as the paper counts).
    t_max_s : float
        T_max, the per-round latency budget of every scheduled device.
    local_steps : int, default 8
        lambda, local SGD steps per round.
    batch_size : int, default 64
        L_b, samples per local step.
    bits_per_param : int, default 32
        q, bits per uploaded parameter.
    """

    num_params: int
    flops_per_sample: float
    t_max_s: float
    local_steps: int = 8
    batch_size: int = 64
    bits_per_param: int = 32

    @property
    def payload_bits(self) -> float:
        """Bits of a full-model upload, ``Q * q``."""
        return float(self.num_params) * float(self.bits_per_param)

    @property
    def flops_per_round(self) -> float:
        """FLOPs of a full-model round of local training, ``lambda * L_b * C``."""
        return float(self.local_steps) * float(self.batch_size) * float(self.flops_per_sample)

    def validate(self, prefix: str = "latency") -> LatencyConfig:
        """Check every field (``ValueError`` naming ``<prefix>.<field>``); return ``self``.

        Not a user config: it is derived from ``model.*`` and ``train.*``, which ``amp_fl.config`` checks.
        """
        check_argument(
            _positive_int(self.num_params), f"{prefix}.num_params", f"must be an integer >= 1, got {self.num_params!r}"
        )
        check_argument(
            _finite(self.flops_per_sample) and self.flops_per_sample > 0,
            f"{prefix}.flops_per_sample",
            f"must be positive, got {self.flops_per_sample!r}",
        )
        check_argument(
            _finite(self.t_max_s) and self.t_max_s > 0, f"{prefix}.t_max_s", f"must be positive, got {self.t_max_s!r}"
        )
        check_argument(
            _positive_int(self.local_steps),
            f"{prefix}.local_steps",
            f"must be an integer >= 1, got {self.local_steps!r}",
        )
        check_argument(
            _positive_int(self.batch_size), f"{prefix}.batch_size", f"must be an integer >= 1, got {self.batch_size!r}"
        )
        check_argument(
            _positive_int(self.bits_per_param),
            f"{prefix}.bits_per_param",
            f"must be an integer >= 1, got {self.bits_per_param!r}",
        )
        return self


@dataclass(frozen=True)
class ModelCost:
    """The paper's cost constants for one model (Table I)."""

    num_params: int
    flops_per_sample: float
    t_max_s: float


# Table I. Using these for the paper's models makes the simulated time axis match the paper's;
# for any other model compute Q and C from the model itself.
PAPER_MODEL_COSTS: dict[str, ModelCost] = {
    "cnn": ModelCost(num_params=36_758, flops_per_sample=782_816.0, t_max_s=0.1),
    "vgg11": ModelCost(num_params=9_287_434, flops_per_sample=362_285_568.0, t_max_s=20.0),
}


def paper_latency_config(model: str, **overrides: Any) -> LatencyConfig:
    """The paper's latency constants for ``model`` ("cnn" or "vgg11"), with optional overrides.

    >>> paper_latency_config("cnn").t_max_s
    0.1
    """
    if model not in PAPER_MODEL_COSTS:
        choices = ", ".join(sorted(PAPER_MODEL_COSTS))
        raise ValueError(f"model {model!r} has no paper preset; choose from {choices}")
    cost = PAPER_MODEL_COSTS[model]
    base = LatencyConfig(num_params=cost.num_params, flops_per_sample=cost.flops_per_sample, t_max_s=cost.t_max_s)
    known = {f.name for f in fields(LatencyConfig)}
    for key in overrides:
        check_argument(key in known, key, f"is not a LatencyConfig field; known: {', '.join(sorted(known))}")
    return replace(base, **overrides).validate()
