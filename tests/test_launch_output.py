"""Issue item 8: what a user sees in the terminal, and where Flower's own output goes.

Fast tests (no Flower): the ``metrics.csv`` reader, the progress views, the one-line errors of
``python -m amp_fl``, and the launcher's handling of a failed or interrupted ``flwr run`` (a fake
``flwr`` command stands in for Flower). One real Flower run (marked ``e2e``, about a minute)
checks the whole path: progress and summary on the terminal, Flower's records only in
``flower.log``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from rich.console import Console

import amp_fl.launch.launcher as launch_mod
from amp_fl.config import load_config
from amp_fl.launch.launcher import FLWR_HOME_DIR, PROJECT_ROOT, RunFailedError, flower_processes, launch
from amp_fl.launch.progress import (
    STARTUP_PHASES,
    LiveProgress,
    PlainProgress,
    StartupPhases,
    estimate_eta,
    log_tail,
    progress_line,
    strip_ansi,
)
from amp_fl.run_folder import METRIC_COLUMNS, MetricsTail, RoundRow, parse_row, read_rows
from amp_fl.server import engine_wakeup

FLOWER_RECORDS = ("[ROUND", "configure_train", "aggregate_train", "Final results", "ServerApp-side Evaluate Metrics")
SMALL = {"dataset": {"name": "mnist5k"}, "wireless": {"num_devices": 4, "num_rbs": 2}, "num_rounds": 3}


def _row(k: int, accuracy: float = 0.5, wall: float | None = None) -> RoundRow:
    return RoundRow(
        round=k,
        sim_time_s=0.1 * k,
        round_latency_s=0.1 if k else 0.0,
        accuracy=accuracy,
        loss=1.0,
        train_loss=float("nan") if k == 0 else 1.2,
        avg_aoi=1.0,
        num_scheduled=2 if k else 0,
        num_received=2 if k else 0,
        num_failed=0,
        mean_keep_ratio=float("nan") if k == 0 else 0.6,
        uplink_bytes=100 * k,
        downlink_bytes=120 * k,
        objective=0.0,
        wall_time_s=2.0 * k if wall is None else wall,
    )


def _csv_line(row: RoundRow) -> str:
    return ",".join(str(getattr(row, c)) for c in METRIC_COLUMNS) + "\n"


HEADER = ",".join(METRIC_COLUMNS) + "\n"


# ---------------------------------------------------------------- the metrics.csv reader


def test_reader_tolerates_missing_file(tmp_path):
    path = tmp_path / "metrics.csv"
    tail = MetricsTail(path)
    assert tail.poll() == [] and read_rows(path) == []
    path.write_text(HEADER + _csv_line(_row(0)))
    assert [r.round for r in tail.poll()] == [0]


def test_reader_waits_for_a_partial_last_line(tmp_path):
    path = tmp_path / "metrics.csv"
    line = _csv_line(_row(1, accuracy=0.75))
    path.write_text(HEADER[:10])  # even the header half-written
    tail = MetricsTail(path)
    assert tail.poll() == []
    path.write_text(HEADER + _csv_line(_row(0)) + line[:17])
    assert [r.round for r in tail.poll()] == [0]
    assert tail.poll() == []  # the half line is not a row yet
    with path.open("a") as f:
        f.write(line[17:])
    (row,) = tail.poll()
    assert row == _row(1, accuracy=0.75)
    assert [r.round for r in read_rows(path)] == [0, 1]


def test_reader_starts_again_when_the_file_is_rewritten(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(HEADER + _csv_line(_row(0)) + _csv_line(_row(1)) + _csv_line(_row(2)))
    tail = MetricsTail(path)
    assert len(tail.poll()) == 3
    path.write_text(HEADER + _csv_line(_row(0, accuracy=0.1)))  # a new run truncates it
    assert [(r.round, r.accuracy) for r in tail.poll()] == [(0, 0.1)]


def test_parse_row_skips_what_is_not_a_row():
    header = list(METRIC_COLUMNS)
    assert parse_row(header, ["1", "2"]) is None  # wrong number of fields
    assert parse_row(header, ["x"] * len(header)) is None  # not numbers
    row = parse_row(["round", "accuracy"], ["4", "0.5"])  # columns it does not know read as NaN / 0
    assert row is not None and row.round == 4 and row.accuracy == 0.5 and row.num_scheduled == 0


def test_eta_uses_recent_round_times():
    assert estimate_eta([], 10) is None
    assert estimate_eta([_row(0)], 10) is None  # no round finished yet
    rows = [_row(0, wall=0.0), _row(1, wall=20.0)] + [_row(k, wall=20.0 + 2.0 * (k - 1)) for k in range(2, 6)]
    assert estimate_eta(rows, 10) == pytest.approx(5 * 2.0)  # the slow first round does not count much
    assert estimate_eta(rows, 5) == 0.0


# ---------------------------------------------------------------- the views


def test_a_run_without_the_test_set_shows_its_validation_accuracy():
    row = dataclasses.replace(_row(2, accuracy=float("nan")), val_accuracy=0.625)
    assert progress_line(row, 5) == "[amp-fl] round 2/5  sim     0.200 s  val 0.6250  keep 0.600"


def test_progress_line_is_short_and_plain():
    line = progress_line(_row(3, accuracy=0.8123), 300, eta_s=201)
    assert line == "[amp-fl] round   3/300  sim     0.300 s  acc 0.8123  keep 0.600  ETA 0:03:21"
    assert progress_line(_row(0), 5) == "[amp-fl] round 0/5  sim     0.000 s  acc 0.5000  keep     -"


def test_plain_view_prints_every_few_rounds_and_the_last(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    view = PlainProgress(100, tmp_path, out=out, err=err)
    with view:
        view.update([_row(k) for k in range(0, 60)])
        view.update([])
        view.update([_row(k) for k in range(60, 101)])
    rounds = [line.split()[2] for line in out.getvalue().splitlines() if line.startswith("[amp-fl] round")]
    assert rounds == [f"{k}/100" for k in range(0, 101, 5)]
    view.summary()
    assert "finished 100/100 rounds" in out.getvalue() and err.getvalue() == ""


def test_live_view_shows_round_accuracy_keep_and_eta(tmp_path):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    view = LiveProgress(3, tmp_path, out=out, console=console)
    with view:
        view.update([_row(0, wall=0.0), _row(1, wall=1.0), _row(2, accuracy=0.9, wall=2.0)])
    text = strip_ansi(out.getvalue())
    assert "round 2/3" in text and "acc 0.9000" in text and "keep 0.60" in text and "ETA 0:00:01" in text
    assert "sim 0.200 s" in text


# Flower 1.41's log of a local simulation up to its first round (abridged; the launcher's view follows it).
FLOWER_STARTUP_LOG = """\
Starting local SuperLink on 127.0.0.1:38605...
Using SuperLink: local (127.0.0.1:38605)
Successfully started run 10756142908878723480
INFO :      Starting logstream for run_id `10756142908878723480`
INFO :      Starting Flower Simulation
INFO :      Federation `@none/default` (10 simulated SuperNodes)
Successfully installed amp-fl to /x/.flwr/apps/amp-fl.amp-fl.0.1.0.36377680.
INFO :      Starting AmpFlStrategy strategy:
INFO :      \t\u251c\u2500\u2500 Number of rounds: 5
INFO :      Initial global evaluation results: {'accuracy': 0.107}
INFO :      [ROUND 1/5]
""".splitlines()

WAITING_FOR = [
    "starting the SuperLink",
    "building and submitting the app",
    "starting the ServerApp",
    "starting the simulation engine (Ray)",
    "waiting for 10 nodes (ClientApps loading in Ray actors)",
    "round 0 (evaluating the initial model)",
]


def test_startup_phases_follow_flowers_log_in_order():
    phases = StartupPhases(num_devices=10)
    assert [p for line in FLOWER_STARTUP_LOG if (p := phases.feed(line)) is not None] == WAITING_FOR
    assert len(WAITING_FOR) == len(STARTUP_PHASES)
    assert phases.feed("Using SuperLink: again") is None  # never back to an earlier phase


def test_plain_view_says_what_it_waits_for_until_the_first_round(tmp_path):
    out = io.StringIO()
    view = PlainProgress(5, tmp_path, out=out, err=io.StringIO())
    with view:
        view.phase("starting the SuperLink")
        view.phase("waiting for 10 nodes (ClientApps loading in Ray actors)")
        view.update([_row(0)])
        view.phase("starting the SuperLink")  # after the first round: ignored
    lines = out.getvalue().splitlines()
    assert lines[2:] == [
        "[amp-fl] starting the SuperLink",
        "[amp-fl] waiting for 10 nodes (ClientApps loading in Ray actors)",
        progress_line(_row(0), 5),
    ]


def test_live_view_shows_the_phase_on_its_one_line(tmp_path):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    view = LiveProgress(3, tmp_path, out=out, console=console)
    with view:
        view.phase("round 0 (evaluating the initial model)")
        assert view.progress.tasks[0].description == "round 0 (evaluating the initial model)"
        view.update([])  # the clock ticks: the phase stays
        assert view.progress.tasks[0].description == "round 0 (evaluating the initial model)"
        view.update([_row(0, wall=0.0), _row(1, wall=1.0)])
        view.phase("starting the SuperLink")
        assert view.progress.tasks[0].description == "round 1/3"


def test_log_tail_reads_the_last_lines(tmp_path):
    log = tmp_path / "flower.log"
    log.write_text("".join(f"\x1b[92mline {k}\x1b[0m\n\n" for k in range(30)))
    assert log_tail(log, 3) == ["line 27", "line 28", "line 29"]
    assert log_tail(tmp_path / "missing.log") == []


# ---------------------------------------------------------------- the launcher, with a fake `flwr`

# Stands in for `flwr run`: prints Flower-like records and writes the run folder's outputs the
# way the ServerApp does (a metrics row per round, a half-written line at times, the summary).
FAKE_FLWR = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from amp_fl.run_folder import METRIC_COLUMNS
    run_dir, rounds, exit_code = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    (run_dir / "fake_flwr.pid").write_text(str(__import__("os").getpid()))
    print("\\x1b[92mINFO \\x1b[0m:      Starting Flower Simulation", flush=True)
    metrics = run_dir / "metrics.csv"
    metrics.write_text(",".join(METRIC_COLUMNS) + "\\n")
    for k in range(rounds + 1):
        if k:
            print(f"\\x1b[92mINFO \\x1b[0m:      [ROUND {k}/{rounds}]", flush=True)
            print("INFO :      configure_train: sampled 2 nodes", flush=True)
        values = {c: 0.0 for c in METRIC_COLUMNS} | {"round": k, "accuracy": 0.1 * (k + 1), "sim_time_s": 0.1 * k,
                                                      "mean_keep_ratio": 0.5, "wall_time_s": 0.3 * k}
        line = ",".join(str(values[c]) for c in METRIC_COLUMNS) + "\\n"
        with metrics.open("a") as f:
            f.write(line[:9]); f.flush(); time.sleep(0.3); f.write(line[9:])
    if exit_code == 99:  # hang until stopped
        time.sleep(120)
    for k in range(30):
        print(f"flower says {k}", flush=True)
    status = "completed" if exit_code == 0 else "failed: ValueError: something broke"
    (run_dir / "summary.json").write_text(json.dumps({"status": status, "rounds_completed": rounds,
        "final_accuracy": 0.1 * (rounds + 1), "best_accuracy": 0.1 * (rounds + 1), "final_sim_time_s": 0.1 * rounds}))
    sys.exit(exit_code)
    """
)


@pytest.fixture
def fake_flwr(monkeypatch, tmp_path):
    """Make :func:`launch` run FAKE_FLWR instead of ``flwr``; returns a setter for (rounds, exit code)."""
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr_home"))  # never touch anyone's SuperLink
    settings = {"rounds": 3, "exit_code": 0}

    def command(cfg, config_file, home):
        return [
            sys.executable,
            "-c",
            FAKE_FLWR,
            str(config_file.parent),
            str(settings["rounds"]),
            str(settings["exit_code"]),
        ]

    monkeypatch.setattr(launch_mod, "flwr_command", command)
    monkeypatch.setattr(launch_mod, "local_ray_head", lambda cfg, env: None)  # no Ray for a fake Flower
    return settings


def test_launch_shows_progress_and_keeps_flower_output_in_the_log(fake_flwr, tmp_path, capsys):
    run = launch(load_config(SMALL), tmp_path / "run")
    out, err = capsys.readouterr()
    for record in (*FLOWER_RECORDS, "flower says", "INFO"):
        assert record not in out + err
    assert "[amp-fl] round 3/3" in out and "finished 3/3 rounds" in out and "final accuracy 0.4000" in out
    assert "[amp-fl] starting the simulation engine (Ray)" in out  # the fake's "Starting Flower Simulation"
    assert str(run) in out and err == ""
    log = (run / "flower.log").read_text()
    assert "[ROUND 3/3]" in log and "configure_train" in log and "flower says 29" in log
    assert "\x1b[" not in log  # colour codes removed


def test_verbose_streams_the_flower_log_too(fake_flwr, tmp_path, capsys):
    launch(load_config({**SMALL, "verbose": True}), tmp_path / "run")
    out, _ = capsys.readouterr()
    assert "[ROUND 2/3]" in out and "flower says 29" in out  # Flower's output...
    assert "[amp-fl] round 3/3" in out and "finished 3/3 rounds" in out  # ...and the progress
    assert "[ROUND 2/3]" in (tmp_path / "run" / "flower.log").read_text()


def test_failed_run_points_to_flower_log_and_shows_its_tail(fake_flwr, tmp_path, capsys):
    fake_flwr["exit_code"] = 1
    with pytest.raises(RunFailedError) as info:
        launch(load_config(SMALL), tmp_path / "run")
    log = tmp_path / "run" / "flower.log"
    assert f"see {log}" in str(info.value) and "flwr exit code 1" in str(info.value)
    assert "something broke" in str(info.value)
    _, err = capsys.readouterr()
    shown = [line.strip() for line in err.splitlines()]
    assert "flower says 29" in shown and "flower says 10" in shown and "flower says 9" not in shown  # 20 lines


def test_interrupted_launcher_stops_flower(tmp_path):
    """SIGTERM to the launcher: the `flwr` process is stopped, one line says so, exit code 128 + 15."""
    run = tmp_path / "run"
    driver = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import amp_fl.launch.launcher as L
        from amp_fl.config import load_config
        L.flwr_command = lambda cfg, f, h: [sys.executable, "-c", {FAKE_FLWR!r}, str(f.parent), "1", "99"]
        L.local_ray_head = lambda cfg, env: None
        with L.cli_errors(Path({str(run)!r})):
            L.launch(load_config({SMALL!r}), Path({str(run)!r}))
        """
    )
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr_home")}
    proc = subprocess.Popen(
        [sys.executable, "-c", driver], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    pid_file = run / "fake_flwr.pid"
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.decode().strip().splitlines() == [
        f"interrupted (SIGTERM): Flower stopped; the rounds that finished are in {run / 'metrics.csv'}"
    ]
    assert not Path(f"/proc/{child}").exists()  # the flwr stand-in was stopped (and reaped)
    assert "[amp-fl] round 1/3" in out.decode()  # the progress up to the interruption


def test_an_interrupt_after_the_server_completed_the_run_leaves_it_completed(tmp_path, monkeypatch, capsys):
    """A signal while Flower is being stopped after the last round: the run is complete, not "interrupted"."""
    from amp_fl.run_folder import COMPLETED, read_summary, write_summary

    def completes_then_interrupted(cfg, run_dir, *args):
        write_summary(run_dir, {"status": COMPLETED})  # the ServerApp's last word
        raise launch_mod.RunInterrupted(signal.SIGINT)

    monkeypatch.setattr(launch_mod, "_run_in_flower", completes_then_interrupted)
    monkeypatch.setattr(launch_mod, "local_ray_head", lambda cfg, env: None)
    monkeypatch.setattr(launch_mod, "drop_flower_state", lambda home: None)
    run = launch(load_config(SMALL), tmp_path / "run")
    assert read_summary(run)["status"] == COMPLETED
    assert "SIGINT came after the run had completed; nothing was lost" in capsys.readouterr().out


def test_an_interrupt_before_the_server_finished_marks_the_run_interrupted(tmp_path, monkeypatch):
    from amp_fl.run_folder import INTERRUPTED, RUNNING, read_summary, write_summary

    def interrupted(cfg, run_dir, *args):
        write_summary(run_dir, {"status": RUNNING})
        raise launch_mod.RunInterrupted(signal.SIGTERM)

    monkeypatch.setattr(launch_mod, "_run_in_flower", interrupted)
    monkeypatch.setattr(launch_mod, "local_ray_head", lambda cfg, env: None)
    with pytest.raises(launch_mod.RunInterrupted):
        launch(load_config(SMALL), tmp_path / "run")
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == INTERRUPTED and summary["interrupted_by"] == "SIGTERM"


# ---------------------------------------------------------------- `python -m amp_fl` with bad input


def _cli(*overrides: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr_home")}
    cmd = [sys.executable, "-m", "amp_fl", *overrides, f"hydra.run.dir={tmp_path / 'run'}"]
    return subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, env=env)


def test_unavailable_dataset_is_one_error_line(tmp_path):
    """Offline, MNIST cannot be had: one line naming the offline choices, exit code 2 (no Flower started)."""
    out = _cli("dataset=mnist", "dataset.download=false", f"dataset.root={tmp_path / 'empty'}", tmp_path=tmp_path)
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: dataset 'mnist' unavailable")
    assert "dataset=mnist5k" in line and "dataset=fashion_mnist" in line and "experiment=main" in line
    assert "Traceback" not in out.stdout + out.stderr
    assert not (tmp_path / "run" / "flower.log").exists()


def test_data_dependent_error_is_one_error_line(tmp_path):
    out = _cli("dataset=mnist5k", "dataset.shards_per_device=30", "wireless.num_devices=200", tmp_path=tmp_path)
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: invalid config dataset.shards_per_device:"), line


def test_config_error_is_one_error_line(tmp_path):
    out = _cli("num_rounds=0", tmp_path=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: invalid config num_rounds: must be >= 1, got 0"]


# ---------------------------------------------------------------- one real Flower run

E2E_ROUNDS = 3


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str], Path]:
    tmp = tmp_path_factory.mktemp("launch_output")
    run, home = tmp / "run", tmp / "flwr_home"
    cmd = [
        sys.executable,
        "-m",
        "amp_fl",
        "experiment=quick",
        "dataset=mnist5k",
        "model=cnn",
        f"num_rounds={E2E_ROUNDS}",
        "wireless.num_devices=4",
        "wireless.num_rbs=2",
        f"hydra.run.dir={run}",
    ]
    env = {**os.environ, "FLWR_HOME": str(home)}
    out = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900, env=env)
    return run, out, home


@pytest.mark.e2e
def test_real_run_terminal_has_progress_not_flower_records(real_run):
    run, out, _home = real_run
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    terminal = out.stdout + out.stderr
    for record in FLOWER_RECORDS:
        assert record not in terminal, record
    assert "ArrayRecord" not in terminal and "MetricRecord" not in terminal  # no per-round metrics dump
    assert f"[amp-fl] round {E2E_ROUNDS}/{E2E_ROUNDS}" in out.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert f"finished {E2E_ROUNDS}/{E2E_ROUNDS} rounds" in out.stdout
    assert f"final accuracy {summary['final_accuracy']:.4f}" in out.stdout
    assert str(run) in out.stdout
    assert len(out.stdout.splitlines()) <= E2E_ROUNDS + 8 + len(STARTUP_PHASES)  # a clean view: a few lines in all
    assert "[amp-fl] waiting for 4 nodes (ClientApps loading in Ray actors)" in out.stdout
    assert (
        flower_processes(run / FLWR_HOME_DIR) == []
    )  # the background SuperLink (of the run's own FLWR_HOME) was stopped


@pytest.mark.e2e
def test_real_run_flower_log_has_the_per_round_records(real_run):
    run, out, _ = real_run
    assert out.returncode == 0
    log = (run / "flower.log").read_text()
    for k in range(1, E2E_ROUNDS + 1):
        assert f"[ROUND {k}/{E2E_ROUNDS}]" in log
    assert "\x1b[" not in log
    assert engine_wakeup.ON in log  # the engine's scan was replaced before it started (amp_fl.server.engine_wakeup)


def test_flwr_builds_the_app_from_a_copy_of_the_package_presets_and_project_file(tmp_path):
    """``flwr run`` walks every file under the folder it is given: it gets a copy of what the FAB holds."""
    stale = tmp_path / launch_mod.APP_DIR / "amp_fl" / "gone.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("# a module deleted since the last run\n")
    app = launch_mod.staged_app(tmp_path)
    assert app == tmp_path / launch_mod.APP_DIR and not stale.exists()
    assert (app / "pyproject.toml").read_bytes() == (PROJECT_ROOT / "pyproject.toml").read_bytes()

    def sources(root: Path, folder: str) -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): p.read_bytes()
            for p in (root / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        }

    for folder in launch_mod.APP_FOLDERS:
        assert sources(app, folder) == sources(PROJECT_ROOT, folder), folder
    assert not list(app.rglob("__pycache__"))
    assert {p.name for p in app.iterdir()} <= {*launch_mod.APP_FILES, *launch_mod.APP_FOLDERS}
    cfg = load_config({"dataset": {"name": "mnist5k"}})
    command = launch_mod.flwr_command(cfg, tmp_path / "run_config.json", tmp_path)
    assert command[1:3] == ["run", str(app)]
