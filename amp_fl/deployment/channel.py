"""The uplink channel the scheduler sees in a deployment: reported rates where boards gave them.

A board that knows its uplink rate (``--node-config "uplink-rate-bps=..."``: measured with
``iperf3`` against the edge server, or read off its modem) gives the scheduler better information
than a Rayleigh draw from its distance. :class:`DeploymentChannel` turns each reported rate ``r_k``
into the power gain that yields exactly that rate under Eq. (7),

    h_k = (2^(r_k / B) - 1) (I + B N0) / p_k,

and reports it every round to a :class:`~amp_fl.wireless.channel.MeasuredChannel`, together with
Rayleigh gains (Sec. V) for the devices that reported nothing. The server measures no per-RB
interference, so every RB carries the cell's expected interference ``I = mean(interference_range)
B N0``: a reporting device then gets its reported rate on every RB, and the scheduler's Eq. (16)
keep fraction follows from it in closed form.

:func:`build_channel` picks the channel of a run: simulated Rayleigh fading for simulations, for
``deployment.channel=simulated``, and for deployments where no device reported a rate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from amp_fl.protocol.provenance import MEASURED, ChannelMode, uplink_rate
from amp_fl.wireless.channel import Channel, ChannelState, MeasuredChannel, RayleighChannel
from amp_fl.wireless.config import WirelessConfig
from amp_fl.wireless.devices import DevicePopulation, DeviceProfile


def expected_interference_w(cfg: WirelessConfig) -> float:
    """The mean inter-cell interference of one RB, ``mean(interference_range) * B * N0`` (watts)."""
    lo, hi = cfg.interference_range
    return 0.5 * (lo + hi) * cfg.noise_power_w


def equivalent_gain(
    rate_bps: float, tx_power_w: float, interference_w: float, bandwidth_hz: float, noise_power_w: float
) -> float:
    """The gain ``h`` with ``B log2(1 + p h / (I + B N0)) = rate_bps`` (Eq. (7) solved for h)."""
    if not rate_bps > 0:
        raise ValueError(f"rate_bps: must be > 0, got {rate_bps}")
    if not tx_power_w > 0:
        raise ValueError(f"tx_power_w: must be > 0, got {tx_power_w}")
    return float(np.expm1(rate_bps / bandwidth_hz * np.log(2.0)) * (interference_w + noise_power_w) / tx_power_w)


class DeploymentChannel(Channel):
    """Reported uplink rates (as equivalent gains) for some devices, Rayleigh fading for the rest.

    Parameters
    ----------
    cfg : WirelessConfig
        K, R, B, N0, h0 and the interference range.
    profiles : sequence of DeviceProfile
        One per device; :func:`~amp_fl.protocol.provenance.uplink_rate` gives a device's reported rate.
    seed : int
        The run seed (for the Rayleigh draws of the devices without a reported rate).
    """

    def __init__(self, cfg: WirelessConfig, profiles: Sequence[DeviceProfile], seed: int) -> None:
        super().__init__(cfg.num_devices, cfg.num_rbs)
        if len(profiles) != cfg.num_devices:
            raise ValueError(f"profiles: need one per device ({cfg.num_devices}), got {len(profiles)}")
        self.interference_w = expected_interference_w(cfg)
        self.reported_rates = {k: rate for k, p in enumerate(profiles) if (rate := uplink_rate(p)) is not None}
        self.reported_gains = {
            k: equivalent_gain(rate, profiles[k].tx_power_w, self.interference_w, cfg.bandwidth_hz, cfg.noise_power_w)
            for k, rate in self.reported_rates.items()
        }
        self._simulated = RayleighChannel(cfg, [p.distance_m for p in profiles], seed)
        self._measured = MeasuredChannel(
            cfg.num_devices, cfg.num_rbs, default_interference_w=np.full(cfg.num_rbs, self.interference_w)
        )

    def report_uplink_rate(self, device_id: int, rate_bps: float, tx_power_w: float) -> None:
        """Use ``rate_bps`` for ``device_id`` from the next observed round on (e.g. a fresher measurement)."""
        radio = self._simulated.cfg
        gain = equivalent_gain(rate_bps, tx_power_w, self.interference_w, radio.bandwidth_hz, radio.noise_power_w)
        self.reported_rates[int(device_id)] = float(rate_bps)
        self.reported_gains[int(device_id)] = gain

    def observe(self, round: int) -> ChannelState:
        simulated = self._simulated.observe(round).gains
        for k in range(self.num_devices):
            self._measured.report_gain(round, k, self.reported_gains.get(k, float(simulated[k])))
        return self._measured.observe(round)


def build_channel(
    cfg: WirelessConfig,
    population: DevicePopulation,
    profiles: Sequence[DeviceProfile],
    seed: int,
    *,
    deployment: bool,
    mode: ChannelMode,
) -> Channel:
    """The run's channel: :class:`DeploymentChannel` for a deployment with ``mode="measured"`` and at
    least one reported rate, else the simulated :class:`~amp_fl.wireless.channel.RayleighChannel`."""
    if deployment and mode == MEASURED and any(uplink_rate(p) is not None for p in profiles):
        return DeploymentChannel(cfg, profiles, seed)
    return RayleighChannel(cfg, population.distance_m, seed)
