"""Launch one AMP-FL run through Flower's supported path: ``flwr run <project> <connection>``.

The Hydra entry point (``python -m amp_fl``) and the tests call :func:`launch`. It validates the
config and the data before any Flower process starts, writes the resolved config to the run
folder, runs ``flwr run`` on a local-simulation connection (Ray backend, one SuperNode per PIU)
with a project-local ``FLWR_HOME`` and runtime dependency installation disabled, and stops the
background SuperLink that ``:local:`` leaves running.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from amp_fl.config import RunConfig, config_to_dict
from amp_fl.data.datasets import (
    DATASET_RESOLUTION,
    ResolvedDataset,
    load_dataset,
    resolve_dataset,
    save_resolution,
)
from amp_fl.data.partition import partition

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONNECTION = "local"
CONNECTION_TOML = f"""[superlink]
default = "{CONNECTION}"

[superlink.{CONNECTION}]
address = ":local:"
"""


class RunFailedError(RuntimeError):
    """``flwr run`` or the ServerApp did not complete; the message says where to look."""


def flwr_home() -> Path:
    home = Path(os.environ.get("FLWR_HOME") or PROJECT_ROOT / ".flwr").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "config.toml"
    if not config.exists() or CONNECTION not in config.read_text():
        config.write_text(CONNECTION_TOML)
    return home


def preflight(cfg: RunConfig) -> ResolvedDataset:
    """Check what can only be checked with data (e.g. enough samples for the shards); return the dataset used.

    Runs in the launching process, so a download (or a failed one, and its fallback) happens once,
    before any client starts; the ServerApp reuses the outcome (see :func:`write_run_config`).
    """
    root = str(Path(cfg.dataset.root).expanduser().resolve())
    resolved = resolve_dataset(cfg.dataset.name, root, cfg.dataset.download, cfg.dataset.fallback)
    labels = load_dataset(resolved.used, root, cfg.dataset.download).train.labels
    partition(labels, cfg.num_devices, cfg.dataset.partition, cfg.dataset.shards_per_device, cfg.seed)
    return resolved


def write_run_config(cfg: RunConfig, run_dir: Path, resolved: ResolvedDataset | None = None) -> Path:
    """The resolved config as ``run_config.json`` (what the ServerApp reads), and the dataset outcome."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if resolved is not None:
        save_resolution(resolved, run_dir / DATASET_RESOLUTION)
    path = run_dir / "run_config.json"
    values = config_to_dict(cfg)
    values["output_dir"] = str(run_dir)
    # Relative paths mean "relative to where the user launched": the ServerApp runs elsewhere.
    values["dataset"]["root"] = str(Path(cfg.dataset.root).expanduser().resolve())
    path.write_text(json.dumps(values, indent=2, default=list))
    return path


DEPLOY_CONNECTION = "amp-fl-deploy"


def deployment_connection(cfg: RunConfig, home: Path) -> str:
    """Add (or replace) a connection to ``cfg.deployment.superlink`` in ``home/config.toml``."""
    config = home / "config.toml"
    lines = config.read_text().split(f"\n[superlink.{DEPLOY_CONNECTION}]")[0].rstrip("\n")
    entry = [f"[superlink.{DEPLOY_CONNECTION}]", f'address = "{cfg.deployment.superlink}"']
    if cfg.deployment.insecure:
        entry.append("insecure = true")
    else:
        entry.append(f'root-certificates = "{Path(str(cfg.deployment.root_certificates)).resolve()}"')
    config.write_text(lines + "\n\n" + "\n".join(entry) + "\n")
    return DEPLOY_CONNECTION


def flwr_command(cfg: RunConfig, config_file: Path, home: Path) -> list[str]:
    flwr = shutil.which("flwr", path=str(Path(sys.executable).parent)) or "flwr"
    run_config = ["--run-config", f"config-file='{config_file}'"]
    if cfg.deployment.superlink is not None:
        return [flwr, "run", str(PROJECT_ROOT), deployment_connection(cfg, home), "--stream", *run_config]
    federation = f"num-supernodes={cfg.num_devices} client-resources-num-cpus={cfg.simulation.client_cpus}"
    if cfg.simulation.client_gpus > 0:
        federation += f" client-resources-num-gpus={cfg.simulation.client_gpus}"
    return [flwr, "run", str(PROJECT_ROOT), CONNECTION, "--stream", "--federation-config", federation, *run_config]


def flower_processes(home: Path) -> list[int]:
    """PIDs of SuperLink/SuperExec processes that belong to this FLWR_HOME."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(home) in cmdline and ("flower-superlink" in cmdline or "flower-superexec" in cmdline):
            pids.append(int(proc.name))
    return pids


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def stop_flower_processes(home: Path, grace_s: float = 5.0) -> int:
    """Terminate the background SuperLink (and its SuperExec/children) of this FLWR_HOME."""
    roots = flower_processes(home)
    targets = set(roots)
    for pid in roots:
        stack = [pid]
        while stack:
            for child in _children(stack.pop()):
                if child not in targets:
                    targets.add(child)
                    stack.append(child)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in targets):
            time.sleep(0.1)
    return len(targets)


def launch(cfg: RunConfig, run_dir: Path) -> Path:
    """Run ``cfg`` through ``flwr run``; returns the run folder (raises RunFailedError on failure).

    Local simulation by default; with ``deployment.superlink`` set, on that SuperLink and the
    SuperNodes connected to it (the ServerApp must be able to read ``run_dir``).
    """
    cfg.validate()
    resolved = preflight(cfg)
    run_dir = run_dir.resolve()
    config_file = write_run_config(cfg, run_dir, resolved)
    home = flwr_home()
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        "PYTHONUNBUFFERED": "1",
        # flwr starts flower-superlink by name: the venv's bin must come first on PATH.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    stop_flower_processes(home)  # a SuperLink left by an interrupted run would hold the port
    try:
        completed = subprocess.run(flwr_command(cfg, config_file, home), cwd=PROJECT_ROOT, env=env, check=False)
    finally:
        stop_flower_processes(home)
    summary_path = run_dir / "summary.json"
    status = json.loads(summary_path.read_text()).get("status") if summary_path.exists() else "no summary written"
    if completed.returncode != 0 or status != "completed":
        raise RunFailedError(
            f"Flower run failed (flwr exit code {completed.returncode}, status: {status}); "
            f"see the log above and {home / 'local-superlink' / 'superlink.log'}"
        )
    return run_dir


def main(argv: list[str] | None = None) -> None:
    """``python -m amp_fl.experiments.launch CONFIG.json RUN_DIR``: launch a saved RunConfig (no Hydra)."""
    import argparse

    from amp_fl.config import load_config

    parser = argparse.ArgumentParser(prog="python -m amp_fl.experiments.launch")
    parser.add_argument("config", type=Path, help="a RunConfig as JSON (e.g. a run's run_config.json)")
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    launch(load_config(json.loads(args.config.read_text())), args.run_dir)


if __name__ == "__main__":
    main()
