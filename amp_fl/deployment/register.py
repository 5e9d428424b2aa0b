"""Register SuperNode public keys with a SuperLink started with ``--enable-supernode-auth``.

``python -m amp_fl.deployment.register HOST:PORT CA_CERT KEY.pub [KEY.pub ...]`` waits until the
SuperLink listens, adds a ``flwr`` connection for it to ``$FLWR_HOME/config.toml`` and runs
``flwr supernode register`` for every key. A key that is already registered is not an error, so
``make docker-up TLS=1`` can be run again while the federation is up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from amp_fl.deployment.os_processes import wait_for_port

CONNECTION = "amp-fl-compose"
ALREADY_REGISTERED = "already in use"  # flwr's message for a public key the SuperLink knows
DEFAULT_CONFIG = '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n'


class RegistrationError(RuntimeError):
    """``flwr supernode register`` failed; the message carries flwr's own output."""


def flwr_executable() -> str:
    return shutil.which("flwr", path=str(Path(sys.executable).parent)) or "flwr"


def register_public_key(
    public_key: Path, connection: str, env: Mapping[str, str], *, allow_known: bool = False
) -> int | None:
    """Run ``flwr supernode register``; the new node id (None: already registered and ``allow_known``)."""
    if not public_key.is_file():
        raise RegistrationError(f"public key {public_key} does not exist (make it with docker/generate_certs.sh)")
    out = subprocess.run(
        [flwr_executable(), "supernode", "register", str(public_key), connection, "--format", "json"],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = out.stdout + out.stderr
    try:
        return int(json.loads(out.stdout[out.stdout.index("{") :])["node-id"])
    except (ValueError, KeyError):
        if allow_known and ALREADY_REGISTERED in text.lower():
            return None
        raise RegistrationError(
            f"flwr supernode register {public_key} failed (exit {out.returncode}): {' '.join(text.split())}"
        ) from None


def write_connection(flwr_home: Path, name: str, address: str, ca_cert: Path) -> None:
    """Add (or replace) ``[superlink.<name>]`` with TLS (``root-certificates``) in ``flwr_home/config.toml``."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    config = flwr_home / "config.toml"
    text = config.read_text() if config.exists() else DEFAULT_CONFIG
    head = text.split(f"\n[superlink.{name}]")[0].rstrip("\n")
    entry = f'[superlink.{name}]\naddress = "{address}"\nroot-certificates = "{ca_cert.resolve()}"\n'
    config.write_text(f"{head}\n\n{entry}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m amp_fl.deployment.register", description=__doc__.split("\n")[0])
    parser.add_argument("address", help="the SuperLink's host:port")
    parser.add_argument("ca_cert", type=Path, help="the CA certificate (credentials/ca.crt)")
    parser.add_argument("public_keys", type=Path, nargs="+", help="SuperNode public keys (supernode-<k>-auth.pub)")
    parser.add_argument("--wait-s", type=float, default=120.0, help="how long to wait for the SuperLink (default 120)")
    args = parser.parse_args(argv)
    host, _, port = args.address.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"address: expected host:port, got {args.address!r}")
    try:
        wait_for_port(host, int(port), args.wait_s)
        home = Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr")
        write_connection(home, CONNECTION, args.address, args.ca_cert)
        env = {**os.environ, "FLWR_HOME": str(home)}
        for key in args.public_keys:
            node = register_public_key(key, CONNECTION, env, allow_known=True)
            print(f"{key.name}: " + ("already registered" if node is None else f"registered as node {node}"))
    except (RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
