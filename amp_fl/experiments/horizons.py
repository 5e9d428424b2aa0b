"""Round lengths on the simulated clock, computed from the latency model alone (no training).

A round's simulated length depends only on the system model (device profiles, channel draws,
Eqs. (6)-(7) and (16)), the scheduler, the pruning policy and the AoI table (which devices and
regions the AoI scheduler picks), never on the gradients: the AoI table is updated from the kept
regions, not from what the devices learn. :func:`round_lengths` therefore replays a run's
schedule with the very components the server builds (:mod:`amp_fl.server.build`), seeded as a
run is, and returns each round's ``round_latency_s``: the ``round_latency_s`` column a run of
the same configuration writes (a test checks it against a real run). The figures' time horizons
and round caps are calibrated from it (:mod:`amp_fl.experiments.figures`).
"""

from __future__ import annotations

import numpy as np
import torch

from amp_fl.config import RunConfig
from amp_fl.deployment.channel import build_channel
from amp_fl.models import build_model
from amp_fl.pruning.maps import region_map_for
from amp_fl.pruning.policies import SelectionContext, build_policy
from amp_fl.pruning.submodel import module_arrays
from amp_fl.scheduling import build_scheduler
from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.server.build import latency_config
from amp_fl.wireless.devices import DevicePopulation, simulated_device_profile
from amp_fl.wireless.latency import SystemModel


def round_lengths(cfg: RunConfig, rounds: int, input_shape: tuple[int, int, int], num_classes: int = 10) -> np.ndarray:
    """The simulated length (s) of each of the first ``rounds`` rounds of a run of ``cfg`` (simulated devices)."""
    if rounds < 1:
        raise ValueError(f"rounds: must be >= 1, got {rounds}")
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model.name, num_classes=num_classes, input_shape=input_shape)
    regions = region_map_for(model, input_shape)
    latency = latency_config(cfg, model, regions)
    profiles = [simulated_device_profile(k, cfg.seed, cfg.wireless) for k in range(cfg.num_devices)]
    population = DevicePopulation.from_profiles(profiles)
    system = SystemModel(cfg.wireless, latency, population)
    scheduler = build_scheduler(cfg.scheduling.name, system, seed=cfg.seed, **cfg.scheduling.options(cfg.pruning.ratio))
    channel = build_channel(cfg.wireless, population, profiles, cfg.seed, deployment=False, mode="simulated")
    policy = build_policy(cfg.pruning.policy, cfg.seed)
    weights = module_arrays(model)  # the importance policy reads them; the global model is not trained here
    aoi = AoITable(cfg.num_devices, regions.layer_sizes)
    lengths = np.empty(rounds)
    for t in range(1, rounds + 1):
        schedule = scheduler.schedule(t, channel.observe(t), aoi)
        devices = [int(d) for d in schedule.device_ids]
        kept = []
        for row, device in enumerate(devices):
            context = SelectionContext(
                region_map=regions,
                server_round=t,
                device_id=device,
                ages=[layer_ages[device].copy() for layer_ages in aoi.layers()],
                global_arrays=weights,
            )
            kept.append(policy.select([int(c) for c in schedule.keep_counts[row]], context))
        aoi.update(np.asarray(devices, dtype=np.int64), kept)
        lengths[t - 1] = float(schedule.round_latency_s)
    return lengths
