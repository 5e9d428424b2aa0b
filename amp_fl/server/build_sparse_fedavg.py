"""Wiring of sparse FedAvg (``algorithm=sparse_fedavg``): strategy, pruner and channel from a :class:`RunConfig`.

Called by :func:`amp_fl.server.build.build_strategy`, which picks the strategy by config;
nothing here talks to nodes or writes files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from amp_fl import protocol as P
from amp_fl.client.sparse_fedavg import prunable_arrays
from amp_fl.config import RunConfig
from amp_fl.pruning.magnitude import MagnitudePruner
from amp_fl.pruning.regions import RegionMap
from amp_fl.strategy.report import RoundReport
from amp_fl.strategy.sparse_fedavg import SparseFedAvgStrategy, participants_per_round
from amp_fl.wireless.config import LatencyConfig
from amp_fl.wireless.devices import DevicePopulation, DeviceProfile
from amp_fl.wireless.latency import full_compute_latency
from amp_fl.wireless.over_the_air import OverTheAirChannel


def build_pruner(cfg: RunConfig, regions: RegionMap) -> MagnitudePruner:
    """The magnitude pruner of ``cfg.sparse_fedavg`` over the model's conv / linear weights.

    Raises ``ValueError`` when the exact plan (rounded counts) ends after the run's last round.
    """
    s = cfg.sparse_fedavg
    pruner = MagnitudePruner(
        regions.shapes,
        prunable_arrays(regions),
        method=s.method,
        target=s.target,
        rate=s.rate,
        interval=s.interval,
        first_round=s.first_round,
    )
    last = pruner.plan.last_round
    if last is not None and last >= cfg.num_rounds:
        raise ValueError(f"num_rounds: the pruning plan ends after round {last}, the run after {cfg.num_rounds}")
    return pruner


def build_sparse_fedavg(
    cfg: RunConfig,
    *,
    regions: RegionMap,
    initial_weights: Sequence[np.ndarray],
    latency: LatencyConfig,
    device_nodes: dict[int, int],
    profiles: Sequence[DeviceProfile],
    setup: P.TrainSetup,
    on_round_end: Callable[[RoundReport], None] | None = None,
) -> SparseFedAvgStrategy:
    """Sparse FedAvg for the discovered devices: participation, pruning plan, digital or analog uplink."""
    population = DevicePopulation.from_profiles(profiles)
    return SparseFedAvgStrategy(
        region_map=regions,
        initial_weights=initial_weights,
        pruner=build_pruner(cfg, regions),
        device_nodes=device_nodes,
        train_setup=setup,
        seed=cfg.seed,
        participants=participants_per_round(cfg.sparse_fedavg.participation, len(device_nodes)),
        over_the_air=OverTheAirChannel(cfg.ota, cfg.seed) if cfg.aggregation == "over_the_air" else None,
        rewind_round=cfg.sparse_fedavg.rewind_round,
        compute_latency_s=full_compute_latency(latency, population.cpu_hz, population.flops_per_cycle),
        bandwidth_hz=cfg.wireless.bandwidth_hz,
        on_round_end=on_round_end,
    )
