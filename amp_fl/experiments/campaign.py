"""What every campaign (a reproduction, a tuning, a sweep) does with its runs: compose, plan, run, resume.

A campaign turns its design into runs, each a :class:`Job`: Hydra overrides composed from
``conf/`` into a configuration (:func:`compose_values`) and a run folder under the campaign's
root (:func:`make_jobs`). A job whose folder already holds that run, finished, is kept
(:func:`is_complete`); :func:`execute` runs the others (clearing what an interrupted attempt
left), so giving the same command again resumes a campaign where it stopped. Each finished run
is also recorded, compact, in the results ledger (:mod:`amp_fl.experiments.ledger`, ``results/``,
committed), from which :func:`make_jobs` restores it on a machine that never ran it.

Engines: ``inprocess`` runs the project's ServerApp and ClientApp code in one process per worker
(:func:`~amp_fl.launch.inprocess.run_in_process`: no SuperLink, no Ray; its metrics equal the
Flower engine's for the same seed), ``workers`` runs side by side; ``flower`` launches each run
through ``flwr run`` (:func:`~amp_fl.launch.launcher.launch`), one at a time.

On a Ray cluster (:class:`RayCluster`, the campaigns' ``--ray-address``): every in-process run is
one Ray task with its own CPU / GPU request, placed by Ray on any node with room; the task runs in
a scratch folder of its node and sends the finished folder back, which is unpacked where the
campaign expects it (no shared file system needed). With ``engine=flower`` the runs stay one at a
time on this machine, and each run's simulation places its ClientApp actors on the cluster
(``deployment.ray_address``).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from amp_fl.deployment.os_processes import wait_for_port
from amp_fl.experiments import ledger
from amp_fl.experiments.ledger import pack_folder, unpack_folder
from amp_fl.run_folder import (
    COMPLETED,
    METRICS_FILE,
    RunFolderError,
    comparable_config,
    read_columns,
    read_config,
    read_summary,
    write_timing,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"
ENGINES = ("inprocess", "flower")

Log = Callable[[str], None]


class Spec(Protocol):
    """What a campaign's description of one run must give: its folder name and its Hydra overrides."""

    @property
    def run_id(self) -> str: ...

    @property
    def overrides(self) -> tuple[str, ...]: ...


SpecT = TypeVar("SpecT", bound=Spec)


@dataclass(frozen=True)
class Job(Generic[SpecT]):
    """One run to execute: the campaign's spec, its resolved configuration and its folder."""

    spec: SpecT
    values: dict[str, Any]
    run_dir: Path


def compose_values(overrides: Sequence[str], conf_dir: Path = CONF_DIR) -> dict[str, Any]:
    """The resolved configuration (a plain mapping) Hydra composes from ``conf/config.yaml`` and ``overrides``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            conf = compose("config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ValueError(f"overrides: Hydra cannot compose {' '.join(overrides)}: {exc}") from exc
    container = OmegaConf.to_container(conf, resolve=True)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items() if k != "hydra"}


def make_jobs(specs: Sequence[SpecT], runs_root: Path) -> list[Job[SpecT]]:
    """One job per spec: its composed configuration, written to ``runs_root/<run id>``.

    A job whose folder lacks its finished run gets it back from the results ledger when the ledger
    holds it (:func:`restore_from_ledger`): a campaign resumes on a machine that never ran it.
    """
    jobs = []
    for spec in specs:
        values = compose_values(spec.overrides)
        run_dir = runs_root / spec.run_id
        values["output_dir"] = str(run_dir)
        check_values(values)  # a bad setting stops the campaign before its first run, naming the key
        job = Job(spec, values, run_dir)
        restore_from_ledger(job)
        jobs.append(job)
    return jobs


def restore_from_ledger(job: Job[Any]) -> bool:
    """Puts the ledger's record of ``job`` in its folder if the folder lacks the finished run and the record is it.

    A record of other settings (the campaign's design changed since) stays in the ledger, unused,
    until the new run replaces it; the folder is left as it was.
    """
    record = ledger.record_path(job.run_dir)
    if record is None or not record.is_file() or is_complete(job.run_dir, job.values):
        return False  # no record (the common case: checked first, without composing configurations)
    job.run_dir.parent.mkdir(parents=True, exist_ok=True)
    restored = ledger.restore_to(job.run_dir, job.run_dir.parent)
    if restored is None:
        return False
    if not is_complete(restored, job.values):
        shutil.rmtree(restored)
        return False
    if job.run_dir.exists():  # what an interrupted attempt left here
        shutil.rmtree(job.run_dir)
    restored.rename(job.run_dir)
    return True


def check_values(values: dict[str, Any]) -> None:
    """``values`` make a valid configuration (``ConfigError``, a ``ValueError``, naming the key)."""
    from amp_fl.config import load_config

    load_config(values)


def is_complete(run_dir: Path, values: dict[str, Any]) -> bool:
    """Whether ``run_dir`` holds a finished run of exactly ``values`` (wherever it was written).

    Finished: :func:`~amp_fl.experiments.ledger.is_finished` (completed or diverged, the final model written).
    The same run: the stored ``run_config.json`` and ``values`` (resolved like a run's
    configuration) agree on everything but where and how it ran
    (:func:`~amp_fl.run_folder.comparable_config`).
    """
    from amp_fl.config import config_to_dict, load_config

    if not ledger.is_finished(run_dir):
        return False
    try:
        stored = read_config(run_dir)
    except RunFolderError:
        return False
    try:  # both sides through the same loader: keys added since with their defaults, types normalised
        stored_config = config_to_dict(load_config(stored))
    except ValueError:  # a folder of an older format, or not a run of this package: not this run
        return False
    return comparable_config(stored_config) == comparable_config(config_to_dict(load_config(values)))


def still_to_run(jobs: Sequence[Job[SpecT]]) -> list[Job[SpecT]]:
    return [job for job in jobs if not is_complete(job.run_dir, job.values)]


# ------------------------------------------------------------------------------------------ running
def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine: choose from {', '.join(ENGINES)}, got {engine!r}")


@dataclass(frozen=True)
class RayCluster:
    """A running Ray cluster a campaign sends its runs to, and what each run asks of it.

    ``address``: the head's ``host:port`` (``ray start --head`` prints it), or ``auto`` for the
    cluster this machine is part of. ``cpus_per_run`` / ``gpus_per_run``: each run's Ray resource
    request; Ray starts a run once a node has them free, so a cluster of N CPUs runs
    N / ``cpus_per_run`` runs side by side. A run's torch uses ``cpus_per_run`` threads.
    """

    address: str
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0

    def __post_init__(self) -> None:
        if self.address != "auto" and not _host_port(self.address):
            raise ValueError(f"ray_address: give the cluster's host:port (or auto), got {self.address!r}")
        if not (math.isfinite(self.cpus_per_run) and self.cpus_per_run > 0):
            raise ValueError(f"ray_cpus: CPUs per run must be > 0, got {self.cpus_per_run}")
        if not (math.isfinite(self.gpus_per_run) and self.gpus_per_run >= 0):
            raise ValueError(f"ray_gpus: GPUs per run must be >= 0, got {self.gpus_per_run}")

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus_per_run))

    def check_reachable(self, timeout_s: float = 5.0) -> None:
        """``RuntimeError`` unless the head answers (``ray.init`` would retry a dead address for minutes)."""
        target = _host_port(self.address)
        if target is None:  # auto: Ray finds the local cluster, or says there is none
            return
        try:
            wait_for_port(*target, timeout_s=timeout_s)
        except RuntimeError as exc:
            raise RuntimeError(
                f"ray_address: no Ray cluster answers at {self.address} ({exc}); start one with "
                "`ray start --head --port 6379`, or drop --ray-address to run on local workers"
            ) from exc


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port`` (or ``ray://host:port``, Ray's client address); None if it is not one."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    return (host, int(port)) if sep and host and port.isdigit() else None


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """The campaign CLIs' options for running on a Ray cluster (``--ray-address``, ``--ray-cpus``, ``--ray-gpus``)."""
    group = parser.add_argument_group("Ray cluster (default: local workers)")
    group.add_argument(
        "--ray-address",
        metavar="HOST:PORT",
        help="run every run as a Ray task on this running cluster (auto: the cluster this machine belongs to)",
    )
    group.add_argument("--ray-cpus", type=float, default=1.0, help="CPUs each run asks of the cluster (default 1)")
    group.add_argument("--ray-gpus", type=float, default=0.0, help="GPUs each run asks of the cluster (default 0)")


def cluster_from_args(args: argparse.Namespace) -> RayCluster | None:
    """The :class:`RayCluster` of :func:`add_cluster_arguments`' options; ``None`` without ``--ray-address``."""
    if args.ray_address is None:
        return None
    return RayCluster(args.ray_address, args.ray_cpus, args.ray_gpus)


def run_inprocess(values: dict[str, Any], run_dir: str, threads: int | None) -> dict[str, Any]:
    """One run through the in-process loop (module-level so a spawned worker can import it).

    ``threads``: torch's intra-op threads in a worker process (None: leave as it is). Flower's
    per-round INFO log is silenced; the run's progress is in its metrics.csv.
    """
    import torch

    from amp_fl.config import load_config
    from amp_fl.launch.inprocess import run_in_process

    if threads is not None:
        torch.set_num_threads(threads)
    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    flwr_log.setLevel(logging.WARNING)
    started, cpu = time.perf_counter(), time.process_time()
    try:
        run_in_process(load_config(values), Path(run_dir))
    finally:
        flwr_log.setLevel(level)
    return {"wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu}


def run_flower(values: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """One run through ``flwr run`` (the launcher: SuperLink, one SuperNode per device)."""
    from amp_fl.config import load_config
    from amp_fl.launch.launcher import RunFailedError, launch

    started = time.perf_counter()
    try:
        launch(load_config(values), Path(run_dir))
    except RunFailedError:
        # The launcher reports a diverged run as an error (one run, one clear line); to a campaign
        # it is a result, as from the in-process engine (ledger.is_finished).
        if not ledger.is_finished(Path(run_dir)):
            raise
    return {"wall_s": time.perf_counter() - started}


def run_as_ray_task(values: dict[str, Any], threads: int) -> tuple[dict[str, Any] | None, Exception | None, bytes]:
    """One in-process run inside a Ray task: (outcome or None, the run's exception or None, its folder packed).

    The run writes into a scratch folder on the task's node (the campaign's folder may not exist
    there); whatever it wrote comes back, a failed run's partial folder included.
    """
    import ray

    with tempfile.TemporaryDirectory(prefix="amp-fl-run-") as scratch:
        run_dir = Path(scratch) / "run"
        outcome: dict[str, Any] | None = None
        error: Exception | None = None
        try:
            outcome = run_inprocess({**values, "output_dir": str(run_dir)}, str(run_dir), threads)
            context = ray.get_runtime_context()
            outcome.update(ray_node_id=context.get_node_id(), ray_worker_pid=os.getpid())
        except Exception as exc:
            error = exc
        return outcome, error, pack_folder(run_dir)


def per_round_seconds(run_dir: Path) -> float:
    """Median wall seconds per round of a finished run (from metrics.csv's wall_time_s)."""
    try:
        wall = read_columns(run_dir / METRICS_FILE)["wall_time_s"]
    except (RunFolderError, KeyError):
        return float("nan")
    steps = np.diff(wall)
    return float(np.median(steps)) if steps.size else float("nan")


def outcome_text(run_dir: Path) -> str:
    """A finished run in a few words: its final test (else validation) accuracy, or where it diverged."""
    try:
        summary = read_summary(run_dir)
    except RunFolderError:
        return "no summary"
    status = str(summary.get("status"))
    if status != COMPLETED:
        return status.split(":", 1)[0]  # "diverged at round 154"; the reason is in summary.json
    for key, label in (("final_accuracy", "final accuracy"), ("final_val_accuracy", "final validation accuracy")):
        value = summary.get(key)
        if isinstance(value, (int, float)):
            return f"{label} {value:.4f}"
    return COMPLETED


class _Progress:
    """Counts the finished jobs, keeps the failures and logs one line per job (with an ETA)."""

    def __init__(self, name: str, total: int, engine: str, workers: int, log: Log, keep_models: bool = False) -> None:
        self.name, self.total, self.engine, self.workers, self.log = name, total, engine, workers, log
        self.keep_models = keep_models
        self.started = time.perf_counter()
        self.finished = 0
        self.failures: list[str] = []

    def __call__(self, job: Job[Any], outcome: dict[str, Any] | None, error: BaseException | None) -> None:
        self.finished += 1
        elapsed = time.perf_counter() - self.started
        eta = elapsed / self.finished * (self.total - self.finished)
        count = f"[{self.name}] {self.finished}/{self.total}"
        if error is not None:
            self.failures.append(f"{job.spec.run_id}: {type(error).__name__}: {error}")
            self.log(f"{count} FAILED {job.spec.run_id}: {type(error).__name__}: {error}")
            return
        assert outcome is not None
        write_timing(job.run_dir, {**outcome, "engine": self.engine, "workers": self.workers})
        ledger.record(job.run_dir, self.keep_models)  # the compact copy git keeps: a later session resumes from it
        acc = outcome_text(job.run_dir)
        cpu = f", CPU {outcome['cpu_s']:.0f} s" if "cpu_s" in outcome else ""
        self.log(
            f"{count} {job.spec.run_id}: {acc}, {outcome['wall_s']:.0f} s{cpu} "
            f"({per_round_seconds(job.run_dir):.2f} s/round); elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min"
        )


def execute(
    jobs: Sequence[Job[Any]],
    engine: str,
    workers: int,
    log: Log = print,
    name: str = "campaign",
    cluster: RayCluster | None = None,
    keep_models: bool = False,
) -> list[str]:
    """Run ``jobs`` (each from a clean folder); returns one line per failure (the others are complete on disk).

    Each finished run is recorded in the results ledger, with its final model if ``keep_models``
    (the campaign's report reads it).

    ``name`` prefixes the progress lines (``[reproduce] 3/12 ...``). With ``workers > 1`` in-process
    runs go side by side in spawned processes, each with its share of the CPUs for torch. With a
    ``cluster``, in-process runs are Ray tasks on it (``workers`` does not apply: the cluster's free
    resources decide how many run at once), and Flower runs attach their simulations to it.
    """
    if not jobs:
        return []
    check_engine(engine)
    for job in jobs:
        if job.run_dir.exists():  # what an interrupted attempt left must not be read as a result
            shutil.rmtree(job.run_dir)
    if cluster is not None and engine == "inprocess":
        progress = _Progress(name, len(jobs), "inprocess on ray", 0, log, keep_models)
        execute_on_ray(jobs, cluster, progress)
        return progress.failures
    if cluster is not None:  # Flower runs, one at a time: their ClientApp actors go on the cluster
        jobs = [_on_cluster(job, cluster.address) for job in jobs]
    progress = _Progress(name, len(jobs), engine, workers, log, keep_models)
    if engine == "flower" or workers == 1:  # one at a time, in this process (torch keeps its thread count)
        for job in jobs:
            try:
                if engine == "flower":
                    outcome = run_flower(job.values, str(job.run_dir))
                else:
                    outcome = run_inprocess(job.values, str(job.run_dir), None)
            except Exception as exc:
                progress(job, None, exc)
            else:
                progress(job, outcome, None)
        return progress.failures
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
    try:
        pending: dict[Future[dict[str, Any]], Job[Any]] = {
            pool.submit(run_inprocess, job.values, str(job.run_dir), threads): job for job in jobs
        }
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:
                    progress(job, None, exc)
                else:
                    progress(job, outcome, None)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return progress.failures


def _on_cluster(job: Job[SpecT], address: str) -> Job[SpecT]:
    values = {**job.values, "deployment": {**job.values.get("deployment", {}), "ray_address": address}}
    return Job(job.spec, values, job.run_dir)


def _portable(values: dict[str, Any]) -> dict[str, Any]:
    """A run's values for another process: the data root made absolute here (a Ray worker's directory differs)."""
    dataset = dict(values.get("dataset", {}))
    if "root" in dataset:
        dataset["root"] = str(Path(str(dataset["root"])).expanduser().resolve())
    return {**values, "dataset": dataset}


def execute_on_ray(jobs: Sequence[Job[Any]], cluster: RayCluster, progress: _Progress) -> None:
    """Every job as one Ray task (:func:`run_as_ray_task`) on ``cluster``; each finished folder unpacked in place.

    Connects this process to the cluster as a driver for the campaign (unless it already is one)
    and disconnects after; Ray's own log lines stay in the cluster's session folder.
    """
    import ray

    connected_here = not ray.is_initialized()
    if connected_here:
        cluster.check_reachable()
        ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
    task = ray.remote(run_as_ray_task).options(
        num_cpus=cluster.cpus_per_run, num_gpus=cluster.gpus_per_run, max_retries=0
    )
    pending = {task.remote(_portable(job.values), cluster.threads): job for job in jobs}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                try:
                    outcome, error, archive = ray.get(ref)
                except Exception as exc:  # the task's worker died (killed, out of memory) or Ray failed
                    progress(job, None, exc)
                    continue
                unpack_folder(archive, job.run_dir)
                progress(job, outcome, error)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if connected_here:
            ray.shutdown()
