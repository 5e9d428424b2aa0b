"""Optuna TPE over a method's hyper-parameters, the same trial budget for every method (issue 21).

:func:`tune_tpe` proposes points in a ``--space`` (:func:`parse_space`), runs each for every tuning
seed on the validation split through the campaign machinery, and keeps one SQLite study per
method (``<reports-dir>/<method>/study.db``) that the same call resumes. Scoring and the settings
every tuner shares are :mod:`amp_fl.experiments.selection`; the command line is
:mod:`amp_fl.experiments.tune` (``--search tpe``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from amp_fl.experiments.campaign import (
    PROJECT_ROOT,
    Job,
    RayCluster,
    check_values,
    compose_values,
    execute,
    is_complete,
    make_jobs,
    still_to_run,
)
from amp_fl.experiments.figures import RunSpec
from amp_fl.experiments.selection import (
    ALIASES,
    NEVER_REACHED_FACTOR,
    NEVER_REACHED_RULE,
    TIME_METRICS,
    TUNING_FILE,
    SeedResult,
    base_overrides,
    check_tuning_settings,
    check_validation_split,
    has_diverged,
    point_id,
    reaches_text,
    read_seed,
    stop_rule,
)
from amp_fl.run_folder import SMOOTHING_WINDOW_S

if TYPE_CHECKING:  # optuna is imported where it is used (the command line's --help needs none of it)
    from optuna.distributions import BaseDistribution
    from optuna.pruners import BasePruner
    from optuna.samplers import TPESampler
    from optuna.study import Study
    from optuna.trial import Trial, TrialState

# ---------------------------------------------------------------------------------------------- TPE
STUDY_FILE = "study.db"  # <reports-dir>/<method>/: the Optuna study, committed with the report so it resumes
KINDS = ("float", "int", "cat")
STARTUP_TRIALS = 10  # TPE's random trials before it models the results (Optuna's default)
PRUNERS = ("none", "median")
MEDIAN_STARTUP_TRIALS = 5  # complete trials before the median pruner prunes (Optuna's default)
MAX_FOLDER = 100  # characters of a trial's folder name; a longer point id is cut and given a digest
# What a trial's value means: resuming a study with any of these changed would mix incomparable values.
STUDY_SETTINGS = ("metric", "target", "smoothing_window_s", "seeds", "base_overrides", "space", "score")


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


def requeue_finished_failures(study: Study, runs: TrialRuns, space: dict[str, Dimension]) -> list[int]:
    """Trials told failed whose runs are all complete now: their parameters asked again first, once.

    A study made before diverged runs counted as results (:func:`~amp_fl.run_folder.is_outcome`) told
    such a trial failed, so TPE never learnt from it; asked again, it finds its runs and is scored.
    Returns the numbers of the trials re-queued.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    requeued = {t.user_attrs.get("requeued_from") for t in trials}
    found = []
    for trial in trials:
        if trial.state != TrialState.FAIL or "failures" not in trial.user_attrs or trial.number in requeued:
            continue
        if not trial.params.keys() >= space.keys():
            continue
        jobs = make_jobs(runs.specs(trial_point(trial.params, space)), runs.runs_dir / runs.method)
        if all(is_complete(job.run_dir, job.values) for job in jobs):
            study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number})
            found.append(trial.number)
    return found


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
    """Trials told failed because a run failed (not those a killed process left running, nor those asked again)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    requeued = {t.user_attrs.get("requeued_from") for t in trials}
    return sum("failures" in t.user_attrs and t.number not in requeued for t in trials if t.state == TrialState.FAIL)


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
        "score": NEVER_REACHED_RULE,
    }
    runs = TrialRuns(method, base, seeds, metric, target, window_s, runs_dir)
    runs.check(space)  # a bad setting fails here, before a trial is asked
    storage = study_storage(reports_dir, method)
    study = open_study(storage, method, metric, settings)
    requeued = requeue_interrupted(study)
    if requeued:
        log(f"[tune] {method}: trial(s) {', '.join(map(str, requeued))} were left running: asked again")
    rescored = requeue_finished_failures(study, runs, space)
    if rescored:
        log(f"[tune] {method}: trial(s) {', '.join(map(str, rescored))} failed but their runs are results: asked again")
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
    # A record made before SeedResult kept "diverged": the run's folder says, where it is at hand.
    diverged = seed.diverged if "diverged" in recorded else has_diverged(Path(seed.run_dir))
    if time is None and diverged:
        return f"seed {seed.seed}: diverged at {seed.last_sim_time_s:.2f} s"
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
        f"mean over the seeds of the simulated time until the validation accuracy {reaches_text(payload)} the "
        f"target {payload['target']:g} (a seed that never does, or diverges: ({payload['never_reached_factor']:g} + "
        "the target - its best validation accuracy) x its run's planned length, sim_time_limit_s or its rounds); "
        "smaller is better"
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
