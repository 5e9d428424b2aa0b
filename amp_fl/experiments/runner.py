"""Server-side orchestration of one AMP-FL run inside a Flower ServerApp: compose the parts.

:func:`run_server` loads the config (:mod:`.run_config`), builds the model and the data
(:mod:`.wiring`), discovers the nodes and their device profiles (:mod:`.discovery`), builds the
strategy with the :class:`~.recorder.Recorder` as its round hook and Flower's ``evaluate_fn``,
runs ``Strategy.start`` and writes the summary, the final model and the figures in the run folder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from amp_fl import protocol as P
from amp_fl.deployment.profiles import compute_benchmark
from amp_fl.experiments.discovery import discover_devices, wait_for_nodes
from amp_fl.experiments.recorder import Recorder, summary_base, summary_outcome
from amp_fl.experiments.results import MetricsWriter, write_figures, write_summary
from amp_fl.experiments.run_config import config_from_run_config
from amp_fl.experiments.wiring import build_strategy, initial_model, latency_config, run_data, train_setup
from amp_fl.pruning.regions import region_map_for
from amp_fl.pruning.submodel import module_arrays


def run_server(grid: Grid, run_config: dict[str, Any]) -> Path:
    """Everything the ServerApp does; returns the run folder."""
    cfg = config_from_run_config(run_config)
    run_dir = Path(cfg.output_dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    data = run_data(cfg, run_dir)
    model = initial_model(cfg, data.data)
    regions = region_map_for(model, data.data.input_shape)
    latency = latency_config(cfg, model, regions)
    initial_weights = module_arrays(model)

    timeout_s = cfg.simulation.node_wait_timeout_s
    nodes = wait_for_nodes(grid, cfg.num_devices, timeout_s)
    benchmark = compute_benchmark(cfg.model.name, data.data.input_shape, data.data.num_classes, latency)
    query = P.ProfileQuery.from_wireless(cfg.seed, cfg.wireless, benchmark)
    device_nodes, profiles = discover_devices(grid, query, nodes, cfg.num_devices, timeout_s)

    writer = MetricsWriter(run_dir)
    recorder = Recorder(
        model=model,
        test_data=data.data.test,
        eval_batch_size=cfg.strategy.eval_batch_size,
        writer=writer,
        num_rounds=cfg.num_rounds,
        validation_data=data.validation,
    )
    strategy = build_strategy(
        cfg,
        regions=regions,
        initial_weights=initial_weights,
        latency=latency,
        device_nodes=device_nodes,
        profiles=profiles,
        setup=train_setup(cfg, data),
        on_round_end=recorder.on_round_end,
        on_personal_evaluation=recorder.on_personal_evaluation,
    )
    started = time.time()
    base = summary_base(cfg, data, latency, regions, profiles)
    write_summary(run_dir, {**base, "status": "running"})
    try:
        strategy.start(grid, ArrayRecord(initial_weights), num_rounds=cfg.num_rounds, evaluate_fn=recorder)
        status = "completed"
    except BaseException as exc:
        status = f"failed: {type(exc).__name__}: {exc}"
        raise
    finally:
        outcome = summary_outcome(writer.rows, status, cfg.strategy.target_accuracy, started)
        write_summary(run_dir, {**base, **outcome})
        final = recorder.latest_arrays if recorder.latest_arrays is not None else initial_weights
        np.savez_compressed(run_dir / "final_model.npz", *final)
        write_figures(
            run_dir,
            writer.rows,
            f"AMP-FL {cfg.model.name} on {data.resolved.used}, K={cfg.num_devices}, "
            f"R={cfg.wireless.num_rbs}, scheduler={cfg.scheduling.name}",
        )
    return run_dir


__all__ = ["config_from_run_config", "run_server"]
