"""Launch one AMP-FL run through Flower's supported path: ``flwr run <project> <connection>``.

The Hydra entry point (``python -m amp_fl``) and the tests call :func:`launch`. It validates the
config and the data before any Flower process starts, writes the resolved config to the run
folder, runs ``flwr run`` on a local-simulation connection (Ray backend, one SuperNode per PIU)
with the run's own ``FLWR_HOME`` (``<run>/.flwr``) and runtime dependency installation disabled, and stops the
background SuperLink that ``:local:`` leaves running (also when the launcher is interrupted).

Flower's output goes to the run folder's ``flower.log``; the terminal shows a progress view read
from ``metrics.csv`` (:mod:`amp_fl.launch.progress`), or also the full log with ``verbose``.
:func:`cli_errors` turns the failures a user can fix into one ``error: ...`` line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from amp_fl.config import RunConfig, config_to_dict
from amp_fl.data.datasets import DatasetUnavailableError, ResolvedDataset, save_resolution
from amp_fl.deployment.os_processes import free_port
from amp_fl.deployment.ray_cluster import RAY_ADDRESS, RayHead
from amp_fl.errors import ConfigError
from amp_fl.launch.preflight import check_flower_engine, check_machine, check_resume, preflight
from amp_fl.launch.processes import MARKER, SERVER_APP_PROGRAMS, run_processes, stop_run_processes
from amp_fl.launch.progress import LogPump, ProgressView, StartupPhases, one_line, progress_view
from amp_fl.run_folder import (
    CHECKPOINT_FILE,
    COMPLETED,
    DATASET_RESOLUTION_FILE,
    FAILED,
    FINAL_MODEL_FILE,
    FLOWER_LOG,
    INTERRUPTED,
    METRICS_FILE,
    RUN_CONFIG_FILE,
    RUNNING,
    SUMMARY_FILE,
    MetricsTail,
    RunFolderError,
    check_fresh_run_folder,
    finish_summary,
    read_summary,
    resume_hint,
    write_config,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONNECTION = "local"
CONNECTION_TOML = f"""[superlink]
default = "{CONNECTION}"

[superlink.{CONNECTION}]
address = ":local:"
"""


LOCAL_SUPERLINK_PORT = "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"  # read by flwr for its `:local:` SuperLink
POLL_S = 0.5  # how often the launcher reads metrics.csv while Flower runs
STOP_GRACE_S = 5.0  # after SIGTERM, before SIGKILL
LOG_TAIL_LINES = 20  # lines of flower.log shown when a run fails


class RunFailedError(RuntimeError):
    """``flwr run`` or the ServerApp did not complete; the message says where to look (``flower.log``)."""


class RunInterrupted(KeyboardInterrupt):
    """The launcher got SIGINT, SIGTERM or SIGHUP; Flower has been stopped by the time it propagates."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


FLWR_HOME_DIR = ".flwr"  # in the run folder: Flower's state, connections and superlink.log for this run only


def flwr_home(run_dir: Path) -> Path:
    """The run's own ``FLWR_HOME``: ``<run folder>/.flwr`` (not the user's ``~/.flwr``, nor one shared by runs)."""
    home = (run_dir / FLWR_HOME_DIR).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "config.toml"
    if not config.exists() or CONNECTION not in config.read_text():
        config.write_text(CONNECTION_TOML)
    return home


def write_run_config(cfg: RunConfig, run_dir: Path, resolved: ResolvedDataset | None = None) -> Path:
    """The resolved config as ``run_config.json`` (what the ServerApp reads), and the dataset outcome."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if resolved is not None:
        save_resolution(resolved, run_dir / DATASET_RESOLUTION_FILE)
    values = config_to_dict(cfg)
    values["output_dir"] = str(run_dir)
    # Relative paths mean "relative to where the user launched": the ServerApp runs elsewhere.
    values["dataset"]["root"] = str(Path(cfg.dataset.root).expanduser().resolve())
    return write_config(run_dir, values)


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


# What the Flower app is made of: the package, its presets and the project file (the FAB's content).
APP_FILES = ("pyproject.toml", "README.md", ".gitignore")
APP_FOLDERS = ("amp_fl", "conf")
APP_DIR = "app"


def staged_app(home: Path) -> Path:
    """A fresh copy of the app's files (:data:`APP_FILES`, :data:`APP_FOLDERS`) in ``home/app``, for ``flwr run``.

    ``flwr run`` walks every file under the folder it is given, resolving each path, before it
    picks what goes into the FAB: the project folder (its .venv, .git, results, runs) held some
    51,000 files and ``flwr build`` took 4.6 s on it, against 1.5 s on this copy of ~220 files,
    which takes some 70 ms to make. The FAB holds the same package, presets and project file.
    """
    app = home / APP_DIR
    shutil.rmtree(app, ignore_errors=True)
    app.mkdir(parents=True)
    for name in APP_FILES:
        if (PROJECT_ROOT / name).is_file():
            shutil.copy2(PROJECT_ROOT / name, app / name)
    for name in APP_FOLDERS:
        shutil.copytree(PROJECT_ROOT / name, app / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return app


def flwr_command(cfg: RunConfig, config_file: Path, home: Path) -> list[str]:
    flwr = shutil.which("flwr", path=str(Path(sys.executable).parent)) or "flwr"
    run_config = ["--run-config", f"config-file='{config_file}'"]
    app = str(staged_app(home))
    if cfg.deployment.superlink is not None:
        return [flwr, "run", app, deployment_connection(cfg, home), "--stream", *run_config]
    federation = f"num-supernodes={cfg.num_devices} client-resources-num-cpus={cfg.simulation.client_cpus}"
    if cfg.simulation.client_gpus > 0:
        federation += f" client-resources-num-gpus={cfg.simulation.client_gpus}"
    return [flwr, "run", app, CONNECTION, "--stream", "--federation-config", federation, *run_config]


SUPEREXEC_POLL = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
SUPEREXEC_POLL_S = "0.1"


def local_ray_head(cfg: RunConfig, env: dict[str, str]) -> RayHead | None:
    """The Ray head of a local simulation, or ``None`` (a deployment, or a Ray cluster the user named).

    Left to itself, Flower's simulation process starts Ray (``ray.init()``, about 4 s) only once
    it is up, after the SuperLink and the SuperExec: a head that the launcher starts in parallel
    with those is ready by then, and ``ray.init()`` only connects to it (about 0.6 s). It offers
    what a private ``ray.init()`` would: this process's CPUs and the GPUs Ray detects.
    """
    if cfg.deployment.superlink is not None or cfg.deployment.ray_address is not None or env.get(RAY_ADDRESS):
        return None  # a RAY_ADDRESS of the user's environment names a cluster, as it would for ray.init()
    return RayHead(num_cpus=len(os.sched_getaffinity(0)), num_gpus=None, env=env)


def flower_processes(home: Path) -> list[int]:
    """PIDs of the Flower and Ray processes of the run whose ``FLWR_HOME`` is ``home`` (orphans included)."""
    return run_processes(home)


def stop_flower_processes(home: Path, grace_s: float = STOP_GRACE_S) -> int:
    """Stop every Flower and Ray process of ``home``'s run: a stale SuperLink, a headless run, orphaned Ray agents."""
    return stop_run_processes(home, grace_s)


def _start_watchdog(home: Path, run_dir: Path) -> subprocess.Popen[bytes]:
    """A process that stops this run's Flower and Ray processes once the launcher is gone, even SIGKILLed
    (and marks the run interrupted in its summary)."""
    return subprocess.Popen(
        [sys.executable, "-m", "amp_fl.launch.processes", str(os.getpid()), str(home), str(run_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C to the launcher's process group must not stop it first
    )


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP raise :class:`RunInterrupted` (once: later ones are ignored while cleaning up)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.getsignal(signum) for signum in signums}

    def interrupt(signum: int, frame: FrameType | None) -> None:
        for other in signums:
            signal.signal(other, signal.SIG_IGN)
        raise RunInterrupted(signum)

    for signum in signums:
        signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _terminate(proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


SERVER_APP_DIED = -1000  # _run_flower's return code when the ServerApp process vanished mid-run
SERVER_APP_GRACE_S = 5.0  # a finished ServerApp has written its status by then


class ServerAppWatch:
    """Notices a ServerApp process that vanished without finishing (e.g. SIGKILLed): ``flwr run`` would wait forever.

    A local simulation hosts the ServerApp in ``flwr-simulation``; once it has been seen, its
    absence for ``SERVER_APP_GRACE_S`` while ``summary.json`` still says ``running`` means it died.
    """

    def __init__(self, home: Path, run_dir: Path) -> None:
        self.home, self.run_dir = home, run_dir
        self.seen = False
        self.gone_since: float | None = None

    def died(self) -> bool:
        if run_processes(self.home, SERVER_APP_PROGRAMS):
            self.seen, self.gone_since = True, None
            return False
        if not self.seen:
            return False
        now = time.monotonic()
        if self.gone_since is None:
            self.gone_since = now
        return now - self.gone_since >= SERVER_APP_GRACE_S and _status(self.run_dir) == RUNNING


def _status(run_dir: Path) -> str:
    try:
        return str(read_summary(run_dir).get("status", f"no status in {SUMMARY_FILE}"))
    except RunFolderError:
        return "no summary written"


def _run_flower(
    command: list[str],
    env: dict[str, str],
    run_dir: Path,
    view: ProgressView,
    verbose: bool,
    append_log: bool = False,
    watch_server: bool = False,
    num_devices: int = 0,
) -> int:
    """Run ``flwr run``: its output to ``flower.log`` (and the terminal if ``verbose``), rows to ``view``."""
    proc = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    phases = StartupPhases(num_devices)

    def follow_startup(line: str) -> None:
        if (phase := phases.feed(line)) is not None:
            view.phase(phase)

    pump = LogPump(
        proc.stdout,
        run_dir / FLOWER_LOG,
        echo=sys.stdout if verbose else None,
        append=append_log,
        on_line=follow_startup,
    )
    pump.start()
    tail = MetricsTail(run_dir / METRICS_FILE)
    server = ServerAppWatch(Path(env["FLWR_HOME"]), run_dir) if watch_server else None
    try:
        with view:
            while True:
                try:
                    proc.wait(timeout=POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    view.update(tail.poll())
                    if server is not None and server.died():
                        return SERVER_APP_DIED
            view.update(tail.poll())
    finally:
        _terminate(proc)  # a no-op unless interrupted
        pump.join(timeout=10)
        proc.stdout.close()
    return proc.returncode


def launch(cfg: RunConfig, run_dir: Path) -> Path:
    """Run ``cfg`` through ``flwr run``; returns the run folder (raises RunFailedError on failure).

    Local simulation by default; with ``deployment.superlink`` set, on that SuperLink and the
    SuperNodes connected to it (the ServerApp must be able to read ``run_dir``). Flower's output
    is written to ``run_dir/flower.log``; the terminal shows the progress (``cfg.verbose``: and
    Flower's output). On SIGINT/SIGTERM/SIGHUP, Flower is stopped and :class:`RunInterrupted` raised.
    """
    cfg.validate()
    check_flower_engine(cfg)
    run_dir = run_dir.resolve()
    if cfg.resume is None:
        check_fresh_run_folder(run_dir)  # a new run never writes over another's results
    resolved = preflight(cfg)
    check_machine(cfg)
    if cfg.resume is not None:
        check_resume(cfg, run_dir)
    config_file = write_run_config(cfg, run_dir, resolved)
    home = flwr_home(run_dir)
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        MARKER: str(home),  # every process of this run inherits it: how they are found (and stopped) later
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        "PYTHONUNBUFFERED": "1",
        # flwr starts flower-superlink by name: the venv's bin must come first on PATH.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    # A local simulation's SuperLink listens on a free port (Flower's default, 39091, is shared by
    # every concurrent run on the machine); deployment.ray_address puts the actors on that cluster.
    env.setdefault(LOCAL_SUPERLINK_PORT, str(free_port()))
    # Flower's SuperExec looks for submitted work every 1 s by default, and keeps looking all run
    # long. 0.1 s brings round 1 of experiment=quick some 2 s sooner than 0.5 s (22.9 s against
    # 25.1 s, medians of 2 here: the start waits on several looks); each look costs the SuperLink
    # about 4 ms of CPU, some 9 % of a core all run long (its CPU 11.8 % at 0.1 s, 3.7 % at 1 s),
    # which slowed a Flower round by 3-4 % here. Set FLWR_SUPEREXEC_TASK_POLL_INTERVAL for long runs.
    env.setdefault(SUPEREXEC_POLL, SUPEREXEC_POLL_S)
    head = local_ray_head(cfg, env)
    if cfg.deployment.ray_address is not None:
        env[RAY_ADDRESS] = cfg.deployment.ray_address
    elif head is not None:
        env[RAY_ADDRESS] = head.address
    view = progress_view(cfg.num_rounds, run_dir, verbose=cfg.verbose)
    try:
        returncode = _run_in_flower(cfg, run_dir, config_file, home, env, head, view)
    except KeyboardInterrupt as exc:
        # Flower is stopped by now: the summary says so (the ServerApp had no chance to) and how to go on.
        by = signal.Signals(exc.signum).name if isinstance(exc, RunInterrupted) else "SIGINT"
        if finish_summary(run_dir, INTERRUPTED, interrupted_by=by, resume=resume_hint(run_dir)):
            raise
        if _status(run_dir) != COMPLETED:
            raise
        # The ServerApp finished every round before Flower stopped: a complete run, nothing to resume.
        print(f"[amp-fl] {by} came after the run had completed; nothing was lost", flush=True)
        returncode = 0
    status = _status(run_dir)
    if returncode == 0 and status == COMPLETED:
        if head is not None:
            shutil.rmtree(head.temp_dir, ignore_errors=True)  # Ray's session logs: kept only for a failed run
        drop_flower_state(home)
    if returncode == SERVER_APP_DIED:
        view.failure(run_dir / FLOWER_LOG, LOG_TAIL_LINES)
        by = "the ServerApp process stopped without finishing (killed?)"
        finish_summary(run_dir, INTERRUPTED, interrupted_by=by, resume=resume_hint(run_dir))
        raise RunFailedError(
            f"the ServerApp process stopped without finishing (killed?); the rounds done are in "
            f"{run_dir / METRICS_FILE}; continue with: {resume_hint(run_dir)}"
        )
    # The server stopped the run itself and said why; what it keeps is the last good round's.
    if returncode == 0 and status.startswith("diverged"):
        raise RunFailedError(f"{status}; {kept_outputs(run_dir)}; {DIVERGED_HINT}")
    if returncode == 0 and status.startswith(f"{FAILED}:"):
        raise RunFailedError(f"the run {status}; {kept_outputs(run_dir)}")
    if returncode != 0 or status != COMPLETED:
        view.failure(run_dir / FLOWER_LOG, LOG_TAIL_LINES)
        where = f"see {run_dir / FLOWER_LOG}"
        if cfg.deployment.superlink is None:
            where += f" and {home / 'local-superlink' / 'superlink.log'}"
        if head is not None:
            where += f" (Ray's logs: {head.temp_dir})"
        finish_summary(run_dir, f"{FAILED}: Flower run failed (flwr exit code {returncode})")
        raise RunFailedError(
            f"Flower run failed (flwr exit code {returncode}, status: {one_line(str(status))}); {where}"
        )
    view.summary()
    return run_dir


DIVERGED_HINT = "try a smaller train.learning_rate or strategy.clip_update_norm"


def kept_outputs(run_dir: Path) -> str:
    """Where a stopped run's rows and its last good model are."""
    checkpoint = run_dir / CHECKPOINT_FILE
    saved = f", its checkpoint in {checkpoint}" if checkpoint.is_file() else ""
    return (
        f"the metrics up to the last good round are in {run_dir / METRICS_FILE}, its model in "
        f"{run_dir / FINAL_MODEL_FILE}{saved}"
    )


def drop_flower_state(home: Path) -> None:
    """After a completed run: Flower's copy of the app and its database (MBs a run); its config and logs stay."""
    shutil.rmtree(home / "apps", ignore_errors=True)
    for db in (home / "local-superlink").glob("state.db*"):
        db.unlink(missing_ok=True)


def _run_in_flower(
    cfg: RunConfig,
    run_dir: Path,
    config_file: Path,
    home: Path,
    env: dict[str, str],
    head: RayHead | None,
    view: ProgressView,
) -> int:
    """``flwr run`` with the run's watchdog, Ray head and signal handling; ``flwr``'s exit code (or SERVER_APP_DIED)."""
    with _stop_signals():
        # What a crashed or SIGKILLed launcher left (a SuperLink holding the port, a headless run,
        # orphaned Ray agents) is stopped before anything starts.
        stop_flower_processes(home)
        watchdog = _start_watchdog(home, run_dir)
        try:
            if head is not None:
                head.start(wait=False)  # comes up while flwr starts the SuperLink and the simulation
            returncode = _run_flower(
                flwr_command(cfg, config_file, home),
                env,
                run_dir,
                view,
                cfg.verbose,
                append_log=cfg.resume is not None,
                watch_server=cfg.deployment.superlink is None,
                num_devices=cfg.num_devices,
            )
        finally:
            if head is not None:
                # At once: a head stops in 5 s on SIGTERM (one of its processes waits out the grace
                # period), and a finished or failed run keeps nothing in Ray worth a graceful stop.
                head.stop(grace_s=0.0)
            stop_flower_processes(home)
            watchdog.kill()
            watchdog.wait()
            shutil.rmtree(home / APP_DIR, ignore_errors=True)  # the FAB is built from it: no longer needed
    return returncode


DATASET_HINT = "or dataset.fallback=mnist5k to fall back to it with a warning (as experiment=main does)"


@contextlib.contextmanager
def cli_errors(run_dir: Path | None = None) -> Iterator[None]:
    """Command-line front ends: what a user can fix ends in ONE ``error: ...`` line on stderr and an exit code.

    Bad input (config, data-dependent, dataset unavailable): exit 2. A failed Flower run: exit 1
    (its log's tail was printed above). Interrupted: Flower stopped, exit 128 + the signal number.
    """
    try:
        yield
    except ConfigError as exc:
        _exit(f"error: {exc}", 2, exc)
    except DatasetUnavailableError as exc:
        message = str(exc)
        if "offline choices" in message and "dataset.fallback" not in message:
            message += f"; {DATASET_HINT}"
        _exit(f"error: {message}", 2, exc)
    except RunFolderError as exc:  # an output folder that holds a run, is a file, or a run folder unreadable
        _exit(f"error: {exc}", 2, exc)
    except RunFailedError as exc:
        _exit(f"error: {exc}", 1, exc)
    except OSError as exc:  # a folder that cannot be written, a full disk: the path and the system's reason
        _exit(f"error: {os_error_line(exc)}", 1 if exc.errno in OUT_OF_SPACE else 2, exc)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, RunInterrupted) else signal.SIGINT
        where = ""
        if run_dir is not None and (run_dir / METRICS_FILE).is_file():
            where = f"; the rounds that finished are in {run_dir / METRICS_FILE}"
            if (run_dir / CHECKPOINT_FILE).is_file():
                where += f"; continue with: {resume_hint(run_dir)}"
        _exit(f"interrupted ({signal.Signals(signum).name}): Flower stopped{where}", 128 + signum, exc)


# A write that failed for want of room fails the run (exit 1); a path that cannot be used is bad input (2).
OUT_OF_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def os_error_line(exc: OSError) -> str:
    """``cannot use <path>: No space left on device``: the path first, the system's words, no errno soup."""
    path = exc.filename if exc.filename is not None else "a run file"
    reason = exc.strerror or str(exc)
    return f"cannot use {path}: {reason}"


def _exit(message: str, code: int, cause: BaseException) -> None:
    print(one_line(message), file=sys.stderr, flush=True)
    raise SystemExit(code) from cause


def main(argv: list[str] | None = None) -> None:
    """``python -m amp_fl.launch.launcher CONFIG.json RUN_DIR``: launch a saved RunConfig (no Hydra)."""
    import argparse

    from amp_fl.config import load_config

    parser = argparse.ArgumentParser(prog="python -m amp_fl.launch.launcher")
    parser.add_argument("config", type=Path, help=f"a RunConfig as JSON (e.g. a run's {RUN_CONFIG_FILE})")
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    with cli_errors(args.run_dir):
        values = json.loads(args.config.read_text())
        # A saved config repeats its run from round 0, even one that was itself resumed
        # (continuing a run is `python -m amp_fl resume=<run folder>`).
        values["resume"] = None
        launch(load_config(values), args.run_dir)


if __name__ == "__main__":
    main()
