"""Settle the headline (issue 21): ``python -m amp_fl.experiments.headline screen|tune|evaluate|map|report``.

The question: how much sooner does the best AMP-FL reach 70 % / 75 % test accuracy than the best
method a user would pick instead, each tuned with the same budget, on Table I's system with
Fashion-MNIST at paper scale (100 PIUs x 600 samples, s = 2)? And where, across systems, does
adaptive pruning pay off? The study runs in stages, each resumable (its runs are campaign runs:
kept in ``runs/headline/`` and recorded in the results ledger, ``results/headline/``):

1. ``screen``: AMP-FL's structural rules beyond the paper (:data:`VARIANTS`), alone and together,
   on the validation split with the screen seeds (100-103); the one with the shortest smoothed validation
   time to 75 % becomes "AMP-FL (best)". This is extra effort for AMP-FL, reported as such.
2. ``tune``: every method (:data:`METHODS`) tuned by the TPE tuner with the same number of
   trials on the same tuning seeds, on the validation split, never the test set.
3. ``evaluate``: every method at its tuned values on the evaluation seeds (disjoint from the
   tuning seeds); the report gives times to 70 % / 75 % (smoothed, leading, and first crossing)
   and the speedup of the best AMP-FL over the best other method with a paired bootstrap interval.
4. ``map``: the regime map (:data:`REGIMES`): the same two methods at their tuned values as the
   spread of CPU speeds, the share of computation in a full-model round and the number of RBs
   change, each point's horizon, evaluation grid and T_max scaled with its calibrated full-model
   round length (:func:`calibrate`), so every point runs as many rounds as Table I's.

Every stage's design is data here; the numbers are the runs'.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from amp_fl.errors import DIVERGED
from amp_fl.experiments.campaign import (
    PROJECT_ROOT,
    Job,
    add_cluster_arguments,
    cluster_from_args,
    compose_values,
    execute,
    is_complete,
    make_jobs,
    still_to_run,
)
from amp_fl.experiments.cli import campaign_cli, check_folders, error_line, positive_int, seed_list
from amp_fl.experiments.figures import ROUND_CAP_MARGIN
from amp_fl.experiments.selection import TUNING_FILE, read_seed
from amp_fl.experiments.tpe import parse_space, tune_tpe
from amp_fl.report import REPORT_FILE, write_report
from amp_fl.report.compare import Comparison, SpeedupStats, compare
from amp_fl.report.render import fmt_speedup
from amp_fl.report.runs import Group, load_run
from amp_fl.run_folder import RunFolderError, read_summary

SMOOTHED_METRIC = "val_smoothed_time_to_target"  # the selection score of the screen, as of the TPE tuner
PRESET = "speedup"  # Fig. 8's s = 2 panel, 10 % validation split, evaluation every 0.25 s, 30 s horizon
TARGETS = (0.70, 0.75)
SELECTION_TARGET = 0.75  # the screen and the tuning rank by the smoothed validation time to this
TUNING_SEEDS = (100, 101)
# The screen tells apart rule sets of one method whose differences are small against the seed spread
# (on seeds 100-101 alone the first two were 0.41 s apart with the seeds disagreeing): twice the
# tuning seeds, still disjoint from the evaluation seeds. 32 short runs, about 25 minutes here.
SCREEN_SEEDS = (100, 101, 102, 103)
EVAL_SEEDS = tuple(range(8))
TRIALS = 12  # every method's tuning budget (TPE trials, each over the tuning seeds)
# Random trials before TPE models the results: Optuna's 10 would leave TPE 2 of the 12.
STARTUP_TRIALS = 4
RUNS_ROOT = PROJECT_ROOT / "runs" / "headline"
REPORTS_ROOT = PROJECT_ROOT / "reports" / "headline"
# Table I's horizon (s), evaluation grid (s) and the round length (s) of the full-model methods
# (amp_fl.experiments.figures.ROUND_LENGTH_S, calibrated there and checked by tests/test_horizons.py).
BASE_HORIZON_S = 30.0
BASE_EVAL_EVERY_S = 0.25


@dataclass(frozen=True)
class Method:
    """One method of the study: its folder name, label, overrides, and the space its tuning searches.

    ``space``: the TPE tuner's ``--space`` items (``KEY=float:LO:HI[:log]``, ``KEY=int:LO:HI``,
    ``KEY=cat:A,B``). ``amp_fl``: an AMP-FL variant (the map compares the best of these with the best
    of the others, and scales its T_max by each regime's time scale).
    """

    key: str
    label: str
    overrides: tuple[str, ...]
    space: tuple[str, ...]
    amp_fl: bool = False


MODULE = "python -m amp_fl.experiments.headline"
LEARNING_RATE = "learning_rate=float:0.02:0.4:log"
SERVER_STEP = "strategy.server_optimizer=cat:sgd,momentum"
T_MAX = "t_max=float:0.05:0.4:log"
AMP_BEST = "amp_fl_best"
METHODS = (
    Method("amp_fl_paper", "AMP-FL (paper's variant)", ("method=amp_fl",), (LEARNING_RATE, T_MAX), amp_fl=True),
    # Its overrides are the screen's winner (:func:`best_variant`), filled in by :func:`methods_after_screen`.
    Method(AMP_BEST, "AMP-FL (best variant)", (), (LEARNING_RATE, T_MAX), amp_fl=True),
    Method("synchronous", "Synchronous FL", ("method=synchronous",), (LEARNING_RATE, SERVER_STEP)),
    Method("fedprox", "FedProx", ("method=fedprox",), (LEARNING_RATE, "proximal_mu=float:0.001:1.0:log")),
    Method("heterofl", "HeteroFL", ("method=heterofl",), (LEARNING_RATE, "pruning.scaler=cat:true,false")),
    Method("fedrolex", "FedRolex", ("method=fedrolex",), (LEARNING_RATE, "pruning.scaler=cat:true,false")),
    Method("fedbuff", "FedBuff", ("method=fedbuff",), (LEARNING_RATE, "fedbuff.buffer_size=int:2:10")),
)  # fmt: skip


@dataclass(frozen=True)
class Variant:
    """One AMP-FL rule set of the screen (docs/peer-methods.md), at the tuned values of ``method=amp_fl_tuned``."""

    key: str
    label: str
    overrides: tuple[str, ...]


_ALL = ("method=amp_fl_tuned", "strategy.compensation=all", "strategy.staleness_decay=1.0")
_NONE = ("method=amp_fl_tuned", "strategy.compensation=none", "strategy.staleness_decay=1.0")
_SPARE = ("scheduling.max_local_steps=24",)
_LINEAR = ("model.t_max_schedule=linear", "model.t_max_end_s=0.3", "model.t_max_rounds=150")
VARIANTS = (
    Variant("paper", "compensation=all (Eq. (2), the paper's)", _ALL),
    Variant("discounted", "discounted compensation, gamma 0.5 (amp_fl_tuned)", ("method=amp_fl_tuned",)),
    Variant("fedstale", "compensation=all, stale weight 0.5 (FedStale)", (*_ALL, "strategy.stale_weight=0.5")),
    Variant("holders", "no compensation, each entry over its holders", (*_NONE, "strategy.fresh_mean=holders")),
    Variant("spare_steps", "discounted + spare local steps (up to 24)", ("method=amp_fl_tuned", *_SPARE)),
    Variant("t_max_linear", "discounted + T_max 0.1 -> 0.3 s over 150 rounds", ("method=amp_fl_tuned", *_LINEAR)),
    Variant("holders_spare", "holders + spare local steps", (*_NONE, "strategy.fresh_mean=holders", *_SPARE)),
    Variant("fedstale_spare", "FedStale + spare local steps", (*_ALL, "strategy.stale_weight=0.5", *_SPARE)),
)


# ------------------------------------------------------------------------------------------ regimes
TABLE1_CPU_HZ = (0.85e9, 1.12e9, 1.2e9, 1.3e9)


@dataclass(frozen=True)
class Regime:
    """A point of the regime map: the axis it belongs to, its value there, and the system overrides."""

    axis: str  # "cpu_spread" | "flops_per_cycle" | "num_rbs"
    value: float
    overrides: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.axis}={self.value:g}"


def cpu_freqs(spread: float, fastest_hz: float = TABLE1_CPU_HZ[-1], count: int = 4) -> tuple[float, ...]:
    """``count`` CPU frequencies from ``fastest_hz / spread`` to ``fastest_hz``, evenly spaced on a log scale."""
    if not (math.isfinite(spread) and spread >= 1.0):
        raise ValueError(f"spread: the fastest over the slowest CPU must be >= 1, got {spread}")
    return tuple(float(f) for f in np.geomspace(fastest_hz / spread, fastest_hz, count))


def _freqs_override(freqs: Sequence[float]) -> str:
    return "wireless.cpu_freqs_hz=[" + ",".join(f"{f:.6g}" for f in freqs) + "]"


TABLE1 = Regime("table1", 1.0, ())
REGIMES = (
    TABLE1,
    # (a) CPU speed spread, the fastest device as in Table I (Table I's own spread is 1.53x).
    *(Regime("cpu_spread", s, (_freqs_override(cpu_freqs(s)),)) for s in (3.0, 6.0, 20.0)),
    # (b) computation's share of a round: FLOPs per cycle n_k (Table I: 4); fewer = compute-bound.
    *(Regime("flops_per_cycle", n, (f"wireless.flops_per_cycle={n:g}",)) for n in (16.0, 1.0, 0.25)),
    # (c) resource blocks (Table I: 10).
    *(Regime("num_rbs", r, (f"wireless.num_rbs={r:g}",)) for r in (5, 20, 40)),
)


@dataclass(frozen=True)
class Calibration:
    """A regime's time scale against Table I: full-model round lengths and the factor everything is scaled by."""

    full_round_s: float  # mean simulated round length of Synchronous FL in this regime
    table1_full_round_s: float
    comm_only_round_s: float  # the same with computation free: what is left is the uplink's
    factor: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", self.full_round_s / self.table1_full_round_s)

    @property
    def compute_share(self) -> float:
        """The share of a full-model round's length that computation adds (1 - uplink-only / full)."""
        return max(0.0, 1.0 - self.comm_only_round_s / self.full_round_s)


CALIBRATION_ROUNDS = 60


def full_round_s(overrides: Sequence[str], seed: int = 0, rounds: int = CALIBRATION_ROUNDS) -> float:
    """The mean simulated round length of Synchronous FL under ``overrides`` (the latency model alone, no training)."""
    from amp_fl.config import load_config
    from amp_fl.experiments.horizons import round_lengths

    values = compose_values([f"experiment={PRESET}", "method=synchronous", f"seed={seed}", *overrides])
    return float(np.mean(round_lengths(load_config(values), rounds, (1, 28, 28))))


def calibrate(regime: Regime, seed: int = 0, extra: Sequence[str] = ()) -> Calibration:
    """:class:`Calibration` of ``regime``: its full-model round length, Table I's, and the uplink-only one.

    ``extra``: the study's own overrides of every run (e.g. fewer devices), applied before the regime's.
    """
    return Calibration(
        full_round_s((*extra, *regime.overrides), seed),
        full_round_s(extra, seed),
        full_round_s((*extra, *regime.overrides, "wireless.flops_per_cycle=1e12"), seed),
    )


# A method's own settings measured on the simulated clock: a regime's time scale stretches every one
# in effect, or the method's round would shrink against the regime's full-model round (AMP-FL's
# T_max and, under a schedule, where T_max ends; a round deadline).
DEADLINE_SETTING = "scheduling.deadline_s"


def time_settings(values: Mapping[str, Any], amp_fl: bool) -> dict[str, float]:
    """The simulated-time settings in effect in the composed configuration ``values``, by dotted key.

    AMP-FL's T_max (and ``t_max_end_s`` unless its schedule is constant) when ``amp_fl``; the round
    deadline when one is set. Read from the composed configuration, so a preset's own value counts.
    """
    model, scheduling = values["model"], values["scheduling"]
    out: dict[str, float] = {}
    if amp_fl:
        out["model.t_max_s"] = float(model["t_max_s"])
        if model["t_max_schedule"] != "constant":
            out["model.t_max_end_s"] = float(model["t_max_end_s"])
    if scheduling.get("deadline_s") is not None:
        out[DEADLINE_SETTING] = float(scheduling["deadline_s"])
    return out


def scaled_overrides(calibration: Calibration, settings: Mapping[str, float], round_cap_s: float) -> tuple[str, ...]:
    """A regime's horizon, evaluation grid, the method's time ``settings`` (:func:`time_settings`) and
    round cap, each scaled by the regime's factor.

    ``round_cap_s``: the method's typical round length at Table I (T_max for AMP-FL, the full-model
    round for the others), so the cap gives the horizon's rounds with the usual margin.
    """
    f = calibration.factor
    horizon = BASE_HORIZON_S * f
    out = [f"sim_time_limit_s={horizon:.6g}", f"evaluation.every_sim_s={BASE_EVAL_EVERY_S * f:.6g}"]
    out += [f"{key}={value * f:.6g}" for key, value in settings.items()]
    out.append(f"num_rounds={math.ceil(ROUND_CAP_MARGIN * horizon / (round_cap_s * f))}")
    return tuple(out)


# ------------------------------------------------------------------------------------------ runs
@dataclass(frozen=True)
class StudySpec:
    """One run of the study: its stage, group (a variant, method or regime point), label, seed, overrides."""

    stage: str
    group: str
    label: str
    seed: int
    overrides: tuple[str, ...]

    @property
    def run_id(self) -> str:
        return f"{self.group}/seed{self.seed}"


# What a selection run (screen, tuning) adds: the validation split only (it chooses on it, so it never looks at
# the test set, and skips that cost); the screen also stops once the smoothed validation accuracy holds the target
# (the TPE tuner adds its own stop rule).
VALIDATION_ONLY = "evaluation.test=false"
SELECTION = (f"evaluation.stop_at_val_accuracy={SELECTION_TARGET}", "evaluation.stop_window_s=1.0", VALIDATION_ONLY)


def screen_specs(seeds: Sequence[int] = SCREEN_SEEDS) -> list[StudySpec]:
    """The AMP-FL screen: every variant on the screen seeds, stopping when the target is held on validation."""
    return [
        StudySpec("screen", v.key, v.label, s, (f"experiment={PRESET}", *v.overrides, *SELECTION, f"seed={s}"))
        for v in VARIANTS
        for s in seeds
    ]  # fmt: skip


def smoothed_validation_time(run_dir: Path, target: float = SELECTION_TARGET) -> float:
    """A selection run's score, as the TPE tuner scores a seed: its smoothed validation time to ``target``,
    (``NEVER_REACHED_FACTOR`` (2) + its shortfall) x its planned length if never held
    (:meth:`~amp_fl.experiments.selection.SeedResult.score`)."""
    return read_seed(run_dir, 0, target).score(SMOOTHED_METRIC)


def rank_groups(
    jobs: Sequence[Job[StudySpec]], target: float = SELECTION_TARGET
) -> list[tuple[str, float, list[float]]]:
    """(group, mean score, per-seed scores) of every group whose runs are all complete, best (lowest) first."""
    by_group: dict[str, list[Job[StudySpec]]] = {}
    for job in jobs:
        by_group.setdefault(job.spec.group, []).append(job)
    ranked = []
    for group, members in by_group.items():
        if all(is_complete(j.run_dir, j.values) for j in members):
            scores = [smoothed_validation_time(j.run_dir, target) for j in members]
            ranked.append((group, float(np.mean(scores)), scores))
    return sorted(ranked, key=lambda item: item[1])


SCREEN_FILE = "screen.json"


def best_variant(reports_root: Path = REPORTS_ROOT) -> Variant:
    """The screen's winner (``<reports>/screen/screen.json``); ``ValueError`` if the screen has not run."""
    path = reports_root / "screen" / SCREEN_FILE
    try:
        chosen = json.loads(path.read_text())["chosen"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(
            f"{path}: no finished screen ({exc}); run `python -m amp_fl.experiments.headline screen`"
        ) from exc
    return next(v for v in VARIANTS if v.key == chosen)


def methods_after_screen(reports_root: Path = REPORTS_ROOT) -> tuple[Method, ...]:
    """:data:`METHODS` with "AMP-FL (best)" set to the screen's winner."""
    winner = best_variant(reports_root)
    return tuple(
        Method(m.key, f"AMP-FL (best: {winner.key})", winner.overrides, m.space, True) if m.key == AMP_BEST else m
        for m in METHODS
    )


def _margin_text(ranked: Sequence[tuple[str, float, list[float]]]) -> str:
    """The winner's lead over the runner-up, and whether every seed agrees with it."""
    if len(ranked) < 2:
        return ""
    (_, best, best_seeds), (runner_up, second, second_seeds) = ranked[0], ranked[1]
    diffs = [b - a for a, b in zip(best_seeds, second_seeds, strict=True)]
    ahead = sum(d > 0 for d in diffs)
    agree = "every seed agrees" if ahead == len(diffs) else f"ahead on {ahead} of {len(diffs)} seeds"
    per_seed = ", ".join(f"{d:+.2f}" for d in diffs)
    return f" Its lead over `{runner_up}`: {second - best:.2f} s (per seed {per_seed} s; {agree})."


def diverged_runs(jobs: Sequence[Job[Any]]) -> list[str]:
    """``<run id>: diverged at round N: <reason>`` for every finished run whose model diverged."""
    found = []
    for job in jobs:
        try:
            status = str(read_summary(job.run_dir).get("status"))
        except RunFolderError:
            continue
        if status.startswith(DIVERGED):
            found.append(f"{job.spec.run_id}: {status}")
    return found


def write_screen(jobs: Sequence[Job[StudySpec]], out: Path, command: str) -> dict[str, Any]:
    """``screen.json`` and ``screen.md``: the variants ranked by their smoothed validation time to the target."""
    ranked = rank_groups(jobs)
    if not ranked:
        raise ValueError("screen: no variant has all its runs complete")
    labels = {v.key: v.label for v in VARIANTS}
    seeds = sorted({j.spec.seed for j in jobs})
    payload = {
        "command": command,
        "target": SELECTION_TARGET,
        "seeds": seeds,
        "ranked": [{"variant": g, "label": labels[g], "mean_s": m, "per_seed_s": s} for g, m, s in ranked],
        "chosen": ranked[0][0],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / SCREEN_FILE).write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        "# AMP-FL's rules beyond the paper: the screen",
        "",
        f"- **Command:** `{command}`",
        f"- **Setting:** `experiment={PRESET}` (Fig. 8, s = 2, Fashion-MNIST, 100 PIUs x 600 samples), seeds "
        f"{', '.join(map(str, seeds))}, scored on the 10 % validation split (never the test set).",
        f"- **Score:** smoothed validation time to {SELECTION_TARGET:.0%} (the first time the mean of the last 1 s of "
        "evaluations holds it); a seed that never holds it, or diverges, scores (2 + its shortfall to the target) x "
        "its planned horizon. "
        "Lower is better.",
        f"- **Chosen:** `{payload['chosen']}`.{_margin_text(ranked)}",
        "",
        "| variant | rules | mean (s) | per seed (s) |",
        "| --- | --- | --- | --- |",
    ]
    for g, m, s in ranked:
        lines.append(f"| {g} | {labels[g]} | {m:.2f} | {', '.join(f'{x:.2f}' for x in s)} |")
    diverged = diverged_runs(jobs)
    if diverged:
        lines += ["", "Diverged (scored as never holding the target):", *(f"- {line}" for line in diverged)]
    missing = sorted({j.spec.group for j in jobs} - {g for g, _, _ in ranked})
    if missing:
        lines += ["", f"Not yet complete (not ranked): {', '.join(missing)}."]
    (out / "screen.md").write_text("\n".join(lines) + "\n")
    return payload


# Every run's round cap: the horizon ends the runs, the cap only bounds them. It allows rounds of
# 0.035 s at Table I (a tuned T_max can go down to 0.05 s; FedBuff steps every ~0.05-0.08 s).
MIN_ROUND_S = 0.035
TUNING_DIR = "tuning"


def preset_and_sets(method: Method) -> tuple[str, tuple[str, ...]]:
    """``method``'s preset (its first ``method=`` override) and the rest of its overrides."""
    presets = [o.split("=", 1)[1] for o in method.overrides if o.startswith("method=")]
    if not presets:
        raise ValueError(f"{method.key}: its overrides name no method preset (method=...)")
    return presets[0], tuple(o for o in method.overrides if o != f"method={presets[0]}")


def tuning_file(method: Method, reports_root: Path = REPORTS_ROOT) -> Path:
    """``<reports>/tuning/<key>/<preset>/tuning.json``: each study method in a folder of its own."""
    return reports_root / TUNING_DIR / method.key / preset_and_sets(method)[0] / TUNING_FILE


def tuned_overrides(method: Method, reports_root: Path = REPORTS_ROOT) -> tuple[str, ...]:
    """The ``chosen_overrides`` of ``method``'s tuning (:func:`tuning_file`); ValueError if it is untuned."""
    path = tuning_file(method, reports_root)
    try:
        return tuple(str(o) for o in json.loads(path.read_text())["chosen_overrides"])
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: {method.key} has no finished tuning ({exc}); run `{MODULE} tune` first") from exc


def base(method: Method, tuned: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    return (f"experiment={PRESET}", *method.overrides, *tuned[method.key])


def evaluation_specs(
    methods: Sequence[Method], tuned: dict[str, tuple[str, ...]], seeds: Sequence[int] = EVAL_SEEDS
) -> list[StudySpec]:
    """Every method at its tuned values on the evaluation seeds, Table I's system, tested on the test set."""
    cap = f"num_rounds={math.ceil(ROUND_CAP_MARGIN * BASE_HORIZON_S / MIN_ROUND_S)}"
    return [
        StudySpec("evaluate", m.key, m.label, s, (*base(m, tuned), cap, f"seed={s}"))
        for m in methods
        for s in seeds
    ]  # fmt: skip


def map_specs(
    pair: Sequence[Method],
    tuned: dict[str, tuple[str, ...]],
    calibrations: dict[str, Calibration],
    regimes: Sequence[Regime] = REGIMES,
    seeds: Sequence[int] = EVAL_SEEDS,
) -> list[StudySpec]:
    """The regime map's runs: ``pair`` (best AMP-FL, best other) at their tuned values at every regime point.

    A regime's system overrides come first, the tuned values next, then what the regime's time
    scale sets (:func:`scaled_overrides`: horizon, evaluation grid, the method's time settings scaled, round cap).
    """
    settings = {m.key: time_settings(compose_values(base(m, tuned)), m.amp_fl) for m in pair}
    specs = []
    for regime in regimes:
        calibration = calibrations[regime.key]
        for m in pair:
            scaled = scaled_overrides(calibration, settings[m.key], MIN_ROUND_S)
            for s in seeds:
                overrides = (
                    f"experiment={PRESET}",
                    *regime.overrides,
                    *m.overrides,
                    *tuned[m.key],
                    *scaled,
                    f"seed={s}",
                )
                specs.append(StudySpec("map", f"{regime.key}/{m.key}", f"{m.label} @ {regime.key}", s, overrides))
    return specs


def run_stage(
    specs: Sequence[StudySpec],
    runs_root: Path,
    jobs_n: int,
    cluster: Any,
    extra: Sequence[str] = (),
    log: Any = print,
) -> list[Job[StudySpec]]:
    """Plan ``specs`` with ``extra`` overrides last (restoring finished runs from the ledger), run what is missing.

    Returns every job, complete or not.
    """
    specs = [replace(spec, overrides=(*spec.overrides, *extra)) for spec in specs]
    jobs = make_jobs(specs, runs_root)
    todo = still_to_run(jobs)
    log(f"[headline] {specs[0].stage}: {len(jobs)} runs, {len(jobs) - len(todo)} complete, {len(todo)} to run")
    failures = execute(todo, "inprocess", max(1, jobs_n), log, name=f"headline {specs[0].stage}", cluster=cluster)
    for line in failures:
        log(f"[headline] failed: {line}")
    return jobs


# ------------------------------------------------------------------------------------------ reports
GOAL_SPEEDUP = 2.0  # issue 21's goal: >= 2.0x the best other method at both targets ...
GOAL_LOW = 1.5  # ... with the interval's lower bound above 1.5x


@dataclass(frozen=True)
class PairResult:
    """The best AMP-FL against the best other method at one target: both definitions of the time to it."""

    target: float
    smoothed: SpeedupStats
    first: SpeedupStats

    @property
    def goal_met(self) -> bool:
        iv = self.smoothed.interval
        return iv.estimate >= GOAL_SPEEDUP and math.isfinite(iv.low) and iv.low > GOAL_LOW


def load_group(label: str, jobs: Sequence[Job[StudySpec]]) -> Group:
    """The complete runs of ``jobs`` as one group (one per seed)."""
    runs = [load_run(j.run_dir) for j in jobs if is_complete(j.run_dir, j.values)]
    return Group(label, sorted(runs, key=lambda r: r.seed))


def pair_results(amp: Group, other: Group, targets: Sequence[float] | None = None) -> list[PairResult]:
    """Speedups of ``amp`` over ``other`` (paired by seed) at every target (default :data:`TARGETS`)."""
    comparison = compare([other, amp], TARGETS if targets is None else targets, reference=other.label)
    stats = comparison.by_label(amp.label)
    return [PairResult(t, stats.speedup[t].smoothed, stats.speedup[t].first) for t in comparison.targets]


def best_other(comparison: Comparison, others: Sequence[str]) -> str:
    """The other method the evidence favours: most seeds holding the selection target (75 %; the highest
    target if the comparison lacks it), then the shortest mean smoothed time.

    Picked on the evaluation seeds, after the fact: the strongest rival, so the choice can only
    make AMP-FL's speedup smaller.
    """
    target = SELECTION_TARGET if SELECTION_TARGET in comparison.targets else comparison.targets[-1]

    def key(label: str) -> tuple[float, float]:
        smoothed = comparison.by_label(label).targets[target].smoothed
        mean = smoothed.sim_time_s.mean if smoothed.reached else math.inf
        return (-smoothed.reached, mean)

    return min(others, key=key)


def pair_table(results: Sequence[PairResult]) -> list[str]:
    lines = [
        "| target | speedup, held 1 s (leading) | speedup, first crossing | goal (>= 2.0x, interval above 1.5x) |",
        "| --- | --- | --- | --- |",
    ]
    for r in results:
        verdict = (
            "met"
            if r.goal_met
            else f"not met ({r.smoothed.interval.estimate:.2f}x, low {r.smoothed.interval.low:.2f}x)"
        )
        lines.append(
            f"| {r.target:.0%} | {fmt_speedup(r.smoothed, False)} | {fmt_speedup(r.first, False)} | {verdict} |"
        )
    return lines


def evaluate_report(
    jobs: Sequence[Job[StudySpec]], methods: Sequence[Method], out: Path, command: str
) -> tuple[str, str]:
    """``<out>/report.md`` (every method, :func:`amp_fl.report.write_report`) with the headline on top.

    Returns the labels of the pair the map compares: (best AMP-FL, best other).
    """
    by_key = {m.key: m for m in methods}
    complete = [j for j in jobs if is_complete(j.run_dir, j.values)]
    if not complete:
        raise ValueError("evaluate: no run is complete yet")
    comparison = write_report(
        [j.run_dir for j in complete],
        out,
        targets=TARGETS,
        labels=[j.spec.label for j in complete],
        reference=next(m.label for m in methods if not m.amp_fl),
        title="The headline: every method tuned with the same budget, Table I, Fashion-MNIST",
        command=command,
    )
    present = {j.spec.label for j in complete}
    amp_label = by_key[AMP_BEST].label
    others = [m.label for m in methods if not m.amp_fl and m.label in present]
    if amp_label not in present or not others:
        raise ValueError("evaluate: the best AMP-FL or every other method has no complete run yet")
    rival = best_other(comparison, others)
    groups = {label: load_group(label, [j for j in complete if j.spec.label == label]) for label in (amp_label, rival)}
    results = pair_results(groups[amp_label], groups[rival])
    seeds = sorted({j.spec.seed for j in complete})
    head = [
        "# The headline: the best AMP-FL against the best other method",
        "",
        f"- **Command:** `{command}`",
        f"- **Setting:** `experiment={PRESET}` (Table I, Fig. 8's s = 2, Fashion-MNIST, 100 PIUs x 600 samples, "
        f"{BASE_HORIZON_S:g} s of simulated time, test accuracy every {BASE_EVAL_EVERY_S:g} s), evaluation seeds "
        f"{', '.join(map(str, seeds))} (tuning seeds {', '.join(map(str, TUNING_SEEDS))} are disjoint).",
        f"- **Tuning:** every method {TRIALS} TPE trials over the tuning seeds on the validation split "
        f"(`reports/headline/tuning/<method>/`); AMP-FL's rules were screened beforehand (`reports/headline/screen/`).",
        f"- **Best AMP-FL:** {amp_label}. **Best other method:** {rival} (on these seeds the most seeds holding "
        f"{SELECTION_TARGET:.0%}, then the shortest mean smoothed time: the strongest rival).",
        "",
        *pair_table(results),
        "",
        "Speedup = mean time of the other method / mean time of AMP-FL over the seeds where both reached the "
        "target, with its 95 % paired bootstrap interval over seeds (docs/statistics.md); held 1 s: the first "
        "time the mean of the last second's evaluations reaches the target.",
        "",
    ]
    report = out / REPORT_FILE
    report.write_text("\n".join(head) + "\n" + report.read_text().replace("# ", "## ", 1))
    payload = {"best_amp_fl": amp_label, "best_other": rival, "seeds": seeds, "pairs": [_pair_json(r) for r in results]}
    (out / "headline.json").write_text(json.dumps(payload, indent=2) + "\n")
    return amp_label, rival


def _pair_json(r: PairResult) -> dict[str, Any]:
    def iv(stats: SpeedupStats) -> dict[str, Any]:
        i = stats.interval
        return {"estimate": i.estimate, "low": i.low, "high": i.high, "n": i.n, "excluded": stats.excluded}

    return {"target": r.target, "smoothed": iv(r.smoothed), "first": iv(r.first), "goal_met": r.goal_met}


AXIS_TITLES = {
    "cpu_spread": "(a) spread of CPU speeds (fastest / slowest)",
    "flops_per_cycle": "(b) computation's share of a full-model round",
    "num_rbs": "(c) resource blocks R",
}


@dataclass(frozen=True)
class MapPoint:
    """One regime of the map, its calibration, and the pair's speedups there."""

    regime: Regime
    calibration: Calibration
    results: list[PairResult]

    def x(self) -> float:
        """Where the point sits on its axis: the spread, the compute share, or R."""
        return self.calibration.compute_share if self.regime.axis == "flops_per_cycle" else self.regime.value


def map_points(
    jobs: Sequence[Job[StudySpec]], pair: Sequence[Method], calibrations: dict[str, Calibration]
) -> list[MapPoint]:
    """Every regime whose two groups both have complete runs, with the pair's speedups (Table I's included)."""
    points = []
    for regime in REGIMES:
        groups = [load_group(m.label, [j for j in jobs if j.spec.group == f"{regime.key}/{m.key}"]) for m in pair]
        if all(g.runs for g in groups):
            points.append(MapPoint(regime, calibrations[regime.key], pair_results(groups[0], groups[1])))
    return points


def plot_map(points: Sequence[MapPoint], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table1 = next((p for p in points if p.regime is TABLE1), None)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, (axis, title) in zip(axes, AXIS_TITLES.items(), strict=True):
        on_axis = [p for p in points if p.regime.axis == axis] + ([table1] if table1 else [])
        on_axis.sort(key=lambda p: _x_on(axis, p))
        plotted = False
        for i, target in enumerate(TARGETS):
            plotted |= _plot_target(ax, [(_x_on(axis, p), p.results[i].smoothed) for p in on_axis], target)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.axhline(GOAL_SPEEDUP, color="grey", lw=0.8, ls="--")
        ax.set_title(title, fontsize=9)
        if plotted and axis != "flops_per_cycle":
            ax.set_xscale("log")
            # the points' own values as ticks: log-scale minor labels overlap at these few points
            ticks = sorted({_x_on(axis, p) for p in on_axis})
            ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
            ax.minorticks_off()
    axes[0].set_ylabel("speedup of the best AMP-FL")
    legend = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    if legend:
        axes[0].legend(legend.values(), legend.keys(), fontsize=8)
    fig.tight_layout()
    path = out / "regime_map.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_target(ax: Any, rows: Sequence[tuple[float, SpeedupStats]], target: float) -> bool:
    """One target's speedups along an axis, with their intervals; a point where only AMP-FL reached the
    target in every seed has no ratio, so its lower bound (the rival's whole run over AMP-FL's time) is
    drawn as an upward triangle instead. True if anything was drawn."""
    exact = [(x, s.interval) for x, s in rows if s.interval.n and math.isfinite(s.interval.estimate)]
    bounds = [(x, min(s.per_seed.at_least.values())) for x, s in rows if not s.interval.n and s.per_seed.at_least]
    colour = f"C{TARGETS.index(target)}"
    if exact:
        est = np.array([iv.estimate for _, iv in exact])
        low = np.array([iv.estimate - iv.low if math.isfinite(iv.low) else 0.0 for _, iv in exact])
        high = np.array([iv.high - iv.estimate if math.isfinite(iv.high) else 0.0 for _, iv in exact])
        xs = [x for x, _ in exact]
        ax.errorbar(xs, est, yerr=[low, high], marker="o", capsize=3, color=colour, label=f"to {target:.0%} (held 1 s)")
    if bounds:
        ax.plot(
            [x for x, _ in bounds],
            [b for _, b in bounds],
            "^",
            color=colour,
            ms=8,
            ls="none",
            label=f"to {target:.0%}: only AMP-FL got there (lower bound)",
        )
    return bool(exact or bounds)


def _x_on(axis: str, point: MapPoint) -> float:
    """Where ``point`` sits on ``axis``; Table I's own place on each: its CPU spread, compute share, and R."""
    if point.regime is not TABLE1:
        return point.x()
    own = {"cpu_spread": TABLE1_CPU_HZ[-1] / TABLE1_CPU_HZ[0], "num_rbs": 10.0}
    return own.get(axis, point.calibration.compute_share)


def map_report(points: Sequence[MapPoint], pair: Sequence[Method], out: Path, command: str) -> Path:
    """``<out>/report.md``, ``map.json`` and ``regime_map.png``: the pair's speedup at every regime point."""
    out.mkdir(parents=True, exist_ok=True)
    figure = plot_map(points, out) if points else None
    lines = [
        f"# Regime map: {pair[0].label} against {pair[1].label}",
        "",
        f"- **Command:** `{command}`",
        f"- Both at their tuned values (`reports/headline/tuning/`), Fashion-MNIST, 100 PIUs x 600 samples, s = 2, "
        f"evaluation seeds {', '.join(map(str, EVAL_SEEDS))}. Each point's horizon, evaluation grid and AMP-FL's "
        "T_max settings (its tuned T_max and, under a linear schedule, its end) are scaled by its full-model "
        "round length over Table I's (calibrated from the latency model, "
        "no training), so every point runs about as many rounds as Table I's.",
        "- Speedup: ratio of mean smoothed (held 1 s) times, 95 % paired bootstrap interval; first crossing beside.",
        f"- Goal (>= {GOAL_SPEEDUP:g}x held 1 s, interval above {GOAL_LOW:g}x) met at: {_goal_points(points)}.",
        "",
        "| regime | full-model round (s) | scale | compute share | target | speedup, held 1 s | first crossing |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in points:
        c = p.calibration
        for r in p.results:
            lines.append(
                f"| {p.regime.key} | {c.full_round_s:.3f} | {c.factor:.2f} | {c.compute_share:.0%} | {r.target:.0%} | "
                f"{fmt_speedup(r.smoothed, False)} | {fmt_speedup(r.first, False)} |"
            )
    if figure is not None:
        lines += ["", f"![regime map]({figure.name})"]
    missing = [r.key for r in REGIMES if r.key not in {p.regime.key for p in points}]
    if missing:
        lines += ["", f"Regimes without complete runs yet: {', '.join(missing)}."]
    report = out / REPORT_FILE
    report.write_text("\n".join(lines) + "\n")
    payload = [
        {"regime": p.regime.key, "compute_share": p.calibration.compute_share, "factor": p.calibration.factor,
         "pairs": [_pair_json(r) for r in p.results]}
        for p in points
    ]  # fmt: skip
    (out / "map.json").write_text(json.dumps(payload, indent=2) + "\n")
    return report


def _goal_points(points: Sequence[MapPoint]) -> str:
    """The regimes and targets where the goal is met, or "none"."""
    met = [f"{p.regime.key} to {r.target:.0%}" for p in points for r in p.results if r.goal_met]
    return ", ".join(met) if met else "none"


STAGES = ("screen", "tune", "evaluate", "map")


def the_pair(methods: Sequence[Method], reports_root: Path) -> tuple[Method, Method]:
    """(best AMP-FL, best other) as the evaluation report chose them (``evaluate/headline.json``)."""
    path = reports_root / "evaluate" / "headline.json"
    try:
        chosen = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: no evaluation report ({exc}); run `{MODULE} evaluate` first") from exc
    by_label = {m.label: m for m in methods}
    return by_label[chosen["best_amp_fl"]], by_label[chosen["best_other"]]


def run_screen(args: argparse.Namespace, command: str, cluster: Any) -> None:
    jobs = run_stage(screen_specs(args.screen_seeds), args.runs_root / "screen", args.jobs, cluster, args.set)
    payload = write_screen(jobs, args.reports_root / "screen", command)
    print(f"[headline] screen: chosen {payload['chosen']} ({args.reports_root / 'screen' / 'screen.md'})")


def run_tune(args: argparse.Namespace, command: str, cluster: Any) -> None:
    """Every method: ``args.trials`` TPE trials over the tuning seeds, the same budget each (resumes its study)."""
    cap = f"num_rounds={math.ceil(ROUND_CAP_MARGIN * BASE_HORIZON_S / MIN_ROUND_S)}"
    for method in methods_after_screen(args.reports_root):
        preset, rest = preset_and_sets(method)
        payload = tune_tpe(
            preset,
            parse_space(list(method.space)),
            trials=args.trials,
            seeds=args.tuning_seeds,
            target=SELECTION_TARGET,
            sets=(f"experiment={PRESET}", *rest, cap, VALIDATION_ONLY, *args.set),
            runs_dir=args.runs_root / TUNING_DIR / method.key,
            reports_dir=args.reports_root / TUNING_DIR / method.key,
            jobs=max(1, args.jobs),
            startup_trials=STARTUP_TRIALS,
            command=command,
            cluster=cluster,
        )
        print(f"[headline] tune {method.key}: {' '.join(payload['chosen_overrides'])}")


def run_evaluate(args: argparse.Namespace, command: str, cluster: Any) -> None:
    methods = methods_after_screen(args.reports_root)
    tuned = {m.key: tuned_overrides(m, args.reports_root) for m in methods}
    specs = evaluation_specs(methods, tuned, args.seeds)
    jobs = run_stage(specs, args.runs_root / "evaluate", args.jobs, cluster, args.set)
    amp, rival = evaluate_report(jobs, methods, args.reports_root / "evaluate", command)
    print(f"[headline] evaluate: {amp} against {rival} ({args.reports_root / 'evaluate' / REPORT_FILE})")


def run_map(args: argparse.Namespace, command: str, cluster: Any) -> None:
    methods = methods_after_screen(args.reports_root)
    pair = the_pair(methods, args.reports_root)
    tuned = {m.key: tuned_overrides(m, args.reports_root) for m in pair}
    calibrations = {r.key: calibrate(r, extra=args.set) for r in REGIMES}
    specs = map_specs(pair, tuned, calibrations, REGIMES, args.seeds)
    jobs = run_stage(specs, args.runs_root / "map", args.jobs, cluster, args.set)
    report = map_report(map_points(jobs, pair, calibrations), pair, args.reports_root / "map", command)
    print(f"[headline] map: {report}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("stage", choices=STAGES, help="screen -> tune -> evaluate -> map (each resumes)")
    parser.add_argument("--jobs", type=positive_int, default=2, help="in-process runs side by side (default 2)")
    parser.add_argument("--seeds", type=seed_list, default=EVAL_SEEDS, help="evaluation seeds (default 0-7)")
    parser.add_argument("--tuning-seeds", type=seed_list, default=TUNING_SEEDS, help="default 100,101")
    parser.add_argument(
        "--screen-seeds", type=seed_list, default=SCREEN_SEEDS, help="the screen's seeds (default 100-103)"
    )
    parser.add_argument("--trials", type=positive_int, default=TRIALS, help=f"TPE trials per method (default {TRIALS})")
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="Hydra overrides of every run (last, so they win)"
    )
    parser.add_argument("--runs-root", type=Path, default=RUNS_ROOT)
    parser.add_argument("--reports-root", type=Path, default=REPORTS_ROOT)
    add_cluster_arguments(parser)
    args = parser.parse_args(argv)
    command = shlex.join([*MODULE.split(), *(sys.argv[1:] if argv is None else argv)])
    if set(args.seeds) & set(args.tuning_seeds + args.screen_seeds):
        print("error: --seeds: evaluation seeds must differ from the tuning and screen seeds", file=sys.stderr)
        return 2
    stages = {"screen": run_screen, "tune": run_tune, "evaluate": run_evaluate, "map": run_map}
    try:
        check_folders({"--runs-root": args.runs_root, "--reports-root": args.reports_root})
        stages[args.stage](args, command, cluster_from_args(args))
    except KeyboardInterrupt:
        print(f"[headline] interrupted: `{command}` again resumes", file=sys.stderr)
        return 130
    except ValueError as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(campaign_cli(main))
