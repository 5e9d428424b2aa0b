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
  ``NEVER_REACHED_FACTOR`` (2) x its run's planned length (a diverged run counts as never reaching it).
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
import itertools
import json
import math
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amp_fl.experiments.campaign import (
    PROJECT_ROOT,
    RayCluster,
    add_cluster_arguments,
    cluster_from_args,
    execute,
    make_jobs,
    still_to_run,
)
from amp_fl.experiments.cli import campaign_cli, check_folders, error_line, positive_int, seed_list
from amp_fl.experiments.figures import RunSpec
from amp_fl.experiments.selection import (
    ALIASES,
    METRICS,
    SEARCHES,
    TIME_METRICS,
    TUNING_FILE,
    PointResult,
    base_overrides,
    check_tuning_settings,
    check_validation_split,
    finite_or_none,
    point_id,
    reaches_text,
    read_seed,
    stop_rule,
    time_text,
)
from amp_fl.experiments.tpe import PRUNERS, STARTUP_TRIALS, parse_space, tune_tpe

if TYPE_CHECKING:  # optuna is imported where it is used: reproduce reads TUNING_FILE from here
    pass

from amp_fl.run_folder import (
    SMOOTHING_WINDOW_S,
)


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
                "mean_val_smoothed_time_to_target": finite_or_none(p.mean_time_by("val_smoothed_time_to_target")),
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
        f"Points best first. Time: simulated seconds until the validation accuracy {reaches_text(payload)} the target "
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
        per_seed = "; ".join(
            f"seed {s.seed}: {time_text(s.time_to_target(timed))} s, {s.val_final:.4f}" for s in p.seeds
        )
        reached = len(p.seeds) - p.missed_by(timed)
        time = time_text(finite_or_none(p.mean_time_by(timed)))
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
    parser.add_argument("--trials", type=positive_int, help="TPE: complete trials the study must hold (the budget)")
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
        "--workers", type=positive_int, help="TPE: runs side by side (default --jobs: one per trial asked at once)"
    )
    parser.add_argument("--seeds", type=seed_list, default=(0,), help="comma-separated seeds (default 0)")
    parser.add_argument("--rounds", type=positive_int, help="num_rounds of every run (default: the preset's)")
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
        "--jobs", type=positive_int, default=1, help="grid: runs side by side; TPE: trials asked at once (default 1)"
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
            seeds=list(args.seeds),
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
