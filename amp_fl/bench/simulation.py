"""Benchmark: AMP-FL round time in Flower's simulation vs. the same work in a plain in-process loop,
and the peak memory of the whole 100-PIU process tree.

Both runs use one config (100 PIUs, 10 RBs, the paper's CNN on mnist5k, so 10 PIUs train per
round), side by side in one invocation. Round time = median of the per-round wall time after the
first ``--warmup`` rounds (Ray starts its actors in round 1). Memory = peak, over the Flower run,
of the summed PSS (proportional set size: shared libraries counted once) and of the summed RSS of
every process of the run: the launcher (a fresh ``python -m amp_fl.launch.launcher``), ``flwr``,
the SuperLink, SuperExec, the simulation and every Ray process, found through the process tree
and the project-local ``FLWR_HOME``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from amp_fl.bench import emit
from amp_fl.config import RunConfig, load_config
from amp_fl.launch.inprocess import run_in_process
from amp_fl.launch.launcher import flwr_home, write_run_config
from amp_fl.run_folder import METRICS_FILE, read_columns

GIB = 1024**3


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(proc.name))
    return children


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in KiB, from smaps_rollup (0, 0 if it vanished)."""
    pss = rss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


def run_tree(root_pid: int, home: Path) -> set[int]:
    """This process, its descendants, and the detached Flower processes of ``home`` with theirs."""
    children = _children_map()
    everyone = [pid for pids in children.values() for pid in pids]
    roots = {root_pid} | {pid for pid in children.get(1, []) + everyone if str(home) in _cmdline(pid)}
    tree, stack = set(), list(roots)
    while stack:
        pid = stack.pop()
        if pid not in tree:
            tree.add(pid)
            stack.extend(children.get(pid, []))
    return tree


class PeakMemory(threading.Thread):
    """Samples the run's process tree every ``interval_s`` and keeps the peak sums."""

    def __init__(self, home: Path, root_pid: int, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.home, self.root_pid, self.interval_s = home, root_pid, interval_s
        self.peak_pss_kib = self.peak_rss_kib = self.peak_processes = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            tree = run_tree(self.root_pid, self.home)
            sums = [_memory_kib(pid) for pid in tree]
            self.peak_pss_kib = max(self.peak_pss_kib, sum(s[0] for s in sums))
            self.peak_rss_kib = max(self.peak_rss_kib, sum(s[1] for s in sums))
            self.peak_processes = max(self.peak_processes, len(tree))
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def round_times(run_dir: Path, warmup: int) -> list[float]:
    wall = read_columns(run_dir / METRICS_FILE)["wall_time_s"].tolist()
    # Row 0 is the initial evaluation; round r's time is the gap to the previous row.
    return [b - a for a, b in itertools.pairwise(wall)][warmup:]


def bench_config(rounds: int, devices: int, rbs: int, seed: int, **sections: Any) -> RunConfig:
    """The benchmarks' run on ``mnist5k``; ``sections``: further top-level settings (``checkpoint={...}``)."""
    return load_config(
        {
            "dataset": {"name": "mnist5k"},
            "num_rounds": rounds,
            "seed": seed,
            "wireless": {"num_devices": devices, "num_rbs": rbs},
            **sections,
        }
    )


def flower_round_times(
    cfg: RunConfig, run_dir: Path, warmup: int, env: dict[str, str] | None = None
) -> tuple[list[float], PeakMemory, float]:
    """Per-round wall times of a real ``flwr run``, with the peak memory of its process tree.

    The run is launched from a fresh process, as a user's ``python -m amp_fl`` would be, so the
    memory of this benchmark process (other benchmarks, the in-process loop) is not counted;
    ``env``: variables added to its environment.
    """
    config_file = write_run_config(cfg, run_dir)
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "amp_fl.launch.launcher", str(config_file), str(run_dir)],
        env={**os.environ, **(env or {})},
    )
    monitor = PeakMemory(flwr_home(run_dir), root_pid=child.pid)
    monitor.start()
    try:
        returncode = child.wait()
    finally:
        monitor.stop()
    if returncode != 0:
        raise RuntimeError(f"the Flower run failed (exit code {returncode}); see its log above")
    return round_times(run_dir, warmup), monitor, time.perf_counter() - started


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m amp_fl.bench simulation")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--rbs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cfg = bench_config(args.rounds, args.devices, args.rbs, args.seed)
    # One Ray actor per core (the default) trains two clients at once; one actor on all cores
    # does the clients one after another, like the in-process loop, and so isolates Flower's overhead.
    cores = os.cpu_count() or 1
    single_actor = replace(cfg, simulation=replace(cfg.simulation, client_cpus=cores))
    common = {
        "bench": "simulation",
        "devices": args.devices,
        "rbs": args.rbs,
        "rounds": args.rounds,
        "warmup_rounds": args.warmup,
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
    }
    medians: dict[str, float] = {}
    peak_pss = 0.0
    with tempfile.TemporaryDirectory(prefix="amp_fl_bench_") as tmp:
        # Each Flower run starts from a fresh launcher process, so the order does not bias memory.
        for engine, run_cfg in (("flower_simulation", cfg), ("flower_simulation_one_actor", single_actor)):
            times, monitor, total = flower_round_times(run_cfg, Path(tmp) / engine, args.warmup)
            medians[engine] = statistics.median(times)
            pss, rss = monitor.peak_pss_kib * 1024 / GIB, monitor.peak_rss_kib * 1024 / GIB
            peak_pss = max(peak_pss, pss)
            emit(
                {
                    **common,
                    "engine": engine,
                    "ray_actors": cores // run_cfg.simulation.client_cpus,
                    "median_round_s": medians[engine],
                    "mean_round_s": statistics.fmean(times),
                    "total_wall_s": total,
                    "peak_pss_gib": pss,
                    "peak_rss_gib": rss,
                    "peak_processes": monitor.peak_processes,
                }
            )
        inproc = round_times(run_in_process(cfg, Path(tmp) / "inprocess"), args.warmup)
        medians["in_process_loop"] = statistics.median(inproc)
        emit(
            {
                **common,
                "engine": "in_process_loop",
                "median_round_s": medians["in_process_loop"],
                "mean_round_s": statistics.fmean(inproc),
            }
        )
    ratio = medians["flower_simulation"] / medians["in_process_loop"]
    overhead = medians["flower_simulation_one_actor"] / medians["in_process_loop"]
    emit(
        {
            **common,
            "engine": "comparison",
            "round_time_ratio_flower_to_inprocess": ratio,
            "round_time_ratio_one_actor_to_inprocess": overhead,
            "peak_pss_gib": peak_pss,
            "goal_met": {
                "round_time_ratio_le_1.3": ratio <= 1.3,
                "one_actor_ratio_le_1.3": overhead <= 1.3,
                "peak_memory_pss_le_3gib": peak_pss <= 3.0,
            },
        }
    )
