"""Server-side orchestration of one AMP-FL run inside a Flower ServerApp.

Builds every component from the validated :class:`RunConfig`, discovers the nodes and their device
profiles, runs ``Strategy.start`` and records metrics, the summary and figures in the run folder.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from amp_fl import protocol as P
from amp_fl.client.trainer import evaluate_arrays
from amp_fl.config import RunConfig, config_to_dict, load_config
from amp_fl.data.datasets import (
    DATASET_RESOLUTION,
    Dataset,
    ResolvedDataset,
    load_dataset,
    load_resolution,
    resolve_dataset,
)
from amp_fl.experiments.results import (
    MetricsWriter,
    RoundRow,
    progress_line,
    time_to_accuracy,
    write_figures,
    write_summary,
)
from amp_fl.models import build_model, count_parameters
from amp_fl.pruning.counts import training_flops_per_sample
from amp_fl.pruning.policies import build_policy
from amp_fl.pruning.regions import RegionMap, region_map_for
from amp_fl.pruning.submodel import module_arrays
from amp_fl.scheduling import build_scheduler
from amp_fl.strategy.amp_fl import AmpFlSettings, AmpFlStrategy, RoundReport
from amp_fl.wireless.channel import RayleighChannel
from amp_fl.wireless.config import PAPER_MODEL_COSTS, LatencyConfig
from amp_fl.wireless.devices import DevicePopulation, DeviceProfile
from amp_fl.wireless.latency import SystemModel

log = logging.getLogger(__name__)


def config_from_run_config(run_config: dict[str, Any]) -> RunConfig:
    """The RunConfig named by Flower's run config (``config-file``), or the defaults."""
    path = str(run_config.get("config-file", "") or "")
    if not path:
        return load_config({})
    try:
        with open(path) as f:
            values = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the run's config file config-file={path!r}: {exc}") from exc
    return load_config(values)


def initial_model(cfg: RunConfig, data: Dataset) -> torch.nn.Module:
    """The global model, initialised from the run seed without touching torch's global RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        return build_model(cfg.model.name, num_classes=data.num_classes, input_shape=data.input_shape)


def latency_config(cfg: RunConfig, model: torch.nn.Module, regions: RegionMap) -> LatencyConfig:
    """Q, C, T_max: the paper's constants for its models, or counted from the model."""
    train = {"local_steps": cfg.train.local_steps, "batch_size": cfg.train.batch_size}
    paper = PAPER_MODEL_COSTS.get(cfg.model.name)
    if cfg.model.cost_model == "paper" and paper is not None:
        t_max = cfg.model.t_max_s if cfg.model.t_max_s is not None else paper.t_max_s
        return LatencyConfig(paper.num_params, paper.flops_per_sample, t_max, **train).validate("model")
    if cfg.model.t_max_s is None:
        raise ValueError(f"model.t_max_s must be set for model {cfg.model.name!r} (no paper preset)")
    flops = training_flops_per_sample(regions, regions.layer_sizes)
    return LatencyConfig(count_parameters(model), float(flops), cfg.model.t_max_s, **train).validate("model")


def wait_for_nodes(grid: Grid, count: int, timeout_s: float) -> list[int]:
    """Block until ``count`` nodes are online (simulation brings them up gradually)."""
    deadline = time.monotonic() + timeout_s
    while len(nodes := list(grid.get_node_ids())) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {len(nodes)} of {count} nodes came online within {timeout_s:.0f} s; "
                "check that num-supernodes equals wireless.num_devices"
            )
        time.sleep(0.2)
    return nodes


def discover_devices(grid: Grid, cfg: RunConfig, nodes: list[int]) -> tuple[dict[int, int], list[DeviceProfile]]:
    """Ask every node for its partition id and device profile; map device id -> node id."""
    w = cfg.wireless
    query = ConfigRecord(
        {
            "seed": cfg.seed,
            "cell-radius-m": w.cell_radius_m,
            "min-distance-m": w.min_distance_m,
            "tx-power-dbm": w.tx_power_dbm,
            "cpu-freqs-hz": [float(f) for f in w.cpu_freqs_hz],
            "flops-per-cycle": w.flops_per_cycle,
        }
    )
    messages = [Message(RecordDict({P.CONFIG: query}), message_type="query", dst_node_id=n) for n in nodes]
    replies = list(grid.send_and_receive(messages, timeout=cfg.simulation.node_wait_timeout_s))
    device_nodes: dict[int, int] = {}
    profiles: dict[int, DeviceProfile] = {}
    for reply in replies:
        if reply.has_error():
            raise RuntimeError(f"node {reply.metadata.src_node_id} failed the profile query: {reply.error.reason}")
        c = reply.content[P.CONFIG]
        device = int(c["partition-id"])
        if device in device_nodes or not 0 <= device < cfg.num_devices:
            raise RuntimeError(
                f"node {reply.metadata.src_node_id} reports partition-id {device}: partition ids must "
                f"be unique and in [0, {cfg.num_devices})"
            )
        device_nodes[device] = reply.metadata.src_node_id
        profiles[device] = DeviceProfile(
            float(c["cpu-hz"]), float(c["flops-per-cycle"]), float(c["tx-power-w"]), float(c["distance-m"])
        ).validate(f"devices[{device}]")
    missing = sorted(set(range(cfg.num_devices)) - set(device_nodes))
    if missing:
        raise RuntimeError(
            f"no node reported partition-id(s) {missing[:10]}; got {len(device_nodes)} of {cfg.num_devices}"
        )
    return device_nodes, [profiles[k] for k in range(cfg.num_devices)]


def scheduler_options(cfg: RunConfig) -> dict[str, Any]:
    """The options the configured scheduler takes (the registry rejects any other)."""
    options: dict[str, Any] = {}
    if cfg.scheduling.name == "fixed_ratio":
        options["pruning_ratio"] = cfg.pruning.ratio
    if cfg.scheduling.num_scheduled is not None:
        options["num_scheduled"] = cfg.scheduling.num_scheduled
    return options


def client_config(cfg: RunConfig, used: str, data: Dataset, root: str) -> dict[str, Any]:
    """What every training message tells the client besides its arrays."""
    return {
        "seed": cfg.seed,
        "dataset": used,
        "data-root": root,
        "num-devices": cfg.num_devices,
        "partition": cfg.dataset.partition,
        "shards-per-device": cfg.dataset.shards_per_device,
        "model": cfg.model.name,
        "input-shape": list(data.input_shape),
        "num-classes": data.num_classes,
        "learning-rate": cfg.train.learning_rate,
        "local-steps": cfg.train.local_steps,
        "batch-size": cfg.train.batch_size,
        "memory-friendly": cfg.strategy.memory_friendly,
    }


def schedule_record(report: RoundReport) -> dict[str, Any]:
    """One line of ``schedule.jsonl``: who trained on which RB with which sub-model, and what it cost."""
    s = report.schedule
    return {
        "round": report.round,
        "device_ids": s.device_ids.tolist(),
        "rb_ids": s.rb_ids.tolist(),
        "keep_fraction": s.keep_fraction.tolist(),
        "keep_counts": s.keep_counts.tolist(),
        "compute_latency_s": s.compute_latency_s.tolist(),
        "upload_latency_s": s.upload_latency_s.tolist(),
        "round_latency_s": float(s.round_latency_s),
        "objective": float(s.objective),
        "uplink_bytes": {str(k): v for k, v in sorted(report.uplink_bytes_per_device.items())},
        "failures": {str(k): v for k, v in sorted(report.failures.items())},
        "client_fit_s": {str(k): round(v, 4) for k, v in sorted(report.client_fit_s.items())},
    }


@dataclass
class Recorder:
    """Central evaluation + per-round row (used as ``evaluate_fn`` of ``Strategy.start``)."""

    cfg: RunConfig
    strategy: AmpFlStrategy
    model: torch.nn.Module
    data: Dataset
    writer: MetricsWriter
    sim_time_s: float = 0.0

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        accuracy, loss = evaluate_arrays(
            self.strategy.weights, self.model, self.data.test, self.cfg.strategy.eval_batch_size
        )
        row = self._row(server_round, accuracy, loss)
        self.writer.append(row)
        if server_round > 0:
            self.writer.append_schedule(schedule_record(self.strategy.reports[-1]))
        print(progress_line(row, self.cfg.num_rounds), flush=True)
        return MetricRecord({"accuracy": accuracy, "loss": loss})

    def _row(self, server_round: int, accuracy: float, loss: float) -> RoundRow:
        avg_aoi = float(self.strategy.aoi.ages.mean())
        if server_round == 0:
            return RoundRow(
                0, 0.0, 0.0, accuracy, loss, math.nan, avg_aoi, 0, 0, 0, math.nan, 0, 0, 0.0, self.writer.elapsed()
            )
        report = self.strategy.reports[-1]
        schedule = report.schedule
        self.sim_time_s += float(schedule.round_latency_s)
        keep = schedule.realised_keep_fraction
        return RoundRow(
            server_round,
            self.sim_time_s,
            float(schedule.round_latency_s),
            accuracy,
            loss,
            report.mean_train_loss,
            avg_aoi,
            schedule.num_scheduled,
            len(report.received_devices),
            len(report.failures),
            float(keep.mean()) if keep.size else math.nan,
            report.uplink_bytes,
            report.downlink_bytes,
            float(schedule.objective),
            self.writer.elapsed(),
        )


def run_server(grid: Grid, run_config: dict[str, Any]) -> Path:
    """Everything the ServerApp does; returns the run folder."""
    cfg = config_from_run_config(run_config)
    run_dir = Path(cfg.output_dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    root = str(Path(cfg.dataset.root).expanduser().resolve())
    # The launcher already tried the dataset (and fell back if it had to): do not download twice.
    resolved = load_resolution(run_dir / DATASET_RESOLUTION, cfg.dataset.name) or resolve_dataset(
        cfg.dataset.name, root, cfg.dataset.download, cfg.dataset.fallback
    )
    data = load_dataset(resolved.used, root, cfg.dataset.download)
    model = initial_model(cfg, data)
    regions = region_map_for(model, data.input_shape)
    latency = latency_config(cfg, model, regions)

    nodes = wait_for_nodes(grid, cfg.num_devices, cfg.simulation.node_wait_timeout_s)
    device_nodes, profiles = discover_devices(grid, cfg, nodes)
    population = DevicePopulation.from_profiles(profiles)
    system = SystemModel(cfg.wireless, latency, population)
    channel = RayleighChannel(cfg.wireless, population.distance_m, cfg.seed)
    scheduler = build_scheduler(cfg.scheduling.name, system, seed=cfg.seed, **scheduler_options(cfg))
    strategy = AmpFlStrategy(
        region_map=regions,
        initial_weights=module_arrays(model),
        scheduler=scheduler,
        channel=channel,
        policy=build_policy(cfg.pruning.policy, cfg.seed),
        device_nodes=device_nodes,
        client_config=client_config(cfg, resolved.used, data, root),
        settings=AmpFlSettings(cfg.train.learning_rate, cfg.strategy.compensation, cfg.strategy.memory_friendly),
    )
    writer = MetricsWriter(run_dir)
    recorder = Recorder(cfg, strategy, model, data, writer)
    started = time.time()
    summary_base = _summary_base(cfg, resolved, data, latency, regions, profiles)
    write_summary(run_dir, {**summary_base, "status": "running"})
    try:
        strategy.start(grid, ArrayRecord(strategy.weights), num_rounds=cfg.num_rounds, evaluate_fn=recorder)
        status = "completed"
    except BaseException as exc:
        status = f"failed: {type(exc).__name__}: {exc}"
        raise
    finally:
        rows = writer.rows
        final = rows[-1] if rows else None
        write_summary(
            run_dir,
            {
                **summary_base,
                "status": status,
                "rounds_completed": final.round if final else 0,
                "final_accuracy": final.accuracy if final else None,
                "final_loss": final.loss if final else None,
                "best_accuracy": max((r.accuracy for r in rows), default=None),
                "final_sim_time_s": final.sim_time_s if final else None,
                "time_to_target_accuracy": time_to_accuracy(rows, cfg.strategy.target_accuracy),
                "wall_time_s": time.time() - started,
                "total_uplink_bytes": sum(r.uplink_bytes for r in rows),
                "total_downlink_bytes": sum(r.downlink_bytes for r in rows),
            },
        )
        np.savez_compressed(run_dir / "final_model.npz", *strategy.weights)
        write_figures(
            run_dir,
            rows,
            f"AMP-FL {cfg.model.name} on {resolved.used}, K={cfg.num_devices}, "
            f"R={cfg.wireless.num_rbs}, scheduler={cfg.scheduling.name}",
        )
    return run_dir


def _summary_base(
    cfg: RunConfig,
    resolved: ResolvedDataset,
    data: Dataset,
    latency: LatencyConfig,
    regions: RegionMap,
    profiles: list[DeviceProfile],
) -> dict[str, Any]:
    device_profiles = [
        {
            "device": k,
            "cpu_hz": p.cpu_hz,
            "flops_per_cycle": p.flops_per_cycle,
            "tx_power_w": p.tx_power_w,
            "distance_m": p.distance_m,
        }
        for k, p in enumerate(profiles)
    ]
    return {
        "config": config_to_dict(cfg),
        "dataset_requested": resolved.requested,
        "dataset_used": resolved.used,
        "dataset_fallback_reason": resolved.fallback_reason,
        "dataset_source": data.source,
        "train_samples": len(data.train),
        "test_samples": len(data.test),
        "model_cost": {
            "num_params": latency.num_params,
            "flops_per_sample": latency.flops_per_sample,
            "t_max_s": latency.t_max_s,
        },
        "num_regions": regions.num_regions,
        "layer_sizes": list(regions.layer_sizes),
        "device_profiles": device_profiles,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
