"""docker/compose.yml: services and every command-line flag exist in the installed Flower CLIs.

No Docker engine runs on CI machines; this checks what can be checked without one: the compose
file parses, has the SuperLink / SuperExec / SuperNode layout, pins the image version, and uses
only flags that flwr 1.41's own executables accept.
"""

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLI_OF_IMAGE = {"flwr/superlink": "flower-superlink", "flwr/supernode": "flower-supernode"}


def _help_flags(cli: str) -> set[str]:
    out = subprocess.run([str(BIN / cli), "--help"], capture_output=True, text=True, timeout=120)
    return set(re.findall(r"--[a-z][a-z0-9-]*", out.stdout))


def test_compose_layout_and_flags():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yml").read_text())
    services = compose["services"]
    assert {
        "superlink",
        "superexec-serverapp",
        "supernode-0",
        "supernode-1",
        "superexec-clientapp-0",
        "superexec-clientapp-1",
    } <= set(services)
    helps = {cli: _help_flags(cli) for cli in ("flower-superlink", "flower-supernode", "flower-superexec")}
    partition_ids = set()
    for name, service in services.items():
        image = service.get("image", "")
        cli = next((c for prefix, c in CLI_OF_IMAGE.items() if image.startswith(prefix)), "flower-superexec")
        if "image" in service:
            assert "${FLWR_VERSION:-1.41.0}" in image, name
        flags = [arg for arg in service["command"] if arg.startswith("--")]
        unknown = [f for f in flags if f not in helps[cli]]
        assert not unknown, f"{name}: {cli} has no {unknown}"
        if cli == "flower-supernode":
            config = service["command"][service["command"].index("--node-config") + 1]
            values = dict(item.split("=") for item in config.split())
            partition_ids.add(int(values["partition-id"]))
            # a board reports its measured hardware; the ClientApp reads exactly these keys
            from amp_fl.protocol import PROFILE_KEYS

            assert set(PROFILE_KEYS) <= set(values)
    assert partition_ids == {0, 1}
    assert (ROOT / "docker" / "Dockerfile").read_text().count("flwr/superexec") == 1
