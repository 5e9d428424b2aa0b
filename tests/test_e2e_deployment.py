"""End to end on Flower's deployment engine: a real SuperLink and two SuperNodes on loopback.

This is the path real boards take: each SuperNode reports its measured hardware through
``--node-config`` (cpu-hz, flops-per-cycle, tx-power-w, distance-m), and the AMP-FL server must
schedule with those values, not with simulated ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amp_fl.config import load_config
from amp_fl.deployment.os_processes import free_port
from amp_fl.launch.launcher import PROJECT_ROOT, launch

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
BOARDS = [
    {"cpu-hz": 1.3e9, "flops-per-cycle": 8.0, "tx-power-w": 0.5, "distance-m": 80.0},
    {"cpu-hz": 0.6e9, "flops-per-cycle": 2.0, "tx-power-w": 0.2, "distance-m": 310.0},
]


def _node_config(k: int) -> str:
    return " ".join([f"partition-id={k}", "num-partitions=2"] + [f"{key}={v}" for key, v in BOARDS[k].items()])


def test_two_boards_through_superlink_and_supernodes(tmp_path, monkeypatch):
    home = tmp_path / "flwr_home"
    home.mkdir()
    (home / "config.toml").write_text('[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n')
    monkeypatch.setenv("FLWR_HOME", str(home))
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PATH": os.pathsep.join([str(BIN), os.environ["PATH"]]),
    }
    port = free_port()
    logs = [open(tmp_path / f"{name}.log", "w") for name in ("superlink", "node0", "node1")]  # noqa: SIM115 (closed below)
    procs = [
        subprocess.Popen(
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--database",
                str(tmp_path / "state.db"),
            ],
            env=env,
            stdout=logs[0],
            stderr=logs[0],
        )
    ]
    try:
        time.sleep(3)
        for k in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "flower-supernode"),
                        "--insecure",
                        "--superlink",
                        f"127.0.0.1:{port}",
                        "--port",
                        str(free_port()),
                        "--node-config",
                        _node_config(k),
                    ],
                    env=env,
                    cwd=PROJECT_ROOT,
                    stdout=logs[k + 1],
                    stderr=logs[k + 1],
                )
            )
        cfg = load_config(
            {
                "dataset": {"name": "mnist5k"},
                "num_rounds": 2,
                "seed": 1,
                "wireless": {"num_devices": 2, "num_rbs": 2},
                "deployment": {"superlink": f"127.0.0.1:{port}"},
            }
        )
        run = launch(cfg, tmp_path / "run")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        for log in logs:
            log.close()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == 2
    measured = [
        {
            "cpu-hz": p["cpu_hz"],
            "flops-per-cycle": p["flops_per_cycle"],
            "tx-power-w": p["tx_power_w"],
            "distance-m": p["distance_m"],
        }
        for p in summary["device_profiles"]
    ]
    assert measured == BOARDS
    records = [json.loads(line) for line in (run / "schedule.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["device_ids"] and not r["failures"] for r in records)
