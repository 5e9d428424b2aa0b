"""Config validation: the wireless section raises ConfigError naming its key; derived objects raise ValueError."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from amp_fl.errors import ConfigError
from amp_fl.wireless import (
    DevicePopulation,
    DeviceProfile,
    LatencyConfig,
    RayleighChannel,
    SystemModel,
    WirelessConfig,
    paper_latency_config,
    simulated_device_profile,
)


def test_defaults_are_table_one() -> None:
    cfg = WirelessConfig().validate()
    assert (cfg.num_devices, cfg.num_rbs, cfg.cell_radius_m, cfg.bandwidth_hz) == (100, 10, 500.0, 1e6)
    assert (cfg.noise_psd_dbm_hz, cfg.path_loss_db, cfg.tx_power_dbm) == (-174.0, -30.0, 30.0)
    assert cfg.cpu_freqs_hz == (0.85e9, 1.12e9, 1.2e9, 1.3e9) and cfg.flops_per_cycle == 4.0
    assert cfg.interference_range == (1e2, 1e5) and cfg.redraw_interference is True


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_devices", 0),
        ("num_devices", 2.5),
        ("num_rbs", 0),
        ("num_rbs", -3),
        ("cell_radius_m", -1.0),
        ("min_distance_m", 0.0),
        ("min_distance_m", 600.0),
        ("bandwidth_hz", 0.0),
        ("noise_psd_dbm_hz", float("nan")),
        ("path_loss_db", float("inf")),
        ("tx_power_dbm", float("nan")),
        ("cpu_freqs_hz", ()),
        ("cpu_freqs_hz", (1e9, -1.0)),
        ("flops_per_cycle", 0.0),
        ("interference_range", (1e5, 1e2)),
        ("interference_range", (-1.0, 1e2)),
        ("redraw_interference", "yes"),
    ],
)
def test_wireless_config_errors_name_the_key(field: str, value: object) -> None:
    cfg = dataclasses.replace(WirelessConfig(), **{field: value})
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    assert info.value.key == f"wireless.{field}"
    assert f"wireless.{field}" in str(info.value)


def test_prefix_is_configurable() -> None:
    with pytest.raises(ConfigError) as info:
        WirelessConfig(num_rbs=0).validate(prefix="system.radio")
    assert info.value.key == "system.radio.num_rbs"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_params", 0),
        ("flops_per_sample", -1.0),
        ("t_max_s", 0.0),
        ("t_max_s", -0.1),
        ("local_steps", 0),
        ("batch_size", 0),
        ("bits_per_param", 0),
    ],
)
def test_latency_config_errors_name_the_field(field: str, value: object) -> None:
    # LatencyConfig is derived from model.* and train.* (checked by amp_fl.config), not a user config:
    # it raises a plain ValueError naming its field.
    cfg = dataclasses.replace(paper_latency_config("cnn"), **{field: value})
    with pytest.raises(ValueError, match=rf"^latency\.{field}: ") as info:
        cfg.validate()
    assert not isinstance(info.value, ConfigError)


def test_latency_preset_errors() -> None:
    with pytest.raises(ValueError, match="model 'resnet50' has no paper preset; choose from cnn, vgg11"):
        paper_latency_config("resnet50")
    with pytest.raises(ValueError, match=r"^t_max: is not a LatencyConfig field"):
        paper_latency_config("cnn", t_max=1.0)
    with pytest.raises(ValueError, match=r"^latency\.t_max_s: must be positive"):
        paper_latency_config("cnn", t_max_s=0.0)


@pytest.mark.parametrize("field", ["cpu_hz", "flops_per_cycle", "tx_power_w", "distance_m"])
def test_device_profile_rejects_non_positive(field: str) -> None:
    profile = dataclasses.replace(DeviceProfile(1e9, 4.0, 1.0, 10.0), **{field: -1.0})
    with pytest.raises(ValueError, match=rf"^device\.{field}: must be a finite positive number"):
        profile.validate()
    with pytest.raises(ValueError, match=rf"^devices\[1\]\.{field}: "):
        DevicePopulation.from_profiles([DeviceProfile(1e9, 4.0, 1.0, 10.0), profile])


def test_population_rejects_negative_power_array() -> None:
    with pytest.raises(ValueError, match=r"^tx_power_w: must be finite and positive"):
        DevicePopulation(np.ones(2), np.ones(2), np.array([1.0, -0.5]), np.ones(2))
    with pytest.raises(ValueError, match=r"one entry per device, got sizes \[2, 3\]"):
        DevicePopulation(np.ones(2), np.ones(3), np.ones(2), np.ones(2))


def test_seed_and_sizes_checked() -> None:
    with pytest.raises(ValueError, match=r"^seed: must be a non-negative integer"):
        simulated_device_profile(0, seed=-1, cfg=WirelessConfig())
    with pytest.raises(ValueError, match=r"^distance_m: must have one entry per device"):
        RayleighChannel(WirelessConfig(num_devices=2), np.ones(3), seed=0)
    cfg = WirelessConfig(num_devices=3)
    with pytest.raises(ValueError, match="num_devices"):
        SystemModel(cfg, LatencyConfig(1, 1.0, 1.0), DevicePopulation.simulated(WirelessConfig(num_devices=2), seed=0))
