"""Scale past one machine: the simulation attaches to an existing Ray cluster named by the user.

A local Ray head (``ray start --head``, free ports, its own process group) stands in for a
cluster; ``deployment.ray_address`` must make Flower's simulation engine connect to it rather
than start a private Ray instance, and every Ray process is stopped afterwards (never with
``ray stop``, which would stop other users' Ray processes on this machine).
"""

from __future__ import annotations

import json

import pytest

from amp_fl.config import load_config
from amp_fl.deployment.ray_cluster import RayHead
from amp_fl.launch.launcher import launch

pytestmark = pytest.mark.e2e


def test_short_simulation_on_an_existing_ray_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr_home"))
    head = RayHead(num_cpus=2)
    try:
        head.start()
        cfg = load_config(
            {
                "dataset": {"name": "mnist5k"},
                "num_rounds": 2,
                "seed": 3,
                "wireless": {"num_devices": 6, "num_rbs": 3},
                "deployment": {"ray_address": head.address},
            }
        )
        run = launch(cfg, tmp_path / "run")
        # the cluster ran the ClientApp actors: their workers are the head's processes, and the
        # simulation's driver logged into the head's session folder
        logs = head.temp_dir / "session_latest" / "logs"
        drivers = list(logs.glob("python-core-driver-*"))
        actors = [p for p in logs.glob("worker-*.out") if "ClientAppActor" in p.read_text(errors="replace")]
    finally:
        leftover = head.stop()
    assert leftover == [], f"Ray processes left running: {leftover}"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == 2
    assert drivers, "the simulation did not connect to the named Ray cluster"
    assert len(actors) == 2, f"expected the 2 ClientApp actors on the cluster, got {len(actors)}"
