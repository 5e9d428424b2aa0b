"""Wireless system model: devices, the OFDMA uplink channel, and the latency budget (paper Sec. II-C, V)."""

from amp_fl.wireless.channel import Channel, ChannelState, MeasuredChannel, RayleighChannel, shannon_rates
from amp_fl.wireless.config import (
    PAPER_MODEL_COSTS,
    LatencyConfig,
    ModelCost,
    WirelessConfig,
    db_to_linear,
    dbm_to_watt,
    paper_latency_config,
)
from amp_fl.wireless.devices import DevicePopulation, DeviceProfile, simulated_device_profile
from amp_fl.wireless.latency import (
    PairCosts,
    SystemModel,
    device_latencies,
    feasible_pairs,
    full_compute_latency,
    full_upload_latency,
    keep_fraction,
    realised_keep_fraction,
    round_latency,
)
from amp_fl.wireless.seeding import derive_rng

__all__ = [
    "PAPER_MODEL_COSTS",
    "Channel",
    "ChannelState",
    "DevicePopulation",
    "DeviceProfile",
    "LatencyConfig",
    "MeasuredChannel",
    "ModelCost",
    "PairCosts",
    "RayleighChannel",
    "SystemModel",
    "WirelessConfig",
    "db_to_linear",
    "dbm_to_watt",
    "derive_rng",
    "device_latencies",
    "feasible_pairs",
    "full_compute_latency",
    "full_upload_latency",
    "keep_fraction",
    "paper_latency_config",
    "realised_keep_fraction",
    "round_latency",
    "shannon_rates",
    "simulated_device_profile",
]
