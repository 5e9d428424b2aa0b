"""A node's answer to the profile query: what its node config reports, measures, or leaves to the simulation.

Node-config keys of a board (``flower-supernode --node-config "..."``):

============================== ==================================================================
``partition-id``               the device id (required)
``cpu-hz`` ``flops-per-cycle`` reported compute: f_k and n_k (together)
``measure-compute=true``       instead: time full-model SGD steps of the run's model at start
                               (:mod:`amp_fl.client.benchmark`); f_k n_k becomes the measured
                               throughput in the server's FLOP units (reported as
                               ``cpu-hz = throughput``, ``flops-per-cycle = 1``)
``tx-power-w`` ``distance-m``  reported radio: p_k and d_k (together)
``uplink-rate-bps``            the board's uplink rate on one RB; used by the scheduler when the
                               run sets ``deployment.channel=measured``
============================== ==================================================================

A part the node config leaves out is simulated from the run seed exactly as in a simulation,
so a simulated node (no profile keys) answers as before. The reply says which part came from
where (:mod:`amp_fl.protocol.provenance`).
"""

from __future__ import annotations

from collections.abc import Mapping

from amp_fl import protocol as P
from amp_fl.client.benchmark import measure_training_throughput
from amp_fl.protocol.provenance import MEASURED, REPORTED, SIMULATED
from amp_fl.wireless.config import LatencyConfig
from amp_fl.wireless.devices import simulated_device_profile

MEASURED_FLOPS_PER_CYCLE = 1.0  # a measured profile carries its whole throughput in cpu-hz


def resolve_profile_reply(node_config: Mapping[str, object], query: P.ProfileQuery) -> P.DeviceProfileReply:
    """This node's profile reply; ``ValueError`` naming the node-config key for an inconsistent config."""
    settings = P.NodeProfileSettings.from_node_config(node_config)
    simulated = simulated_device_profile(settings.partition_id, query.seed, query.wireless())
    measured_flops: float | None = None
    if settings.measure_compute:
        bench = query.benchmark
        if bench is None:
            raise ValueError(
                f"node config sets {P.MEASURE_COMPUTE}=true but the server's profile query names no model to benchmark"
            )
        measurement = measure_training_throughput(bench.model, bench.input_shape, bench.num_classes, bench.batch_size)
        cpu_hz, flops_per_cycle = measurement.effective_flops_per_s(bench.flops_per_sample), MEASURED_FLOPS_PER_CYCLE
        compute_source, measured_flops = MEASURED, measurement.flops_per_s
    elif settings.cpu_hz is not None and settings.flops_per_cycle is not None:
        cpu_hz, flops_per_cycle, compute_source = settings.cpu_hz, settings.flops_per_cycle, REPORTED
    else:
        cpu_hz, flops_per_cycle, compute_source = simulated.cpu_hz, simulated.flops_per_cycle, SIMULATED
    if settings.tx_power_w is not None and settings.distance_m is not None:
        tx_power_w, distance_m, radio_source = settings.tx_power_w, settings.distance_m, REPORTED
    else:
        tx_power_w, distance_m, radio_source = simulated.tx_power_w, simulated.distance_m, SIMULATED
    return P.DeviceProfileReply(
        partition_id=settings.partition_id,
        cpu_hz=float(cpu_hz),
        flops_per_cycle=float(flops_per_cycle),
        tx_power_w=float(tx_power_w),
        distance_m=float(distance_m),
        uplink_rate_bps=settings.uplink_rate_bps,
        compute_source=compute_source,
        radio_source=radio_source,
        measured_flops_per_s=measured_flops,
    )


def compute_benchmark(
    model: str, input_shape: tuple[int, int, int], num_classes: int, latency: LatencyConfig
) -> P.ComputeBenchmark:
    """What the profile query asks a self-measuring board to train: the run's model, batch size and C."""
    return P.ComputeBenchmark(
        model=model,
        input_shape=(int(input_shape[0]), int(input_shape[1]), int(input_shape[2])),
        num_classes=int(num_classes),
        batch_size=int(latency.batch_size),
        flops_per_sample=float(latency.flops_per_sample),
    )
