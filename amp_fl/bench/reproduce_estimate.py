"""Benchmark: how long ``make reproduce`` (paper scale) and ``make reproduce-quick`` take here, from measured rounds.

``python -m amp_fl.bench reproduce_estimate [--campaigns paper,quick] [--probe-rounds N] [--jobs J] [--override K=V]``

A campaign is too long to time whole on every change (the paper scale has 146 runs). Its runs
fall into a few *kinds*: runs equal in everything but seed and round count cost the same per
round. For each kind one probe run of ``--probe-rounds`` rounds goes through the campaign's
own machinery (:func:`amp_fl.experiments.campaign.execute`, the in-process engine, ``--jobs``
workers side by side as ``make reproduce`` runs them, so the probes slow each other as the real
runs would). A probe gives the kind's seconds per plain round, what a round with a central
evaluation (``evaluation.every_sim_s`` or ``every_rounds``) and one with a personalised
evaluation cost more, and its fixed cost (the run's wall time outside its rounds: imports, data,
set-up, the final files). The estimate is

    sum over the campaign's runs of (fixed cost + rounds x seconds per round
                                     + each kind of evaluation's count x its extra), divided by the workers,

where a run's rounds are its round cap, or fewer when it has a simulated-time horizon that its
kind's simulated seconds per round (from the probe) reach first (:func:`rounds_to_run`), and its
evaluations are counted by the recorder's and the strategy's own rules,

against the goals (paper scale <= 2 h, quick <= 8 min). One JSON line per campaign, with every
kind's measured figures, each figure's share of the estimate (``by_figure_h``), the machine's
load and the goal.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from amp_fl.bench import emit
from amp_fl.experiments.campaign import Job, execute, make_jobs
from amp_fl.experiments.reproduce import DATASETS, FIGURES, PAPER_FIGURES, SCALES, expand_figure
from amp_fl.run_folder import METRICS_FILE, read_columns, read_timing
from amp_fl.server.recorder import evaluation_due
from amp_fl.strategy.amp_fl import personal_evaluation_due

GOALS_S = {"paper": 2 * 3600.0, "quick": 8 * 60.0}
CAMPAIGNS = {"paper": (PAPER_FIGURES, "paper"), "quick": (("quick",), "quick")}
# Settings that change what a run learns but not what a round computes: the data partition's
# shards per device (the same sample counts), the seed, the round count and the folder.
IGNORED_IN_KIND = ("seed", "num_rounds", "output_dir", "dataset.shards_per_device")


def kind_of(values: dict[str, Any]) -> str:
    """Runs of one kind differ only in :data:`IGNORED_IN_KIND`: they cost the same per round."""
    kept = {**values, "dataset": dict(values.get("dataset", {}))}
    for path in IGNORED_IN_KIND:
        section, _, key = path.rpartition(".")
        (kept[section] if section else kept).pop(key, None)
    return json.dumps(kept, sort_keys=True, default=str)


def campaign_jobs(campaign: str, runs_root: Path, extra: Sequence[str] = ()) -> list[Job[Any]]:
    """Every run of ``campaign`` (as ``python -m amp_fl.experiments.reproduce`` plans it), complete or not.

    ``extra``: Hydra overrides added to every run, last (reproduce's ``--override``): what-if estimates.
    """
    figures, scale_name = CAMPAIGNS[campaign]
    scale, dataset = SCALES[scale_name], DATASETS["fashion_mnist"]
    jobs: list[Job[Any]] = []
    for name in figures:
        jobs += make_jobs(expand_figure(FIGURES[name], scale, dataset, extra), runs_root / name)
    return jobs


def probe_jobs(jobs: Sequence[Job[Any]], probe_rounds: int, root: Path) -> dict[str, Job[Any]]:
    """One short run per kind (the kind's first run, cut to ``probe_rounds`` rounds)."""
    probes: dict[str, Job[Any]] = {}
    for job in jobs:
        kind = kind_of(job.values)
        if kind in probes:
            continue
        run_dir = root / f"kind{len(probes)}"
        values = {**job.values, "num_rounds": probe_rounds, "output_dir": str(run_dir)}
        probes[kind] = replace(job, values=values, run_dir=run_dir)
    return probes


def seconds_by_figure(jobs: Sequence[Job[Any]], runs_s: Sequence[float], runs_root: Path) -> dict[str, float]:
    """The estimated seconds of each figure's runs (a job's figure: its folder's first part under ``runs_root``)."""
    totals: dict[str, float] = {}
    for job, seconds in zip(jobs, runs_s, strict=True):
        figure = job.run_dir.relative_to(runs_root).parts[0]
        totals[figure] = totals.get(figure, 0.0) + seconds
    return totals


class ProbeCosts(NamedTuple):
    """What a finished probe run measured for its kind."""

    per_round_s: float  # wall seconds of a round without a central evaluation (with one when every round has it)
    fixed_s: float  # the run's wall time outside its rounds
    sim_per_round_s: float  # simulated seconds per round (mean over rounds 1..N)
    personal_eval_s: float  # what a round with a personalised evaluation costs more (0 for a kind without)
    central_eval_s: float = 0.0  # what a centrally evaluated round costs more (0 when every round is evaluated)


def probe_costs(probe: Job[Any]) -> ProbeCosts:
    """The costs a finished probe run measured.

    Rounds are priced by what they did: plain rounds, rounds with a central evaluation (on the
    ``evaluation`` grid, which a 10-round probe crosses at other rates than a run) and
    rounds that also score the personalised models (``strategy.personal_eval_interval``: a probe's
    last round always does when its kind does at all, a run far less often); each extra is counted
    as the run has it (:func:`run_seconds`).
    """
    columns = read_columns(probe.run_dir / METRICS_FILE)
    wall = np.asarray(columns["wall_time_s"], dtype=float)
    sim = np.asarray(columns["sim_time_s"], dtype=float)
    rounds = len(wall) - 1  # row 0: the initial evaluation
    durations = np.diff(wall)

    def finite(name: str) -> np.ndarray:
        return np.isfinite(np.asarray(columns.get(name, [math.nan] * len(wall)), dtype=float))[1:]

    personal = finite("personal_accuracy")
    central = (finite("accuracy") | finite("val_accuracy")) & ~personal
    plain = ~central & ~personal
    central_round = float(durations[central].mean()) if central.any() else float(durations.mean())
    base = float(durations[plain].mean()) if plain.any() else central_round
    personal_extra = float(durations[personal].mean()) - central_round if personal.any() else 0.0
    fixed = float(read_timing(probe.run_dir)["wall_s"]) - float(wall[-1] - wall[0])
    return ProbeCosts(
        base, fixed, float(sim[-1] - sim[0]) / rounds, max(personal_extra, 0.0), max(central_round - base, 0.0)
    )


def rounds_to_run(values: dict[str, Any], sim_per_round_s: float) -> int:
    """The rounds a run executes: its round cap, or fewer when its simulated-time horizon comes first.

    A run with ``sim_time_limit_s`` stops after the first round ending at or past it; its rounds
    last ``sim_per_round_s`` each as its kind's probe measured them (a T_max that grows over the
    run makes later rounds longer, so this over-counts such runs, never under-counts).
    """
    cap = int(values["num_rounds"])
    limit = values.get("sim_time_limit_s")
    if limit is None or sim_per_round_s <= 0:
        return cap
    return min(cap, math.ceil(float(limit) / sim_per_round_s))


def personal_evaluations(values: dict[str, Any], rounds: int) -> int:
    """How many of a run's ``rounds`` score the personalised models (the strategy's own rule of when)."""
    interval = values.get("strategy", {}).get("personal_eval_interval")
    cap = int(values["num_rounds"])
    return sum(personal_evaluation_due(r, interval, cap) for r in range(1, rounds + 1))


def central_evaluations(values: dict[str, Any], rounds: int, sim_per_round_s: float) -> int:
    """How many of a run's ``rounds`` are centrally evaluated (the recorder's rule), each of ``sim_per_round_s``."""
    evaluation = values.get("evaluation", {})
    every_sim_s, every_rounds = float(evaluation.get("every_sim_s", 0.0)), int(evaluation.get("every_rounds", 0))
    interval = values.get("strategy", {}).get("personal_eval_interval")
    cap = int(values["num_rounds"])
    count, last = 0, 0.0
    for r in range(1, rounds + 1):
        now = r * sim_per_round_s
        personal = personal_evaluation_due(r, interval, cap)
        if r == rounds or evaluation_due(r, now, last, every_sim_s, cap, personal, every_rounds):
            count, last = count + 1, now
    return count


def run_seconds(values: dict[str, Any], costs: ProbeCosts) -> tuple[int, float]:
    """A run's rounds and estimated wall seconds, from its kind's probe."""
    rounds = rounds_to_run(values, costs.sim_per_round_s)
    seconds = (
        costs.fixed_s
        + rounds * costs.per_round_s
        + central_evaluations(values, rounds, costs.sim_per_round_s) * costs.central_eval_s
        + personal_evaluations(values, rounds) * costs.personal_eval_s
    )
    return rounds, seconds


def estimate(campaign: str, probe_rounds: int, workers: int, extra: Sequence[str] = ()) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="amp_fl_estimate_") as tmp:
        jobs = campaign_jobs(campaign, Path(tmp) / "plan", extra)
        probes = probe_jobs(jobs, probe_rounds, Path(tmp) / "probes")
        load_before = os.getloadavg()[0]
        failures = execute(list(probes.values()), "inprocess", workers, log=lambda line: None, name="estimate")
        if failures:
            raise RuntimeError(f"probe runs failed: {'; '.join(failures)}")
        costs = {kind: probe_costs(probe) for kind, probe in probes.items()}
    rounds, runs_s = zip(*(run_seconds(j.values, costs[kind_of(j.values)]) for j in jobs), strict=True)
    total_s = sum(runs_s) / workers
    by_figure = seconds_by_figure(jobs, runs_s, Path(tmp) / "plan")
    per_round = [c.per_round_s for c in costs.values()]
    fixed = [c.fixed_s for c in costs.values()]
    return {
        "bench": "reproduce_estimate",
        "campaign": campaign,
        "runs": len(jobs),
        "rounds": sum(rounds),
        "capped_rounds": sum(int(j.values["num_rounds"]) for j in jobs),
        "kinds": len(probes),
        "probe_rounds": probe_rounds,
        "workers": workers,
        "per_round_s_min": min(per_round),
        "per_round_s_median": statistics.median(per_round),
        "per_round_s_max": max(per_round),
        "fixed_s_median": statistics.median(fixed),
        "personal_eval_s_max": max(c.personal_eval_s for c in costs.values()),
        "central_evaluations": sum(
            central_evaluations(j.values, r, costs[kind_of(j.values)].sim_per_round_s)
            for j, r in zip(jobs, rounds, strict=True)
        ),
        "overrides": list(extra),
        "estimate_s": total_s,
        "estimate_h": total_s / 3600,
        "by_figure_h": {name: seconds / workers / 3600 for name, seconds in by_figure.items()},
        "goal_s": GOALS_S[campaign],
        "goal_met": total_s <= GOALS_S[campaign],
        "cpu_count": os.cpu_count(),
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": os.getloadavg()[0],
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m amp_fl.bench reproduce_estimate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--campaigns", default="paper,quick", help="comma-separated: paper, quick")
    parser.add_argument("--probe-rounds", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="workers side by side (make's JOBS)")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override added to every run, last (what if: e.g. evaluation.every_sim_s=1); repeatable",
    )
    args = parser.parse_args(argv)
    for campaign in args.campaigns.split(","):
        if campaign not in CAMPAIGNS:
            parser.error(f"unknown campaign {campaign!r}; choose from {', '.join(CAMPAIGNS)}")
        emit(estimate(campaign, args.probe_rounds, args.jobs, args.override))
