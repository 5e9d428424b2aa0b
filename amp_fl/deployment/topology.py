"""The federation's processes: their command lines, and a supervisor that runs them on one machine.

Flower's process-isolation layout (the one ``docker/compose.yml`` runs in containers):

- one **SuperLink** (``flower-superlink --isolation process``): Fleet, Control (``flwr``) and
  Runtime APIs on one port;
- one **ServerApp SuperExec** (``flower-superexec --runtime-api-address <superlink>``): runs the
  AMP-FL ServerApp when a run is submitted;
- per board, one **SuperNode** (``flower-supernode --isolation process --node-config ...``)
  serving its Runtime API on its own port, and one **ClientApp SuperExec** connected to it.

:class:`Security` says how they protect their connections; the ``*_args`` functions return
the flags, so the loopback test and the compose files are checked against one definition.
:class:`LocalFederation` starts such a federation as real processes, each in its own process
group, registers SuperNode keys with ``flwr supernode register``, and on exit stops every
process it started and every descendant of them (:meth:`LocalFederation.stop` reports any
survivor, which the tests assert is none).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from amp_fl.deployment.credentials import Credentials
from amp_fl.deployment.os_processes import descendants, describe, free_port, running, wait_for_port
from amp_fl.deployment.register import register_public_key

CONNECTION = "amp-fl-federation"  # the flwr connection LocalFederation writes into FLWR_HOME/config.toml
STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class Security:
    """How the federation's connections are protected.

    ``credentials=None``: everything insecure (``--insecure``), no SuperNode authentication.
    With credentials: TLS on the SuperLink (Fleet, Control, Runtime APIs) and on every
    SuperNode's Runtime API, a shared SuperExec secret on the Runtime APIs, and, when
    ``supernode_auth``, only SuperNodes whose public key was registered may connect.
    """

    credentials: Credentials | None = None
    supernode_auth: bool = True

    @property
    def tls(self) -> bool:
        return self.credentials is not None

    def _creds(self) -> Credentials:
        if self.credentials is None:
            raise ValueError("credentials: this federation is insecure; TLS files are not defined")
        return self.credentials


def superlink_args(security: Security, *, host: str, port: int, database: str) -> list[str]:
    """``flower-superlink`` flags (without the executable)."""
    args = ["--isolation", "process", "--host", host, "--port", str(port), "--database", database]
    if not security.tls:
        return ["--insecure", *args]
    creds = security._creds()
    args += [
        "--ssl-ca-certfile",
        str(creds.ca_cert),
        "--ssl-certfile",
        str(creds.superlink_cert),
        "--ssl-keyfile",
        str(creds.superlink_key),
        "--superexec-auth-secret-file",
        str(creds.superexec_secret),
    ]
    if security.supernode_auth:
        args.append("--enable-supernode-auth")
    return args


def supernode_args(
    security: Security, k: int, *, superlink: str, host: str, port: int, node_config: str, auth_key: int | None = None
) -> list[str]:
    """``flower-supernode`` flags for SuperNode ``k`` (``auth_key``: whose key it presents, default its own)."""
    args = ["--superlink", superlink, "--isolation", "process", "--host", host, "--port", str(port)]
    args += ["--node-config", node_config]
    if not security.tls:
        return ["--insecure", *args]
    creds = security._creds()
    args += [
        "--root-certificates",
        str(creds.ca_cert),
        "--ssl-ca-certfile",
        str(creds.ca_cert),
        "--ssl-certfile",
        str(creds.supernode_cert(k)),
        "--ssl-keyfile",
        str(creds.supernode_key(k)),
        "--superexec-auth-secret-file",
        str(creds.superexec_secret),
    ]
    if security.supernode_auth:
        args += ["--auth-supernode-private-key", str(creds.auth_private_key(k if auth_key is None else auth_key))]
    return args


def superexec_args(security: Security, *, runtime_api_address: str) -> list[str]:
    """``flower-superexec`` flags for the SuperExec of a SuperLink (ServerApp) or SuperNode (ClientApp)."""
    args = ["--runtime-api-address", runtime_api_address]
    if not security.tls:
        return ["--insecure", *args]
    creds = security._creds()
    return [
        *args,
        "--root-certificates",
        str(creds.ca_cert),
        "--superexec-auth-secret-file",
        str(creds.superexec_secret),
    ]


def connection_toml(name: str, address: str, security: Security) -> str:
    """A ``[superlink.<name>]`` entry of ``FLWR_HOME/config.toml`` for the ``flwr`` CLI."""
    lines = [f"[superlink.{name}]", f'address = "{address}"']
    if security.tls:
        lines.append(f'root-certificates = "{security._creds().ca_cert.resolve()}"')
    else:
        lines.append("insecure = true")
    return "\n".join(lines) + "\n"


@dataclass
class _Started:
    name: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    tree: set[int] = field(default_factory=set)  # every descendant ever seen


class LocalFederation:
    """A SuperLink, its ServerApp SuperExec, and SuperNode + ClientApp SuperExec pairs, on loopback.

    Use as a context manager: ``__exit__`` stops everything (SIGTERM to every process group and
    every descendant, SIGKILL after a grace period). Logs go to ``folder/<name>.log``.

    Parameters
    ----------
    folder : Path
        Logs, the SuperLink database and ``flwr_home`` live here.
    security : Security
    env : mapping, optional
        Environment of every process (default: this one's). ``FLWR_HOME`` is set to
        ``folder/flwr_home``, runtime dependency installation is disabled, and this
        interpreter's ``bin`` folder comes first on ``PATH``.
    cwd : Path, optional
        Working directory of the processes (the project root, so the ClientApp imports the
        installed package).
    """

    def __init__(
        self, folder: Path, security: Security, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.folder = folder.resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.security = security
        self.bin = Path(sys.executable).parent
        self.flwr_home = self.folder / "flwr_home"
        self.flwr_home.mkdir(exist_ok=True)
        self.env = {
            **(env if env is not None else os.environ),
            "FLWR_HOME": str(self.flwr_home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PYTHONUNBUFFERED": "1",
            "PATH": os.pathsep.join([str(self.bin), os.environ.get("PATH", "")]),
        }
        self.cwd = cwd
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.started: list[_Started] = []
        self.leftover: list[str] = []  # survivors of the last stop(): should stay empty

    # -------------------------------------------------------------- addresses
    @property
    def address(self) -> str:
        """The SuperLink's ``host:port`` (Fleet, Control and Runtime APIs)."""
        return f"{self.host}:{self.port}"

    # -------------------------------------------------------------- processes
    def _spawn(self, name: str, command: Sequence[str]) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop())
        proc = subprocess.Popen(
            list(command),
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() signals the whole group
        )
        self.started.append(_Started(name, proc, log))
        return proc

    def start_superlink(self, timeout_s: float = 60.0) -> None:
        """Start the SuperLink and its ServerApp SuperExec; return once the SuperLink listens."""
        args = superlink_args(self.security, host=self.host, port=self.port, database=str(self.folder / "state.db"))
        superlink = self._spawn("superlink", [str(self.bin / "flower-superlink"), *args])
        wait_for_port(self.host, self.port, timeout_s, alive=superlink)
        config = self.flwr_home / "config.toml"
        config.write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n' + connection_toml(CONNECTION, self.address, self.security)
        )
        self._spawn(
            "superexec-serverapp",
            [str(self.bin / "flower-superexec"), *superexec_args(self.security, runtime_api_address=self.address)],
        )

    def register(self, k: int, *, allow_known: bool = False) -> int | None:
        """Register SuperNode ``k``'s public key (``flwr supernode register``); its node id.

        ``allow_known``: a key the SuperLink already knows gives None instead of an error.
        """

        if self.security.credentials is None:
            raise ValueError("k: an insecure federation has no SuperNode keys to register")
        key = self.security.credentials.auth_public_key(k)
        return register_public_key(key, CONNECTION, self.env, allow_known=allow_known)

    def start_supernode(
        self, k: int, node_config: str, *, auth_key: int | None = None, with_superexec: bool = True
    ) -> subprocess.Popen[bytes]:
        """Start SuperNode ``k`` (and its ClientApp SuperExec once its Runtime API listens)."""
        port = free_port(self.host)
        args = supernode_args(
            self.security,
            k,
            superlink=self.address,
            host=self.host,
            port=port,
            node_config=node_config,
            auth_key=auth_key,
        )
        node = self._spawn(f"supernode-{k}", [str(self.bin / "flower-supernode"), *args])
        if with_superexec:
            wait_for_port(self.host, port, 60.0, alive=node)
            address = f"{self.host}:{port}"
            self._spawn(
                f"superexec-clientapp-{k}",
                [str(self.bin / "flower-superexec"), *superexec_args(self.security, runtime_api_address=address)],
            )
        return node

    def log(self, name: str) -> str:
        """What process ``name`` (``superlink``, ``supernode-0``, ...) has written so far."""
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def _snapshot(self) -> None:
        for s in self.started:
            s.tree |= descendants(s.proc.pid)

    def stop(self, grace_s: float = STOP_GRACE_S) -> list[str]:
        """Stop every process started here and all their descendants; the survivors (should be none)."""
        self._snapshot()
        # SuperExecs first (they own the app processes), then SuperNodes, the SuperLink last.
        order = sorted(self.started, key=lambda s: (not s.name.startswith("superexec"), s.name == "superlink"))
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for s in order:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(s.proc.pid, sig)
                for pid in s.tree:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, sig)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and self._alive():
                self._snapshot()
                time.sleep(0.1)
            if not self._alive():
                break
        for s in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                s.proc.wait(timeout=5)
            s.log.close()
        return [f"{pid} {describe(pid)}" for pid in sorted(self._pids()) if running(pid)]

    def _pids(self) -> set[int]:
        pids: set[int] = set()
        for s in self.started:
            pids |= {s.proc.pid, *s.tree}
        return pids

    def _alive(self) -> bool:
        return any(s.proc.poll() is None for s in self.started) or any(running(p) for p in self._pids())

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.leftover = self.stop()
