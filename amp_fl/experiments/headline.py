"""Settle the headline (issue 21): ``python -m amp_fl.experiments.headline screen|tune|evaluate|map|report``.

The question: how much sooner does the best AMP-FL reach 70 % / 75 % test accuracy than the best
method a user would pick instead, each tuned with the same budget, on Table I's system with
Fashion-MNIST at paper scale (100 PIUs x 600 samples, s = 2)? And where, across systems, does
adaptive pruning pay off? The study runs in stages, each resumable (its runs are campaign runs:
kept in ``runs/headline/`` and recorded in the results ledger, ``results/headline/``):

1. ``screen``: AMP-FL's structural rules beyond the paper (:data:`VARIANTS`), alone and together,
   on the validation split with the tuning seeds; the one with the shortest smoothed validation
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from amp_fl.experiments.campaign import (
    PROJECT_ROOT,
    Job,
    add_cluster_arguments,
    cluster_from_args,
    compose_values,
    execute,
    is_complete,
    make_jobs,
)
from amp_fl.experiments.cli import campaign_cli, check_folders, error_line
from amp_fl.experiments.figures import ROUND_CAP_MARGIN
from amp_fl.run_folder import METRICS_FILE, read_columns, smoothed_time_to_target

PRESET = "speedup"  # Fig. 8's s = 2 panel, 10 % validation split, evaluation every 0.25 s, 30 s horizon
TARGETS = (0.70, 0.75)
SELECTION_TARGET = 0.75  # the screen and the tuning rank by the smoothed validation time to this
TUNING_SEEDS = (100, 101, 102)
EVAL_SEEDS = tuple(range(8))
TRIALS = 12  # every method's tuning budget (TPE trials, each over the tuning seeds)
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
    of the others). ``t_max_tuned``: its tuning searches ``model.t_max_s`` (the map scales the tuned value).
    """

    key: str
    label: str
    overrides: tuple[str, ...]
    space: tuple[str, ...]
    amp_fl: bool = False

    @property
    def t_max_tuned(self) -> bool:
        return any(item.split("=", 1)[0] in ("t_max", "model.t_max_s") for item in self.space)


MODULE = "python -m amp_fl.experiments.headline"
LEARNING_RATE = "learning_rate=float:0.02:0.4:log"
SERVER_STEP = "server_optimizer=cat:sgd,momentum"
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

    values = compose_values([f"experiment={PRESET}", "method=synchronous", *overrides, f"seed={seed}"])
    return float(np.mean(round_lengths(load_config(values), rounds, (1, 28, 28))))


def calibrate(regime: Regime, seed: int = 0) -> Calibration:
    """:class:`Calibration` of ``regime``: its full-model round length, Table I's, and the uplink-only one."""
    return Calibration(
        full_round_s(regime.overrides, seed),
        full_round_s((), seed),
        full_round_s((*regime.overrides, "wireless.flops_per_cycle=1e12"), seed),
    )


def scaled_overrides(calibration: Calibration, t_max_s: float | None, round_cap_s: float) -> tuple[str, ...]:
    """A regime's horizon, evaluation grid, T_max (the tuned one, if given) and round cap, scaled by its factor.

    ``round_cap_s``: the method's typical round length at Table I (T_max for AMP-FL, the full-model
    round for the others), so the cap gives the horizon's rounds with the usual margin.
    """
    f = calibration.factor
    horizon = BASE_HORIZON_S * f
    out = [f"sim_time_limit_s={horizon:.6g}", f"evaluation.every_sim_s={BASE_EVAL_EVERY_S * f:.6g}"]
    if t_max_s is not None:
        out.append(f"model.t_max_s={t_max_s * f:.6g}")
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


# What a selection run (screen, tuning) adds: stop once the smoothed validation accuracy holds the target.
SELECTION = (f"evaluation.stop_at_val_accuracy={SELECTION_TARGET}", "evaluation.stop_window_s=1.0")


def screen_specs(seeds: Sequence[int] = TUNING_SEEDS) -> list[StudySpec]:
    """The AMP-FL screen: every variant on the tuning seeds, stopping when the target is held on validation."""
    return [
        StudySpec("screen", v.key, v.label, s, (f"experiment={PRESET}", *v.overrides, *SELECTION, f"seed={s}"))
        for v in VARIANTS
        for s in seeds
    ]  # fmt: skip


def smoothed_validation_time(run_dir: Path, target: float = SELECTION_TARGET) -> float:
    """A selection run's score: its smoothed validation time to ``target``; twice its length if never held."""
    columns = read_columns(run_dir / METRICS_FILE)
    hit = smoothed_time_to_target(columns["round"], columns["sim_time_s"], columns["val_accuracy"], target)
    return hit.sim_time_s if hit is not None else 2.0 * float(columns["sim_time_s"][-1])


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
        f"- **Setting:** `experiment={PRESET}` (Fig. 8, s = 2, Fashion-MNIST, 100 PIUs x 600 samples), tuning seeds "
        f"{', '.join(map(str, seeds))}, scored on the 10 % validation split (never the test set).",
        f"- **Score:** smoothed validation time to {SELECTION_TARGET:.0%} (the first time the mean of the last 1 s of "
        "evaluations holds it); a seed that never holds it scores twice its run's length. Lower is better.",
        f"- **Chosen:** `{payload['chosen']}`.",
        "",
        "| variant | rules | mean (s) | per seed (s) |",
        "| --- | --- | --- | --- |",
    ]
    for g, m, s in ranked:
        lines.append(f"| {g} | {labels[g]} | {m:.2f} | {', '.join(f'{x:.2f}' for x in s)} |")
    missing = sorted({j.spec.group for j in jobs} - {g for g, _, _ in ranked})
    if missing:
        lines += ["", f"Not yet complete (not ranked): {', '.join(missing)}."]
    (out / "screen.md").write_text("\n".join(lines) + "\n")
    return payload


# Every run's round cap: the horizon ends the runs, the cap only bounds them. It allows rounds of
# 0.035 s at Table I (a tuned T_max can go down to 0.05 s; FedBuff steps every ~0.05-0.08 s).
MIN_ROUND_S = 0.035
TUNING_DIR = "tuning"


def tuned_overrides(method: Method, reports_root: Path = REPORTS_ROOT) -> tuple[str, ...]:
    """``<reports>/tuning/<key>/tuning.json``'s ``chosen_overrides`` of ``method``; ValueError if it is untuned."""
    path = reports_root / TUNING_DIR / method.key / "tuning.json"
    try:
        return tuple(str(o) for o in json.loads(path.read_text())["chosen_overrides"])
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: {method.key} has no finished tuning ({exc}); run `{MODULE} tune` first") from exc


def tuned_t_max(overrides: Sequence[str]) -> float | None:
    """The ``model.t_max_s`` a tuning chose (the last one given), None if it chose none."""
    values = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] in ("model.t_max_s", "t_max")]
    return float(values[-1]) if values else None


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
    scale sets (:func:`scaled_overrides`: horizon, evaluation grid, the tuned T_max scaled, round cap).
    """
    specs = []
    for regime in regimes:
        calibration = calibrations[regime.key]
        for m in pair:
            t_max = tuned_t_max(tuned[m.key]) if m.t_max_tuned else None
            scaled = scaled_overrides(calibration, t_max, MIN_ROUND_S)
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
    specs: Sequence[StudySpec], runs_root: Path, jobs_n: int, cluster: Any, log: Any = print
) -> list[Job[StudySpec]]:
    """Plan ``specs`` (restoring finished runs from the ledger), run what is missing; returns every job."""
    jobs = make_jobs(specs, runs_root)
    todo = [j for j in jobs if not is_complete(j.run_dir, j.values)]
    log(f"[headline] {specs[0].stage}: {len(jobs)} runs, {len(jobs) - len(todo)} complete, {len(todo)} to run")
    failures = execute(todo, "inprocess", max(1, jobs_n), log, name=f"headline {specs[0].stage}", cluster=cluster)
    for line in failures:
        log(f"[headline] failed: {line}")
    return jobs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("screen",))
    parser.add_argument("--jobs", type=int, default=2, help="in-process runs side by side (default 2)")
    parser.add_argument("--runs-root", type=Path, default=RUNS_ROOT)
    parser.add_argument("--reports-root", type=Path, default=REPORTS_ROOT)
    add_cluster_arguments(parser)
    args = parser.parse_args(argv)
    command = shlex.join([*MODULE.split(), *(sys.argv[1:] if argv is None else argv)])
    try:
        check_folders({"--runs-root": args.runs_root, "--reports-root": args.reports_root})
        cluster = cluster_from_args(args)
        jobs = run_stage(screen_specs(), args.runs_root / "screen", args.jobs, cluster)
        payload = write_screen(jobs, args.reports_root / "screen", command)
    except ValueError as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    print(f"[headline] screen: chosen {payload['chosen']} ({args.reports_root / 'screen' / 'screen.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(campaign_cli(main))
