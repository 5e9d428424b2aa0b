"""Simulations on a Ray cluster: attach Flower's simulation engine to a running cluster, or start one.

Flower's Ray backend calls ``ray.init()`` inside the simulation process, and ``ray.init()``
connects to an existing cluster when ``RAY_ADDRESS`` is set (Flower 1.41's backend options
``init-args`` take only ``num-cpus``, ``num-gpus``, ``logging-level`` and ``log-to-driver``, no
address). So ``deployment.ray_address=<head>:<port>`` makes the launcher export ``RAY_ADDRESS`` to
``flwr run``; the local SuperLink and the simulation it starts inherit it, and the ClientApp
actors are placed on the cluster's nodes (every node needs this project installed, e.g. the
same venv path). A cluster across machines::

    head$   ray start --head --port 6379 --num-cpus 8           # the machine that runs python -m amp_fl
    worker$ ray start --address <head>:6379 --num-cpus 8        # every other machine
    head$   python -m amp_fl experiment=main deployment.ray_address=<head>:6379

:class:`RayHead` starts a single-machine head on free ports (for tests and the benchmark) and
stops exactly the processes it started: never ``ray stop``, which stops every Ray process of
the machine, including other users' simulations.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from amp_fl.deployment.os_processes import descendants, free_port, running, wait_for_port

RAY_ADDRESS = "RAY_ADDRESS"


class RayHead:
    """``ray start --head --block`` on 127.0.0.1 with free ports, in its own process group.

    Parameters
    ----------
    num_cpus : int
        CPUs the head offers to actors.
    temp_dir : Path, optional
        Ray's session folder (logs); default: a new folder under ``/tmp`` (Ray needs a short path
        for its sockets).
    num_gpus : int, optional
        GPUs the head offers; ``None``: those Ray detects (as a private ``ray.init()`` would).
    env : dict, optional
        The head's environment (default: this process's).
    """

    def __init__(
        self,
        num_cpus: int,
        temp_dir: Path | None = None,
        *,
        num_gpus: int | None = 0,
        env: dict[str, str] | None = None,
    ) -> None:
        if num_cpus < 1:
            raise ValueError(f"num_cpus: must be >= 1, got {num_cpus}")
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.env = dict(os.environ if env is None else env)
        self.temp_dir = temp_dir or Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.proc: subprocess.Popen[bytes] | None = None
        self._tree: set[int] = set()
        self.leftover: list[int] = []

    @property
    def address(self) -> str:
        """The head's GCS address, what ``RAY_ADDRESS`` / ``deployment.ray_address`` take."""
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 120.0, wait: bool = True) -> RayHead:
        """Start the head; ``wait``: until its GCS port accepts connections.

        Without ``wait`` it returns at once: a driver's ``ray.init()`` waits for the cluster to
        come up (the launcher starts the head this way, in parallel with Flower's own start-up).
        """
        ray = Path(sys.executable).parent / "ray"
        command = [
            str(ray),
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            self.host,
            "--port",
            str(self.port),
            "--ray-client-server-port",
            str(free_port(self.host)),
            "--dashboard-agent-listen-port",
            str(free_port(self.host)),
            "--num-cpus",
            str(self.num_cpus),
            *(["--num-gpus", str(self.num_gpus)] if self.num_gpus is not None else []),
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
            "--temp-dir",
            str(self.temp_dir),
        ]
        # The first driver would get num_cpus idle workers prestarted; Flower's actors cannot use them
        # (their runtime_env differs), and on a small machine they compete with the actors' start-up.
        env = {**self.env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_prestart_worker_first_driver": "0"}
        env.pop(RAY_ADDRESS, None)
        self.log = open(self.temp_dir / "ray-start.log", "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            wait_for_port(self.host, self.port, timeout_s, alive=self.proc)
        return self

    def processes(self) -> set[int]:
        """The head's process tree (GCS, raylet, workers and actors), as far as seen so far."""
        if self.proc is not None:
            self._tree |= {self.proc.pid, *descendants(self.proc.pid)}
        return {pid for pid in self._tree if running(pid)}

    def stop(self, grace_s: float = 5.0) -> list[int]:
        """SIGTERM (then SIGKILL) to the head's process group and every descendant; the survivors."""
        if self.proc is None:
            return []
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.processes()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and self.processes():
                time.sleep(0.2)
            if not self.processes():
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.log.close()
        self.leftover = sorted(self.processes())
        return self.leftover

    def __enter__(self) -> RayHead:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
