"""A campaign on a Ray cluster: every run one Ray task, its folder back where the campaign expects it.

A local Ray head (``ray start --head``, :class:`~amp_fl.deployment.ray_cluster.RayHead`) stands in
for a cluster. Two micro runs go to it as tasks of 1 CPU each; they must run in the cluster's
worker processes (not here), come back complete (the campaign's own :func:`is_complete`), and
give exactly the metrics the same run gives on a local worker: the dispatch changes where a run
happens, never what it computes.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import pytest

from amp_fl.deployment.os_processes import free_port
from amp_fl.deployment.ray_cluster import RayHead
from amp_fl.experiments.campaign import (
    RayCluster,
    add_cluster_arguments,
    cluster_from_args,
    execute,
    is_complete,
    make_jobs,
    pack_folder,
    unpack_folder,
)
from amp_fl.run_folder import METRIC_COLUMNS, METRICS_FILE, read_columns, read_timing

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class _Spec:
    run_id: str
    overrides: tuple[str, ...]


MICRO = ("experiment=quick", "num_rounds=2", "wireless.num_devices=4", "wireless.num_rbs=2", "checkpoint.every=0")
SPECS = [_Spec(f"micro/seed{seed}", (*MICRO, f"seed={seed}")) for seed in (0, 1)]


def test_a_micro_campaign_runs_as_ray_tasks_and_lands_in_the_campaign_folders(tmp_path):
    jobs = make_jobs(SPECS, tmp_path / "cluster")
    lines: list[str] = []
    head = RayHead(num_cpus=2)
    try:
        head.start()
        failures = execute(jobs, "inprocess", 1, lines.append, name="micro", cluster=RayCluster(head.address))
    finally:
        leftover = head.stop()
    assert leftover == [], f"Ray processes left running: {leftover}"
    assert failures == [], failures
    assert len(lines) == 2 and all(line.startswith("[micro] ") for line in lines)
    for job in jobs:
        assert is_complete(job.run_dir, job.values), f"{job.run_dir} is not a finished run of its job"
        timing = read_timing(job.run_dir)
        assert timing["engine"] == "inprocess on ray"
        assert timing["ray_worker_pid"] != os.getpid()  # ran in a worker of the cluster, not here
        assert len(timing["ray_node_id"]) == 56  # Ray's hex node id (28 bytes)
        assert read_columns(job.run_dir / METRICS_FILE)["round"].tolist() == [0, 1, 2]

    # The same first run on a local worker: the same metrics, wall time aside.
    local = make_jobs(SPECS[:1], tmp_path / "local")
    assert execute(local, "inprocess", 1, lambda _: None) == []
    on_ray = read_columns(jobs[0].run_dir / METRICS_FILE)
    here = read_columns(local[0].run_dir / METRICS_FILE)
    for column in METRIC_COLUMNS:
        if column != "wall_time_s":
            assert on_ray[column].tobytes() == here[column].tobytes(), column


def test_a_folder_survives_packing_for_the_trip_back(tmp_path):
    source = tmp_path / "run"
    (source / "sub").mkdir(parents=True)
    (source / "metrics.csv").write_text("round\n0\n")
    (source / "sub" / "model.npz").write_bytes(bytes(range(256)))
    unpack_folder(pack_folder(source), tmp_path / "back")
    assert (tmp_path / "back" / "metrics.csv").read_text() == "round\n0\n"
    assert (tmp_path / "back" / "sub" / "model.npz").read_bytes() == bytes(range(256))
    assert pack_folder(tmp_path / "missing") != b""  # an empty archive: a run that wrote nothing
    unpack_folder(pack_folder(tmp_path / "missing"), tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []


def test_the_cluster_options_of_the_campaign_commands():
    parser = argparse.ArgumentParser()
    add_cluster_arguments(parser)
    assert cluster_from_args(parser.parse_args([])) is None
    cluster = cluster_from_args(parser.parse_args(["--ray-address", "10.0.0.1:6379", "--ray-cpus", "2"]))
    assert cluster == RayCluster("10.0.0.1:6379", 2.0, 0.0) and cluster.threads == 2
    with pytest.raises(ValueError, match="ray_cpus: CPUs per run must be > 0, got 0"):
        RayCluster("auto", cpus_per_run=0)
    with pytest.raises(ValueError, match="ray_gpus: GPUs per run must be >= 0, got -1"):
        RayCluster("auto", gpus_per_run=-1)
    with pytest.raises(ValueError, match="ray_address: give the cluster's host:port"):
        RayCluster("headnode")


def test_a_campaign_sent_to_no_cluster_fails_at_once_naming_the_address(tmp_path):
    address = f"127.0.0.1:{free_port()}"  # nobody listens there
    jobs = make_jobs(SPECS[:1], tmp_path)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=f"ray_address: no Ray cluster answers at {address}"):
        execute(jobs, "inprocess", 1, lambda _: None, cluster=RayCluster(address))
    assert time.monotonic() - started < 20
    assert not jobs[0].run_dir.exists()
