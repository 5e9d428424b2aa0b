"""Benchmark: does the simulation scale with the number of PIUs at a fixed number of Ray actors?

For K = 100 and K = 1,000 simulated PIUs (same R, so the same number of devices train per round,
the paper's CNN on mnist5k) and for one and two Ray actors, one Flower simulation each, launched
from a fresh process as ``python -m amp_fl`` would be: median round time after ``--warmup`` rounds
and the peak PSS / RSS summed over the run's whole process tree (:mod:`amp_fl.bench.simulation`'s
monitor). Beside them, the same config in the in-process loop, so every Flower-vs-in-process
ratio is taken from runs made side by side (the machine may be shared: only ratios of runs made
close together mean something). One JSON line per run, then one per K with the ratios, then the
memory growth from 100 to 1,000 PIUs per actor count (goal: < 1.2).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from amp_fl.bench import emit
from amp_fl.bench.simulation import GIB, bench_config, flower_round_times, round_times
from amp_fl.launch.inprocess import run_in_process

MEMORY_GROWTH_GOAL = 1.2


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m amp_fl.bench scale")
    parser.add_argument("--devices", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rbs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    for actors in args.actors:
        if not 1 <= actors <= cores or cores % actors:
            parser.error(f"--actors: {actors} actors cannot share {cores} cores evenly")
    peak: dict[tuple[int, int], float] = {}
    with tempfile.TemporaryDirectory(prefix="amp_fl_scale_") as tmp:
        for devices in args.devices:
            cfg = bench_config(args.rounds, devices, args.rbs, args.seed)
            common = {"bench": "scale", "devices": devices, "rbs": args.rbs, "rounds": args.rounds}
            medians: dict[int, float] = {}
            for actors in args.actors:
                run_cfg = replace(cfg, simulation=replace(cfg.simulation, client_cpus=cores // actors))
                times, monitor, total = flower_round_times(run_cfg, Path(tmp) / f"k{devices}_a{actors}", args.warmup)
                medians[actors] = statistics.median(times)
                peak[(devices, actors)] = monitor.peak_pss_kib * 1024 / GIB
                emit(
                    {
                        **common,
                        "engine": "flower_simulation",
                        "ray_actors": actors,
                        "median_round_s": medians[actors],
                        "total_wall_s": total,
                        "peak_pss_gib": peak[(devices, actors)],
                        "peak_rss_gib": monitor.peak_rss_kib * 1024 / GIB,
                        "peak_processes": monitor.peak_processes,
                    }
                )
            inproc = statistics.median(round_times(run_in_process(cfg, Path(tmp) / f"k{devices}_inproc"), args.warmup))
            emit({**common, "engine": "in_process_loop", "median_round_s": inproc})
            emit(
                {
                    **common,
                    "engine": "comparison",
                    **{f"round_time_ratio_{a}_actor_to_inprocess": medians[a] / inproc for a in args.actors},
                }
            )
    low, high = min(args.devices), max(args.devices)
    if low != high:
        for actors in args.actors:
            growth = peak[(high, actors)] / peak[(low, actors)]
            emit(
                {
                    "bench": "scale",
                    "engine": "memory_growth",
                    "ray_actors": actors,
                    "devices": [low, high],
                    "peak_pss_gib": [peak[(low, actors)], peak[(high, actors)]],
                    "peak_pss_ratio": growth,
                    "goal_met": {f"peak_memory_ratio_lt_{MEMORY_GROWTH_GOAL}": growth < MEMORY_GROWTH_GOAL},
                }
            )
