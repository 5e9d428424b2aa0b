"""Bad input through the real commands: one ``error:`` line, exit 2, no traceback, nothing written.

Each probe of :data:`PROBES` runs a user-facing command (``python -m amp_fl``, ``python -m
amp_fl.report``, a campaign command) as a subprocess in a scratch folder (the default
``runs/<time>/`` lands there) and checks the promise of ``docs/reliability.md``: stderr is exactly
one line, starting ``error:`` and naming the key, file or path; the exit code is 2; and the scratch
folder is byte for byte what it was (no stub run folder, no overwritten run, no directory made for a
dataset root that failed). Every probe here fails before Flower starts, in well under a minute.

The runs whose result would mean nothing (``train.learning_rate=1e8``, ``model.t_max_s=1e-9``) and
the interrupts go through Flower (marked ``e2e``): they end non-zero with their reason in ``summary.json``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from amp_fl.config import config_to_dict, load_config
from amp_fl.experiments.campaign import compose_values

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CPUS = len(os.sched_getaffinity(0))


# ------------------------------------------------------------------------------ scratch folders
def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its content (folders: ``<dir>``)."""
    files = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        files[key] = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def quick_values(run_dir: Path) -> dict:
    values = config_to_dict(load_config(compose_values(["experiment=quick"])))
    values["output_dir"] = str(run_dir)
    return values


def finished_run(tmp: Path, name: str = "old_run", status: str = "completed") -> Path:
    """A run folder holding results (a summary, metrics, a final model) that no new run may touch."""
    run = tmp / name
    run.mkdir()
    (run / "run_config.json").write_text(json.dumps(quick_values(run)))
    (run / "summary.json").write_text(json.dumps({"status": status, "final_accuracy": 0.5, "target_accuracy": 0.5}))
    with (run / "metrics.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["round", "sim_time_s", "accuracy", "loss"])
        writer.writerows([[0, 0.0, 0.1, 2.3], [1, 0.1, 0.3, 2.0], [2, 0.2, 0.5, 1.5]])
    np.savez(run / "final_model.npz", np.zeros(3))
    return run


def resumable_run(tmp: Path, checkpoint: bytes) -> Path:
    """An interrupted run (status running) whose ``checkpoint.npz`` holds ``checkpoint``."""
    run = finished_run(tmp, "interrupted_run", status="running")
    (run / "checkpoint.npz").write_bytes(checkpoint)
    return run


def truncated_npz(tmp: Path) -> bytes:
    np.savez(tmp / "whole.npz", a=np.arange(1000), b=np.ones(1000))
    data = (tmp / "whole.npz").read_bytes()
    (tmp / "whole.npz").unlink()
    return data[: len(data) // 2]


def a_file(tmp: Path) -> Path:
    path = tmp / "a_file"
    path.write_text("not a folder\n")
    return path


# ------------------------------------------------------------------------------ the probes
@dataclass(frozen=True)
class Probe:
    """``command(tmp)``: the module and its arguments; ``expect``: a fragment of the error line."""

    name: str
    command: Callable[[Path], list[str]]
    expect: str
    env: dict[str, str] = field(default_factory=dict)


def amp_fl(*args: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["amp_fl", *args]


PROBES = [
    # Hydra's own errors, reworded
    Probe("unknown key", amp_fl("experiment=quick", "train.lr=0.1"), "invalid config train.lr: unknown key"),
    Probe("unknown group option", amp_fl("model=nonexistent"), "invalid config model: no option 'nonexistent'"),
    Probe("unparsable override", amp_fl("train.learning_rate=["), "invalid command line"),
    Probe(
        "unknown key in a multirun",
        amp_fl("-m", "experiment=quick", "train.lr=0.1,0.2"),
        "invalid config train.lr: unknown key",
    ),
    # checks that ran too late (in the ServerApp, or after Flower started): now before anything starts
    Probe(
        "model the data does not fit",
        amp_fl("experiment=quick", "model=vgg11"),
        "invalid config model: vgg11 does not fit dataset=mnist5k (1x28x28 images)",
    ),
    Probe("infinite value", amp_fl("experiment=quick", "model.t_max_s=inf"), "invalid config model.t_max_s: "),
    Probe(
        "infinite value no section checks itself",
        amp_fl("experiment=quick", "simulation.node_wait_timeout_s=inf"),
        "invalid config simulation.node_wait_timeout_s: must be a finite number, got inf",
    ),
    Probe(
        "more CPUs per client than the machine has",
        amp_fl("experiment=quick", f"simulation.client_cpus={CPUS + 1}"),
        f"invalid config simulation.client_cpus: {CPUS + 1} CPUs per client but this machine offers {CPUS}",
    ),
    Probe(
        "a setting Flower's engines would silently ignore",
        amp_fl("experiment=quick", "train.batched_clients=true"),
        "invalid config train.batched_clients: Flower's engines run one ClientApp per message",
    ),
    Probe("bad health bound", amp_fl("experiment=quick", "health.max_loss=-1"), "invalid config health.max_loss"),
    Probe("a bad number (already clean)", amp_fl("experiment=quick", "num_rounds=0"), "invalid config num_rounds"),
    # data
    Probe(
        "dataset root that cannot be used",
        lambda tmp: ["amp_fl", "dataset=mnist", f"dataset.root={tmp}/no/such/dir", "wireless.num_devices=2"],
        "dataset 'mnist' unavailable",
    ),
    # output folders
    Probe(
        "output folder that is a file",
        lambda tmp: ["amp_fl", "experiment=quick", f"hydra.run.dir={a_file(tmp)}"],
        "hydra.run.dir: ",
    ),
    Probe(
        "output folder under a file",
        lambda tmp: ["amp_fl", "experiment=quick", f"hydra.run.dir={a_file(tmp)}/run"],
        "is a file",
    ),
    Probe(
        "output folder that cannot be created",
        amp_fl("experiment=quick", "hydra.run.dir=/proc/amp_fl_probe/run"),
        "hydra.run.dir: cannot create /proc/amp_fl_probe",
    ),
    Probe(
        "output folder that holds a finished run",
        lambda tmp: ["amp_fl", "experiment=quick", f"hydra.run.dir={finished_run(tmp)}"],
        "already holds a run (summary.json, metrics.csv, final_model.npz; status: completed); not overwritten: "
        "a finished run cannot be extended",
    ),
    Probe(
        "sweep folder that holds runs",
        lambda tmp: [
            "amp_fl",
            "-m",
            "experiment=quick",
            "num_rounds=1,2",
            f"hydra.sweep.dir={finished_run(tmp).parent}",
        ],
        "hydra.sweep.dir: ",
    ),
    # resume
    Probe(
        "truncated checkpoint",
        lambda tmp: ["amp_fl", f"resume={resumable_run(tmp, truncated_npz(tmp))}"],
        "invalid config resume: cannot read the checkpoint",
    ),
    Probe(
        "checkpoint of random bytes",
        lambda tmp: ["amp_fl", f"resume={resumable_run(tmp, np.random.default_rng(0).bytes(4096))}"],
        "not a checkpoint",
    ),
    Probe("resume of a folder that is no run", lambda tmp: ["amp_fl", f"resume={tmp}"], "is not a run folder"),
    Probe(
        "resume with other settings",
        lambda tmp: ["amp_fl", f"resume={tmp}", "num_rounds=3"],
        "drop the other settings (num_rounds=3)",
    ),
    # the report
    Probe(
        "report --out that is a file",
        lambda tmp: ["amp_fl.report", str(finished_run(tmp)), "--out", str(a_file(tmp))],
        "--out",
    ),
    Probe(
        "report of a binary metrics.csv",
        lambda tmp: ["amp_fl.report", str(binary_metrics(tmp)), "--out", str(tmp / "report")],
        "metrics.csv: not a text file",
    ),
    Probe(
        "report of a folder that is no run",
        lambda tmp: ["amp_fl.report", str(tmp / "nothing"), "--out", str(tmp / "report")],
        "nothing",
    ),
    # a campaign command
    Probe(
        "campaign with an unknown key",
        lambda tmp: [*reproduce(tmp), "--override", "train.lr=0.1"],
        "Could not override 'train.lr'",
    ),
    Probe(
        "campaign with an infinite value",
        lambda tmp: [*reproduce(tmp), "--override", "model.t_max_s=inf"],
        "invalid config model.t_max_s: ",
    ),
    Probe(
        "campaign runs folder under a file",
        lambda tmp: [
            "amp_fl.experiments.reproduce",
            "quick",
            "--runs-dir",
            f"{a_file(tmp)}/runs",
            "--reports-dir",
            str(tmp / "rep"),
        ],
        "--runs-dir",
    ),
]


def binary_metrics(tmp: Path) -> Path:
    run = finished_run(tmp)
    (run / "metrics.csv").write_bytes(bytes(range(256)) * 4)
    return run


def reproduce(tmp: Path) -> list[str]:
    """A campaign command that would run 18 quick runs; each probe must stop it before the first."""
    return ["amp_fl.experiments.reproduce", "quick", "--runs-dir", str(tmp / "runs"), "--reports-dir", str(tmp / "rep")]


def run_command(argv: list[str], cwd: Path, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kwargs
    )


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_bad_input_is_one_error_line_exit_2_and_writes_nothing(probe: Probe, tmp_path: Path) -> None:
    argv = probe.command(tmp_path)  # builds what the probe needs in tmp_path first
    before = snapshot(tmp_path)
    out = run_command(argv, cwd=tmp_path)
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr + out.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert probe.expect in lines[0]
    assert out.returncode == 2
    assert snapshot(tmp_path) == before  # no stub run folder, nothing overwritten, no dataset folders


def test_default_run_folders_differ_within_a_second(tmp_path: Path) -> None:
    """The default ``runs/<date>_<time>.<microseconds>``: two runs started in the same second do not share it."""
    out = run_command(["amp_fl", "--cfg", "hydra", "--resolve"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.strip().startswith("dir: runs/"))
    stamp = line.split("runs/")[1]
    assert len(stamp.split(".")[-1]) == 6  # microseconds
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------ through Flower
TINY = ["experiment=quick", "wireless.num_devices=4", "wireless.num_rbs=2", "num_rounds=6"]


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = [x for x in out.stderr.strip().splitlines() if not x.startswith("[amp-fl]") and not x.startswith("    ")]
    assert "Traceback" not in out.stderr + out.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("setting", "status", "reason"),
    [
        # Every update NaN: every reply rejected, round after round; it did not "complete". (With 10 PIUs the
        # stale compensation also drives the loss past health.max_loss: tests/test_health.py has that bound.)
        ("train.learning_rate=1e8", "failed: round 5: every scheduled reply was rejected", "train.learning_rate"),
        # No device meets a 1 ns deadline: the clock never moves, nothing is learnt.
        ("model.t_max_s=1e-9", "failed: round 3: no device could be scheduled for 3 rounds", "model.t_max_s"),
    ],
    ids=["learning_rate=1e8", "t_max_s=1e-9"],
)
def test_meaningless_run_ends_non_zero_with_its_reason(setting: str, status: str, reason: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = run_command(
        ["amp_fl", *TINY, setting, "health.max_idle_rounds=3", f"hydra.run.dir={run}"], cwd=tmp_path, timeout=600
    )
    assert out.returncode == 1, out.stderr[-3000:]
    line = _one_error_line(out)
    summary = _summary(run)
    assert summary["status"].startswith(status) and reason in summary["status"]
    assert summary["status"] in line
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert int(rows[-1]["round"]) == int(status.split("round ")[1].split(":")[0])  # the failing round's row stays
    # the checkpoint is the last good round's, not the failing one's
    assert summary["last_checkpoint_round"] in (None, int(rows[-1]["round"]) - 1)
    assert not list(run.glob("*.tmp"))
    # Flower's state and log are the run's own, not the checkout's
    assert (run / ".flwr" / "local-superlink" / "superlink.log").is_file()


def _wait_for_round(run: Path, round_: int, proc: subprocess.Popen, timeout_s: float = 400) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if (run / "checkpoint.npz").is_file() and (run / "metrics.csv").is_file():
            rows = list(csv.DictReader((run / "metrics.csv").open()))
            if rows and int(rows[-1]["round"]) >= round_:
                return
        time.sleep(0.5)
    raise AssertionError(f"round {round_} not reached")


@pytest.mark.e2e
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_interrupted_run_says_interrupted_and_how_to_resume(sig: signal.Signals, tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen(
        # Rounds of 4 devices take some 0.1 s: enough that the run cannot finish before the signal stops it.
        [sys.executable, "-m", "amp_fl", *TINY, "num_rounds=2000", f"hydra.run.dir={run}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_round(run, 1, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 128 + signal.SIGINT
        assert f"continue with: python -m amp_fl resume={run}" in err.strip().splitlines()[-1]
    deadline = time.monotonic() + 60  # after SIGKILL the watchdog stops Flower, then writes the status
    while _summary(run)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    summary = _summary(run)
    assert summary["status"] == "interrupted"
    assert summary["resume"] == f"python -m amp_fl resume={run}"
    assert not list(run.glob("*.tmp"))


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from amp_fl.config import load_config
from amp_fl.experiments.campaign import compose_values
from amp_fl.launch.inprocess import run_in_process
from amp_fl.launch.launcher import cli_errors
run = Path(sys.argv[1])
values = compose_values(
    ["experiment=quick", "wireless.num_devices=4", "wireless.num_rbs=2", "num_rounds=2", "checkpoint.every_s=0"]
)
values["output_dir"] = str(run)
cfg = load_config(values)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (500_000, 500_000))  # the summary fits, the 1 MB checkpoint does not
with cli_errors(run):
    run_in_process(cfg, run)
"""


def test_a_full_disk_fails_the_run_naming_the_file_and_leaves_no_tmp(tmp_path: Path) -> None:
    """The in-process engine under a file-size limit: the checkpoint cannot be written, as on a full disk."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(run)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 1, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last == f"error: cannot use {run / 'checkpoint.npz'}: File too large"
    assert "Traceback" not in out.stderr
    status = _summary(run)["status"]
    assert status == f"failed: OSError: [Errno 27] File too large: '{run / 'checkpoint.npz'}'"
    assert not list(run.glob("*.tmp")) and not (run / "checkpoint.npz").exists()
