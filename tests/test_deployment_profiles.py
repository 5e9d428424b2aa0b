"""Real device profiles: what a SuperNode reports, measures or leaves to the simulation, and the scheduler using it.

The end-to-end case runs the real ServerApp and ClientApp code on the in-process grid with node
configs a board would pass to ``flower-supernode --node-config``: two boards with the same radio
and the same reported uplink rate, one with a slow CPU. The slow one must get the smaller keep
fraction, and both must equal Eq. (16) in closed form.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from amp_fl import protocol as P
from amp_fl.client.app import app as client_app
from amp_fl.client.benchmark import measure_training_throughput
from amp_fl.client.profile import resolve_profile_reply
from amp_fl.config import load_config
from amp_fl.deployment.channel import DeploymentChannel, build_channel, equivalent_gain, expected_interference_w
from amp_fl.launch.inprocess import InProcessGrid
from amp_fl.launch.launcher import write_run_config
from amp_fl.launch.preflight import preflight
from amp_fl.protocol.provenance import ReportedDeviceProfile, profile_provenance
from amp_fl.pruning.counts import training_flops_per_sample
from amp_fl.pruning.maps import region_map
from amp_fl.server.runner import run_server
from amp_fl.wireless.channel import RayleighChannel, shannon_rates
from amp_fl.wireless.config import WirelessConfig
from amp_fl.wireless.devices import DevicePopulation, DeviceProfile, simulated_device_profile
from amp_fl.wireless.latency import keep_fraction

WIRELESS = WirelessConfig(num_devices=3, num_rbs=2)
BENCH = P.ComputeBenchmark(model="cnn", input_shape=(1, 28, 28), num_classes=10, batch_size=16, flops_per_sample=7.8e5)


def query(benchmark: P.ComputeBenchmark | None = BENCH) -> P.ProfileQuery:
    return P.ProfileQuery.from_wireless(5, WIRELESS, benchmark)


# ------------------------------------------------------------------------------ node config
def test_node_config_parts_are_reported_in_pairs_and_checked():
    settings = P.NodeProfileSettings.from_node_config(
        {P.PARTITION_ID: 1, P.TX_POWER_W: 0.2, P.DISTANCE_M: 40.0, P.MEASURE_COMPUTE: True, P.UPLINK_RATE_BPS: 3e6}
    )
    assert (settings.radio_reported, settings.compute_reported, settings.measure_compute) == (True, False, True)
    assert settings.uplink_rate_bps == 3e6
    assert (
        P.NodeProfileSettings.from_node_config({P.PARTITION_ID: 0, P.MEASURE_COMPUTE: "false"}).measure_compute is False
    )
    cases = [
        ({P.CPU_HZ: 1e9}, P.FLOPS_PER_CYCLE),
        ({P.CPU_HZ: 1e9, P.FLOPS_PER_CYCLE: 4, P.MEASURE_COMPUTE: True}, P.MEASURE_COMPUTE),
        ({P.MEASURE_COMPUTE: "sometimes"}, P.MEASURE_COMPUTE),
        ({P.UPLINK_RATE_BPS: -1.0}, P.UPLINK_RATE_BPS),
        ({P.UPLINK_RATE_BPS: "fast"}, P.UPLINK_RATE_BPS),
    ]
    for extra, key in cases:
        with pytest.raises(ValueError, match=re.escape(key)):
            P.NodeProfileSettings.from_node_config({P.PARTITION_ID: 0, **extra})


def test_query_and_reply_round_trip_with_benchmark_and_provenance():
    assert P.ProfileQuery.from_content(query().to_content()) == query()
    assert P.ProfileQuery.from_content(query(None).to_content()).benchmark is None
    reply = P.DeviceProfileReply(2, 5e9, 1.0, 0.3, 20.0, 2e6, "measured", "reported", 1.7e10)
    back = P.DeviceProfileReply.from_content(reply.to_content())
    assert back == reply
    assert (back.compute_source, back.radio_source, back.measured_flops_per_s) == ("measured", "reported", 1.7e10)
    profile = back.to_profile()
    assert isinstance(profile, ReportedDeviceProfile) and profile.uplink_rate_bps == 2e6
    assert P.DeviceProfileReply.from_profile(2, profile).compute_source == "measured"
    # a purely simulated reply stays a plain DeviceProfile
    assert type(P.DeviceProfileReply(0, 1e9, 4.0, 1.0, 10.0).to_profile()) is DeviceProfile
    content = reply.to_content()
    content.config_records[P.CONFIG][P.COMPUTE_SOURCE] = "guessed"
    with pytest.raises(ValueError, match=P.COMPUTE_SOURCE):
        P.DeviceProfileReply.from_content(content)


def test_unreported_parts_are_simulated_exactly_as_in_a_simulation():
    simulated = simulated_device_profile(1, 5, WIRELESS)
    plain = resolve_profile_reply(P.simulation_node_config(1, 3), query())
    assert plain.to_profile() == DeviceProfile(
        simulated.cpu_hz, simulated.flops_per_cycle, simulated.tx_power_w, simulated.distance_m
    )
    partial = resolve_profile_reply({P.PARTITION_ID: 1, P.TX_POWER_W: 0.2, P.DISTANCE_M: 40.0}, query())
    assert (partial.cpu_hz, partial.tx_power_w, partial.distance_m) == (simulated.cpu_hz, 0.2, 40.0)
    assert (partial.compute_source, partial.radio_source) == ("simulated", "reported")


def test_measured_compute_is_the_models_throughput_in_the_servers_flop_units():
    reply = resolve_profile_reply({P.PARTITION_ID: 0, P.MEASURE_COMPUTE: True}, query())
    assert reply.compute_source == "measured" and reply.flops_per_cycle == 1.0
    assert reply.measured_flops_per_s is not None and reply.measured_flops_per_s > 1e6
    exact = training_flops_per_sample(region_map("cnn", (1, 28, 28), 10))
    # same seconds per sample, two FLOP units: effective / exact = C / exact count
    assert math.isclose(reply.cpu_hz / reply.measured_flops_per_s, BENCH.flops_per_sample / exact, rel_tol=1e-9)
    with pytest.raises(ValueError, match=P.MEASURE_COMPUTE):
        resolve_profile_reply({P.PARTITION_ID: 0, P.MEASURE_COMPUTE: True}, query(None))
    measurement = measure_training_throughput("cnn", (1, 28, 28), 10, 8, min_seconds=0.0)
    assert measurement.steps >= 3 and measurement.seconds > 0


# ------------------------------------------------------------------------------ channel
def test_reported_rate_is_the_rate_on_every_rb_and_others_keep_rayleigh_fading():
    profiles = [
        ReportedDeviceProfile(1e9, 4.0, 0.5, 100.0, radio_source="reported", uplink_rate_bps=3e6),
        DeviceProfile(1e9, 4.0, 1.0, 200.0),
        ReportedDeviceProfile(1e9, 4.0, 0.1, 50.0, uplink_rate_bps=5e5),
    ]
    channel = DeploymentChannel(WIRELESS, profiles, seed=3)
    power = np.array([p.tx_power_w for p in profiles])
    for round_ in (1, 2):
        state = channel.observe(round_)
        np.testing.assert_allclose(state.interference_w, expected_interference_w(WIRELESS))
        rates = shannon_rates(state.gains, power, state.interference_w, WIRELESS.bandwidth_hz, WIRELESS.noise_power_w)
        np.testing.assert_allclose(rates[0], 3e6, rtol=1e-9)
        np.testing.assert_allclose(rates[2], 5e5, rtol=1e-9)
        rayleigh = RayleighChannel(WIRELESS, [p.distance_m for p in profiles], 3).observe(round_)
        assert state.gains[1] == rayleigh.gains[1]
    gain = equivalent_gain(1e6, 1.0, 0.0, 1e6, 1e-3)
    assert math.isclose(gain, 1e-3)  # log2(1 + h / N) = 1  <=>  h = N
    population = DevicePopulation.from_profiles(profiles)
    assert isinstance(
        build_channel(WIRELESS, population, profiles, 3, deployment=True, mode="measured"), DeploymentChannel
    )
    for deployment, mode in ((True, "simulated"), (False, "measured")):
        channel_ = build_channel(WIRELESS, population, profiles, 3, deployment=deployment, mode=mode)
        assert isinstance(channel_, RayleighChannel)
        assert profile_provenance(profiles[0], mode, deployment)["channel_source"] == "simulated"
    assert profile_provenance(profiles[0], "measured", True)["channel_source"] == "reported"


# ------------------------------------------------------------------------------ scheduler, end to end
def test_scheduler_uses_the_profiles_boards_report(tmp_path):
    """Two boards, same radio and uplink rate; board 1's CPU is 6.5x slower: a smaller keep fraction, Eq. (16)."""
    rate, cpus = 2.0e6, (1.3e9, 0.2e9)
    boards = [
        {P.CPU_HZ: cpu, P.FLOPS_PER_CYCLE: 4.0, P.TX_POWER_W: 0.5, P.DISTANCE_M: 100.0, P.UPLINK_RATE_BPS: rate}
        for cpu in cpus
    ]
    cfg = load_config(
        {
            "dataset": {"name": "mnist5k"},
            "num_rounds": 1,
            "seed": 2,
            "wireless": {"num_devices": 2, "num_rbs": 2},
            # a deployment (the in-process grid stands in for the SuperLink and its SuperNodes)
            "deployment": {"superlink": "127.0.0.1:9093", "channel": "measured"},
        }
    )
    run_dir = tmp_path / "run"
    config_file = write_run_config(cfg, run_dir, preflight(cfg))
    grid = InProcessGrid(client_app, 2)
    for context, board in zip(grid.contexts.values(), boards, strict=True):
        context.node_config = {**context.node_config, **board}
    run_server(grid, {"config-file": str(config_file)})

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    for profile, cpu in zip(summary["device_profiles"], cpus, strict=True):
        assert (profile["cpu_hz"], profile["uplink_rate_bps"]) == (cpu, rate)
        assert (profile["compute_source"], profile["radio_source"], profile["channel_source"]) == ("reported",) * 3
    cost = summary["model_cost"]
    flops_per_round = cfg.train.local_steps * cfg.train.batch_size * cost["flops_per_sample"]
    upload_s = cost["num_params"] * 32 / rate
    expected = [float(keep_fraction(cost["t_max_s"], flops_per_round / (cpu * 4.0), upload_s)) for cpu in cpus]
    record = json.loads((run_dir / "schedule.jsonl").read_text().splitlines()[0])
    assert record["device_ids"] == [0, 1]
    np.testing.assert_allclose(record["keep_fraction"], expected, rtol=1e-9)
    assert record["keep_fraction"][1] < record["keep_fraction"][0] < 1.0
