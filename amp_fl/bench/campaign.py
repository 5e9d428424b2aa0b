"""Benchmark: one campaign on 2 local workers against the same campaign on a 2-CPU Ray cluster.

Equal work: the same micro runs (the in-process engine, ``--runs`` seeds of a small AMP-FL
configuration), first through :func:`~amp_fl.experiments.campaign.execute` with two spawned local
workers, then as Ray tasks of 1 CPU each on a local Ray head started with 2 CPUs
(:class:`~amp_fl.deployment.ray_cluster.RayHead`, the stand-in for a cluster). The figure is the
ratio of the campaign's wall times, cluster over local; the head's start-up is reported apart
(a cluster is already running when a campaign is sent to it), the driver's connection is inside
the cluster's time. Both campaigns must give the same metrics (the runs are deterministic), so
the ratio compares dispatch only. The machine's load average is reported beside the figures: on
a shared machine it moves them more than anything measured here.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from amp_fl.bench import emit
from amp_fl.deployment.ray_cluster import RayHead
from amp_fl.experiments.campaign import Job, RayCluster, execute, make_jobs
from amp_fl.run_folder import METRICS_FILE, read_columns

WORKERS = 2


@dataclass(frozen=True)
class _Spec:
    run_id: str
    overrides: tuple[str, ...]


def micro_specs(runs: int, rounds: int) -> list[_Spec]:
    base = ("experiment=quick", f"num_rounds={rounds}", "checkpoint.every=0")
    return [_Spec(f"seed{seed}", (*base, f"seed={seed}")) for seed in range(runs)]


def _timed(run: Callable[[], list[str]]) -> float:
    started = time.perf_counter()
    failures = run()
    if failures:
        raise RuntimeError(f"the campaign failed: {failures}")
    return time.perf_counter() - started


def _accuracies(jobs: list[Job[_Spec]]) -> list[list[float]]:
    return [read_columns(job.run_dir / METRICS_FILE)["accuracy"].tolist() for job in jobs]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m amp_fl.bench campaign")
    parser.add_argument("--runs", type=int, default=4, help="runs in the campaign (default 4)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds per run (default 10)")
    args = parser.parse_args(argv)
    specs = micro_specs(args.runs, args.rounds)
    with tempfile.TemporaryDirectory(prefix="amp_fl_bench_campaign_") as tmp:
        local = make_jobs(specs, Path(tmp) / "local")
        on_ray = make_jobs(specs, Path(tmp) / "ray")
        load_before = os.getloadavg()
        local_s = _timed(lambda: execute(local, "inprocess", WORKERS, lambda _: None))
        head = RayHead(num_cpus=WORKERS)
        started = time.perf_counter()
        try:
            head.start()
            head_start_s = time.perf_counter() - started
            cluster = RayCluster(head.address, cpus_per_run=1.0)
            ray_s = _timed(lambda: execute(on_ray, "inprocess", WORKERS, lambda _: None, cluster=cluster))
        finally:
            leftover = head.stop()
        load_after = os.getloadavg()
        same = _accuracies(local) == _accuracies(on_ray)
    emit(
        {
            "bench": "campaign",
            "runs": args.runs,
            "rounds": args.rounds,
            "local_workers": WORKERS,
            "ray_cpus": WORKERS,
            "local_wall_s": local_s,
            "ray_wall_s": ray_s,
            "ray_over_local": ray_s / local_s,
            "ray_head_start_s": head_start_s,
            "same_metrics": same,
            "ray_processes_left": len(leftover),
            "load_avg_1m_before": load_before[0],
            "load_avg_1m_after": load_after[0],
            "cpu_count": os.cpu_count(),
        }
    )
