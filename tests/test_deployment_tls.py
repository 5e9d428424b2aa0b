"""A TLS + authenticated federation on loopback, in the layout of ``docker/compose.yml``.

Real processes: a SuperLink (``--isolation process``, TLS, ``--enable-supernode-auth``), its
ServerApp SuperExec, three SuperNodes whose keys were registered with ``flwr supernode register``
(each with a ClientApp SuperExec on its TLS Runtime API), credentials made by
``docker/generate_certs.sh`` in a temporary folder. Two AMP-FL rounds must complete through
``python -m amp_fl``'s launcher; a fourth SuperNode with a valid certificate chain but an
unregistered key must be refused; nothing may be left running afterwards.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from amp_fl import protocol as P
from amp_fl.config import load_config
from amp_fl.deployment.credentials import Credentials
from amp_fl.deployment.topology import LocalFederation, Security
from amp_fl.launch.launcher import PROJECT_ROOT, launch

pytestmark = pytest.mark.e2e
NUM_BOARDS = 3
# Board 0 reports its whole profile; board 1 a slow CPU and its measured uplink rate; board 2
# measures its own training throughput at start and leaves its radio to the simulation.
BOARDS = [
    {P.CPU_HZ: 1.3e9, P.FLOPS_PER_CYCLE: 8.0, P.TX_POWER_W: 0.5, P.DISTANCE_M: 80.0},
    {P.CPU_HZ: 0.2e9, P.FLOPS_PER_CYCLE: 2.0, P.TX_POWER_W: 0.2, P.DISTANCE_M: 310.0, P.UPLINK_RATE_BPS: 4.0e6},
    {P.MEASURE_COMPUTE: "true"},
]


def node_config(k: int, board: dict[str, object]) -> str:
    return " ".join(
        [f"{P.PARTITION_ID}={k}", f"{P.NUM_PARTITIONS}={NUM_BOARDS}"] + [f"{a}={v}" for a, v in board.items()]
    )


def make_credentials(folder: Path, num_supernodes: int) -> Credentials:
    """Run the project's own script, as a user would before ``docker compose up``."""
    subprocess.run(
        ["bash", str(PROJECT_ROOT / "docker" / "generate_certs.sh"), str(folder), "--supernodes", str(num_supernodes)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return Credentials(folder, num_supernodes)


def test_tls_authenticated_federation_two_rounds_refuses_unregistered_node(tmp_path, monkeypatch):
    # one key pair more than boards: the intruder's, never registered
    creds = make_credentials(tmp_path / "credentials", NUM_BOARDS + 1)
    federation = LocalFederation(tmp_path / "federation", Security(creds), cwd=PROJECT_ROOT)
    monkeypatch.setenv("FLWR_HOME", str(federation.flwr_home))
    try:
        federation.start_superlink()
        node_ids = [federation.register(k) for k in range(NUM_BOARDS)]
        assert len(set(node_ids)) == NUM_BOARDS
        assert federation.register(0, allow_known=True) is None  # registering again is harmless
        for k, board in enumerate(BOARDS):
            federation.start_supernode(k, node_config(k, board))

        intruder = federation.start_supernode(NUM_BOARDS, node_config(0, BOARDS[0]), with_superexec=False)
        assert intruder.wait(timeout=60) != 0, "an unregistered SuperNode was accepted"
        assert "Failed to activate SuperNode" in federation.log(f"supernode-{NUM_BOARDS}")
        assert "No SuperNode found with the given public key" in federation.log("superlink")

        cfg = load_config(
            {
                "dataset": {"name": "mnist5k"},
                "num_rounds": 2,
                "seed": 1,
                "wireless": {"num_devices": NUM_BOARDS, "num_rbs": NUM_BOARDS},
                "deployment": {
                    "superlink": federation.address,
                    "insecure": False,
                    "root_certificates": str(creds.ca_cert),
                    "channel": "measured",
                },
            }
        )
        run = launch(cfg, tmp_path / "run")
    finally:
        leftover = federation.stop()
    assert leftover == [], f"processes left running: {leftover}"

    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == 2
    profiles = summary["device_profiles"]
    assert [p["device"] for p in profiles] == [0, 1, 2]
    assert (profiles[0]["cpu_hz"], profiles[0]["compute_source"], profiles[0]["radio_source"]) == (
        1.3e9,
        "reported",
        "reported",
    )
    assert (profiles[1]["uplink_rate_bps"], profiles[1]["channel_source"]) == (4.0e6, "reported")
    assert profiles[0]["channel_source"] == "simulated"  # no uplink rate reported: Rayleigh fading
    assert profiles[2]["compute_source"] == "measured" and profiles[2]["radio_source"] == "simulated"
    assert profiles[2]["measured_flops_per_s"] > 0
    records = [json.loads(line) for line in (run / "schedule.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["device_ids"] and not r["failures"] for r in records)
