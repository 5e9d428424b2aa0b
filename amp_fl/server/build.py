"""Wiring: build every server-side component of a run from its validated :class:`RunConfig`.

The dataset the run uses, the initial global model, its latency constants (Q, C, T_max), the
run-wide train setup sent to clients, and the strategy ``algorithm`` names: :class:`AmpFlStrategy`
with its system model, channel, scheduler and pruning policy, :class:`SparseFedAvgStrategy`
with its magnitude pruner, or :class:`FedBuffStrategy` with its dispatcher. Nothing here talks to nodes or writes files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from amp_fl import protocol as P
from amp_fl.client.sparse_fedavg import prunable_arrays
from amp_fl.config import RunConfig
from amp_fl.data.datasets import (
    ArraySplit,
    Dataset,
    ResolvedDataset,
    load_dataset,
    load_resolution,
    resolve_dataset,
)
from amp_fl.data.validation import training_pool
from amp_fl.deployment.channel import build_channel
from amp_fl.models import build_model, count_parameters
from amp_fl.pruning.counts import training_flops_per_sample
from amp_fl.pruning.magnitude import MagnitudePruner
from amp_fl.pruning.policies import build_policy
from amp_fl.pruning.regions import RegionMap
from amp_fl.run_folder import DATASET_RESOLUTION_FILE
from amp_fl.scheduling import build_scheduler
from amp_fl.scheduling.asynchronous import AsyncDispatcher
from amp_fl.scheduling.schedule import Scheduler
from amp_fl.scheduling.spare_steps import SpareStepsScheduler
from amp_fl.strategy.amp_fl import AmpFlSettings, AmpFlStrategy
from amp_fl.strategy.fedbuff import FedBuffStrategy
from amp_fl.strategy.report import PersonalEvaluation, RoundReport
from amp_fl.strategy.sparse_fedavg import SparseFedAvgStrategy, participants_per_round
from amp_fl.wireless.config import PAPER_MODEL_COSTS, LatencyConfig
from amp_fl.wireless.devices import DevicePopulation, DeviceProfile
from amp_fl.wireless.latency import SystemModel, full_compute_latency
from amp_fl.wireless.over_the_air import OverTheAirChannel


@dataclass(frozen=True)
class RunData:
    """The dataset a run uses: what was asked for and why it changed, the arrays, and their folder."""

    resolved: ResolvedDataset
    data: Dataset
    root: str
    validation: ArraySplit | None = None  # held out of data.train before partitioning (dataset.validation_fraction)


def run_data(cfg: RunConfig, run_dir: Path) -> RunData:
    """Load the run's dataset, reusing the launcher's resolution (so a download is never tried twice)."""
    root = str(Path(cfg.dataset.root).expanduser().resolve())
    resolved = load_resolution(run_dir / DATASET_RESOLUTION_FILE, cfg.dataset.name) or resolve_dataset(
        cfg.dataset.name, root, cfg.dataset.download, cfg.dataset.fallback
    )
    data = load_dataset(resolved.used, root, cfg.dataset.download)
    _, validation = training_pool(data.train, cfg.dataset.validation_fraction, cfg.seed)
    return RunData(resolved, data, root, validation)


def initial_model(cfg: RunConfig, data: Dataset) -> torch.nn.Module:
    """The global model, initialised from the run seed without touching torch's global RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        return build_model(model_name(cfg), num_classes=data.num_classes, input_shape=data.input_shape)


def model_name(cfg: RunConfig) -> str:
    """The model the run trains, with HeteroFL's tags (``cnn+scaler``, :data:`amp_fl.models.registry.MODEL_TAGS`)."""
    tags = [tag for tag, on in (("static_bn", cfg.model.static_bn), ("scaler", cfg.pruning.scaler)) if on]
    return "+".join([cfg.model.name, *tags])


def latency_config(cfg: RunConfig, model: torch.nn.Module, regions: RegionMap) -> LatencyConfig:
    """Q, C, T_max: the paper's constants for its models, or counted from the model."""
    steps, batch = cfg.train.local_steps, cfg.train.batch_size
    paper = PAPER_MODEL_COSTS.get(cfg.model.name)
    if cfg.model.cost_model == "paper" and paper is not None:
        t_max = cfg.model.t_max_s if cfg.model.t_max_s is not None else paper.t_max_s
        return LatencyConfig(
            paper.num_params, paper.flops_per_sample, t_max, local_steps=steps, batch_size=batch
        ).validate()
    if cfg.model.t_max_s is None:
        raise ValueError(f"model.t_max_s must be set for model {cfg.model.name!r} (no paper preset)")
    flops = training_flops_per_sample(regions, regions.layer_sizes)
    return LatencyConfig(
        count_parameters(model), float(flops), cfg.model.t_max_s, local_steps=steps, batch_size=batch
    ).validate()


def train_setup(cfg: RunConfig, data: RunData) -> P.TrainSetup:
    """What every train instruction tells the client besides its round, device and arrays."""
    c, h, w = data.data.input_shape
    return P.TrainSetup(
        seed=cfg.seed,
        dataset=data.resolved.used,
        data_root=data.root,
        num_devices=cfg.num_devices,
        partition=cfg.dataset.partition,
        shards_per_device=cfg.dataset.shards_per_device,
        model=model_name(cfg),
        input_shape=(int(c), int(h), int(w)),
        num_classes=data.data.num_classes,
        learning_rate=cfg.train.learning_rate,
        local_steps=cfg.train.local_steps,
        batch_size=cfg.train.batch_size,
        memory_friendly=cfg.strategy.memory_friendly,
        local_objective=cfg.strategy.local_objective,
        proximal_mu=0.0 if cfg.strategy.proximal_mu is None else cfg.strategy.proximal_mu,
        apfl_alpha=0.0 if cfg.strategy.apfl_alpha is None else cfg.strategy.apfl_alpha,
        apfl_alpha_lr=cfg.train.learning_rate if cfg.strategy.apfl_alpha_mode == "adaptive" else 0.0,
        failures=cfg.failures,
        validation_fraction=cfg.dataset.validation_fraction,
        device=cfg.train.device,
    )


@dataclass(frozen=True)
class StrategyInputs:
    """What a strategy is built from besides the config: the model, the devices found, the round hooks."""

    regions: RegionMap
    initial_weights: Sequence[np.ndarray]
    latency: LatencyConfig
    device_nodes: dict[int, int]  # device id -> Flower node id
    profiles: Sequence[DeviceProfile]
    setup: P.TrainSetup
    on_round_end: Callable[[RoundReport], None] | None = None
    on_personal_evaluation: Callable[[PersonalEvaluation], None] | None = None


def build_strategy(cfg: RunConfig, inputs: StrategyInputs) -> AmpFlStrategy | SparseFedAvgStrategy | FedBuffStrategy:
    """The strategy ``cfg.algorithm`` names, for the discovered devices."""
    if cfg.algorithm == "sparse_fedavg":
        return _sparse_fedavg(cfg, inputs)
    if cfg.algorithm == "fedbuff":
        return _fedbuff(cfg, inputs)
    return _amp_fl(cfg, inputs)


def _over_the_air(cfg: RunConfig) -> OverTheAirChannel | None:
    return OverTheAirChannel(cfg.ota, cfg.seed) if cfg.aggregation == "over_the_air" else None


def _amp_fl(cfg: RunConfig, inputs: StrategyInputs) -> AmpFlStrategy:
    """AMP-FL's strategy (and Synchronous FL, FedProx, APFL): system model, channel, scheduler and policy."""
    population = DevicePopulation.from_profiles(inputs.profiles)
    t_max = cfg.model.t_max_plan(inputs.latency.t_max_s)
    system = SystemModel(cfg.wireless, inputs.latency, population, t_max_schedule=t_max)
    return AmpFlStrategy(
        region_map=inputs.regions,
        initial_weights=inputs.initial_weights,
        scheduler=_scheduler(cfg, system),
        channel=build_channel(
            cfg.wireless,
            population,
            inputs.profiles,
            cfg.seed,
            deployment=cfg.deployment.superlink is not None,
            mode=cfg.deployment.channel,
        ),
        policy=build_policy(cfg.pruning.policy, cfg.seed),
        device_nodes=inputs.device_nodes,
        train_setup=inputs.setup,
        settings=AmpFlSettings(
            cfg.train.learning_rate,
            cfg.strategy.compensation,
            cfg.strategy.memory_friendly,
            personal_eval_interval=cfg.strategy.personal_eval_interval,
            eval_batch_size=cfg.strategy.eval_batch_size,
            max_update_norm=cfg.strategy.max_update_norm,
            clip_update_norm=cfg.strategy.clip_update_norm,
            staleness_decay=cfg.strategy.staleness_decay,
            cache_granularity=cfg.strategy.cache_granularity,
            server=cfg.strategy.server_settings(cfg.train.learning_rate),
            fresh_mean=cfg.strategy.fresh_mean,
            stale_weight=cfg.strategy.stale_weight,
        ),
        on_round_end=inputs.on_round_end,
        on_personal_evaluation=inputs.on_personal_evaluation,
        over_the_air=_over_the_air(cfg),
        num_rounds=cfg.num_rounds,
    )


def _fedbuff(cfg: RunConfig, inputs: StrategyInputs) -> FedBuffStrategy:
    """FedBuff for the discovered devices: the system model's latencies, the channel, the ``fedbuff`` section."""
    population = DevicePopulation.from_profiles(inputs.profiles)
    system = SystemModel(cfg.wireless, inputs.latency, population)
    return FedBuffStrategy(
        region_map=inputs.regions,
        initial_weights=inputs.initial_weights,
        dispatcher=AsyncDispatcher(system, cfg.seed, cfg.fedbuff.selection),
        channel=build_channel(
            cfg.wireless,
            population,
            inputs.profiles,
            cfg.seed,
            deployment=cfg.deployment.superlink is not None,
            mode=cfg.deployment.channel,
        ),
        device_nodes=inputs.device_nodes,
        train_setup=inputs.setup,
        settings=cfg.fedbuff,
        optimizer=cfg.strategy.server_settings(cfg.train.learning_rate),
        on_round_end=inputs.on_round_end,
    )


def _scheduler(cfg: RunConfig, system: SystemModel) -> Scheduler:
    """The configured scheduler; with ``scheduling.max_local_steps``, its devices' spare time buys local steps."""
    scheduler = build_scheduler(cfg.scheduling.name, system, seed=cfg.seed, **cfg.scheduling.options(cfg.pruning.ratio))
    if cfg.scheduling.max_local_steps is None:
        return scheduler
    return SpareStepsScheduler(scheduler, cfg.train.local_steps, cfg.scheduling.max_local_steps)


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


def _sparse_fedavg(cfg: RunConfig, inputs: StrategyInputs) -> SparseFedAvgStrategy:
    """Sparse FedAvg for the discovered devices: participation, pruning plan, digital or analog uplink."""
    population = DevicePopulation.from_profiles(inputs.profiles)
    return SparseFedAvgStrategy(
        region_map=inputs.regions,
        initial_weights=inputs.initial_weights,
        pruner=build_pruner(cfg, inputs.regions),
        device_nodes=inputs.device_nodes,
        train_setup=inputs.setup,
        seed=cfg.seed,
        participants=participants_per_round(cfg.sparse_fedavg.participation, len(inputs.device_nodes)),
        over_the_air=_over_the_air(cfg),
        rewind_round=cfg.sparse_fedavg.rewind_to,
        compute_latency_s=full_compute_latency(inputs.latency, population.cpu_hz, population.flops_per_cycle),
        bandwidth_hz=cfg.wireless.bandwidth_hz,
        on_round_end=inputs.on_round_end,
    )
