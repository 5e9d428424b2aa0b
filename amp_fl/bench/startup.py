"""Benchmark: how soon the command line answers, and what Flower costs per round.

(a) ``config_error``: seconds from ``python -m amp_fl num_rounds=0`` to its exit with the one-line
    ``error: invalid config ...`` (goal: within 2 s).
(b) ``first_round``: seconds from ``python -m amp_fl experiment=quick`` to the moment round 1's row
    is in ``metrics.csv`` (read as it grows, every 50 ms), through Flower's simulation engine
    (goal: within 20 s); round 0's row and the command's whole wall time beside it.
(c) ``round_time``: the median round time of Flower's simulation with one and with two Ray actors
    over the in-process loop, the same small config run side by side (goals: <= 1.2 and <= 0.8);
    the in-process loop runs before and after the Flower runs, and counts at the mean of its two
    medians; ``--round-repeats`` repeats the four runs and judges the median ratio.
    ``--wakeup both`` adds, in each repeat, the Flower runs with the engine's own 0.1 s message
    scan (``AMP_FL_ENGINE_WAKEUP=0``, amp_fl.server.engine_wakeup) beside them.

Every figure is a wall time on whatever else the machine runs: the min and median over
``--repeats`` runs are printed, quote the median. One JSON line per measurement, then one per goal.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from amp_fl.bench import emit
from amp_fl.bench.simulation import bench_config, flower_round_times, round_times
from amp_fl.config import RunConfig
from amp_fl.launch.inprocess import run_in_process
from amp_fl.launch.launcher import PROJECT_ROOT
from amp_fl.run_folder import METRICS_FILE, MetricsTail
from amp_fl.server.engine_wakeup import ENABLE_ENV

CONFIG_ERROR_GOAL_S = 2.0
FIRST_ROUND_GOAL_S = 20.0
ONE_ACTOR_GOAL = 1.2
TWO_ACTOR_GOAL = 0.8
POLL_S = 0.05


def _cli(*overrides: str, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "amp_fl", *overrides, f"hydra.run.dir={run_dir}"]


def config_error_seconds(tmp: Path) -> float:
    """One timed ``python -m amp_fl num_rounds=0``; raises unless it printed the one-line error."""
    started = time.perf_counter()
    done = subprocess.run(
        _cli("num_rounds=0", run_dir=tmp / "config_error"), cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 2 or not done.stderr.startswith("error: invalid config num_rounds"):
        raise RuntimeError(f"expected the one-line config error, got exit {done.returncode}: {done.stderr[-500:]}")
    return seconds


def first_round_seconds(run_dir: Path) -> dict[str, float]:
    """``python -m amp_fl experiment=quick``: seconds to round 0's and round 1's rows, and to its exit."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        _cli("experiment=quick", run_dir=run_dir),
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    tail = MetricsTail(run_dir / METRICS_FILE)
    seen: dict[int, float] = {}
    while proc.poll() is None:
        now = time.perf_counter() - started
        for row in tail.poll():
            seen.setdefault(row.round, now)
        time.sleep(POLL_S)
    _, err = proc.communicate()
    if proc.returncode != 0 or 1 not in seen:
        raise RuntimeError(f"experiment=quick failed (exit {proc.returncode}): {err.decode()[-1000:]}")
    return {"round_0_s": seen.get(0, float("nan")), "round_1_s": seen[1], "total_s": time.perf_counter() - started}


def round_time_ratios(
    cfg: RunConfig, tmp: Path, warmup: int, cores: int, common: dict[str, Any], wakeups: tuple[bool, ...] = (True,)
) -> dict[tuple[int, bool], float]:
    """One repeat of (c): Flower's median round with 1 and 2 actors over the in-process loop's.

    Keyed by (actors, wake-up hook on). The in-process reference runs before and after the Flower
    runs and counts at the mean of its two medians: one run alone swung by 30 % here (0.42 s
    against 0.55 s).
    """
    inproc_runs = [statistics.median(round_times(run_in_process(cfg, tmp / "inprocess_before"), warmup))]
    medians: dict[tuple[int, bool], float] = {}
    for actors in (1, 2):
        run_cfg = replace(cfg, simulation=replace(cfg.simulation, client_cpus=max(1, cores // actors)))
        for wakeup in wakeups:
            env = {ENABLE_ENV: "1" if wakeup else "0"}
            times, _, total = flower_round_times(run_cfg, tmp / f"flower_{actors}_{int(wakeup)}", warmup, env)
            medians[actors, wakeup] = statistics.median(times)
            emit({**common, "engine": "flower_simulation", "ray_actors": actors, "engine_wakeup": wakeup,
                  "median_round_s": medians[actors, wakeup], "total_wall_s": total})  # fmt: skip
    inproc_runs.append(statistics.median(round_times(run_in_process(cfg, tmp / "inprocess_after"), warmup)))
    inproc = statistics.fmean(inproc_runs)
    emit({**common, "engine": "in_process_loop", "median_round_s": inproc, "median_round_s_runs": inproc_runs})
    return {key: median / inproc for key, median in medians.items()}


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values)}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m amp_fl.bench startup")
    parser.add_argument("--parts", nargs="+", choices=["config_error", "first_round", "round_time"],
                        default=["config_error", "first_round", "round_time"])  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5, help="runs of (a); (b) runs max(2, repeats // 2)")
    parser.add_argument("--devices", type=int, default=100, help="(c): PIUs of the small config")
    parser.add_argument("--rbs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--round-repeats", type=int, default=3, help="(c): repeats, the goal on the median ratio")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wakeup", choices=["on", "both"], default="on",
                        help="(c): 'both' also runs Flower with its own 0.1 s message scan, side by side")  # fmt: skip
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="amp_fl_startup_") as tmp_s:
        tmp = Path(tmp_s)
        if "config_error" in args.parts:
            seconds = [config_error_seconds(tmp) for _ in range(args.repeats)]
            spread = _spread(seconds)
            emit(
                {
                    "bench": "startup",
                    "measure": "config_error_s",
                    **spread,
                    "runs": seconds,
                    "goal_met": {f"median_le_{CONFIG_ERROR_GOAL_S}s": spread["median"] <= CONFIG_ERROR_GOAL_S},
                }
            )
        if "first_round" in args.parts:
            runs = [first_round_seconds(tmp / f"quick_{i}") for i in range(max(2, args.repeats // 2))]
            spreads = {key: _spread([r[key] for r in runs]) for key in runs[0]}
            emit(
                {
                    "bench": "startup",
                    "measure": "quick_first_round_s",
                    **{f"{key}_{stat}": v for key, s in spreads.items() for stat, v in s.items()},
                    "runs": runs,
                    "goal_met": {
                        f"round_1_median_le_{FIRST_ROUND_GOAL_S}s": spreads["round_1_s"]["median"] <= FIRST_ROUND_GOAL_S
                    },
                }
            )
        if "round_time" in args.parts:
            cores = len(os.sched_getaffinity(0))
            cfg = bench_config(args.rounds, args.devices, args.rbs, args.seed)
            common = {"bench": "startup", "devices": args.devices, "rbs": args.rbs, "rounds": args.rounds}
            wakeups = (True, False) if args.wakeup == "both" else (True,)
            ratios = [
                round_time_ratios(cfg, tmp / f"repeat{r}", args.warmup, cores, common, wakeups)
                for r in range(args.round_repeats)
            ]
            one, two = (statistics.median(r[actors, True] for r in ratios) for actors in (1, 2))
            without: dict[str, Any] = {}  # --wakeup both: the same ratios with Flower's own scan
            for actors, name in ((1, "one_actor"), (2, "two_actors")) if args.wakeup == "both" else ():
                off = [r[actors, False] for r in ratios]
                without |= {f"{name}_without_wakeup": statistics.median(off), f"{name}_without_wakeup_runs": off}
            emit(
                {
                    **common,
                    "measure": "round_time_ratio_to_inprocess",
                    "one_actor": one,
                    "two_actors": two,
                    "one_actor_runs": [r[1, True] for r in ratios],
                    "two_actors_runs": [r[2, True] for r in ratios],
                    **without,
                    "cores": cores,
                    "goal_met": {f"one_actor_le_{ONE_ACTOR_GOAL}": one <= ONE_ACTOR_GOAL,
                                 f"two_actors_le_{TWO_ACTOR_GOAL}": two <= TWO_ACTOR_GOAL},
                }
            )  # fmt: skip
