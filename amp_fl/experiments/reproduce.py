"""Reproduce the paper's figures: ``python -m amp_fl.experiments.reproduce <figure|quick|all> [--scale paper|quick]``.

For each figure (:mod:`amp_fl.experiments.figures`) the driver expands the design into runs
(panel x swept value x method x seed), composes each run's configuration with Hydra from
``conf/`` (the figure's ``experiment`` preset plus the run's overrides), runs the runs that are
not complete yet, and writes ``reports/<name>/report.md`` with figures through
:mod:`amp_fl.report`.

Runs go to ``runs/reproduce/<name>/<run id>/``. Running, resuming and the engines are
:mod:`amp_fl.experiments.campaign`'s: a run finished with the configuration the design asks for now
is kept; anything else (never started, interrupted, failed, or made with other settings) is run
again, so an interrupted reproduction resumes where it stopped when the same command is given again.
``--engine inprocess`` (default) runs ``--jobs`` runs side by side; ``flower`` one at a time
through ``flwr run``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from amp_fl.experiments.campaign import (
    ENGINES,
    PROJECT_ROOT,
    Job,
    RayCluster,
    add_cluster_arguments,
    check_engine,
    cluster_from_args,
    compose_values,
    execute,
    is_complete,
    make_jobs,
    per_round_seconds,
)
from amp_fl.experiments.cli import campaign_cli, check_folders, error_line, positive_int
from amp_fl.experiments.figures import (
    DATASETS,
    FIGURES,
    PAPER_FIGURES,
    SCALES,
    DatasetChoice,
    Figure,
    RunSpec,
    Scale,
    expand,
)
from amp_fl.experiments.selection import TUNING_FILE
from amp_fl.run_folder import RunFolderError, read_summary, read_timing


def report_name(figure: Figure, scale: Scale, dataset: DatasetChoice) -> str:
    """``fig8`` (paper scale, Fashion-MNIST), ``fig8-quick``, ``fig8-cifar10``; ``quick`` for the quick headline."""
    name = figure.name
    if scale.name != "paper" and figure.name != scale.name:
        name += f"-{scale.name}"
    if dataset.name != "fashion_mnist":
        name += f"-{dataset.name}"
    return name


def expand_figure(figure: Figure, scale: Scale, dataset: DatasetChoice, extra: Sequence[str] = ()) -> list[RunSpec]:
    """:func:`~amp_fl.experiments.figures.expand` with the preset's number of rounds read from ``conf/``."""
    preset = [f"experiment={scale.preset_prefix}{figure.preset}", *dataset.overrides]
    base_rounds = int(compose_values(preset)["num_rounds"])
    return expand(figure, scale, dataset, tuple(extra), base_rounds)


# Methods whose tuning would only repeat another's: APFL's global model is Synchronous FL's, bit for
# bit at equal settings (APFL adds a personal model beside it, which never reaches the server;
# tests/test_apfl.py and tests/test_methods_flower.py; measured on the tuning runs too: identical
# metrics.csv test and validation columns). Tuning its
# learning rate on the global model's validation accuracy therefore chooses what Synchronous FL's
# tuning chose; without its own tuning.json, APFL takes Synchronous FL's.
TUNED_AS = {"apfl": "synchronous"}


def tuning_file(tuned_dir: Path, method: str) -> Path | None:
    """``<tuned_dir>/<method>/tuning.json``, else the one of the method it is tuned as (:data:`TUNED_AS`), else None."""
    for name in (method, TUNED_AS.get(method)):
        if name is not None and (tuned_dir / name / TUNING_FILE).is_file():
            return tuned_dir / name / TUNING_FILE
    return None


TunedDirs = Path | Sequence[Path] | None


def with_tuned(specs: Sequence[RunSpec], tuned: TunedDirs, extra: Sequence[str] = ()) -> list[RunSpec]:
    """Each run with its method's tuned values (``<dir>/<method>/tuning.json``'s ``chosen_overrides``,
    written by :mod:`amp_fl.experiments.tune`), placed before the user's ``extra`` so those still win.

    A run's method is its last ``method=`` override; a method without a tuning.json takes the one of
    the method it is tuned as (:data:`TUNED_AS`), else keeps its preset's values. With several
    directories (tuning in stages: a later stage tunes other keys with the earlier stages' choices
    fixed) each directory's choices follow the previous ones', so a later stage wins on a shared key.
    """
    dirs = [] if tuned is None else [tuned] if isinstance(tuned, Path) else list(tuned)
    out = []
    for spec in specs:
        method = next((o.split("=", 1)[1] for o in reversed(spec.overrides) if o.startswith("method=")), None)
        chosen: list[str] = []
        for tuned_dir in dirs:
            path = tuning_file(tuned_dir, method) if method else None
            if path is not None:
                chosen += [str(o) for o in json.loads(path.read_text())["chosen_overrides"]]
        if not chosen:
            out.append(spec)
            continue
        cut = len(spec.overrides) - len(extra)
        out.append(replace(spec, overrides=(*spec.overrides[:cut], *chosen, *spec.overrides[cut:])))
    return out


def plan(
    figure: Figure,
    scale: Scale,
    dataset: DatasetChoice,
    runs_root: Path,
    extra: tuple[str, ...] = (),
    tuned_dir: TunedDirs = None,
) -> tuple[list[RunSpec], list[Job[RunSpec]], list[Job[RunSpec]]]:
    """The figure's runs (with the tuned values in ``tuned_dir``, if given), split into complete and to run."""
    specs = with_tuned(expand_figure(figure, scale, dataset, extra), tuned_dir, extra)
    done: list[Job[RunSpec]] = []
    todo: list[Job[RunSpec]] = []
    for job in make_jobs(specs, runs_root):
        (done if is_complete(job.run_dir, job.values) else todo).append(job)
    return specs, done, todo


# ------------------------------------------------------------------------------------------ report
def _settings_text(values: dict[str, Any], figure: Figure, jobs: Sequence[Job[RunSpec]] = ()) -> str:
    w = values["wireless"]
    by_rounds: dict[int, list[str]] = {}
    for job in jobs:
        labels = by_rounds.setdefault(int(job.values["num_rounds"]), [])
        if job.spec.series not in labels:
            labels.append(job.spec.series)
    rounds = (
        ", ".join(f"{n} rounds ({', '.join(labels)})" for n, labels in by_rounds.items())
        if len(by_rounds) > 1
        else f"{values['num_rounds']} rounds"
    )
    limit = values.get("sim_time_limit_s")
    if limit is not None:  # the horizon ends the runs; num_rounds only caps them
        rounds = f"{limit:g} s of simulated time (sim_time_limit_s; round caps: {rounds})"
    parts = [
        rounds,
        f"K = {w['num_devices']} devices",
        f"R = {w['num_rbs']} RBs (unless swept)",
        f"model {values['model']['name']}",
        f"{values['dataset']['partition']} partition, s = {values['dataset']['shards_per_device']} "
        "(unless a panel sets it)",
        f"learning rate {values['train']['learning_rate']}, {values['train']['local_steps']} local steps of "
        f"batch {values['train']['batch_size']}",
        f"preset conf/experiment/{values.get('_preset', figure.preset)}.yaml",
    ]
    return "; ".join(parts) + "."


def _timing_lines(jobs: Sequence[Job[RunSpec]]) -> list[str]:
    """Wall and CPU time per method, as measured when the runs were made (a machine shared with other
    work inflates wall time; CPU seconds of a single-threaded worker approximate an idle core's wall time)."""
    rows = []
    for job in jobs:
        per_round = per_round_seconds(job.run_dir)
        timing = read_timing(job.run_dir)
        rounds = max(1, rounds_run(job))
        cpu = float(timing.get("cpu_s", float("nan")))
        rows.append((job.spec.series, per_round, float(timing.get("wall_s", float("nan"))), cpu / rounds))
    if not rows:
        return ["No runs."]
    lines = [
        "Measured when the runs were made (wall seconds per round: median over the rounds of each run; "
        "whole-run CPU seconds over rounds; total wall time of the method's runs). Workers running side by "
        "side slow each other (on 2 cores, two workers each take about 1.8x a lone worker's time per round), "
        "and other work on the machine inflates these times further.",
        "",
        "| method | runs | median wall s/round | CPU s/round (whole run / rounds) | wall time of its runs (min) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == label]
        per = [r[1] for r in mine if np.isfinite(r[1])]
        tot = [r[2] for r in mine if np.isfinite(r[2])]
        cpus = [r[3] for r in mine if np.isfinite(r[3])]
        lines.append(
            f"| {label} | {len(mine)} | {np.median(per) if per else float('nan'):.2f} | "
            f"{np.median(cpus) if cpus else float('nan'):.2f} | {sum(tot) / 60:.1f} |"
        )
    return lines


def rounds_run(job: Job[RunSpec]) -> int:
    """The rounds a finished run ran (a time horizon may stop it before its num_rounds cap)."""
    try:
        return int(read_summary(job.run_dir).get("rounds_completed") or job.values["num_rounds"])
    except RunFolderError:
        return int(job.values["num_rounds"])


def report_targets(figure: Figure, scale: Scale, dataset: DatasetChoice) -> list[float]:
    """The scale's (or the dataset's) targets, plus the targets of the paper's claims on this task."""
    own = scale.targets if scale.targets is not None else dataset.targets
    claimed = {c.target for c in figure.claims if c.target is not None and c.family == dataset.family}
    return sorted({*own, *claimed})


def build_report(
    figure: Figure,
    scale: Scale,
    dataset: DatasetChoice,
    specs: Sequence[RunSpec],
    jobs: Sequence[Job[RunSpec]],
    report_dir: Path,
    command: str,
    engine: str,
) -> Path:
    from amp_fl.experiments.figure_report import panel_results, write_figure_report
    from amp_fl.report.runs import load_run

    runs = {}
    missing = []
    for job in jobs:
        if not is_complete(job.run_dir, job.values):
            missing.append(job.spec.run_id)
            continue
        try:
            runs[job.spec.run_id] = load_run(job.run_dir)
        except RunFolderError as exc:
            missing.append(f"{job.spec.run_id} ({exc})")
    targets = report_targets(figure, scale, dataset)
    panels = panel_results(figure, specs, runs, targets)
    engine_text = {
        "inprocess": "the in-process loop (`amp_fl/launch/inprocess.py`: the project's ServerApp and ClientApp "
        "code without SuperLink or Ray; its metrics equal the Flower simulation engine's for the same seed, "
        "which a test checks)",
        "flower": "Flower's simulation engine (`flwr run`, one SuperNode per device)",
    }[engine]
    values = dict(jobs[0].values)
    values["_preset"] = f"{scale.preset_prefix}{figure.preset}"
    return write_figure_report(
        figure=figure,
        scale=scale,
        dataset=dataset,
        specs=specs,
        panels=panels,
        report_dir=report_dir,
        command=command,
        engine=engine_text,
        settings=_settings_text(values, figure, jobs),
        targets=scale.targets if scale.targets is not None else dataset.targets,
        timing=_timing_lines([j for j in jobs if j.spec.run_id in runs]),
        missing=missing,
    )


# ------------------------------------------------------------------------------------------ CLI
def reproduce(
    name: str,
    *,
    scale_name: str | None = None,
    dataset_name: str = "fashion_mnist",
    engine: str = "inprocess",
    jobs: int | None = None,
    runs_dir: Path = PROJECT_ROOT / "runs" / "reproduce",
    reports_dir: Path = PROJECT_ROOT / "reports",
    command: str = "",
    dry_run: bool = False,
    extra: Sequence[str] = (),
    log: Any = print,
    tuned_dir: TunedDirs = None,
    cluster: RayCluster | None = None,
) -> list[Path]:
    """Run (or resume) figure ``name`` (a figure, ``quick`` or ``all``) and write its report(s); returns the reports."""
    if name == "all":
        names: Sequence[str] = PAPER_FIGURES
    elif name in FIGURES:
        names = (name,)
    else:
        raise ValueError(f"name: unknown figure {name!r}; choose from {', '.join([*FIGURES, 'all'])}")
    if scale_name is None:
        scale_name = "quick" if name == "quick" else "paper"
    if scale_name not in SCALES:
        raise ValueError(f"scale: unknown scale {scale_name!r}; choose from {', '.join(SCALES)}")
    if dataset_name not in DATASETS:
        raise ValueError(f"dataset: unknown dataset {dataset_name!r}; choose from {', '.join(DATASETS)}")
    check_engine(engine)
    workers = jobs or (os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"jobs: must be >= 1, got {workers}")
    scale, dataset = SCALES[scale_name], DATASETS[dataset_name]
    reports = []
    for fig_name in names:
        figure = FIGURES[fig_name]
        out_name = report_name(figure, scale, dataset)
        path = reproduce_figure(
            figure,
            scale,
            dataset,
            runs_root=runs_dir / out_name,
            report_dir=reports_dir / out_name,
            engine=engine,
            workers=workers,
            command=command,
            dry_run=dry_run,
            extra=extra,
            log=log,
            tuned_dir=tuned_dir,
            cluster=cluster,
        )
        if path is not None:
            reports.append(path)
    return reports


def reproduce_figure(
    figure: Figure,
    scale: Scale,
    dataset: DatasetChoice,
    *,
    runs_root: Path,
    report_dir: Path,
    engine: str = "inprocess",
    workers: int = 1,
    command: str = "",
    dry_run: bool = False,
    extra: Sequence[str] = (),
    log: Any = print,
    tuned_dir: TunedDirs = None,
    cluster: RayCluster | None = None,
) -> Path | None:
    """Run the figure's missing runs under ``runs_root`` and write ``report_dir/report.md`` (None for a dry run).

    Raises ``RuntimeError`` listing the runs that failed, after writing the report of the others.
    """
    specs, done, todo = plan(figure, scale, dataset, runs_root, tuple(extra), tuned_dir)
    todo.sort(key=expected_cost, reverse=True)  # longest first: the workers finish together
    rounds = sum(int(j.values["num_rounds"]) for j in todo)
    at_a_time = f"{workers if engine == 'inprocess' else 1} at a time"
    if cluster is not None:
        at_a_time = f"on the Ray cluster {cluster.address}"
    log(
        f"[reproduce] {report_dir.name}: {len(specs)} runs, {len(done)} complete, {len(todo)} to run "
        f"({rounds} rounds; engine {engine}, {at_a_time})"
    )
    if dry_run:
        for job in todo:
            log(f"  {job.spec.run_id}: python -m amp_fl {' '.join(job.spec.overrides)}")
        return None
    failures = execute(todo, engine, workers, log, name="reproduce", cluster=cluster)
    by_id = {j.spec.run_id: j for j in [*done, *todo]}
    jobs = [by_id[s.run_id] for s in specs]
    path = build_report(figure, scale, dataset, specs, jobs, report_dir, command, engine)
    log(f"[reproduce] report: {path}")
    if failures:
        raise RuntimeError(f"{len(failures)} run(s) failed: " + "; ".join(failures))
    return path


def expected_cost(job: Job[RunSpec]) -> float:
    """A rough relative cost of a run, to start the longest first: rounds x devices trained per round.

    APFL trains two models per step and evaluates personal models, about twice a plain run's cost here.
    """
    values = job.values
    per_round = values["scheduling"].get("num_scheduled") or values["wireless"]["num_rbs"]
    factor = 2.0 if values["strategy"].get("local_objective") == "apfl" else 1.0
    return float(values["num_rounds"]) * float(per_round) * factor


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m amp_fl.experiments.reproduce",
        description="Run the paper's figures (resuming what is complete) and write reports/<name>/report.md.",
    )
    parser.add_argument("figure", help=f"one of {', '.join(FIGURES)}, or all ({', '.join(PAPER_FIGURES)})")
    parser.add_argument("--scale", choices=tuple(SCALES), help="paper (default) or quick (default for 'quick')")
    parser.add_argument("--dataset", default="fashion_mnist", choices=tuple(DATASETS), help="default fashion_mnist")
    parser.add_argument("--engine", default="inprocess", choices=ENGINES, help="default inprocess")
    parser.add_argument("--jobs", type=positive_int, help="in-process runs side by side (default: the number of CPUs)")
    parser.add_argument("--runs-dir", type=Path, default=PROJECT_ROOT / "runs" / "reproduce")
    parser.add_argument("--reports-dir", type=Path, default=PROJECT_ROOT / "reports")
    parser.add_argument("--dry-run", action="store_true", help="list the runs still to do and stop")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override added to every run, last (e.g. num_rounds=10 for a smoke test); repeatable",
    )
    parser.add_argument(
        "--tuned",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="use each method's tuned values from DIR/<method>/tuning.json (python -m amp_fl.experiments.tune); "
        "repeatable for tuning in stages (a later DIR wins on a shared key)",
    )
    add_cluster_arguments(parser)
    args = parser.parse_args(argv)
    command = shlex.join(
        ["python", "-m", "amp_fl.experiments.reproduce", *(sys.argv[1:] if argv is None else list(argv))]
    )
    try:
        check_folders({"--runs-dir": args.runs_dir, "--reports-dir": args.reports_dir})
        reproduce(
            args.figure,
            scale_name=args.scale,
            dataset_name=args.dataset,
            engine=args.engine,
            jobs=args.jobs,
            runs_dir=args.runs_dir,
            reports_dir=args.reports_dir,
            command=command,
            dry_run=args.dry_run,
            extra=args.override,
            tuned_dir=args.tuned,
            cluster=cluster_from_args(args),
        )
    except KeyboardInterrupt:
        print("[reproduce] interrupted: give the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError) as exc:
        print(error_line(exc), file=sys.stderr)
        return 1 if isinstance(exc, RuntimeError) else 2
    return 0


if __name__ == "__main__":
    sys.exit(campaign_cli(main))
