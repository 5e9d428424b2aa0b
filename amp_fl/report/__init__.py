"""Comparing runs: ``python -m amp_fl.report RUN [RUN ...] --out DIR [--targets 0.7 0.75] [--labels ...]``.

:mod:`.maths` holds the pure numbers (spread over seeds, speedups and their bootstrap intervals, curve bands),
:mod:`.runs` reads and groups run folders, :mod:`.compare` computes a comparison, :mod:`.render`
writes its Markdown and figures, and :func:`write_report` does all of it for a list of folders.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from amp_fl.report.compare import Comparison, compare, to_jsonable
from amp_fl.report.render import markdown, plot_comparison
from amp_fl.report.runs import Group, Run, RunFolderError, group_runs, load_run
from amp_fl.run_folder import METRICS_FILE, SUMMARY_FILE

REPORT_FILE = "report.md"
COMPARISON_FILE = "comparison.json"


def default_targets(runs: Sequence[Run]) -> tuple[float, ...]:
    """The target accuracies the runs were configured with (``strategy.target_accuracy``)."""
    found = set()
    for run in runs:
        value = run.summary.get("time_to_target_accuracy", {}).get("target")
        if value is None:
            value = run.config.get("strategy", {}).get("target_accuracy")
        if isinstance(value, int | float):
            found.add(float(value))
    return tuple(sorted(found)) or (0.9,)


def write_report(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    targets: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    reference: str | None = None,
    title: str | None = None,
    command: str | None = None,
) -> Comparison:
    """Read ``paths`` (run folders), group them, write ``report.md``, ``comparison.json`` and figures to ``out_dir``."""
    if not paths:
        raise ValueError("paths: give at least one run folder")
    runs = [load_run(p) for p in paths]
    groups: list[Group] = group_runs(runs, labels)
    chosen = tuple(targets) if targets else default_targets(runs)
    comparison = compare(groups, chosen, reference)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    heading = title or f"Comparison of {len(groups)} method(s), {len(runs)} run(s)"
    figures = plot_comparison(comparison, out, heading, chosen)
    text = markdown(
        comparison,
        title=heading,
        command=command or shlex.join(["python", "-m", "amp_fl.report", *map(str, paths), "--out", str(out_dir)]),
        figures=figures,
        out_dir=out,
    )
    (out / REPORT_FILE).write_text(text)
    (out / COMPARISON_FILE).write_text(json.dumps(to_jsonable(comparison), indent=2) + "\n")
    return comparison


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m amp_fl.report",
        description="Compare run folders: groups seeds of one method, writes report.md, comparison.json and figures.",
    )
    parser.add_argument(
        "runs", nargs="+", type=Path, help=f"run folders (each holding {METRICS_FILE} and {SUMMARY_FILE})"
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for report.md, comparison.json, figures")
    parser.add_argument(
        "--targets", nargs="+", type=float, help="target accuracies in (0, 1] (default: the runs' target_accuracy)"
    )
    parser.add_argument(
        "--labels", nargs="+", help="one label per run folder; runs with the same label are seeds of one method"
    )
    parser.add_argument("--reference", help="label of the method speedups are measured against (default: the first)")
    parser.add_argument("--title", help="title of the report")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "amp_fl.report", *(sys.argv[1:] if argv is None else argv)])
    try:
        comparison = write_report(
            args.runs,
            args.out,
            targets=args.targets,
            labels=args.labels,
            reference=args.reference,
            title=args.title,
            command=command,
        )
    except (RunFolderError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[amp-fl] compared {len(comparison.stats)} method(s): {args.out / REPORT_FILE}")
    return 0


__all__ = ["Comparison", "RunFolderError", "compare", "load_run", "main", "write_report"]
