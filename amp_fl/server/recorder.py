"""Recording a run: central evaluation, one metrics row and one schedule line per round, the summary.

:class:`Recorder` only uses what Flower and the strategy hand it: Flower passes the global
model's ``arrays`` to ``evaluate_fn`` (the recorder's ``__call__``), and the strategy hands each
round's :class:`~amp_fl.strategy.report.RoundReport` to ``on_round_end``. The recorder owns the
:class:`~amp_fl.server.clock.SimulatedClock` and advances it by each round's reported latency. Rows are written and
flushed to ``metrics.csv`` as each round ends; progress goes to the ``amp_fl.progress`` logger
(one INFO line per round), never to stdout.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord

from amp_fl import protocol as P
from amp_fl.client.device import resolve_device
from amp_fl.client.trainer import ModelEvaluator
from amp_fl.config import RunConfig, config_to_dict
from amp_fl.data.datasets import ArraySplit
from amp_fl.errors import SimTimeLimitReached, ValidationTargetReached
from amp_fl.health import RunHealth
from amp_fl.models import model_spec
from amp_fl.protocol.provenance import profile_provenance
from amp_fl.pruning.regions import RegionMap
from amp_fl.run_folder import (
    MetricsWriter,
    RoundRow,
    holds_target_at,
    last_personal_accuracy,
    smoothed_accuracy_at,
    time_to_accuracy,
)
from amp_fl.server.build import RunData
from amp_fl.server.clock import SimulatedClock
from amp_fl.strategy.report import PersonalEvaluation, RoundReport
from amp_fl.wireless.config import LatencyConfig
from amp_fl.wireless.devices import DeviceProfile

progress_log = logging.getLogger("amp_fl.progress")


def schedule_record(report: RoundReport) -> dict[str, Any]:
    """One line of ``schedule.jsonl``: who trained on which RB with which sub-model, and what it cost."""
    sent = report.participants
    return {
        "round": report.round,
        "device_ids": [p.device for p in sent],
        "rb_ids": [p.rb for p in sent],
        "keep_fraction": [p.keep_fraction for p in sent],
        "keep_counts": [list(p.keep_counts) for p in sent],
        "compute_latency_s": [p.compute_latency_s for p in sent],
        "upload_latency_s": [p.upload_latency_s for p in sent],
        "local_steps": [p.local_steps for p in sent],  # null: train.local_steps
        "round_latency_s": float(report.round_latency_s),
        "objective": report.objective,
        "uplink_bytes": {str(k): v for k, v in sorted(report.uplink_bytes_per_device.items())},
        "failures": {str(k): v for k, v in sorted(report.failures.items())},
        "client_fit_s": {str(k): round(v, 4) for k, v in sorted(report.client_fit_s.items())},
    }


def evaluation_due(
    server_round: int,
    sim_time_s: float,
    last_evaluated_sim_s: float | None,
    every_sim_s: float,
    num_rounds: int,
    personal: bool = False,
    every_rounds: int = 0,
) -> bool:
    """Whether the round ending at ``sim_time_s`` is centrally evaluated (``evaluation.every_sim_s``).

    Round 0, the last round (``num_rounds``), personalised rounds, every round when ``every_sim_s``
    is 0, and otherwise the first round to end at or after each multiple of ``every_sim_s``: a grid
    on the simulated clock, so methods with short and long rounds are measured at the same
    instants, give or take one round; with ``every_rounds`` > 0 instead, every so many rounds
    (``evaluation.every_rounds``; the two are never both set). ``last_evaluated_sim_s`` is the
    simulated time of the last evaluated round (None: none yet, which only a resumed run's rows
    can give). A round that ends the run by the time horizon is evaluated too; the recorder adds that.
    """
    if server_round == 0 or server_round >= num_rounds or personal:
        return True
    if every_rounds > 0:
        return server_round % every_rounds == 0
    if every_sim_s <= 0 or last_evaluated_sim_s is None:
        return True
    return math.floor(sim_time_s / every_sim_s + 1e-9) > math.floor(last_evaluated_sim_s / every_sim_s + 1e-9)


@dataclass
class Recorder:
    """Central evaluation + per-round row; ``evaluate_fn`` of ``Strategy.start`` and the strategy's ``on_round_end``.

    ``initial_avg_aoi`` is the average AoI before round 1 (the AoI table starts at 0).
    """

    model: torch.nn.Module
    test_data: ArraySplit | None  # None: evaluation.test=false, the validation split only
    eval_batch_size: int
    writer: MetricsWriter
    num_rounds: int
    initial_avg_aoi: float = 0.0
    validation_data: ArraySplit | None = None  # held out of the training set: val_accuracy / val_loss each round
    every_sim_s: float = 0.0  # evaluation.every_sim_s: evaluate on this grid of the simulated clock; 0: every round
    every_rounds: int = 0  # evaluation.every_rounds: evaluate every this many rounds instead; 0: off
    stop_at_val_accuracy: float | None = None  # evaluation.stop_at_val_accuracy: raise ValidationTargetReached
    stop_window_s: float = 0.0  # evaluation.stop_window_s: > 0 stops on the smoothed validation curve
    sim_time_limit_s: float | None = None  # sim_time_limit_s: raise SimTimeLimitReached once the clock passes it
    clock: SimulatedClock = field(default_factory=SimulatedClock)
    latest_arrays: list[np.ndarray] | None = None  # the latest global model
    on_row: Callable[[int], None] | None = None  # called with the round once its row is written (checkpoints)
    device: str = "cpu"  # train.device: where the central evaluation runs (resolved on this machine)
    model_name: str | None = None  # the registry's name: the evaluation uses its memory format
    health: RunHealth | None = None  # stops a meaningless run after its row, before its checkpoint
    _evaluate: ModelEvaluator = field(init=False, repr=False)
    _report: RoundReport | None = field(default=None, init=False, repr=False)
    _personal: PersonalEvaluation | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # Built once: the device is resolved (a missing one fails before round 0), the model copied there.
        layout = model_spec(self.model_name).train_memory_format if self.model_name else torch.contiguous_format
        self._evaluate = ModelEvaluator(self.model, self.eval_batch_size, resolve_device(self.device), layout)

    def on_round_end(self, report: RoundReport) -> None:
        """The strategy's hook: keep the round's report for the row written when Flower evaluates."""
        self._report = report

    def on_personal_evaluation(self, evaluation: PersonalEvaluation) -> None:
        """The strategy's hook (before Flower's central evaluation of the same round): the devices' personal scores."""
        self._personal = evaluation

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        weights = P.model_arrays(arrays)
        report = self._take_report(server_round)
        personal, self._personal = self._personal, None
        if personal is not None and personal.round != server_round:
            personal = None
        latency = 0.0 if report is None else float(report.round_latency_s)
        ends_run = self._reaches_time_limit(self.clock.now_s + latency)
        evaluate = ends_run or self._evaluation_due(server_round, self.clock.now_s + latency, personal is not None)
        accuracy = loss = math.nan
        if evaluate and self.test_data is not None:
            accuracy, loss = self._evaluate(weights, self.test_data)
        row = self._row(server_round, accuracy, loss, report)
        if evaluate and self.validation_data is not None:
            val_accuracy, val_loss = self._evaluate(weights, self.validation_data)
            row = dataclasses.replace(row, val_accuracy=val_accuracy, val_loss=val_loss)
        if personal is not None:
            row = dataclasses.replace(row, personal_accuracy=personal.mean_accuracy)
        self.writer.append(row)
        if report is not None:
            self.writer.append_schedule(schedule_record(report))
        if self.health is not None:
            # Raises for a meaningless round: its row stays (the user sees why), but neither its
            # model nor its checkpoint: the last good round's are what the run keeps.
            self.health.check(self.writer.rows, weights)
        self.latest_arrays = weights
        if self.on_row is not None:
            self.on_row(server_round)
        progress_log.info(
            "round %d/%d sim %.3f s acc %.4f loss %.4f scheduled %d keep %.3f aoi %.2f wall %.1f s",
            row.round,
            self.num_rounds,
            row.sim_time_s,
            row.accuracy,
            row.loss,
            row.num_scheduled,
            row.mean_keep_ratio,
            row.avg_aoi,
            row.wall_time_s,
        )
        stop = self.stop_at_val_accuracy
        if stop is not None and server_round < self.num_rounds:
            reached = self._validation_reached(stop)
            if reached is not None:
                raise ValidationTargetReached(server_round, reached, stop, self.stop_window_s)
        if ends_run and server_round < self.num_rounds:
            assert self.sim_time_limit_s is not None
            raise SimTimeLimitReached(server_round, row.sim_time_s, self.sim_time_limit_s)
        if not evaluate or self.test_data is None:
            return None
        return P.EvaluationMetrics(accuracy=accuracy, loss=loss).to_record()

    def _validation_reached(self, target: float) -> float | None:
        """The latest row's validation accuracy (smoothed over ``stop_window_s`` if > 0) if it reaches ``target``.

        ``None`` if it does not, or if the latest row was not evaluated. The smoothed rule is
        :func:`~amp_fl.run_folder.holds_target_at`'s, so the run stops at its smoothed time to target.
        """
        latest = self.writer.rows[-1].val_accuracy
        if math.isnan(latest):
            return None
        if self.stop_window_s <= 0:
            return latest if latest >= target else None
        measured = [r for r in self.writer.rows if not math.isnan(r.val_accuracy)]  # resumed rows included
        times = np.array([r.sim_time_s for r in measured])
        accuracy = np.array([r.val_accuracy for r in measured])
        end = len(measured) - 1
        if not holds_target_at(times, accuracy, end, target, self.stop_window_s):
            return None
        return smoothed_accuracy_at(times, accuracy, end, self.stop_window_s)

    def _reaches_time_limit(self, sim_time_s: float) -> bool:
        """Whether a round ending at ``sim_time_s`` is the run's last by the time horizon (evaluated, then the stop)."""
        return self.sim_time_limit_s is not None and sim_time_s >= self.sim_time_limit_s - 1e-9

    def _evaluation_due(self, server_round: int, sim_time_s: float, personal: bool) -> bool:
        last = next((r.sim_time_s for r in reversed(self.writer.rows) if _evaluated(r)), None)
        return evaluation_due(
            server_round, sim_time_s, last, self.every_sim_s, self.num_rounds, personal, self.every_rounds
        )

    def _take_report(self, server_round: int) -> RoundReport | None:
        report, self._report = self._report, None
        if server_round == 0:
            return None
        if report is None or report.round != server_round:
            got = "none" if report is None else f"round {report.round}"
            raise ValueError(f"server_round: no round report for round {server_round} (got {got})")
        return report

    def _row(self, server_round: int, accuracy: float, loss: float, report: RoundReport | None) -> RoundRow:
        if report is None:
            return RoundRow(
                round=server_round,
                sim_time_s=self.clock.now_s,
                round_latency_s=0.0,
                accuracy=accuracy,
                loss=loss,
                train_loss=math.nan,
                avg_aoi=self.initial_avg_aoi,
                num_scheduled=0,
                num_received=0,
                num_failed=0,
                mean_keep_ratio=math.nan,
                uplink_bytes=0,
                downlink_bytes=0,
                objective=0.0,
                wall_time_s=self.writer.elapsed(),
            )
        why = report.failure_counts
        return RoundRow(
            failed_error=why["error"],
            failed_timeout=why["timeout"],
            failed_invalid=why["invalid"],
            failed_silent=why["silent"],
            round=server_round,
            sim_time_s=self.clock.advance(report.round_latency_s),
            round_latency_s=float(report.round_latency_s),
            accuracy=accuracy,
            loss=loss,
            train_loss=report.mean_train_loss,
            avg_aoi=math.nan if report.mean_aoi is None else report.mean_aoi,
            num_scheduled=len(report.participants),
            num_received=len(report.received_devices),
            num_failed=len(report.failures),
            mean_keep_ratio=report.mean_kept_ratio,
            uplink_bytes=report.uplink_bytes,
            downlink_bytes=report.downlink_bytes,
            objective=math.nan if report.objective is None else report.objective,
            wall_time_s=self.writer.elapsed(),
        )


def summary_base(
    cfg: RunConfig, data: RunData, latency: LatencyConfig, regions: RegionMap, profiles: list[DeviceProfile]
) -> dict[str, Any]:
    """What ``summary.json`` says about the run's setup (written before round 0)."""
    device_profiles = [
        {
            "device": k,
            "cpu_hz": p.cpu_hz,
            "flops_per_cycle": p.flops_per_cycle,
            "tx_power_w": p.tx_power_w,
            "distance_m": p.distance_m,
            **profile_provenance(p, cfg.deployment.channel, deployment=cfg.deployment.superlink is not None),
        }
        for k, p in enumerate(profiles)
    ]
    return {
        "config": config_to_dict(cfg),
        "dataset_requested": data.resolved.requested,
        "dataset_used": data.resolved.used,
        "dataset_fallback_reason": data.resolved.fallback_reason,
        "dataset_source": data.data.source,
        "train_samples": len(data.data.train) - (len(data.validation) if data.validation is not None else 0),
        "validation_samples": len(data.validation) if data.validation is not None else 0,
        "test_samples": len(data.data.test),
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


def _evaluated(row: RoundRow) -> bool:
    """Whether the central evaluation ran after ``row``'s round (on the test set, or on validation only)."""
    return not (math.isnan(row.accuracy) and math.isnan(row.val_accuracy))


def summary_outcome(rows: list[RoundRow], status: str, target_accuracy: float, started: float) -> dict[str, Any]:
    """What ``summary.json`` says about how the run went (written when it ends, however it ends)."""
    last = rows[-1] if rows else None
    evaluated = [r for r in rows if not math.isnan(r.accuracy)]  # evaluation.every_sim_s skips rounds
    final = evaluated[-1] if evaluated else None
    return {
        "status": status,
        "rounds_completed": last.round if last else 0,
        "final_accuracy": final.accuracy if final else None,
        "final_accuracy_round": final.round if final else None,
        "final_loss": final.loss if final else None,
        "best_accuracy": max((r.accuracy for r in evaluated), default=None),
        "final_sim_time_s": last.sim_time_s if last else None,
        "time_to_target_accuracy": time_to_accuracy(rows, target_accuracy),
        **validation_outcome(rows, target_accuracy),
        "personal_accuracy": last_personal_accuracy(rows),
        "wall_time_s": time.time() - started,
        "total_uplink_bytes": sum(r.uplink_bytes for r in rows),
        "total_downlink_bytes": sum(r.downlink_bytes for r in rows),
    }


def validation_outcome(rows: list[RoundRow], target_accuracy: float) -> dict[str, Any]:
    """The validation split's summary (what tuning chooses on); ``None`` values when the run held none out."""
    measured = [r for r in rows if not math.isnan(r.val_accuracy)]
    return {
        "final_val_accuracy": measured[-1].val_accuracy if measured else None,
        "best_val_accuracy": max((r.val_accuracy for r in measured), default=None),
        "val_time_to_target": time_to_accuracy(measured, target_accuracy, "val_accuracy"),
    }
