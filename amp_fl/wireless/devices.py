"""Device profiles: what the scheduler needs to know about each PIU's hardware and position.

A profile is plain data. In simulation it comes from :func:`simulated_device_profile`; on a
real board the device reports its own measured CPU frequency, FLOPs per cycle, transmit power
and distance, and :meth:`DevicePopulation.from_profiles` takes those just the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from amp_fl.errors import check_argument
from amp_fl.wireless.config import WirelessConfig
from amp_fl.wireless.seeding import check_seed, derive_rng


@dataclass(frozen=True)
class DeviceProfile:
    """One device's compute and radio capabilities.

    Parameters
    ----------
    cpu_hz : float
        f_k, CPU frequency.
    flops_per_cycle : float
        n_k, FLOPs per CPU cycle.
    tx_power_w : float
        p_k, uplink transmit power in watts.
    distance_m : float
        d_k, distance to the server (enters the path loss ``d^-2``).
    position_m : (float, float) or None
        (x, y) around the server; informational (plots), the channel uses ``distance_m``.
    """

    cpu_hz: float
    flops_per_cycle: float
    tx_power_w: float
    distance_m: float
    position_m: tuple[float, float] | None = None

    def validate(self, prefix: str = "device") -> DeviceProfile:
        for name in ("cpu_hz", "flops_per_cycle", "tx_power_w", "distance_m"):
            value = getattr(self, name)
            check_argument(
                isinstance(value, int | float) and math.isfinite(value) and value > 0,
                f"{prefix}.{name}",
                f"must be a finite positive number, got {value!r}",
            )
        return self


def simulated_device_profile(device_index: int, seed: int, cfg: WirelessConfig) -> DeviceProfile:
    """The simulated profile of device ``device_index`` (Sec. V).

    Position uniform in area over the annulus ``[min_distance_m, cell_radius_m]`` (inverse-CDF
    of the radius: ``d = sqrt(u (R^2 - r0^2) + r0^2)``), CPU frequency uniform over
    ``cfg.cpu_freqs_hz``, power and FLOPs per cycle from ``cfg``. The draws depend only on
    ``(seed, device_index)``, not on K or on the order devices are built in.
    """
    seed = check_seed(seed)
    check_argument(
        isinstance(device_index, int | np.integer) and int(device_index) >= 0,
        "device_index",
        f"must be a non-negative integer, got {device_index!r}",
    )
    rng = derive_rng(seed, "wireless.device", int(device_index))
    u_radius, u_angle = rng.random(2)
    r0, r1 = cfg.min_distance_m, cfg.cell_radius_m
    distance = math.sqrt(u_radius * (r1 * r1 - r0 * r0) + r0 * r0)
    angle = 2.0 * math.pi * u_angle
    cpu_hz = float(cfg.cpu_freqs_hz[int(rng.integers(len(cfg.cpu_freqs_hz)))])
    return DeviceProfile(
        cpu_hz=cpu_hz,
        flops_per_cycle=float(cfg.flops_per_cycle),
        tx_power_w=cfg.tx_power_w,
        distance_m=distance,
        position_m=(distance * math.cos(angle), distance * math.sin(angle)),
    )


def _positive_vector(values: np.ndarray, key: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    check_argument(array.ndim == 1 and array.size >= 1, key, f"must be a non-empty 1-D array, got shape {array.shape}")
    check_argument(
        bool(np.all(np.isfinite(array)) and np.all(array > 0)), key, "must be finite and positive for every device"
    )
    array = array.copy()
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class DevicePopulation:
    """The K devices' profiles as arrays (index = device id), for vectorised latency maths."""

    cpu_hz: np.ndarray
    flops_per_cycle: np.ndarray
    tx_power_w: np.ndarray
    distance_m: np.ndarray

    def __post_init__(self) -> None:
        # Arrays are copied read-only: a scheduler holding the population cannot be changed behind its back.
        for name in ("cpu_hz", "flops_per_cycle", "tx_power_w", "distance_m"):
            object.__setattr__(self, name, _positive_vector(getattr(self, name), name))
        sizes = {self.cpu_hz.size, self.flops_per_cycle.size, self.tx_power_w.size, self.distance_m.size}
        check_argument(
            len(sizes) == 1, "DevicePopulation", f"all arrays must have one entry per device, got sizes {sorted(sizes)}"
        )

    @property
    def num_devices(self) -> int:
        return int(self.cpu_hz.size)

    @classmethod
    def from_profiles(cls, profiles: Sequence[DeviceProfile]) -> DevicePopulation:
        """Stack profiles (measured or simulated) in device-id order."""
        check_argument(len(profiles) >= 1, "profiles", "must hold at least one device profile")
        for k, profile in enumerate(profiles):
            profile.validate(prefix=f"devices[{k}]")
        return cls(
            cpu_hz=np.array([p.cpu_hz for p in profiles]),
            flops_per_cycle=np.array([p.flops_per_cycle for p in profiles]),
            tx_power_w=np.array([p.tx_power_w for p in profiles]),
            distance_m=np.array([p.distance_m for p in profiles]),
        )

    @classmethod
    def simulated(cls, cfg: WirelessConfig, seed: int) -> DevicePopulation:
        """``cfg.num_devices`` simulated devices: device k is ``simulated_device_profile(k, seed, cfg)``."""
        cfg.validate()
        return cls.from_profiles([simulated_device_profile(k, seed, cfg) for k in range(cfg.num_devices)])
