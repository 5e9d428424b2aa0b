"""Where a device's profile and uplink channel came from: simulated, reported by the board, or measured.

A board running a SuperNode can report its hardware through ``--node-config`` (``reported``),
measure its own training throughput when asked (``measured``), or leave a part to the simulation
of Sec. V (``simulated``: drawn from the run seed exactly as in a simulated run). The server keeps
the answer beside the numbers (:class:`ReportedDeviceProfile`) and ``summary.json`` lists it per
device (:func:`profile_provenance`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from amp_fl.wireless.devices import DeviceProfile

ComputeSource = Literal["simulated", "reported", "measured"]
RadioSource = Literal["simulated", "reported"]
ChannelMode = Literal["simulated", "measured"]
COMPUTE_SOURCES: tuple[str, ...] = get_args(ComputeSource)
RADIO_SOURCES: tuple[str, ...] = get_args(RadioSource)
CHANNEL_MODES: tuple[str, ...] = get_args(ChannelMode)
SIMULATED = "simulated"
REPORTED = "reported"
MEASURED = "measured"


@dataclass(frozen=True)
class ReportedDeviceProfile(DeviceProfile):
    """A :class:`DeviceProfile` that says where its numbers came from (a SuperNode's reply).

    Attributes
    ----------
    compute_source : {"simulated", "reported", "measured"}
        Origin of ``cpu_hz`` and ``flops_per_cycle``. ``measured``: the board timed SGD steps of
        the run's model; ``cpu_hz * flops_per_cycle`` is then its throughput in the server's
        FLOP units (the scheduler's Eq. (6) gives the time the board measured).
    radio_source : {"simulated", "reported"}
        Origin of ``tx_power_w`` and ``distance_m``.
    uplink_rate_bps : float or None
        The uplink rate the board reported (bit/s on one RB), if any.
    measured_flops_per_s : float or None
        The measured throughput in exact FLOPs of the model (forward + backward), if measured.
    """

    compute_source: str = SIMULATED
    radio_source: str = SIMULATED
    uplink_rate_bps: float | None = None
    measured_flops_per_s: float | None = None

    def __post_init__(self) -> None:
        if self.compute_source not in COMPUTE_SOURCES:
            raise ValueError(f"compute_source: choose from {', '.join(COMPUTE_SOURCES)}, got {self.compute_source!r}")
        if self.radio_source not in RADIO_SOURCES:
            raise ValueError(f"radio_source: choose from {', '.join(RADIO_SOURCES)}, got {self.radio_source!r}")
        if self.uplink_rate_bps is not None and not self.uplink_rate_bps > 0:
            raise ValueError(f"uplink_rate_bps: must be > 0, got {self.uplink_rate_bps}")


def uplink_rate(profile: DeviceProfile) -> float | None:
    """The uplink rate a device reported, or None (simulated profiles never carry one)."""
    return profile.uplink_rate_bps if isinstance(profile, ReportedDeviceProfile) else None


def channel_source(profile: DeviceProfile, mode: ChannelMode, deployment: bool) -> str:
    """``reported`` when the scheduler uses the device's reported uplink rate, else ``simulated`` (Rayleigh)."""
    if deployment and mode == MEASURED and uplink_rate(profile) is not None:
        return REPORTED
    return SIMULATED


def profile_provenance(profile: DeviceProfile, mode: ChannelMode, deployment: bool) -> dict[str, Any]:
    """The ``summary.json`` fields that say where one device's profile and channel came from."""
    reported = profile if isinstance(profile, ReportedDeviceProfile) else None
    return {
        "compute_source": reported.compute_source if reported else SIMULATED,
        "radio_source": reported.radio_source if reported else SIMULATED,
        "channel_source": channel_source(profile, mode, deployment),
        "uplink_rate_bps": reported.uplink_rate_bps if reported else None,
        "measured_flops_per_s": reported.measured_flops_per_s if reported else None,
    }
