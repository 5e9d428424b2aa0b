"""The report of one reproduced figure: our numbers beside the paper's, per panel tables and plots.

Uses :mod:`amp_fl.report` for everything about runs (reading, statistics over seeds, tables,
curves); adds what is specific to a figure: the paper-versus-ours table (:func:`evaluate_claim`),
the tables and plots against a swept parameter (Figs. 3 and 10), and the provenance (command,
engine, dataset, presets).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amp_fl.experiments.figures import DatasetChoice, Family, Figure, PaperClaim, RunSpec, Scale
from amp_fl.report.compare import Comparison, TimesToTarget, compare, speedup_stats, to_jsonable
from amp_fl.report.maths import SpeedupInterval, Spread, spread, step_resample, value_at
from amp_fl.report.render import (
    METHOD_TEXT,
    fmt_accuracy,
    fmt_interval,
    fmt_spread,
    held_text,
    notes_for,
    plot_comparison,
    speedup_note,
    summary_table,
    target_text,
)
from amp_fl.report.runs import Group, Run
from amp_fl.run_folder import SUMMARY_FILE


@dataclass(frozen=True)
class PanelResult:
    """The runs of one panel, grouped by method (and swept value), and their comparison (None: no runs yet)."""

    name: str
    title: str
    groups: list[Group]
    comparison: Comparison | None


@dataclass(frozen=True)
class ClaimResult:
    claim: PaperClaim
    paper: str
    ours: str
    verdict: str


# ------------------------------------------------------------------------------------------ numbers
def sweep_metric(run: Run, figure: Figure, family: Family, column: str = "accuracy") -> tuple[float, str]:
    """The quantity a sweep figure plots for one run: after the last round, or at the figure's simulated time.

    Returns the value and a note ("" or why it is read at the run's end).
    """
    values = run.columns.get(column)
    if values is None:
        return math.nan, f"no {column} column"
    at = figure.at_time_s.get(family)
    if at is None:
        return float(values[-1]), ""
    if run.final_sim_time_s < at:
        return float(values[-1]), f"run ended at {run.final_sim_time_s:.1f} s < {at:g} s: value at its end"
    return value_at(run.sim_time_s, values, at), ""


def _per_seed_final(comparison: Comparison, label: str) -> dict[int, float]:
    return {r.seed: r.final_accuracy for r in comparison.by_label(label).group.runs}


def _fmt_paper(claim: PaperClaim) -> str:
    if math.isnan(claim.value):
        return claim.text
    unit = {
        "speedup": f"{claim.value:g}x",
        "accuracy_gain": f"+{claim.value:g} points",
        "time_to_target": f"{claim.value:g} s",
        "time_saving": f"{100 * claim.value:g} % less time",
        "trend": "",
    }[claim.kind]
    return f"{unit}: {claim.text}"


def _direction(ours: float, paper_positive: bool = True) -> str:
    if math.isnan(ours):
        return "not measurable"
    return "same direction" if (ours > 0) == paper_positive else "opposite direction"


def accuracy_gain(
    comparison: Comparison, method: str, baselines: Sequence[str], at_time_s: float | None = None
) -> tuple[float, str, Spread]:
    """Accuracy of ``method`` minus the best baseline's (points), after the last round or at ``at_time_s``.

    Returns the difference of the means over seeds, the best baseline, and the per-seed paired spread.
    """

    def per_seed(label: str) -> dict[int, float]:
        if at_time_s is None:
            return _per_seed_final(comparison, label)
        return {r.seed: value_at(r.sim_time_s, r.accuracy, at_time_s) for r in comparison.by_label(label).group.runs}

    def mean(label: str) -> float:
        values = [v for v in per_seed(label).values() if math.isfinite(v)]
        return float(np.mean(values)) if values else math.nan

    best = max(baselines, key=lambda b: -math.inf if math.isnan(mean(b)) else mean(b))
    ours, theirs = per_seed(method), per_seed(best)
    diffs = [100 * (ours[s] - theirs[s]) for s in sorted(set(ours) & set(theirs))]
    diffs = [d for d in diffs if math.isfinite(d)]
    return (100 * (mean(method) - mean(best)), best, spread(diffs))


def evaluate_claim(claim: PaperClaim, comparison: Comparison | None, targets: Sequence[float]) -> ClaimResult:
    """Our number for a numeric claim, computed exactly as the paper's is described (see :class:`PaperClaim`)."""
    paper = _fmt_paper(claim)
    if comparison is None:
        return ClaimResult(claim, paper, "no runs", "not measured")
    labels = [s.label for s in comparison.stats]
    missing = [x for x in (claim.method, *claim.baselines) if x not in labels]
    if missing:
        return ClaimResult(claim, paper, f"no runs of {', '.join(missing)}", "not measured")
    if claim.kind == "accuracy_gain":
        at = None
        if claim.at_equal_time:
            at = min(
                r.final_sim_time_s for x in (claim.method, *claim.baselines) for r in comparison.by_label(x).group.runs
            )
        gain, best, paired = accuracy_gain(comparison, claim.method, claim.baselines, at)
        when = "after the last round" if at is None else f"at {at:.2f} s, the time every run reached"
        ours = f"{gain:+.2f} points vs {best} {when} (per seed: {fmt_spread(paired)})"
        return ClaimResult(claim, paper, ours, _direction(gain))
    if claim.kind in ("speedup", "time_saving", "time_to_target"):
        check = [claim.target] if claim.target is not None else []
        parts, verdicts = [], {}
        for t in [*check, *(x for x in targets if x not in check)]:
            text, value, interval = _timed(claim, comparison, t)
            if claim.kind == "speedup":
                # The paper's speedup is the first crossing's; the smoothed one (the target held for a
                # window) stands beside it, with its interval, and judges our own goals.
                held, held_value, held_interval = _timed(claim, comparison, t, smoothed=True)
                held_label = held_text(comparison.window_s)
                if claim.goal:
                    text, value, interval = f"{held_label}: {held}; first crossing: {text}", held_value, held_interval
                else:
                    text = f"first crossing: {text}; {held_label}: {held}"
            mark = " (paper's target)" if t == claim.target else ""
            parts.append(f"at {target_text(t)}{mark}: {text}")
            verdicts[t] = _timed_verdict(claim, value, interval)
        first = verdicts[claim.target] if claim.target is not None else next(iter(verdicts.values()), "")
        verdict = first if claim.target is None else f"at {target_text(claim.target)}: {first}"
        if first == "not measurable":
            ours_only = [f"at {target_text(t)}: {v}" for t, v in verdicts.items() if t != claim.target]
            verdict = "; ".join([verdict, *ours_only])
        return ClaimResult(claim, paper, "; ".join(parts), verdict)
    return ClaimResult(claim, paper, "(trend: see below)", "")


def _timed(
    claim: PaperClaim, comparison: Comparison, target: float, smoothed: bool = False
) -> tuple[str, float, SpeedupInterval | None]:
    """Our number for a timed claim at ``target``: its text, its value and (smoothed speedups) its interval.

    Times to the target are the first crossing, or with ``smoothed`` the time the target was held
    for the comparison's window. A first-crossing speedup is the paper's: the mean over paired seeds
    of ``T_baseline / T_method``; a smoothed one is the ratio of mean times with its paired bootstrap
    interval (:func:`~amp_fl.report.maths.speedup_interval`).
    """

    def times(label: str) -> TimesToTarget:
        ts = comparison.by_label(label).targets[target]
        return ts.smoothed if smoothed else ts.first

    method = comparison.by_label(claim.method)
    if target not in method.targets:
        return "target not computed", math.nan, None
    mt = times(claim.method)
    if claim.kind == "time_to_target":
        if mt.reached == 0:
            return f"not reached (0/{mt.seeds})", math.nan, None
        return f"{fmt_spread(mt.sim_time_s, unit=' s')} ({mt.reached}/{mt.seeds})", mt.sim_time_s.mean, None
    # Against the fastest baseline (the smallest mean time to the target among those that reached it).
    reached = [b for b in claim.baselines if times(b).reached > 0]
    if not reached:
        names = ", ".join(claim.baselines)
        if mt.reached == 0:
            return f"neither {claim.method} nor {names} reached it", math.nan, None
        # Only the method reached it: faster for sure if every baseline ran longer than the method needed.
        ends = [r.final_sim_time_s for b in claim.baselines for r in comparison.by_label(b).group.runs]
        sure = min(ends) > mt.sim_time_s.max
        text = (
            f"{names} never reached it (runs of at least {min(ends):.1f} s); {claim.method} did "
            f"({mt.reached}/{mt.seeds}, {fmt_spread(mt.sim_time_s, unit=' s')})"
        )
        return text, (math.inf if sure else math.nan), None
    best = min(reached, key=lambda b: times(b).sim_time_s.mean)
    if mt.reached == 0:
        # Only the baseline reached it: slower for sure if the method ran longer than the baseline needed.
        end = min(r.final_sim_time_s for r in method.group.runs)
        best_t = times(best).sim_time_s
        sure = end > best_t.max
        text = (
            f"{claim.method} did not reach it (runs of at least {end:.1f} s); {best} did "
            f"({fmt_spread(best_t, unit=' s')})"
        )
        return text, (0.0 if sure else math.nan), None
    times_m, times_b = mt.reached_times(), times(best).reached_times()
    seeds = sorted(set(times_m) & set(times_b))
    if not seeds:
        return f"no seed where both {claim.method} and {best} reached it", math.nan, None
    if claim.kind == "speedup" and smoothed:
        sp = speedup_stats(times(best), mt, _ends(comparison, best), _ends(comparison, claim.method))
        left_out = f", {sp.excluded} seed(s) left out: only one or neither reached it" if sp.excluded else ""
        return f"{fmt_interval(sp.interval)} over {best}{left_out}", sp.interval.estimate, sp.interval
    if claim.kind == "speedup":
        ratios = [times_b[s] / times_m[s] for s in seeds if times_m[s] > 0]
        st = spread(ratios)
        return f"{fmt_spread(st)}x over {best} ({st.n} seed(s) paired)", st.mean, None
    savings = [1 - times_m[s] / times_b[s] for s in seeds if times_b[s] > 0]
    st = spread(savings)
    return f"{fmt_spread(st, scale=100.0, digits=1)} % less time than {best} ({st.n} seed(s))", st.mean, None


def _ends(comparison: Comparison, label: str) -> dict[int, float]:
    return {r.seed: r.final_sim_time_s for r in comparison.by_label(label).group.runs}


def _timed_verdict(claim: PaperClaim, value: float, interval: SpeedupInterval | None = None) -> str:
    if math.isnan(value):
        return "not measurable"
    if claim.goal and claim.kind == "speedup":
        if math.isinf(value) and value > 0:
            return "goal met (only AMP-FL reached the target)"
        # A goal's verdict always states the interval's lower bound (or that there is none).
        if interval is None or math.isnan(interval.low):
            low = "no interval (fewer than 2 paired seeds)"
        else:
            low = f"{100 * interval.level:g} % interval's lower bound {interval.low:.2f}x (n={interval.n})"
        if value >= claim.value:
            return f"goal met; {low}"
        return f"goal missed: {value:.2f}x of {claim.value:g}x ({value / claim.value:.0%} of the goal); {low}"
    if claim.kind == "speedup":
        if math.isinf(value):
            return "same direction (only AMP-FL reached the target)"
        if value == 0.0:
            return "opposite direction (only the baseline reached the target)"
        rel = "close to the paper" if abs(value / claim.value - 1) <= 0.2 else "magnitude differs"
        return ("same direction, " + rel) if value > 1 else "opposite direction (slower)"
    if claim.kind == "time_saving":
        if math.isinf(value):
            return "same direction (only AMP-FL reached the target)"
        if value == 0.0:
            return "opposite direction (only the baseline reached the target)"
        return "same direction" if value > 0 else "opposite direction"
    return "compare the times (different datasets)"


# ------------------------------------------------------------------------------------------ trends
def sweep_table(
    figure: Figure, panels: Sequence[PanelResult], family: Family, column: str = "accuracy"
) -> tuple[list[str], dict[tuple[str, str], dict[float | int, Spread]], list[str]]:
    """Rows: panel x series; columns: swept values; cells: the sweep metric, mean ± std over seeds."""
    assert figure.sweep is not None
    values = figure.sweep.values
    cells: dict[tuple[str, str], dict[float | int, Spread]] = {}
    notes: list[str] = []
    for panel in panels:
        by_group = {g.label: g for g in panel.groups}
        for series in figure.series:
            row: dict[float | int, Spread] = {}
            for v in values:
                group = by_group.get(f"{series.label} @ {v}")
                got = []
                for run in group.runs if group else []:
                    x, note = sweep_metric(run, figure, family, column)
                    if note:
                        notes.append(f"{panel.name} {series.label} @ {v} seed {run.seed}: {note}")
                    if math.isfinite(x):
                        got.append(x)
                row[v] = spread(got)
            cells[(panel.name, series.label)] = row
    is_acc = column == "accuracy"
    what = "accuracy (%)" if is_acc else "average AoI (rounds)"
    when = (
        f"at {figure.at_time_s[family]:g} s of simulated time" if family in figure.at_time_s else "after the last round"
    )
    head = ["panel", "method", *(f"{figure.sweep.label} = {v}" for v in values)]
    lines = [f"{what[0].upper()}{what[1:]} {when}, mean ± std over seeds:", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + " --- |" * len(head))
    for (panel_name, label), row in cells.items():
        fmt = [fmt_accuracy(row[v]) if is_acc else fmt_spread(row[v], digits=2) for v in values]
        lines.append(f"| {panel_name} | {label} | " + " | ".join(fmt) + " |")
    return lines, cells, notes


def _share(agree: int, total: int) -> str:
    if agree == total:
        return "agrees"
    return "disagrees" if agree == 0 else f"agrees for {agree} of {total}"


def _monotone(xs: Sequence[float], falling: bool) -> bool:
    d = np.diff(np.asarray(xs, dtype=np.float64))
    return bool(np.all(d < 0)) if falling else bool(np.all(d > 0))


def evaluate_trend(
    claim: PaperClaim,
    figure: Figure,
    panels: Sequence[PanelResult],
    accuracy: dict[tuple[str, str], dict[float | int, Spread]] | None,
    aoi: dict[tuple[str, str], dict[float | int, Spread]] | None,
) -> ClaimResult:
    """Check a qualitative claim (``claim.trend``) against our means."""
    paper = claim.text
    if claim.trend == "curve_above_from":
        return curve_above_from(claim, panels)
    if claim.trend == "lowest_aoi":
        panel = panels[0]
        means = {}
        among = {claim.method, *claim.baselines}
        for g in (g for g in panel.groups if g.label in among):
            per_run = [float(np.nanmean(r.columns["avg_aoi"][1:])) for r in g.runs if "avg_aoi" in r.columns]
            if per_run:
                means[g.label] = float(np.mean(per_run))
        if claim.method not in means:
            return ClaimResult(claim, paper, "no runs", "not measured")
        lowest = min(means, key=lambda k: means[k])
        text = "; ".join(f"{k}: {v:.2f}" for k, v in sorted(means.items(), key=lambda kv: kv[1]))
        ok = lowest == claim.method
        return ClaimResult(claim, paper, f"mean AoI over rounds: {text}", "agrees" if ok else "disagrees")
    if accuracy is None or figure.sweep is None:
        return ClaimResult(claim, paper, "needs a sweep", "not measured")
    values = figure.sweep.values
    table = accuracy if claim.trend != "aoi_falls_with_sweep" else (aoi or {})

    def series_means(panel: str, label: str) -> list[float]:
        row = table.get((panel, label), {})
        return [row[v].mean if v in row else math.nan for v in values]

    panel_names = [p.name for p in panels]
    if claim.trend in ("falls_with_sweep", "rises_with_sweep", "aoi_falls_with_sweep"):
        labels = [s.label for s in figure.series] if claim.trend == "falls_with_sweep" else [claim.method]
        checks, texts = [], []
        for p in panel_names:
            for label in labels:
                m = series_means(p, label)
                if any(math.isnan(x) for x in m):
                    continue
                checks.append(_monotone(m, falling=claim.trend != "rises_with_sweep"))
                scale = 100.0 if claim.trend != "aoi_falls_with_sweep" else 1.0
                texts.append(f"{p} {label}: " + " → ".join(f"{scale * x:.1f}" for x in m))
        if not checks:
            return ClaimResult(claim, paper, "no complete sweep", "not measured")
        verdict = _share(sum(checks), len(checks))
        return ClaimResult(claim, paper, "; ".join(texts), verdict)
    if claim.trend == "best_at_every_value":
        wins, total = 0, 0
        for p in panel_names:
            mine = series_means(p, claim.method)
            others = [series_means(p, b) for b in claim.baselines]
            for i in range(len(values)):
                cand = [o[i] for o in others if not math.isnan(o[i])]
                if math.isnan(mine[i]) or not cand:
                    continue
                total += 1
                wins += mine[i] > max(cand)
        if total == 0:
            return ClaimResult(claim, paper, "no complete sweep", "not measured")
        return ClaimResult(
            claim,
            paper,
            f"{claim.method} is the most accurate at {wins} of {total} (panel, beta) points",
            "agrees" if wins == total else ("disagrees" if wins == 0 else "partly"),
        )
    if claim.trend == "later_panel_higher":
        if len(panel_names) < 2:
            return ClaimResult(claim, paper, "needs two panels", "not measured")
        first, second = panel_names[0], panel_names[1]
        higher, total = 0, 0
        for s in figure.series:
            a, b = series_means(first, s.label), series_means(second, s.label)
            for x, y in zip(a, b, strict=True):
                if math.isnan(x) or math.isnan(y):
                    continue
                total += 1
                higher += y > x
        if total == 0:
            return ClaimResult(claim, paper, "no complete sweep", "not measured")
        return ClaimResult(
            claim,
            paper,
            f"{second} above {first} at {higher} of {total} (policy, beta) points",
            "agrees" if higher == total else ("disagrees" if higher == 0 else "partly"),
        )
    return ClaimResult(claim, paper, f"unknown trend {claim.trend!r}", "not measured")


CURVE_GRID_S = 0.25  # the simulated-time grid on which curve_above_from compares the mean curves


def curve_above_from(claim: PaperClaim, panels: Sequence[PanelResult]) -> ClaimResult:
    """Whether the method's mean test-accuracy curve (over seeds, as a step function of simulated time)
    is at or above every baseline's mean curve at every grid point from ``claim.from_time_s`` to the
    time every run reached; reports the smallest margin and where it was."""
    panel = next((p for p in panels if p.name == claim.panel), panels[0] if panels else None)
    groups = {g.label: g for g in panel.groups} if panel is not None else {}
    wanted = (claim.method, *claim.baselines)
    missing = [x for x in wanted if x not in groups or not groups[x].runs]
    if missing:
        return ClaimResult(claim, claim.text, f"no runs of {', '.join(missing)}", "not measured")
    start = claim.from_time_s or 0.0
    end = min(r.final_sim_time_s for x in wanted for r in groups[x].runs)
    if end < start:
        return ClaimResult(claim, claim.text, f"the runs end at {end:.1f} s, before {start:g} s", "not measured")
    grid = np.arange(start, end + 1e-9, CURVE_GRID_S)
    mean = {x: np.mean([step_resample(r.sim_time_s, r.accuracy, grid) for r in groups[x].runs], axis=0) for x in wanted}
    best_other = np.max([mean[b] for b in claim.baselines], axis=0)
    margin = mean[claim.method] - best_other
    at = int(np.argmin(margin))
    above = int(np.sum(margin >= 0))
    ours = (
        f"at or above at {above} of {len(grid)} points from {start:g} s to {end:.2f} s; smallest margin "
        f"{100 * margin[at]:+.2f} points at {grid[at]:.2f} s; mean margin {100 * float(np.mean(margin)):+.2f} points"
    )
    verdict = "goal met" if above == len(grid) else f"goal missed at {len(grid) - above} of {len(grid)} points"
    return ClaimResult(claim, claim.text, ours, verdict)


# ------------------------------------------------------------------------------------------ writing
def _why(claim: PaperClaim, dataset: DatasetChoice, scale: Scale) -> str:
    if claim.goal:
        return "our goal, not a paper number"
    reasons = []
    paper_dataset = "MNIST" if claim.family == "mnist" else "CIFAR-10"
    if dataset.name not in ("mnist", "cifar10"):
        reasons.append(f"ours on {dataset.name}, the paper's on {paper_dataset}")
    if scale.name != "paper":
        reasons.append(f"{scale.name} scale: fewer rounds than at paper scale (see Settings)")
    if claim.method not in ("AMP-FL", "AMP-FL (amp)", "AMP-FL (paper: compensation=all)") and "AMP-FL" in claim.method:
        reasons.append("not the paper's compensation scope")
    if any("FedProx" in b or b == "APFL" for b in claim.baselines):
        reasons.append("FedProx mu and APFL alpha are ours (the paper does not give them)")
    return "; ".join(reasons)


def claims_table(results: Sequence[ClaimResult], why: dict[int, str]) -> list[str]:
    lines = [
        "| paper (source) | panel | method | the paper's number | ours | verdict | why they may differ |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(results):
        c = r.claim
        lines.append(
            f"| {c.source} | {c.panel or 'all'} | {c.method} | {r.paper} | {r.ours} | {r.verdict} | {why.get(i, '')} |"
        )
    return lines


def plot_sweep(
    figure: Figure,
    cells: dict[tuple[str, str], dict[float | int, Spread]],
    path: Path,
    ylabel: str,
    scale: float = 100.0,
) -> Path:
    """One line per (panel, series) against the swept value, min-max error bars over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert figure.sweep is not None
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    xs = np.asarray(figure.sweep.values, dtype=np.float64)
    for i, ((panel, label), row) in enumerate(cells.items()):
        mean = np.array([scale * row[v].mean for v in figure.sweep.values])
        low = np.array([scale * row[v].min for v in figure.sweep.values])
        high = np.array([scale * row[v].max for v in figure.sweep.values])
        name = label if len({p for p, _ in cells}) == 1 else f"{label} ({panel})"
        ax.errorbar(
            xs,
            mean,
            yerr=[mean - low, high - mean],
            marker="o",
            ms=3,
            lw=1.2,
            capsize=2,
            color=f"C{i % 10}",
            ls="-" if i < 10 else "--",
            label=name,
        )
    ax.set_xlabel(figure.sweep.label)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_figure_report(
    *,
    figure: Figure,
    scale: Scale,
    dataset: DatasetChoice,
    specs: Sequence[RunSpec],
    panels: Sequence[PanelResult],
    report_dir: Path,
    command: str,
    engine: str,
    settings: str,
    timing: Sequence[str],
    missing: Sequence[str],
    targets: Sequence[float],
) -> Path:
    """Write ``report_dir/report.md`` (+ figures, ``comparison_<panel>.json``)."""
    import json

    report_dir.mkdir(parents=True, exist_ok=True)
    family = dataset.family
    figure_label = figure.paper_figures.get(family, figure.name)  # a study beyond the paper's figures: its own name
    lines = [
        f"# {figure_label}: {figure.title} ({scale.name} scale, {dataset.name})",
        "",
        f"- **Command:** `{command}`",
        f"- **Engine:** {engine}",
        f"- **Dataset:** {dataset.note}.",
        f"- **Settings:** {settings}",
        f"- **Design:** {figure.description + ' ' if figure.description else ''}"
        f"Methods: {', '.join(s.label for s in figure.series)}; "
        f"seeds {', '.join(map(str, sorted({s.seed for s in specs})))}; "
        f"{len(specs)} runs. Each run is also one Flower command (see Runs).",
        "",
        "All numbers below are measured from the run folders listed under Runs; the paper's numbers are "
        "quoted from its Sec. V (spec section 5) and labelled as the paper's.",
        "",
    ]
    used = sorted({r.dataset_used for p in panels for g in p.groups for r in g.runs})
    lines += [f"Dataset actually used by the runs ({SUMMARY_FILE}): {', '.join(used) or 'none yet'}.", ""]
    if missing:
        lines += ["**Incomplete:** these runs have no complete results yet; the tables leave them out:", ""]
        lines += [f"- `{m}`" for m in missing] + [""]

    # Paper vs ours
    results: list[ClaimResult] = []
    why: dict[int, str] = {}
    claims = [c for c in figure.claims if c.family == family]
    by_panel = {p.name: p for p in panels}
    acc_cells = aoi_cells = None
    sweep_lines: list[str] = []
    sweep_notes: list[str] = []
    figures_out: list[Path] = []
    if figure.sweep is not None and panels:
        acc_lines, acc_cells, n1 = sweep_table(figure, panels, family, "accuracy")
        sweep_lines += acc_lines
        sweep_notes += n1
        figures_out.append(
            plot_sweep(figure, acc_cells, report_dir / "accuracy_vs_sweep.png", "test accuracy (%)", 100.0)
        )
        if figure.at_time_s:
            aoi_lines, aoi_cells, _ = sweep_table(figure, panels, family, "avg_aoi")
            sweep_lines += ["", *aoi_lines]
            figures_out.append(
                plot_sweep(figure, aoi_cells, report_dir / "avg_aoi_vs_sweep.png", "average AoI (rounds)", 1.0)
            )
    for claim in claims:
        if claim.kind == "trend":
            result = evaluate_trend(claim, figure, panels, acc_cells, aoi_cells)
        else:
            panel = by_panel.get(claim.panel) if claim.panel else (panels[0] if panels else None)
            if panel is None and claim.panel not in by_panel:
                continue  # a panel this run of the figure does not have (e.g. quick: s = 2 only)
            result = evaluate_claim(claim, panel.comparison if panel else None, targets)
        why[len(results)] = _why(claim, dataset, scale)
        results.append(result)
    lines += ["## The paper's numbers beside ours", ""]
    if results:
        lines += claims_table(results, why)
        lines += [
            "",
            "'same direction' means our measurement points the same way as the paper's (faster, more accurate); "
            "the magnitudes are not expected to match where the dataset or scale differs (last column).",
        ]
    else:
        lines.append(f"The paper reports no number for this figure on {family}.")
    lines.append("")

    if sweep_lines:
        lines += [f"## Against {figure.sweep.label if figure.sweep else ''}", "", *sweep_lines, ""]
        lines += [f"![{p.stem}]({p.name})" for p in figures_out] + [""]
        if sweep_notes:
            lines += ["Notes:", "", *[f"- {n}" for n in sweep_notes], ""]

    if figure.curves:
        for panel in panels:
            if panel.comparison is None:
                continue
            heading = f"## Panel {panel.name}" + (f": {panel.title}" if panel.title else "")
            out = report_dir / panel.name if len(panels) > 1 else report_dir
            plots = plot_comparison(panel.comparison, out, f"{figure_label} {panel.title}".strip(), targets)
            lines += [heading, "", f"Speedups are over **{panel.comparison.reference}**.", ""]
            lines += summary_table(panel.comparison)
            lines += ["", *speedup_note(panel.comparison)]
            notes = notes_for(panel.comparison)
            if notes:
                lines += ["", *[f"- {n}" for n in notes]]
            lines += [""] + [f"![{p.stem}]({p.relative_to(report_dir)})" for p in plots] + [""]
            (report_dir / f"comparison_{panel.name}.json").write_text(
                json.dumps(to_jsonable(panel.comparison), indent=2) + "\n"
            )

    lines += ["## Runs", "", "| run | status | rounds | final accuracy (%) | the same run through Flower |"]
    lines.append("| --- | --- | --- | --- | --- |")
    runs_by_id = {}
    for p in panels:
        for g in p.groups:
            for r in g.runs:
                runs_by_id[str(r.path)] = r
    for spec in specs:
        flower = "python -m amp_fl " + " ".join(spec.overrides)
        run = next((r for path, r in runs_by_id.items() if path.endswith(spec.run_id)), None)
        status, rounds, acc = (
            ("missing", "—", "—") if run is None else (run.status, run.last_round, f"{100 * run.final_accuracy:.2f}")
        )
        lines.append(f"| `{spec.run_id}` | {status} | {rounds} | {acc} | `{flower}` |")
    lines += ["", "## Wall time", "", *timing, "", METHOD_TEXT, ""]
    path = report_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def panel_results(
    figure: Figure, specs: Sequence[RunSpec], runs: dict[str, Run], targets: Sequence[float]
) -> list[PanelResult]:
    """Group the complete runs of each panel (by series, or series @ swept value) and compare them."""
    results = []
    for panel in figure.panels:
        groups: dict[str, Group] = {}
        for spec in specs:
            if spec.panel != panel.name or spec.run_id not in runs:
                continue
            groups.setdefault(spec.group, Group(spec.group)).runs.append(runs[spec.run_id])
        ordered = list(groups.values())
        reference = None
        if ordered:
            labels = [g.label for g in ordered]
            reference = figure.reference if figure.reference in labels else labels[0]
        comparison = compare(ordered, targets, reference) if ordered else None
        results.append(PanelResult(panel.name, panel.title, ordered, comparison))
    return results
