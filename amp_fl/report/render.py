"""Turning a :class:`~amp_fl.report.compare.Comparison` into Markdown tables and figures."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from amp_fl.report.compare import Comparison, SpeedupStats, TimesToTarget
from amp_fl.report.maths import SpeedupInterval, Spread, band, common_grid
from amp_fl.report.runs import Run
from amp_fl.run_folder import COMPLETED, SUMMARY_FILE

FIGURE_POINTS = 400
LEGEND_WIDTH = 60  # characters of a method's label in a legend


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def fmt_spread(s: Spread, digits: int = 2, scale: float = 1.0, unit: str = "") -> str:
    """``mean ± std`` (std over seeds, n - 1); just the mean for one seed; ``—`` for none."""
    if s.n == 0:
        return "—"
    mean = f"{scale * s.mean:.{digits}f}"
    if s.n == 1 or math.isnan(s.std):
        return f"{mean}{unit}"
    return f"{mean} ± {scale * s.std:.{digits}f}{unit}"


def fmt_range(s: Spread) -> str:
    """Whole numbers over seeds: ``300``, or ``120-300`` when the seeds differ."""
    if s.n == 0:
        return "—"
    return f"{s.min:.0f}" if s.min == s.max else f"{s.min:.0f}-{s.max:.0f}"


def fmt_accuracy(s: Spread) -> str:
    return fmt_spread(s, digits=2, scale=100.0)


def fmt_reached(s: Spread, reached: int, seeds: int, digits: int, unit: str = "") -> str:
    if reached == 0:
        return f"not reached (0/{seeds})"
    return f"{fmt_spread(s, digits=digits, unit=unit)} ({reached}/{seeds})"


def fmt_time(tt: TimesToTarget) -> str:
    """Mean simulated seconds to a target over the seeds that reached it, and how many did."""
    return fmt_reached(tt.sim_time_s, tt.reached, tt.seeds, digits=2, unit=" s")


def fmt_interval(iv: SpeedupInterval) -> str:
    """``1.62x [1.21, 2.05] (n=8)``: the ratio of mean times, its bootstrap interval and the paired seeds."""
    if iv.n == 0:
        return "—"
    if math.isnan(iv.low):
        return f"{iv.estimate:.2f}x (n={iv.n}, no interval)"
    return f"{iv.estimate:.2f}x [{iv.low:.2f}, {iv.high:.2f}] (n={iv.n})"


def fmt_speedup(sp: SpeedupStats, is_reference: bool) -> str:
    """The interval over the paired seeds, then the seeds it leaves out (with the bounds one-sided seeds give)."""
    if is_reference:
        return "1 (reference)"
    parts = [fmt_interval(sp.interval)] if sp.interval.n else []
    bounds = sp.per_seed
    if sp.only_method:
        low = f" (≥ {min(bounds.at_least.values()):.2f}x)" if bounds.at_least else ""
        parts.append(f"{len(sp.only_method)} seed(s) where only this method reached it{low}")
    if sp.only_reference:
        high = f" (≤ {max(bounds.at_most.values()):.2f}x)" if bounds.at_most else ""
        parts.append(f"{len(sp.only_reference)} seed(s) where only the reference reached it{high}")
    if sp.neither:
        parts.append(f"{len(sp.neither)} seed(s) where neither reached it")
    return "; ".join(parts) if parts else "—"


def target_text(target: float) -> str:
    return f"{100 * target:g} %"


def held_text(window_s: float) -> str:
    return f"held {window_s:g} s"


def summary_table(comparison: Comparison) -> list[str]:
    """The main table: one row per method (final/best accuracy, time to each target, speedup).

    Per target, the smoothed time (the target held for the comparison's window) and its speedup
    lead; the first crossing (rounds, time, speedup) follows. :func:`speedup_note` explains the
    speedup cells.
    """
    head = ["method", "dataset used", "seeds", "rounds", "final accuracy (%)", "best accuracy (%)"]
    at_time = comparison.ends_differ
    if at_time:
        head.append(f"accuracy at {comparison.common_time_s:.2f} s (%)")
    personal = any(s.personal_accuracy.n for s in comparison.stats)
    if personal:
        head.append("personalised accuracy (%)")
    with_speedup = comparison.reference is not None
    held = held_text(comparison.window_s)
    for t in comparison.targets:
        head.append(f"sim. seconds to {target_text(t)}, {held}")
        if with_speedup:
            head.append(f"speedup at {target_text(t)}, {held}")
        head += [f"rounds to {target_text(t)}, first crossing", f"sim. seconds to {target_text(t)}, first crossing"]
        if with_speedup:
            head.append(f"speedup at {target_text(t)}, first crossing")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for s in comparison.stats:
        cells = [
            s.label,
            ", ".join(s.group.datasets),
            ",".join(map(str, s.group.seeds)),
            fmt_range(s.last_round),
            fmt_accuracy(s.final_accuracy),
            fmt_accuracy(s.best_accuracy),
        ]
        if at_time:
            cells.append(fmt_accuracy(s.accuracy_at_common_time) if s.accuracy_at_common_time else "—")
        if personal:
            cells.append(fmt_accuracy(s.personal_accuracy))
        is_reference = s.label == comparison.reference
        for t in comparison.targets:
            ts = s.targets[t]
            cells.append(fmt_time(ts.smoothed))
            if with_speedup:
                cells.append(fmt_speedup(s.speedup[t].smoothed, is_reference))
            cells.append(fmt_reached(ts.first.rounds, ts.first.reached, ts.first.seeds, digits=1))
            cells.append(fmt_time(ts.first))
            if with_speedup:
                cells.append(fmt_speedup(s.speedup[t].first, is_reference))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def speedup_note(comparison: Comparison) -> list[str]:
    """What the time and speedup columns of :func:`summary_table` mean (printed under it)."""
    w = f"{comparison.window_s:g}"
    lines = [
        f"Time to a target, '{held_text(comparison.window_s)}' (leading): the first evaluated time at which the "
        f"mean test accuracy of the evaluations in the last {w} s of simulated time reached it; 'first crossing': "
        "the first evaluated round at or above it (a noisy curve crosses early). Means over the seeds that "
        "reached it, counted as (reached/seeds)."
    ]
    if comparison.reference is not None:
        lines += [
            "",
            f"Speedup over {comparison.reference}, shown as `estimate [low, high] (n=seeds)`: the ratio of mean "
            "times, mean T_reference / mean T_method, over the n seeds where both reached the target, and its "
            f"{100 * comparison.level:g} % paired bootstrap interval over seeds ({comparison.resamples} resamples "
            "of the seeds with replacement, each seed's two times kept together). Seeds where one side (or "
            "neither) never reached the target are excluded from it and counted beside it, with the bound a "
            "one-sided seed gives (that side's whole run).",
        ]
    return lines


def runs_table(comparison: Comparison, root: Path | None = None) -> list[str]:
    """One row per run folder: method, seed, status, rounds, simulated time, final accuracy."""
    lines = [
        "| method | seed | run folder | status | rounds | simulated s | final accuracy (%) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in comparison.stats:
        for run in s.group.runs:
            folder = _relative(run.path, root)
            lines.append(
                f"| {s.label} | {run.seed} | `{folder}` | {run.status} | {run.last_round} | "
                f"{run.final_sim_time_s:.2f} | {pct(run.final_accuracy)} |"
            )
    return lines


def _relative(path: Path, root: Path | None) -> str:
    if root is None:
        return str(path)
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def notes_for(comparison: Comparison) -> list[str]:
    """Warnings a reader must see: unfinished runs, mixed datasets, methods with different seeds."""
    notes = []
    for s in comparison.stats:
        for run in s.group.runs:
            if run.status != COMPLETED:
                notes.append(f"{s.label}, seed {run.seed}: status {run.status!r} ({run.last_round} rounds recorded).")
        if len(s.group.datasets) > 1:
            notes.append(f"{s.label}: its runs used different datasets ({', '.join(s.group.datasets)}).")
    datasets = sorted({d for s in comparison.stats for d in s.group.datasets})
    if len(datasets) > 1:
        notes.append(f"The methods were not all run on the same dataset ({', '.join(datasets)}).")
    for i, a in enumerate(comparison.stats):
        for b in comparison.stats[i + 1 :]:
            if _same_curves(a.group.runs, b.group.runs):
                notes.append(
                    f"{a.label} and {b.label} have the same test accuracy in every round of every seed "
                    "(the same global model sequence)."
                )
    if comparison.ends_differ:
        notes.append(
            f"The runs end at different simulated times (rounds of different latencies); the column "
            f"'accuracy at {comparison.common_time_s:.2f} s' compares every method at the time all runs reached."
        )
    seed_sets = {tuple(s.group.seeds) for s in comparison.stats}
    if len(seed_sets) > 1:
        notes.append("The methods do not share the same seeds; speedups pair only the seeds both have.")
    return notes


def _same_curves(a: Sequence[Run], b: Sequence[Run]) -> bool:
    if [r.seed for r in a] != [r.seed for r in b]:
        return False
    return all(
        x.accuracy.shape == y.accuracy.shape and bool(np.array_equal(x.accuracy, y.accuracy, equal_nan=True))
        for x, y in zip(a, b, strict=True)
    )


METHOD_TEXT = """How the numbers are computed: each method's runs are its seeds; "a ± b" is the mean and the
sample standard deviation (n - 1) over seeds. Final accuracy is the test accuracy after the last
round; best is the mean over seeds of each run's best evaluated accuracy; accuracy at a time is the
model each seed held then; personalised accuracy (APFL) is the last measured mean over devices of
each device's personalised model on its own label distribution. Time to a target is the first
evaluated round whose test accuracy reached it (round 0, the initial model, counts) and the
simulated wireless clock at the end of that round (the first crossing); the smoothed time ("held
1 s") is the first evaluated time at which the mean accuracy of the evaluations in the last second
of simulated time reached it, so one lucky evaluation does not count; the report leads with it. Its
mean is over the seeds that reached the target, counted as (reached/seeds). The speedup of a method
over the reference is the ratio of mean times T_reference / T_method on the simulated clock over
the seeds where both reached the target (paired by seed; above 1: faster than the reference), with
a paired bootstrap interval over seeds; a seed where only one of them reached the target is left
out of it and gives a bound (the other's whole run), listed separately. Curves: mean over
seeds with the min-max band, each seed's accuracy taken as a step function (the model the server
held at that time or round), up to where every seed of that method has data."""


def plot_comparison(
    comparison: Comparison, out_dir: Path, title: str = "", targets: Sequence[float] = ()
) -> list[Path]:
    """Several methods on one plot: accuracy vs simulated time, vs round, and average AoI vs round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    specs: list[tuple[str, str, str, str]] = [
        ("accuracy_vs_sim_time.png", "sim_time_s", "accuracy", "simulated time (s)"),
        ("accuracy_vs_round.png", "round", "accuracy", "round"),
    ]
    if all("avg_aoi" in r.columns for s in comparison.stats for r in s.group.runs):
        specs.append(("avg_aoi_vs_round.png", "round", "avg_aoi", "round"))
    paths = []
    for name, x_key, y_key, x_label in specs:
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
        for i, s in enumerate(comparison.stats):
            curves = [(_column(r, x_key), _column(r, y_key)) for r in s.group.runs]
            grid = common_grid([float(x[-1]) for x, _ in curves], FIGURE_POINTS)
            b = band(curves, grid)
            scale = 100.0 if y_key == "accuracy" else 1.0
            color = f"C{i % 10}"
            label = textwrap.shorten(s.label, LEGEND_WIDTH, placeholder="...")
            ax.plot(b.grid, scale * b.mean, color=color, lw=1.6, label=f"{label} (n={b.n})")
            if b.n > 1:
                ax.fill_between(b.grid, scale * b.low, scale * b.high, color=color, alpha=0.18, lw=0)
        if y_key == "accuracy":
            for t in targets:
                ax.axhline(100 * t, color="grey", ls="--", lw=0.8)
        ax.set_xlabel(x_label)
        ax.set_ylabel("test accuracy (%)" if y_key == "accuracy" else "average AoI (rounds)")
        if title:
            ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / name)
        plt.close(fig)
        paths.append(out_dir / name)
    return paths


def _column(run: Run, key: str) -> np.ndarray:
    return np.asarray(run.columns[key], dtype=np.float64)


def markdown(
    comparison: Comparison,
    *,
    title: str,
    command: str,
    figures: Sequence[Path],
    out_dir: Path,
    extra: Sequence[str] = (),
) -> str:
    """The whole ``report.md`` of a comparison (``extra``: sections inserted after the main table)."""
    lines = [f"# {title}", "", f"Made by: `{command}`", ""]
    datasets = sorted({d for s in comparison.stats for d in s.group.datasets})
    lines += [f"Dataset actually used (from each run's {SUMMARY_FILE}): {', '.join(datasets)}.", ""]
    if comparison.reference is not None:
        lines += [f"Speedups are over **{comparison.reference}** (simulated time to the target).", ""]
    lines += summary_table(comparison)
    lines += ["", *speedup_note(comparison)]
    lines += ["", *extra]
    notes = notes_for(comparison)
    if notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{p.stem}]({_relative(p, out_dir)})" for p in figures]
    lines += ["", "## Runs", "", *runs_table(comparison, Path.cwd()), "", METHOD_TEXT, ""]
    return "\n".join(lines)
