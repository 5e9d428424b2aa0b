"""Server-side orchestration of one AMP-FL run inside a Flower ServerApp: compose the parts.

:func:`run_server` loads the config (:mod:`.run_config`), builds the model and the data
(:mod:`.build`), discovers the nodes and their device profiles (:mod:`.discovery`), builds the
strategy with the :class:`~.recorder.Recorder` as its round hook and Flower's ``evaluate_fn``,
runs ``Strategy.start`` and writes the summary, the final model and the figures in the run folder.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from flwr.serverapp import Grid

from amp_fl import protocol as P
from amp_fl.client.profile import compute_benchmark
from amp_fl.config import RunConfig
from amp_fl.errors import DivergedError, SimTimeLimitReached, UnhealthyRunError, ValidationTargetReached
from amp_fl.health import RunHealth
from amp_fl.pruning.maps import region_map_for
from amp_fl.pruning.submodel import module_arrays
from amp_fl.run_folder import (
    COMPLETED,
    RUNNING,
    STOP_REASON,
    STOPPED_EARLY,
    MetricsWriter,
    write_figures,
    write_final_model,
    write_summary,
)
from amp_fl.server.build import StrategyInputs, build_strategy, initial_model, latency_config, run_data, train_setup
from amp_fl.server.checkpoint import (
    Checkpointer,
    ServerState,
    check_resumable,
    check_state_matches,
    load_checkpoint,
    restore,
)
from amp_fl.server.discovery import discover_devices, wait_for_nodes
from amp_fl.server.recorder import Recorder, summary_base, summary_outcome
from amp_fl.server.run_config import config_from_run_config
from amp_fl.state import Stateful
from amp_fl.strategy.resumed import ResumedRounds

log = logging.getLogger(__name__)


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

    resumed = load_resume_state(cfg, run_dir)
    writer = MetricsWriter(run_dir)
    recorder = Recorder(
        model=model,
        test_data=data.data.test if cfg.evaluation.test else None,
        eval_batch_size=cfg.strategy.eval_batch_size,
        writer=writer,
        num_rounds=cfg.num_rounds,
        validation_data=data.validation,
        every_sim_s=cfg.evaluation.every_sim_s,
        every_rounds=cfg.evaluation.every_rounds,
        stop_at_val_accuracy=cfg.evaluation.stop_at_val_accuracy,
        stop_window_s=cfg.evaluation.stop_window_s,
        sim_time_limit_s=cfg.sim_time_limit_s,
        device=cfg.train.device,
        model_name=cfg.model.name,
        health=RunHealth(cfg.health),
    )
    strategy = build_strategy(
        cfg,
        StrategyInputs(
            regions=regions,
            initial_weights=initial_weights,
            latency=latency,
            device_nodes=device_nodes,
            profiles=profiles,
            setup=train_setup(cfg, data),
            on_round_end=recorder.on_round_end,
            on_personal_evaluation=recorder.on_personal_evaluation,
        ),
    )
    # Everything that changes during a run and saves itself; the checkpoint stores each under its name.
    parts: dict[str, Stateful] = {"strategy": strategy, "clock": recorder.clock, "metrics": writer}
    completed = 0
    if resumed is not None:
        restore(parts, resumed)
        completed = resumed.round
        recorder.latest_arrays = [w.copy() for w in strategy.weights]  # the final model if no round follows
    checkpoints = Checkpointer(run_dir, cfg, parts, saved_round=completed or None)
    recorder.on_row = checkpoints
    started = time.time()
    base = summary_base(cfg, data, latency, regions, profiles)
    if resumed is not None:
        base["resumed_from_round"] = completed
    write_summary(run_dir, {**base, "status": RUNNING})
    checkpoint_error: Exception | None = None
    try:
        loop = strategy if completed == 0 else ResumedRounds(strategy, completed)
        loop.start(
            grid,
            P.model_record(strategy.weights if completed else initial_weights),  # the checkpoint's model on resume
            num_rounds=cfg.num_rounds,
            timeout=cfg.strategy.reply_timeout_s,
            evaluate_fn=recorder,
        )
        status = COMPLETED
    except (ValidationTargetReached, SimTimeLimitReached) as exc:
        # Planned: time-to-target tuning needs nothing after the target, a time horizon nothing
        # after it; the run is complete.
        status = COMPLETED
        base[STOPPED_EARLY] = str(exc)
        base[STOP_REASON] = "val_accuracy" if isinstance(exc, ValidationTargetReached) else "sim_time_limit"
        log.info("%s", exc)
    except DivergedError as exc:
        # A clean stop, not a crash: the rows, the last good checkpoint and the model of the last
        # good round stay; the summary says where and why (the launcher turns it into one line).
        status = str(exc)
        log.error("stopping: %s", exc)
    except UnhealthyRunError as exc:  # the same clean stop for a run that would mean nothing (amp_fl.health)
        status = exc.status
        log.error("stopping: %s", exc)
    except BaseException as exc:
        status = f"failed: {type(exc).__name__}: {exc}"
        raise
    finally:
        status, checkpoint_error = close_checkpoints(checkpoints, status)  # on disk before the summary names it
        outcome = summary_outcome(writer.rows, status, cfg.strategy.target_accuracy, started)
        outcome["last_checkpoint_round"] = checkpoints.saved_round
        write_summary(run_dir, {**base, **outcome})
        final = recorder.latest_arrays if recorder.latest_arrays is not None else initial_weights
        write_final_model(run_dir, final)
        write_figures(
            run_dir,
            writer.rows,
            f"AMP-FL {cfg.model.name} on {data.resolved.used}, K={cfg.num_devices}, "
            f"R={cfg.wireless.num_rbs}, scheduler={cfg.scheduling.name}",
        )
    if checkpoint_error is not None:
        raise checkpoint_error
    return run_dir


def close_checkpoints(checkpoints: Checkpointer, status: str) -> tuple[str, Exception | None]:
    """Wait for the background checkpoint write: the run's status and the write's error, if it failed.

    A failed write fails a run that had completed (the caller writes the summary with that status,
    then raises the error); a run already failing or stopped keeps its own status.
    """
    try:
        checkpoints.close()
    except Exception as exc:
        log.error("the last checkpoint could not be written: %s", exc)
        return (f"failed: checkpoint: {type(exc).__name__}: {exc}" if status == COMPLETED else status), exc
    return status, None


def load_resume_state(cfg: RunConfig, run_dir: Path) -> ServerState | None:
    """The checkpoint to continue from when ``cfg.resume`` is set (checked against ``cfg``), else ``None``."""
    if cfg.resume is None:
        return None
    check_resumable(cfg)
    state = load_checkpoint(run_dir)
    check_state_matches(cfg, state)
    return state


__all__ = ["config_from_run_config", "run_server"]
