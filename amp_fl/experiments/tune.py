"""Tune a method on the validation split: ``python -m amp_fl.experiments.tune <method> --grid KEY=V1,V2 ...``.

For a fair comparison (issue 9) every method gets its hyper-parameters chosen the same way: a grid
over the given keys, each point run for every seed with the in-process engine, scored on the
*validation* split held out of the training set (``dataset.validation_fraction``, set here to
``--validation-fraction`` unless a ``--set`` gives it), never on the test set. Metrics:

- ``val_time_to_target``: simulated seconds until the validation accuracy first reaches
  ``--target``. A point ranks by (seeds that never reached it, mean time over the seeds that did,
  minus its mean final validation accuracy): reaching the target on every seed comes first.
  Each run stops once it reaches the target (``evaluation.stop_at_val_accuracy``; ``--no-stop``
  runs to the end), so its final accuracy is not comparable across points and only breaks ties.
- ``val_final``: mean over seeds of the validation accuracy averaged over the last 10% of the
  rounds (at least one round): less noisy than the last round alone. Higher is better.

Writes ``<reports-dir>/<method>/tuning.json`` and ``tuning.md`` (every point's validation numbers
and the chosen values) and prints the chosen overrides, e.g.
``train.learning_rate=0.05 strategy.proximal_mu=0.01``, ready to add to a reproduction command.
Runs go to ``<runs-dir>/<method>/<point>/seed<s>/``; a run that is complete with the same
configuration is not run again (as in :mod:`amp_fl.experiments.reproduce`), so an interrupted
tuning resumes where it stopped.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amp_fl.experiments.campaign import (
    PROJECT_ROOT,
    Job,
    RayCluster,
    add_cluster_arguments,
    cluster_from_args,
    execute,
    make_jobs,
    still_to_run,
)
from amp_fl.experiments.cli import campaign_cli, check_folders, error_line
from amp_fl.experiments.figures import RunSpec, slug
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


def check_validation_split(jobs: Sequence[Job[Any]]) -> None:
    if any(float(job.values["dataset"].get("validation_fraction", 0.0)) <= 0.0 for job in jobs):
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
    check_validation_split(jobs)
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
        description="Grid-tune a method on the validation split; writes reports/tuning/<method>/tuning.{md,json}.",
    )
    parser.add_argument("method", help="a method preset (conf/method/*.yaml), e.g. amp_fl, synchronous, fedprox")
    parser.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2", help="a key and its values; repeatable"
    )
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--rounds", type=int, help="num_rounds of every run (default: the preset's)")
    parser.add_argument("--metric", default="val_time_to_target", choices=METRICS)
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
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (default 1)")
    parser.add_argument(
        "--no-stop",
        action="store_true",
        help="run every run to num_rounds (default with val_time_to_target: stop once the target is reached)",
    )
    parser.add_argument("--runs-dir", type=Path, default=PROJECT_ROOT / "runs" / "tuning")
    parser.add_argument("--reports-dir", type=Path, default=PROJECT_ROOT / "reports" / "tuning")
    add_cluster_arguments(parser)
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "amp_fl.experiments.tune", *(sys.argv[1:] if argv is None else argv)])
    try:
        check_folders({"--runs-dir": args.runs_dir, "--reports-dir": args.reports_dir})
        payload = tune(
            args.method,
            parse_grid(args.grid),
            seeds=[int(s) for s in args.seeds.split(",") if s.strip()],
            rounds=args.rounds,
            metric=args.metric,
            target=args.target,
            sets=args.set,
            validation_fraction=args.validation_fraction,
            runs_dir=args.runs_dir,
            reports_dir=args.reports_dir,
            workers=args.jobs,
            stop_at_target=not args.no_stop,
            fixed=args.fix,
            command=command,
            cluster=cluster_from_args(args),
        )
    except KeyboardInterrupt:
        print("[tune] interrupted: give the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError) as exc:
        print(error_line(exc), file=sys.stderr)
        return 1 if isinstance(exc, RuntimeError) else 2
    print("chosen: " + " ".join(payload["chosen_overrides"]))
    return 0


if __name__ == "__main__":
    sys.exit(campaign_cli(main))
