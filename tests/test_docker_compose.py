"""docker/*.yml: every compose file is valid for a real compose implementation and runs our topology.

Debian's ``docker-compose`` (``make compose-tool`` installs it; ``make test`` does so first)
resolves each file and overlay without a container engine (``docker-compose config``). On the
resolved services this checks: Flower's process-isolation layout (SuperLink, ServerApp SuperExec,
SuperNode + ClientApp SuperExec pairs), Flower images pinned to the installed flwr, flags the
installed executables accept, exactly the flags of :mod:`amp_fl.deployment.topology` (the loopback
test's federation: insecure for compose.yml, TLS + SuperNode authentication with the overlay),
credentials that ``docker/generate_certs.sh`` makes, and node configs the ClientApp accepts.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from amp_fl import protocol as P
from amp_fl.deployment.credentials import Credentials, generate_credentials
from amp_fl.deployment.topology import Security, superexec_args, superlink_args, supernode_args

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent
FLWR_VERSION = importlib.metadata.version("flwr")
CLI_OF_IMAGE = {"flwr/superlink": "flower-superlink", "flwr/supernode": "flower-supernode"}
CONTAINER_CREDENTIALS = "/app/credentials"
NUM_SUPERNODES = 3


def compose_tool() -> str:
    tool = shutil.which("docker-compose")
    if tool is None:
        message = "docker-compose is not installed: run `make compose-tool` (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return tool


def resolve(*files: str, env: dict[str, str] | None = None) -> dict:
    """``docker-compose -f ... config``: the files merged and interpolated, as compose will run them."""
    args = [compose_tool()]
    for name in files:
        args += ["-f", str(DOCKER / name)]
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "AMP_FL_ROOT": str(ROOT),
        **(env or {}),
    }
    out = subprocess.run([*args, "config"], capture_output=True, text=True, env=environment, timeout=120)
    assert out.returncode == 0, f"docker-compose rejects {files}: {out.stderr}"
    return yaml.safe_load(out.stdout)


def _help_flags(cli: str) -> set[str]:
    out = subprocess.run([str(BIN / cli), "--help"], capture_output=True, text=True, timeout=120)
    return set(re.findall(r"--[a-z][a-z0-9-]*", out.stdout))


def _role(name: str, service: dict) -> str:
    image = service.get("image", "")
    for prefix, cli in CLI_OF_IMAGE.items():
        if image.startswith(prefix + ":"):
            return cli
    assert service["build"]["dockerfile"] == "docker/Dockerfile", name
    return "flower-superexec"


def _flags(command: list[str]) -> list[str]:
    return sorted(arg for arg in command if arg.startswith("--"))


def _value(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _expected_flags(security: Security) -> dict[str, list[str]]:
    """Flags of each role in amp_fl.deployment.topology, as the loopback test runs it."""
    return {
        "flower-superlink": _flags(superlink_args(security, host="h", port=1, database="d")),
        "flower-supernode": _flags(supernode_args(security, 0, superlink="s", host="h", port=1, node_config="n")),
        "flower-superexec": _flags(superexec_args(security, runtime_api_address="a")),
    }


@pytest.fixture(scope="module")
def cli_flags() -> dict[str, set[str]]:
    return {cli: _help_flags(cli) for cli in ("flower-superlink", "flower-supernode", "flower-superexec")}


@pytest.fixture(scope="module")
def credentials(tmp_path_factory) -> Credentials:
    return generate_credentials(tmp_path_factory.mktemp("credentials"), NUM_SUPERNODES)


def check_federation(config: dict, security: Security, cli_flags: dict[str, set[str]]) -> dict[str, list[str]]:
    services = config["services"]
    pairs = [(f"supernode-{k}", f"superexec-clientapp-{k}") for k in range(NUM_SUPERNODES)]
    assert set(services) == {"superlink", "superexec-serverapp", *(n for pair in pairs for n in pair)}
    expected = _expected_flags(security)
    commands = {}
    for name, service in services.items():
        cli = _role(name, service)
        command = [str(arg) for arg in service["command"]]
        commands[name] = command
        if "image" in service and not name.startswith("superexec"):
            assert service["image"].endswith(f":{FLWR_VERSION}"), f"{name}: image not pinned to flwr {FLWR_VERSION}"
        else:
            assert service["build"]["args"]["FLWR_VERSION"] == FLWR_VERSION
        unknown = [f for f in _flags(command) if f not in cli_flags[cli]]
        assert not unknown, f"{name}: {cli} has no {unknown}"
        assert _flags(command) == expected[cli], f"{name}: flags differ from the loopback federation's"
    assert _value(commands["superexec-serverapp"], "--runtime-api-address") == "superlink:9093"
    partitions = set()
    for node, superexec in pairs:
        assert _value(commands[node], "--superlink") == "superlink:9093"
        port = _value(commands[node], "--port")
        assert _value(commands[superexec], "--runtime-api-address") == f"{node}:{port}"
        values = dict(item.split("=") for item in _value(commands[node], "--node-config").split())
        settings = P.NodeProfileSettings.from_node_config(
            {key: (True if v == "true" else float(v) if key != P.PARTITION_ID else int(v)) for key, v in values.items()}
        )
        partitions.add(settings.partition_id)
        assert int(values[P.NUM_PARTITIONS]) == NUM_SUPERNODES
    assert partitions == set(range(NUM_SUPERNODES))
    return commands


def test_compose_insecure_layout(cli_flags):
    config = resolve("compose.yml")
    check_federation(config, Security(), cli_flags)
    services = config["services"]
    port = services["superlink"]["ports"][0]  # "9093:9093" or its long form, by compose version
    assert (port["target"] if isinstance(port, dict) else int(str(port).rsplit(":", 1)[1])) == 9093
    # the ServerApp sees the host's runs/ and data/ at the same absolute paths the launcher writes
    mounts = services["superexec-serverapp"]["volumes"]
    assert f"{ROOT}/runs:{ROOT}/runs:rw" in mounts and f"{ROOT}/data:{ROOT}/data:ro" in mounts


def test_compose_with_tls_overlay_is_the_tls_and_auth_federation(cli_flags, credentials):
    config = resolve("compose.yml", "with-tls.yml")
    commands = check_federation(config, Security(credentials), cli_flags)
    made = {p.name for p in credentials.folder.iterdir()}
    for name, command in commands.items():
        files = [a for a in command if a.startswith(CONTAINER_CREDENTIALS + "/")]
        assert files, f"{name}: no credentials"
        missing = {Path(f).name for f in files} - made
        assert not missing, f"{name} reads {missing}, which generate_certs.sh does not make"
        volumes = config["services"][name]["volumes"]
        assert f"{DOCKER}/credentials:{CONTAINER_CREDENTIALS}:ro" in volumes, name
    for k in range(NUM_SUPERNODES):
        node = commands[f"supernode-{k}"]
        assert _value(node, "--auth-supernode-private-key").endswith(f"supernode-{k}-auth")
        assert _value(node, "--ssl-certfile").endswith(f"supernode-{k}.crt")


def test_board_file_for_several_machines(cli_flags, credentials):
    env = {
        "SUPERLINK": "edge.example:9093",
        "PARTITION_ID": "7",
        "NUM_PARTITIONS": "8",
        "CREDENTIALS": str(credentials.folder),
        "NODE_CONFIG": "measure-compute=true uplink-rate-bps=2500000.0",
    }
    services = resolve("board.yml", env=env)["services"]
    node = [str(a) for a in services["supernode"]["command"]]
    superexec = [str(a) for a in services["superexec-clientapp"]["command"]]
    security = Security(generate_credentials(credentials.folder.parent / "board", 8))
    assert _flags(node) == _expected_flags(security)["flower-supernode"]
    assert _flags(superexec) == _expected_flags(security)["flower-superexec"]
    assert _value(node, "--node-config") == "partition-id=7 num-partitions=8 " + env["NODE_CONFIG"]
    assert _value(node, "--auth-supernode-private-key").endswith("supernode-7-auth")
    # the SuperExec dials the name the SuperNode's Runtime API certificate is issued for
    assert _value(superexec, "--runtime-api-address") == "supernode-7:9094"
    assert "supernode-7" in services["supernode"]["networks"]["default"]["aliases"]
    assert services["supernode"]["image"] == f"flwr/supernode:{FLWR_VERSION}"
    missing = subprocess.run(
        [compose_tool(), "-f", str(DOCKER / "board.yml"), "config"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", ""), "HOME": "/tmp"},
        timeout=120,
    )
    assert missing.returncode != 0 and "SUPERLINK" in missing.stderr  # a missing setting is named


def test_image_and_make_targets():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert f"ARG FLWR_VERSION={FLWR_VERSION}" in dockerfile and "FROM flwr/superexec:${FLWR_VERSION}" in dockerfile
    pins = re.findall(r'"(torch|torchvision)==([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    for name, version in pins:
        assert f'"{name}=={version}"' in dockerfile, f"Dockerfile must install the project's {name} pin"
    ignore = [line for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines() if line[:1] not in "#"]
    assert ignore[0] == "*" and "!amp_fl/" in ignore  # .venv, runs/ and data/ stay out of the context
    for target, expect in (("docker-up", "up --build -d"), ("docker-down", "down")):
        out = subprocess.run(["make", "-n", target, "TLS=1"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and expect in out.stdout, out.stderr
    tls = subprocess.run(["make", "-n", "docker-up", "TLS=1"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "generate_certs.sh" in tls.stdout and "amp_fl.deployment.register" in tls.stdout
