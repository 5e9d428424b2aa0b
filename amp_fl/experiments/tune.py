"""Tune a method on the validation split: ``python -m amp_fl.experiments.tune <method> --grid KEY=V1,V2 ...``
or ``... --search tpe --space KEY=float:LO:HI[:log] --trials N``.

For a fair comparison (issues 9, 21) every method gets its hyper-parameters chosen the same way,
each candidate run for every seed with the in-process engine, scored on the *validation* split held
out of the training set (``dataset.validation_fraction``, set here to ``--validation-fraction``
unless a ``--set`` gives it), never on the test set. Two searches:

- ``grid`` (the default: the committed tunings and ``make speedup`` are grids): every point of the
  ``--grid`` values; all of them are reported.
- ``tpe``: Optuna's TPE proposes ``--trials`` points in the ``--space`` ranges, the same budget for
  every method; one SQLite study per method, ``<reports-dir>/<method>/study.db``, which the same
  command resumes (:func:`tune_tpe`).

Metrics:

- ``val_smoothed_time_to_target`` (TPE's default): simulated seconds until the validation accuracy
  *holds* ``--target``: the first evaluation at which the mean of the last ``--window-s`` simulated
  seconds of evaluations reaches it (:func:`~amp_fl.run_folder.smoothed_time_to_target`). Runs stop
  there (``evaluation.stop_window_s``).
- ``val_time_to_target`` (the grid's default): simulated seconds until the validation accuracy first
  reaches ``--target``. Each run stops once it reaches the target (``evaluation.stop_at_val_accuracy``;
  ``--no-stop`` runs to the end), so its final accuracy is not comparable across points and only
  breaks ties. A grid point ranks by (seeds that never reached it, mean time over the seeds that
  did, minus its mean final validation accuracy): reaching the target on every seed comes first. A
  TPE trial is worth the mean over seeds of the time, a seed that never reaches the target counting
  ``NEVER_REACHED_FACTOR`` (2) x its run's last simulated time.
- ``val_final``: mean over seeds of the validation accuracy averaged over the last 10% of the
  rounds (at least one round): less noisy than the last round alone. Higher is better.

Writes ``<reports-dir>/<method>/tuning.json`` and ``tuning.md`` (every point's / trial's validation
numbers and the chosen values) and prints the chosen overrides, e.g.
``train.learning_rate=0.05 strategy.proximal_mu=0.01``, ready to add to a reproduction command.
Runs go to ``<runs-dir>/<method>/<point>/seed<s>/`` (a TPE trial's point folder is named by its
parameters alone); a run that is complete with the same configuration is not run again (as in
:mod:`amp_fl.experiments.reproduce`), so an interrupted tuning resumes where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from amp_fl.experiments.campaign import (
    PROJECT_ROOT,
    Job,
    RayCluster,
    add_cluster_arguments,
    check_values,
    cluster_from_args,
    compose_values,
    execute,
    is_complete,
    make_jobs,
    still_to_run,
)
from amp_fl.experiments.cli import campaign_cli, check_folders, error_line
from amp_fl.experiments.figures import RunSpec, slug

if TYPE_CHECKING:  # optuna is imported where it is used: reproduce reads TUNING_FILE from here
    from optuna.distributions import BaseDistribution
    from optuna.pruners import BasePruner
    from optuna.samplers import TPESampler
    from optuna.study import Study
    from optuna.trial import Trial, TrialState

from amp_fl.run_folder import (
    METRICS_FILE,
    SMOOTHING_WINDOW_S,
    read_columns,
    smoothed_time_to_target,
    time_to_target,
)

# val_smoothed_time_to_target: the first time the validation accuracy *holds* the target (the mean of
# the last window's evaluations, run_folder.smoothed_time_to_target); val_time_to_target: the first crossing.
TIME_METRICS = ("val_smoothed_time_to_target", "val_time_to_target")
METRICS = (*TIME_METRICS, "val_final")
SEARCHES = ("grid", "tpe")
# A seed that never reaches (holds) the target scores this many times its run's last simulated time
# in a TPE trial's value: worse than any seed that reached it within the same horizon, and still
# ordered by how long the run lasted (a single number per trial is what TPE learns from).
NEVER_REACHED_FACTOR = 2.0
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

    def time_to_target(self, metric: str) -> float | None:
        """The seed's time by a time metric (first crossing or smoothed); ``None``: never reached."""
        return self.val_smoothed_time_to_target if metric == "val_smoothed_time_to_target" else self.val_time_to_target

    def score(self, metric: str) -> float:
        """The seed's share of a TPE trial's value: the time to target, ``NEVER_REACHED_FACTOR`` x
        the run's last simulated time if it never reached it; ``val_final`` as it is."""
        if metric not in TIME_METRICS:
            return self.val_final
        time = self.time_to_target(metric)
        return NEVER_REACHED_FACTOR * self.last_sim_time_s if time is None else time


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


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["learning_rate=0.02,0.05"]`` -> ``{"train.learning_rate": ["0.02", "0.05"]}`` (aliases expanded)."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = ALIASES.get(key.strip(), key.strip())
        choices = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not choices:
            raise ValueError(f"grid: expected KEY=V1,V2,..., got {item!r}")
        if key in grid:
            raise ValueError(f"grid: {key} given twice")
        grid[key] = choices
    return grid


def grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """The cartesian product, in the order given (the first key varies slowest)."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


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
    return SeedResult(seed, str(run_dir), reached, final, best, None if held is None else held.sim_time_s, last)


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


def tune(
    method: str,
    grid: dict[str, list[str]],
    *,
    seeds: Sequence[int] = (0,),
    rounds: int | None = None,
    metric: str = "val_time_to_target",
    target: float = 0.7,
    sets: Sequence[str] = (),
    validation_fraction: float = 0.1,
    runs_dir: Path = PROJECT_ROOT / "runs" / "tuning",
    reports_dir: Path = PROJECT_ROOT / "reports" / "tuning",
    workers: int = 1,
    stop_at_target: bool = True,
    fixed: Sequence[str] = (),
    command: str = "",
    log: Any = print,
    cluster: RayCluster | None = None,
    window_s: float = SMOOTHING_WINDOW_S,
) -> dict[str, Any]:
    """Run (or resume) the grid, choose by the validation metric, write the reports; returns tuning.json's content.

    With a time metric and ``stop_at_target``, each run stops once its validation accuracy reaches
    ``target`` (``evaluation.stop_at_val_accuracy``; for ``val_smoothed_time_to_target`` once the
    mean of the last ``window_s`` simulated seconds does): nothing after it counts.
    """
    check_tuning_settings(metric, target, seeds, window_s)
    # Fixed hyper-parameters run like --set but belong to the choice: a comparison that takes the
    # chosen values must run with them too (a set-up value such as the experiment does not).
    base = base_overrides(
        method, [*sets, *fixed], rounds, validation_fraction, *stop_rule(metric, target, window_s, stop_at_target)
    )
    points_by_id = {point_id(point): point for point in grid_points(grid)}
    specs = [
        RunSpec(
            "tuning",
            method,
            pid,
            seed,
            (*base, *(f"{k}={v}" for k, v in point.items()), f"seed={seed}"),
            f"{pid}/seed{seed}",
        )
        for pid, point in points_by_id.items()
        for seed in seeds
    ]
    jobs = make_jobs(specs, runs_dir / method)  # runs_dir/<method>/<point>/seed<s>
    check_validation_split([job.values for job in jobs])
    todo = still_to_run(jobs)
    log(f"[tune] {method}: {len(jobs)} runs, {len(jobs) - len(todo)} complete, {len(todo)} to run")
    failures = execute(todo, "inprocess", workers, log, name="tune", cluster=cluster)
    if failures:
        raise RuntimeError(f"{len(failures)} run(s) failed: " + "; ".join(failures))
    points: dict[str, PointResult] = {}
    for job in jobs:
        point = points_by_id[job.spec.series]
        result = points.setdefault(point_id(point), PointResult(dict(point), []))
        result.seeds.append(read_seed(job.run_dir, job.spec.seed, target, window_s))
    ranked = sorted(points.values(), key=lambda p: p.rank_key(metric))
    chosen = ranked[0]
    payload = {
        "method": method,
        "command": command,
        "metric": metric,
        "target": target,
        "smoothing_window_s": window_s,
        "seeds": list(seeds),
        "base_overrides": base,
        "grid": grid,
        "points": [
            {
                **asdict(p),
                "missed": p.missed_by(metric) if metric in TIME_METRICS else p.missed,
                "mean_val_time_to_target": None if math.isinf(p.mean_time) else p.mean_time,
                "mean_val_smoothed_time_to_target": _finite(p.mean_time_by("val_smoothed_time_to_target")),
                "mean_val_final": p.mean_final,
            }
            for p in ranked
        ],
        "chosen": chosen.overrides,
        "fixed": list(fixed),
        "chosen_overrides": [*fixed, *(f"{k}={v}" for k, v in chosen.overrides.items())],
    }
    out = reports_dir / method
    out.mkdir(parents=True, exist_ok=True)
    (out / TUNING_FILE).write_text(json.dumps(payload, indent=2) + "\n")
    (out / "tuning.md").write_text(render_markdown(payload, ranked))
    log(f"[tune] report: {out / 'tuning.md'}")
    return payload


def _time(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.2f}"


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else value


def _reaches(payload: dict[str, Any]) -> str:
    """How the report's time reads the curve, in words."""
    if payload["metric"] == "val_smoothed_time_to_target":
        return f"averaged over the last {payload.get('smoothing_window_s', SMOOTHING_WINDOW_S):g} simulated s holds"
    return "first reaches"


def render_markdown(payload: dict[str, Any], ranked: Sequence[PointResult]) -> str:
    keys = list(payload["grid"])
    metric, target = payload["metric"], payload["target"]
    lines = [
        f"# Tuning: {payload['method']}",
        "",
        f"- **Command:** `{payload['command']}`",
        f"- **Base overrides:** `{' '.join(payload['base_overrides'])}`",
        f"- **Seeds:** {', '.join(map(str, payload['seeds']))}",
        f"- **Chosen by:** `{metric}` on the validation split held out of the training set (target {target:g}); "
        "the test set plays no part in the choice.",
        f"- **Chosen:** `{' '.join(payload['chosen_overrides'])}`",
        "",
        f"Points best first. Time: simulated seconds until the validation accuracy {_reaches(payload)} the target "
        "(mean over the seeds that reached it); final: validation accuracy averaged over the last 10% of the "
        "rounds (mean over seeds).",
        "",
        "| "
        + " | ".join([*keys, "seeds reaching target", "mean val time to target (s)", "mean val final", "per seed"])
        + " |",
        "| " + " | ".join(["---"] * (len(keys) + 4)) + " |",
    ]
    timed = metric if metric in TIME_METRICS else "val_time_to_target"
    for p in ranked:
        per_seed = "; ".join(f"seed {s.seed}: {_time(s.time_to_target(timed))} s, {s.val_final:.4f}" for s in p.seeds)
        reached = len(p.seeds) - p.missed_by(timed)
        time = _time(_finite(p.mean_time_by(timed)))
        cells = [*(p.overrides[k] for k in keys), f"{reached}/{len(p.seeds)}", time, f"{p.mean_final:.4f}", per_seed]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- TPE
STUDY_FILE = "study.db"  # <reports-dir>/<method>/: the Optuna study, committed with the report so it resumes
KINDS = ("float", "int", "cat")
STARTUP_TRIALS = 10  # TPE's random trials before it models the results (Optuna's default)
PRUNERS = ("none", "median")
MEDIAN_STARTUP_TRIALS = 5  # complete trials before the median pruner prunes (Optuna's default)
MAX_FOLDER = 100  # characters of a trial's folder name; a longer point id is cut and given a digest
# What a trial's value means: resuming a study with any of these changed would mix incomparable values.
STUDY_SETTINGS = ("metric", "target", "smoothing_window_s", "seeds", "base_overrides", "space")


@dataclass(frozen=True)
class Dimension:
    """One searched key: ``float`` / ``int`` in ``[low, high]`` (``log``: on a log scale), or ``cat`` choices."""

    kind: str
    low: float = math.nan
    high: float = math.nan
    log: bool = False
    choices: tuple[str, ...] = ()

    def distribution(self) -> BaseDistribution:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "float":
            return FloatDistribution(self.low, self.high, log=self.log)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return CategoricalDistribution(self.choices)

    def override_value(self, value: Any) -> str:
        """A sampled value as written in a Hydra override (a float in full: the run is the trial's exactly)."""
        if self.kind == "float":
            return repr(float(value))
        if self.kind == "int":
            return str(int(value))
        return str(value)

    def spec(self) -> str:
        """The ``--space`` text that gives this dimension (how tuning.json and the study record it)."""
        if self.kind == "cat":
            return "cat:" + ",".join(self.choices)
        low, high = (f"{int(v)}" if self.kind == "int" else f"{v!r}" for v in (self.low, self.high))
        return f"{self.kind}:{low}:{high}" + (":log" if self.log else "")


def parse_space(items: Sequence[str]) -> dict[str, Dimension]:
    """``["learning_rate=float:0.01:0.3:log", "t_max=cat:0.05,0.1"]`` -> full key -> :class:`Dimension`.

    Kinds: ``float:LO:HI[:log]``, ``int:LO:HI[:log]`` (both bounds included), ``cat:A,B,C`` (the values
    as Hydra reads them). Keys accept :data:`ALIASES`. Bad input: ``ValueError`` naming the item and the problem.
    """
    space: dict[str, Dimension] = {}
    for item in items:
        key, sep, rest = item.partition("=")
        key = ALIASES.get(key.strip(), key.strip())
        kind, _, spec = rest.partition(":")
        if not sep or not key:
            raise ValueError(f"space: expected KEY=float:LO:HI[:log], KEY=int:LO:HI[:log] or KEY=cat:A,B, got {item!r}")
        if kind.strip() not in KINDS:
            raise ValueError(f"space: {key}: the kind must be one of {', '.join(KINDS)}, got {kind.strip()!r}")
        if key in space:
            raise ValueError(f"space: {key} given twice")
        space[key] = _categorical(key, spec) if kind.strip() == "cat" else _numeric(key, kind.strip(), spec)
    return space


def _categorical(key: str, spec: str) -> Dimension:
    choices = tuple(c.strip() for c in spec.split(","))
    if any(not c for c in choices) or len(choices) < 2:
        raise ValueError(
            f"space: {key}: cat needs two or more non-empty values A,B,..., got {spec!r} (one value: --fix)"
        )
    if len(set(choices)) != len(choices):
        raise ValueError(f"space: {key}: cat values must differ, got {spec!r}")
    return Dimension("cat", choices=choices)


def _numeric(key: str, kind: str, spec: str) -> Dimension:
    parts = [p.strip() for p in spec.split(":")]
    log = len(parts) == 3 and parts[2] == "log"
    if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
        raise ValueError(f"space: {key}: expected {kind}:LO:HI or {kind}:LO:HI:log, got {kind}:{spec!r}")
    number = int if kind == "int" else float
    try:
        low, high = (number(p) for p in parts[:2])
    except ValueError:
        raise ValueError(f"space: {key}: LO and HI must be {kind} numbers, got {parts[0]!r} and {parts[1]!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"space: {key}: needs finite LO < HI, got {low} and {high} (one value: --fix)")
    if log and low <= 0:
        raise ValueError(f"space: {key}: a log scale needs LO > 0, got {low}")
    return Dimension(kind, float(low), float(high), log)


def trial_point(params: dict[str, Any], space: dict[str, Dimension]) -> dict[str, str]:
    """A trial's parameters as overrides: full key -> value as Hydra reads it."""
    return {key: dim.override_value(params[key]) for key, dim in space.items()}


def trial_folder(point: dict[str, str]) -> str:
    """The folder of a trial's runs, from its parameters alone: a re-asked trial finds its runs there."""
    pid = point_id(point)
    if len(pid) <= MAX_FOLDER:
        return pid
    digest = hashlib.sha256(pid.encode()).hexdigest()[:12]
    return f"{pid[: MAX_FOLDER - len(digest) - 1]}_{digest}"


def trial_value(results: Sequence[SeedResult], metric: str) -> float:
    """A trial's value: the mean over the tuning seeds of :meth:`SeedResult.score`."""
    return float(np.mean([r.score(metric) for r in results]))


def study_storage(reports_dir: Path, method: str) -> str:
    path = (reports_dir / method / STUDY_FILE).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def open_study(storage: str, method: str, metric: str, settings: dict[str, Any]) -> Study:
    """The method's study (created, or loaded to resume); ``ValueError`` if it was made with other settings."""
    import optuna
    from optuna.study import StudyDirection

    direction = StudyDirection.MAXIMIZE if metric == "val_final" else StudyDirection.MINIMIZE
    study = optuna.create_study(storage=storage, study_name=method, direction=direction, load_if_exists=True)
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings)
        return study
    changed = [key for key in STUDY_SETTINGS if stored.get(key) != settings[key]]
    if changed:
        where = storage.removeprefix("sqlite:///")
        what = "; ".join(f"{key}: {stored.get(key)!r} there, {settings[key]!r} here" for key in changed)
        raise ValueError(
            f"study: {where} holds trials of other settings ({what}); give the same settings to resume it, "
            "or another --reports-dir"
        )
    return study


def requeue_interrupted(study: Study) -> list[int]:
    """Trials a killed process left RUNNING: marked failed, their parameters asked again first.

    Their runs (finished in the runs folder, or restored from the results ledger) are found by the
    re-asked trial and not run again. Returns the numbers of the trials re-queued.
    """
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number})
    return [trial.number for trial in stale]


def batch_sampler(sampler_seed: int, finished: int, startup_trials: int) -> TPESampler:
    """The TPE sampler of one batch of asks, seeded by ``sampler_seed`` and the trials finished so far.

    A new sampler per batch, seeded from the study's state rather than from a generator that lives
    as long as the process: the same command proposes the same trials, and a resumed study the
    same as one never interrupted (one trial at a time). ``constant_liar``: trials asked together
    see each other as pending (scored as the worst so far), so a batch spreads out.
    """
    from optuna.samplers import TPESampler

    seed = int(np.random.SeedSequence([sampler_seed, finished]).generate_state(1)[0])
    return TPESampler(seed=seed, n_startup_trials=startup_trials, multivariate=True, constant_liar=True)


def make_pruner(name: str) -> BasePruner:
    """``median``: Optuna's MedianPruner (prunes a trial whose mean over its first k seeds is worse
    than the median of the complete trials' over the same seeds, once 5 trials are complete);
    ``none``: every trial runs all its seeds."""
    from optuna.pruners import MedianPruner, NopPruner

    return MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=0) if name == "median" else NopPruner()


def _count(study: Study, *states: TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def _failed_runs(study: Study) -> int:
    """Trials told failed because a run failed (not those a killed process left running)."""
    from optuna.trial import TrialState

    return sum("failures" in t.user_attrs for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))


def tune_tpe(
    method: str,
    space: dict[str, Dimension],
    *,
    trials: int,
    seeds: Sequence[int] = (0,),
    rounds: int | None = None,
    metric: str = "val_smoothed_time_to_target",
    target: float = 0.7,
    window_s: float = SMOOTHING_WINDOW_S,
    sets: Sequence[str] = (),
    validation_fraction: float = 0.1,
    runs_dir: Path = PROJECT_ROOT / "runs" / "tuning",
    reports_dir: Path = PROJECT_ROOT / "reports" / "tuning",
    jobs: int = 1,
    workers: int | None = None,
    sampler_seed: int = 0,
    startup_trials: int = STARTUP_TRIALS,
    pruner: str = "none",
    stop_at_target: bool = True,
    fixed: Sequence[str] = (),
    command: str = "",
    log: Any = print,
    cluster: RayCluster | None = None,
) -> dict[str, Any]:
    """Optuna TPE over ``space`` until the method's study holds ``trials`` complete trials; returns tuning.json.

    Each trial runs every seed of ``seeds`` (in-process engine, validation split) and is worth the
    mean of :meth:`SeedResult.score`. ``jobs`` trials are asked at once (constant-liar TPE) and
    their runs go side by side, ``workers`` at a time (default ``jobs``). The study lives in
    ``<reports_dir>/<method>/study.db`` (SQLite, study name = ``method``): the same call resumes it;
    complete trials count, runs complete on disk or in the results ledger are not run again.
    Writes ``tuning.json`` (its ``chosen_overrides`` are what ``reproduce --tuned`` reads) and ``tuning.md``.
    """
    check_tuning_settings(metric, target, seeds, window_s)
    if not space:
        raise ValueError("space: give at least one --space KEY=...")
    for name, value in (("trials", trials), ("jobs", jobs), ("workers", 1 if workers is None else workers)):
        if value < 1:
            raise ValueError(f"{name}: must be >= 1, got {value}")
    if startup_trials < 0:
        raise ValueError(f"startup_trials: must be >= 0, got {startup_trials}")
    if pruner not in PRUNERS:
        raise ValueError(f"pruner: choose from {', '.join(PRUNERS)}, got {pruner!r}")
    if pruner != "none" and len(seeds) < 2:
        raise ValueError("pruner: a trial is pruned between its seeds: give two or more seeds")
    base = base_overrides(
        method, [*sets, *fixed], rounds, validation_fraction, *stop_rule(metric, target, window_s, stop_at_target)
    )
    settings = {
        "metric": metric,
        "target": target,
        "smoothing_window_s": window_s,
        "seeds": list(seeds),
        "base_overrides": base,
        "space": {key: dim.spec() for key, dim in space.items()},
    }
    runs = TrialRuns(method, base, seeds, metric, target, window_s, runs_dir)
    runs.check(space)  # a bad setting fails here, before a trial is asked
    storage = study_storage(reports_dir, method)
    study = open_study(storage, method, metric, settings)
    requeued = requeue_interrupted(study)
    if requeued:
        log(f"[tune] {method}: trial(s) {', '.join(map(str, requeued))} were left running: asked again")
    from optuna.trial import TrialState

    study.pruner = make_pruner(pruner)
    # A pruned trial is one of the budget's trials: it was proposed and judged, on fewer seeds.
    while (finished := _count(study, TrialState.COMPLETE, TrialState.PRUNED)) < trials:
        if _failed_runs(study) >= trials:  # a whole budget of failures: the setup is broken, not the points
            raise RuntimeError(f"study: {trials} trials had runs that failed (see tuning.json); the search stops")
        study.sampler = batch_sampler(sampler_seed, finished, startup_trials)
        distributions = {key: dim.distribution() for key, dim in space.items()}
        asked = [study.ask(distributions) for _ in range(min(jobs, trials - finished))]
        run_trials(study, asked, space, runs, workers or jobs, log, cluster, prune=pruner != "none")
    payload = tpe_payload(study, space, settings, command, fixed, trials, jobs, sampler_seed, startup_trials, pruner)
    out = reports_dir / method
    (out / TUNING_FILE).write_text(json.dumps(payload, indent=2) + "\n")
    (out / "tuning.md").write_text(render_tpe_markdown(payload))
    log(f"[tune] report: {out / 'tuning.md'}")
    return payload


@dataclass(frozen=True)
class TrialRuns:
    """How a trial's point becomes runs and its runs a value (the settings a study keeps fixed)."""

    method: str
    base: list[str]
    seeds: Sequence[int]
    metric: str
    target: float
    window_s: float
    runs_dir: Path

    def specs(self, point: dict[str, str]) -> list[RunSpec]:
        """One run per seed in ``<runs_dir>/<method>/<trial folder>/seed<s>``, the folder from the point alone."""
        folder = trial_folder(point)
        overrides = [*self.base, *(f"{k}={v}" for k, v in point.items())]
        return [
            RunSpec("tuning", self.method, folder, seed, (*overrides, f"seed={seed}"), f"{folder}/seed{seed}")
            for seed in self.seeds
        ]

    def check(self, space: dict[str, Dimension]) -> None:
        """The runs' configuration is valid and holds a validation split (``ValueError`` naming the key).

        Composed at one corner of the space (the lower bounds, the first choices), first seed.
        """
        corner = {
            key: dim.choices[0] if dim.kind == "cat" else dim.override_value(dim.low) for key, dim in space.items()
        }
        spec = self.specs(corner)[0]
        values = compose_values(spec.overrides)
        check_values(values)
        check_validation_split([values])


def run_trials(
    study: Study,
    asked: Sequence[Trial],
    space: dict[str, Dimension],
    runs: TrialRuns,
    workers: int,
    log: Any,
    cluster: RayCluster | None,
    prune: bool = False,
) -> None:
    """Run the asked trials' runs side by side (those not already complete) and tell the study each value.

    A trial with a run that failed is told failed (its error lines kept as a user attribute); the
    others are complete with their value and every seed's numbers (``seeds``) and overrides (``point``).
    With ``prune``, the seeds go one at a time across the asked trials: after each, a trial reports
    the mean score of its seeds so far (step k: seeds 0..k of ``runs.seeds``, the same seeds for
    every trial) and the study's pruner may stop it, told pruned, before its other seeds run.
    """
    from optuna.trial import TrialState

    points = {trial.number: trial_point(trial.params, space) for trial in asked}
    jobs_of = {number: make_jobs(runs.specs(point), runs.runs_dir / runs.method) for number, point in points.items()}
    results: dict[int, list[SeedResult]] = {trial.number: [] for trial in asked}
    live = list(asked)
    for trial in live:
        trial.set_user_attr("point", points[trial.number])
    stages = [[i] for i in range(len(runs.seeds))] if prune else [list(range(len(runs.seeds)))]
    for stage in stages:
        stage_jobs = {trial.number: [jobs_of[trial.number][i] for i in stage] for trial in live}
        failed = _run_stage(stage_jobs, runs.method, workers, log, cluster)
        still = []
        for trial in live:
            done = results[trial.number]
            if trial.number in failed:
                trial.set_user_attr("failures", failed[trial.number])
                study.tell(trial, state=TrialState.FAIL)
                log(f"[tune] {runs.method}: trial {trial.number} failed: {'; '.join(failed[trial.number])}")
                continue
            done += [
                read_seed(job.run_dir, job.spec.seed, runs.target, runs.window_s) for job in stage_jobs[trial.number]
            ]
            trial.set_user_attr("seeds", [asdict(r) for r in done])
            if prune:
                trial.report(trial_value(done, runs.metric), step=len(done) - 1)
                if len(done) < len(runs.seeds) and trial.should_prune():
                    study.tell(trial, state=TrialState.PRUNED)
                    log(f"[tune] {runs.method}: trial {trial.number} pruned after {len(done)} seed(s)")
                    continue
            still.append(trial)
        live = still
    for trial in live:
        value = trial_value(results[trial.number], runs.metric)
        study.tell(trial, value)
        point = " ".join(f"{k}={v}" for k, v in points[trial.number].items())
        log(f"[tune] {runs.method}: trial {trial.number} {point}: {value:.4g}")


def _run_stage(
    jobs_of: dict[int, list[Job[Any]]], method: str, workers: int, log: Any, cluster: RayCluster | None
) -> dict[int, list[str]]:
    """Runs the trials' jobs not already complete, side by side; returns each failed trial's error lines."""
    every = [job for jobs in jobs_of.values() for job in jobs]
    todo = list({job.run_dir: job for job in still_to_run(every)}.values())  # two trials at one point: run once
    numbers = ", ".join(map(str, jobs_of))
    log(
        f"[tune] {method}: trial(s) {numbers}: {len(every)} runs, {len(every) - len(todo)} complete, {len(todo)} to run"
    )
    failures = execute(todo, "inprocess", workers, log, name="tune", cluster=cluster)
    failed = {}
    for number, jobs in jobs_of.items():
        ids = {job.spec.run_id for job in jobs if not is_complete(job.run_dir, job.values)}
        if ids:
            failed[number] = [f for f in failures if f.split(":", 1)[0] in ids] or sorted(ids)
    return failed


def tpe_payload(
    study: Study,
    space: dict[str, Dimension],
    settings: dict[str, Any],
    command: str,
    fixed: Sequence[str],
    trials: int,
    jobs: int,
    sampler_seed: int,
    startup_trials: int,
    pruner: str = "none",
) -> dict[str, Any]:
    """tuning.json of a TPE search: the budget, every trial (parameters, per-seed numbers), the choice."""
    import optuna
    from optuna.trial import TrialState

    best = study.best_trial
    chosen = best.user_attrs["point"]
    recorded = [
        {
            "number": t.number,
            "state": t.state.name,
            "params": t.params,
            "overrides": t.user_attrs.get(
                "point", trial_point(t.params, space) if t.params.keys() >= space.keys() else {}
            ),
            "value": t.value,
            "seeds": t.user_attrs.get("seeds", []),
            **({"intermediate_values": _by_step(t.intermediate_values)} if t.state == TrialState.PRUNED else {}),
            **({"requeued_from": t.user_attrs["requeued_from"]} if "requeued_from" in t.user_attrs else {}),
            **({"failures": t.user_attrs["failures"]} if "failures" in t.user_attrs else {}),
        }
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    ]
    return {
        "method": study.study_name,
        "command": command,
        "search": "tpe",
        **settings,
        "never_reached_factor": NEVER_REACHED_FACTOR,
        "budget": {
            "trials": trials,
            "seeds_per_trial": len(settings["seeds"]),
            "runs": trials * len(settings["seeds"]),
            "sampler": "optuna.samplers.TPESampler(multivariate=True, constant_liar=True)",
            "sampler_seed": sampler_seed,
            "startup_trials": startup_trials,
            "trials_asked_at_once": jobs,
            "pruner": "none"
            if pruner == "none"
            else f"optuna.pruners.MedianPruner(n_startup_trials={MEDIAN_STARTUP_TRIALS})",
            "optuna": optuna.__version__,
        },
        "study": {"storage": STUDY_FILE, "name": study.study_name, "direction": study.direction.name.lower()},
        "trials": recorded,
        "chosen_trial": best.number,
        "chosen_value": best.value,
        "chosen": chosen,
        "fixed": list(fixed),
        "chosen_overrides": [*fixed, *(f"{k}={v}" for k, v in chosen.items())],
    }


def _by_step(values: dict[int, float]) -> dict[str, float]:
    """A trial's intermediate values keyed as JSON writes them (step k: the mean over the first k + 1 seeds)."""
    return {str(step): value for step, value in sorted(values.items())}


def _seed_cell(recorded: dict[str, Any], metric: str) -> str:
    seed = SeedResult(**recorded)
    if metric not in TIME_METRICS:
        return f"seed {seed.seed}: {seed.val_final:.4f}"
    time = seed.time_to_target(metric)
    if time is None:
        return f"seed {seed.seed}: not reached (ran {seed.last_sim_time_s:.2f} s)"
    return f"seed {seed.seed}: {time:.2f} s"


def render_tpe_markdown(payload: dict[str, Any]) -> str:
    keys = list(payload["space"])
    metric, budget = payload["metric"], payload["budget"]
    complete = [t for t in payload["trials"] if t["state"] == "COMPLETE"]
    failed = [t for t in payload["trials"] if t["state"] == "FAIL" and "failures" in t]
    ranked = sorted(complete, key=lambda t: t["value"], reverse=payload["study"]["direction"] == "maximize")
    score = (
        f"mean over the seeds of the simulated time until the validation accuracy {_reaches(payload)} the "
        f"target {payload['target']:g} (a seed that never does: {payload['never_reached_factor']:g} x its "
        "run's last simulated time); smaller is better"
        if metric in TIME_METRICS
        else "mean over the seeds of the validation accuracy averaged over the last 10% of the rounds; larger is better"
    )
    lines = [
        f"# Tuning: {payload['method']} (Optuna TPE)",
        "",
        f"- **Command:** `{payload['command']}`",
        f"- **Base overrides:** `{' '.join(payload['base_overrides'])}`",
        "- **Space:** " + ", ".join(f"`{k}={v}`" for k, v in payload["space"].items()),
        f"- **Budget:** {budget['trials']} trials x {budget['seeds_per_trial']} seed(s) "
        f"({', '.join(map(str, payload['seeds']))}) = {budget['runs']} runs; {budget['sampler']}, "
        f"seed {budget['sampler_seed']}, {budget['startup_trials']} random startup trials, "
        f"{budget['trials_asked_at_once']} asked at once; pruner {budget['pruner']}; Optuna {budget['optuna']}; "
        f"study `{payload['study']['storage']}`",
        f"- **Chosen by:** `{metric}` on the validation split held out of the training set: {score}; "
        "the test set plays no part in the choice.",
        f"- **Chosen:** trial {payload['chosen_trial']} (value {payload['chosen_value']:.4g}): "
        f"`{' '.join(payload['chosen_overrides'])}`",
        "",
        "Complete trials, best first.",
        "",
        "| " + " | ".join(["trial", *keys, "value", "per seed"]) + " |",
        "| " + " | ".join(["---"] * (len(keys) + 3)) + " |",
    ]
    for t in ranked:
        per_seed = "; ".join(_seed_cell(s, metric) for s in t["seeds"])
        cells = [str(t["number"]), *(t["overrides"][k] for k in keys), f"{t['value']:.4g}", per_seed]
        lines.append("| " + " | ".join(cells) + " |")
    pruned = [t for t in payload["trials"] if t["state"] == "PRUNED"]
    if pruned:
        lines += [
            "",
            "Pruned trials (counted in the budget; mean score over the seeds they ran): "
            + "; ".join(
                f"trial {t['number']} ({' '.join(f'{k}={v}' for k, v in t['overrides'].items())}): "
                f"{t['value']:.4g} after {len(t['seeds'])} seed(s)"
                for t in pruned
            ),
        ]
    if failed:
        lines += [
            "",
            "Failed trials (not counted in the budget): "
            + "; ".join(
                f"trial {t['number']} ({' '.join(f'{k}={v}' for k, v in t['overrides'].items())})" for t in failed
            ),
        ]
    return "\n".join(lines) + "\n"


def chosen_as_sets(tuned_dir: Path) -> str:
    """A finished tuning's choices as ``--set KEY=VALUE`` arguments, to fix them in a later stage."""
    path = tuned_dir / TUNING_FILE
    try:
        chosen = json.loads(path.read_text())["chosen_overrides"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: no finished tuning to read ({exc})") from exc
    return " ".join(shlex.quote(f"--set={o}") for o in chosen)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--chosen-as-sets"]:  # python -m amp_fl.experiments.tune --chosen-as-sets DIR
        if len(args_list) != 2:
            print("usage: python -m amp_fl.experiments.tune --chosen-as-sets DIR", file=sys.stderr)
            return 2
        try:
            print(chosen_as_sets(Path(args_list[1])))
        except ValueError as exc:
            print(error_line(exc), file=sys.stderr)
            return 2
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m amp_fl.experiments.tune",
        description="Tune a method on the validation split (a grid, or Optuna TPE); writes "
        "reports/tuning/<method>/tuning.{md,json} (TPE: and its study, study.db).",
    )
    parser.add_argument("method", help="a method preset (conf/method/*.yaml), e.g. amp_fl, synchronous, fedprox")
    parser.add_argument(
        "--search",
        choices=SEARCHES,
        default="grid",
        help="grid: every point of the --grid values; tpe: --trials points proposed by Optuna's TPE in --space",
    )
    parser.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2", help="a key and its values; repeatable"
    )
    parser.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="KEY=KIND:...",
        help="TPE: a key and its range, float:LO:HI[:log], int:LO:HI[:log] or cat:A,B,C; repeatable",
    )
    parser.add_argument("--trials", type=int, help="TPE: complete trials the study must hold (the budget)")
    parser.add_argument("--sampler-seed", type=int, default=0, help="TPE: the sampler's seed (default 0)")
    parser.add_argument(
        "--startup-trials",
        type=int,
        default=STARTUP_TRIALS,
        help=f"TPE: random trials before TPE models the results (default {STARTUP_TRIALS})",
    )
    parser.add_argument(
        "--prune",
        choices=PRUNERS,
        default="none",
        help="TPE: median stops a trial between its seeds once its mean is worse than the complete trials' median "
        "over the same seeds (default none: every trial runs every seed)",
    )
    parser.add_argument(
        "--workers", type=int, help="TPE: runs side by side (default --jobs: one per trial asked at once)"
    )
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--rounds", type=int, help="num_rounds of every run (default: the preset's)")
    parser.add_argument(
        "--metric",
        choices=METRICS,
        help="what the choice is made on (default: val_time_to_target for grid, val_smoothed_time_to_target for tpe)",
    )
    parser.add_argument(
        "--window-s",
        type=float,
        default=SMOOTHING_WINDOW_S,
        help=f"val_smoothed_time_to_target's window of simulated seconds (default {SMOOTHING_WINDOW_S:g})",
    )
    parser.add_argument("--target", type=float, default=0.7, help="validation accuracy target (default 0.7)")
    parser.add_argument("--validation-fraction", type=float, default=0.1, help="held-out share (default 0.1)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a Hydra override for every run (repeatable)"
    )
    parser.add_argument(
        "--fix",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hyper-parameter held fixed in every run and recorded with the choice, so that "
        "reproduce --tuned runs with it too (repeatable)",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="grid: runs side by side; TPE: trials asked at once (default 1)"
    )
    parser.add_argument(
        "--no-stop",
        action="store_true",
        help="run every run to num_rounds (default with a time metric: stop once the target is reached / held)",
    )
    parser.add_argument("--runs-dir", type=Path, default=PROJECT_ROOT / "runs" / "tuning")
    parser.add_argument("--reports-dir", type=Path, default=PROJECT_ROOT / "reports" / "tuning")
    add_cluster_arguments(parser)
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "amp_fl.experiments.tune", *(sys.argv[1:] if argv is None else argv)])
    try:
        check_folders({"--runs-dir": args.runs_dir, "--reports-dir": args.reports_dir})
        common = dict(
            seeds=[int(s) for s in args.seeds.split(",") if s.strip()],
            rounds=args.rounds,
            target=args.target,
            window_s=args.window_s,
            sets=args.set,
            validation_fraction=args.validation_fraction,
            runs_dir=args.runs_dir,
            reports_dir=args.reports_dir,
            stop_at_target=not args.no_stop,
            fixed=args.fix,
            command=command,
            cluster=cluster_from_args(args),
        )
        payload = _run_search(args, common)
    except KeyboardInterrupt:
        print("[tune] interrupted: give the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError) as exc:
        print(error_line(exc), file=sys.stderr)
        return 1 if isinstance(exc, RuntimeError) else 2
    print("chosen: " + " ".join(payload["chosen_overrides"]))
    return 0


def _run_search(args: argparse.Namespace, common: dict[str, Any]) -> dict[str, Any]:
    """The CLI's search: its own options checked against the other search's (one clear error each)."""
    if args.search == "grid":
        tpe_only = (("--space", args.space), ("--trials", args.trials), ("--workers", args.workers))
        unused = [o for o, v in (*tpe_only, ("--prune", args.prune != "none")) if v]
        if unused:
            raise ValueError(f"{unused[0]}: only with --search tpe (the grid takes --grid)")
        metric = args.metric or "val_time_to_target"
        return tune(args.method, parse_grid(args.grid), metric=metric, workers=args.jobs, **common)
    if args.grid:
        raise ValueError("--grid: only with --search grid (TPE takes --space)")
    if args.trials is None:
        raise ValueError("--trials: TPE needs its budget, the number of complete trials")
    return tune_tpe(
        args.method,
        parse_space(args.space),
        trials=args.trials,
        metric=args.metric or "val_smoothed_time_to_target",
        jobs=args.jobs,
        workers=args.workers,
        sampler_seed=args.sampler_seed,
        startup_trials=args.startup_trials,
        pruner=args.prune,
        **common,
    )


if __name__ == "__main__":
    sys.exit(campaign_cli(main))
