"""What every tuner shares: how a validation run is scored, what every tuning run adds, the checks.

A tuning run (a grid point's or a TPE trial's, for one seed) is read by :func:`read_seed`: both
times to the validation target (first crossing and held over a window,
:func:`~amp_fl.run_folder.smoothed_time_to_target`), the final and best validation accuracy and
where the run stopped. :func:`base_overrides` and :func:`stop_rule` say what every tuning run adds
to the method (the validation split, the early stop at the target). The grid search and its
command line are :mod:`amp_fl.experiments.tune`; the TPE search is :mod:`amp_fl.experiments.tpe`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amp_fl.errors import DIVERGED
from amp_fl.experiments.figures import slug
from amp_fl.run_folder import (
    METRICS_FILE,
    SMOOTHING_WINDOW_S,
    RunFolderError,
    read_columns,
    read_config,
    read_summary,
    smoothed_time_to_target,
    time_to_target,
)

# val_smoothed_time_to_target: the first time the validation accuracy *holds* the target (the mean of
# the last window's evaluations, run_folder.smoothed_time_to_target); val_time_to_target: the first crossing.
TIME_METRICS = ("val_smoothed_time_to_target", "val_time_to_target")
METRICS = (*TIME_METRICS, "val_final")
SEARCHES = ("grid", "tpe")
# A seed that never reaches (holds) the target scores (NEVER_REACHED_FACTOR + its shortfall, the target
# minus its best validation accuracy) x the simulated time its run was planned to cover
# (:func:`planned_length_s`) in a TPE trial's value: worse than any seed that reached it within the
# same horizon; among those that never did, the closer one scores better (TPE learns where to go),
# and a run that diverged at chance accuracy, stopped early, among the worst (a single number per
# trial is what TPE learns from).
NEVER_REACHED_FACTOR = 2.0
# The rule in words, kept with every study (tpe.STUDY_SETTINGS): values scored by another rule do not compare.
NEVER_REACHED_RULE = f"never held: ({NEVER_REACHED_FACTOR:g} + target - best validation accuracy) x planned length"
# Short names for the keys tuned most often; any other key is passed to Hydra as written.
ALIASES = {
    "learning_rate": "train.learning_rate",
    "proximal_mu": "strategy.proximal_mu",
    "apfl_alpha": "strategy.apfl_alpha",
    "t_max": "model.t_max_s",
    "staleness_decay": "strategy.staleness_decay",
    "server_lr": "strategy.server_lr",
    "server_momentum": "strategy.server_momentum",
}
FINAL_SHARE = 0.1  # val_final averages the last 10% of the rounds
TUNING_FILE = "tuning.json"  # <reports-dir>/<method>/: the points' results and the choice (read by reproduce --tuned)


@dataclass(frozen=True)
class SeedResult:
    seed: int
    run_dir: str
    val_time_to_target: float | None  # simulated seconds; None: never reached
    val_final: float  # mean validation accuracy over the last 10% of the rounds
    val_best: float
    val_smoothed_time_to_target: float | None = None  # simulated seconds; None: never held
    last_sim_time_s: float = math.nan  # the run's last row: where it stopped
    planned_s: float = math.nan  # the simulated time it was planned to cover (planned_length_s); nan: unknown
    diverged: bool = False  # the server stopped the run because its model diverged (summary.json's status)
    shortfall: float = 0.0  # the target minus the best validation accuracy, if positive

    def time_to_target(self, metric: str) -> float | None:
        """The seed's time by a time metric (first crossing or smoothed); ``None``: never reached."""
        return self.val_smoothed_time_to_target if metric == "val_smoothed_time_to_target" else self.val_time_to_target

    def score(self, metric: str) -> float:
        """The seed's share of a TPE trial's value: the time to target; if it never reached it,
        (``NEVER_REACHED_FACTOR`` + its shortfall) x the run's planned length (its last simulated
        time if the plan is unknown); ``val_final`` as it is."""
        if metric not in TIME_METRICS:
            return self.val_final
        time = self.time_to_target(metric)
        if time is not None:
            return time
        length = self.planned_s if math.isfinite(self.planned_s) else self.last_sim_time_s
        return (NEVER_REACHED_FACTOR + self.shortfall) * length


@dataclass(frozen=True)
class PointResult:
    overrides: dict[str, str]  # full key -> value as given
    seeds: list[SeedResult]

    @property
    def missed(self) -> int:
        return self.missed_by("val_time_to_target")

    @property
    def mean_time(self) -> float:
        return self.mean_time_by("val_time_to_target")

    def missed_by(self, metric: str) -> int:
        return sum(s.time_to_target(metric) is None for s in self.seeds)

    def mean_time_by(self, metric: str) -> float:
        times = [t for s in self.seeds if (t := s.time_to_target(metric)) is not None]
        return float(np.mean(times)) if times else math.inf

    @property
    def mean_final(self) -> float:
        return float(np.mean([s.val_final for s in self.seeds]))

    def rank_key(self, metric: str) -> tuple[float, ...]:
        """Smaller is better."""
        if metric in TIME_METRICS:
            return (float(self.missed_by(metric)), self.mean_time_by(metric), -self.mean_final)
        return (-self.mean_final,)


def point_id(point: dict[str, str]) -> str:
    return slug("_".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in point.items())) or "default"


def read_validation(run_dir: Path, target: float) -> tuple[float | None, float, float]:
    """(simulated time to ``target`` on validation or None, mean of the last 10% of rounds, best) from metrics.csv."""
    columns = read_columns(run_dir / METRICS_FILE)
    measured = ~np.isnan(columns.get("val_accuracy", np.full(columns["round"].shape, np.nan)))
    if not measured.any():
        raise ValueError(f"{run_dir}: no val_accuracy in {METRICS_FILE} (was dataset.validation_fraction 0?)")
    accuracy = columns["val_accuracy"][measured]
    hit = time_to_target(columns["round"][measured], columns["sim_time_s"][measured], accuracy, target)
    tail = max(1, math.ceil(FINAL_SHARE * (accuracy.size - 1)))  # row 0 is the initial model
    return None if hit is None else hit.sim_time_s, float(np.mean(accuracy[-tail:])), float(np.max(accuracy))


def read_seed(run_dir: Path, seed: int, target: float, window_s: float = SMOOTHING_WINDOW_S) -> SeedResult:
    """Every validation number of a finished run (both times to ``target``, final, best, last time): metrics.csv."""
    reached, final, best = read_validation(run_dir, target)
    columns = read_columns(run_dir / METRICS_FILE)
    measured = ~np.isnan(columns["val_accuracy"])
    held = smoothed_time_to_target(
        columns["round"][measured], columns["sim_time_s"][measured], columns["val_accuracy"][measured], target, window_s
    )
    last = float(columns["sim_time_s"][-1])
    planned = planned_length_s(_stored_config(run_dir), int(columns["round"][-1]), last)
    held_s = None if held is None else held.sim_time_s
    diverged = has_diverged(run_dir)
    return SeedResult(
        seed, str(run_dir), reached, final, best, held_s, last, planned, diverged, max(0.0, target - best)
    )


def has_diverged(run_dir: Path) -> bool:
    """Whether ``run_dir``'s summary says its model diverged (False without a readable summary)."""
    try:
        return str(read_summary(run_dir).get("status", "")).startswith(DIVERGED)
    except RunFolderError:
        return False


def _stored_config(run_dir: Path) -> dict[str, Any]:
    try:
        return read_config(run_dir)
    except RunFolderError:  # metrics.csv alone (a run folder of an older layout): the plan is unknown
        return {}


def planned_length_s(config: dict[str, Any], last_round: int, last_sim_time_s: float) -> float:
    """The simulated time a run was planned to cover: its ``sim_time_limit_s``, else its rounds so far
    extrapolated to ``num_rounds``; nan if neither says (a run stopped at round 0)."""
    limit = config.get("sim_time_limit_s")
    if isinstance(limit, (int, float)) and math.isfinite(limit) and limit > 0:
        return float(limit)
    rounds = config.get("num_rounds")
    if last_round > 0 and isinstance(rounds, int):
        return last_sim_time_s * rounds / last_round
    return math.nan


def base_overrides(
    method: str,
    sets: Sequence[str],
    rounds: int | None,
    validation_fraction: float,
    stop_at: float | None = None,
    stop_window_s: float = 0.0,
) -> list[str]:
    """Every run's overrides; ``stop_at``: end each run once its validation accuracy reaches it
    (with ``stop_window_s`` > 0: once the mean of that many simulated seconds of evaluations does)."""
    overrides = [f"method={method}", *sets]
    if not any(s.startswith("dataset.validation_fraction=") for s in sets):
        overrides.append(f"dataset.validation_fraction={validation_fraction}")
    if stop_at is not None and not any(s.startswith("evaluation.stop_at_val_accuracy=") for s in sets):
        overrides.append(f"evaluation.stop_at_val_accuracy={stop_at}")
        if stop_window_s > 0 and not any(s.startswith("evaluation.stop_window_s=") for s in sets):
            overrides.append(f"evaluation.stop_window_s={stop_window_s}")
    if rounds is not None:
        overrides.append(f"num_rounds={rounds}")
    return overrides


def check_tuning_settings(metric: str, target: float, seeds: Sequence[int], window_s: float) -> None:
    """The settings every tuner shares, checked once before any run (``ValueError`` naming the setting)."""
    if metric not in METRICS:
        raise ValueError(f"metric: choose from {', '.join(METRICS)}, got {metric!r}")
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target: must be in (0, 1], got {target}")
    if not seeds:
        raise ValueError("seeds: give at least one")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: each seed once, got {', '.join(map(str, seeds))}")
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s: the smoothing window must be > 0 simulated seconds, got {window_s}")


def stop_rule(metric: str, target: float, window_s: float, stop_at_target: bool) -> tuple[float | None, float]:
    """``(evaluation.stop_at_val_accuracy, evaluation.stop_window_s)`` of a tuning run.

    A time metric's score is known once the run reaches (first crossing) or holds (smoothed over
    ``window_s``) the target: the run stops there. ``val_final`` needs the whole run.
    """
    if not stop_at_target or metric not in TIME_METRICS:
        return None, 0.0
    return target, window_s if metric == "val_smoothed_time_to_target" else 0.0


def check_validation_split(configurations: Sequence[dict[str, Any]]) -> None:
    """Every run's composed configuration holds a validation split out (tuning chooses on it)."""
    if any(float(values["dataset"].get("validation_fraction", 0.0)) <= 0.0 for values in configurations):
        raise ValueError("dataset.validation_fraction: tuning needs a validation split (> 0)")


def time_text(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.2f}"


def finite_or_none(value: float) -> float | None:
    return None if math.isinf(value) else value


def reaches_text(payload: dict[str, Any]) -> str:
    """How the report's time reads the curve, in words."""
    if payload["metric"] == "val_smoothed_time_to_target":
        return f"averaged over the last {payload.get('smoothing_window_s', SMOOTHING_WINDOW_S):g} simulated s holds"
    return "first reaches"
