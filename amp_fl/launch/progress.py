"""What the launcher shows while a Flower run goes on: a progress view fed by ``metrics.csv``.

The ServerApp appends one row per round to ``metrics.csv`` and flushes it as the round ends
(:class:`~amp_fl.run_folder.MetricsWriter`); :class:`~amp_fl.run_folder.MetricsTail` reads the new complete
rows of that file (a missing file or a half-written last line is simply "nothing new yet").
Flower's own output goes to the run folder's ``flower.log`` (:class:`LogPump`), never to the
terminal unless ``verbose`` is set.

Two views of the same rows:

- :class:`LiveProgress` (stdout is a terminal): a ``rich`` progress bar with round k/N, simulated
  time, accuracy, keep ratio and ETA.
- :class:`PlainProgress` (pipes, CI logs, ``verbose``): short plain lines, one every few rounds
  (:func:`progress_line`).

Both end with the same short summary (:func:`summary_lines`).
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from amp_fl.run_folder import (
    FLOWER_LOG,
    METRICS_FILE,
    SCHEDULE_FILE,
    SUMMARY_FILE,
    RoundRow,
    RunFolderError,
    read_summary,
)

PREFIX = "[amp-fl]"
# Plain view: about this many progress lines per run, and at least one every PLAIN_MAX_SILENCE_S.
PLAIN_LINES_PER_RUN = 20
PLAIN_MAX_SILENCE_S = 60.0
# ETA: median wall time of the last few rounds (robust to the slow first round: Ray start-up).
ETA_WINDOW = 10

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour/cursor escape sequences (Flower colours its log records)."""
    return _ANSI_ESCAPE.sub("", text)


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) folded into one space."""
    return " ".join(text.split())


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` (like rich's time columns)."""
    h, rest = divmod(max(0, round(seconds)), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


# ---------------------------------------------------------------- progress lines


def accuracy_text(row: RoundRow) -> str:
    """The row's test accuracy, or its validation accuracy in a run that leaves the test set out (evaluation.test)."""
    if math.isnan(row.accuracy) and not math.isnan(row.val_accuracy):
        return f"val {row.val_accuracy:6.4f}"
    return f"acc {row.accuracy:6.4f}"


def progress_line(row: RoundRow, num_rounds: int, eta_s: float | None = None) -> str:
    """One short plain-text progress line (the launcher's view when stdout is not a terminal)."""
    width = len(str(num_rounds))
    keep = "    -" if math.isnan(row.mean_keep_ratio) else f"{row.mean_keep_ratio:5.3f}"
    line = (
        f"[amp-fl] round {row.round:{width}d}/{num_rounds}  sim {row.sim_time_s:9.3f} s  "
        f"{accuracy_text(row)}  keep {keep}"
    )
    if row.num_failed:
        line += f"  {failed_replies(row)}"
    if eta_s is not None:
        line += f"  ETA {format_duration(eta_s)}"
    return line


def failed_replies(row: RoundRow) -> str:
    """``failed 3/10``: the round's replies that were not aggregated, shown only when there are some."""
    return f"failed {row.num_failed}/{row.num_scheduled}" if row.num_failed else ""


def estimate_eta(rows: list[RoundRow], num_rounds: int) -> float | None:
    """Seconds left: the rounds still to run times the median wall time of the last few rounds."""
    if not rows:
        return None
    remaining = num_rounds - rows[-1].round
    if remaining <= 0:
        return 0.0
    recent = rows[-(ETA_WINDOW + 1) :]
    durations = [
        (b.wall_time_s - a.wall_time_s) / (b.round - a.round)
        for a, b in itertools.pairwise(recent)
        if b.round > a.round and math.isfinite(b.wall_time_s - a.wall_time_s)
    ]
    if not durations:
        return None
    return remaining * max(0.0, statistics.median(durations))


# ---------------------------------------------------------------- before the first round

# What a run waits for before its first row, told by Flower's log (Flower 1.41's wording; a line
# that matches none leaves the phase as it is, so a changed wording only shows less). In order:
# a phase never goes back to an earlier one.
STARTUP_PHASES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Starting local SuperLink"), "starting the SuperLink"),
    (re.compile(r"Using SuperLink"), "building and submitting the app"),
    (re.compile(r"Successfully started run"), "starting the ServerApp"),
    (re.compile(r"Starting Flower Simulation"), "starting the simulation engine (Ray)"),
    (re.compile(r"Successfully installed"), "waiting for {devices} nodes (ClientApps loading in Ray actors)"),
    (re.compile(r"Starting \w+ strategy"), "round 0 (evaluating the initial model)"),
)


class StartupPhases:
    """Turns Flower's log lines into "what the run is waiting for" (:data:`STARTUP_PHASES`)."""

    def __init__(self, num_devices: int) -> None:
        self.num_devices = num_devices
        self.reached = -1

    def feed(self, line: str) -> str | None:
        """The new phase that ``line`` starts, or ``None`` (no phase, or not a later one)."""
        for index, (pattern, text) in enumerate(STARTUP_PHASES):
            if index > self.reached and pattern.search(line):
                self.reached = index
                return text.format(devices=self.num_devices)
        return None


# ---------------------------------------------------------------- Flower's output


class LogPump(threading.Thread):
    """Copies a process's output, line by line, to ``log_path`` (escape codes removed), flushing each line.

    With ``echo``, every line is also written there (``verbose``: the full Flower log on the terminal);
    ``on_line`` is called with every line (without escape codes), e.g. to follow the start-up.
    """

    def __init__(
        self,
        stream: IO[bytes],
        log_path: Path,
        echo: TextIO | None = None,
        append: bool = False,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(name="flower-log-pump", daemon=True)
        self.on_line = on_line
        self.stream = stream
        self.log_path = log_path
        self.mode: Literal["a", "w"] = "a" if append else "w"  # a resumed run adds to the stopped run's log
        self.echo = echo
        self._echo_colours = bool(echo is not None and echo.isatty())

    def run(self) -> None:
        # Keeps reading whatever happens to the log or the terminal: a full pipe would stall Flower.
        log: TextIO | None
        try:
            log = self.log_path.open(self.mode, encoding="utf-8")
        except OSError:
            log = None
        try:
            for raw in iter(self.stream.readline, b""):
                line = raw.decode("utf-8", errors="replace")
                plain = strip_ansi(line)
                if self.on_line is not None:
                    self.on_line(plain)
                if log is not None:
                    try:
                        log.write(plain)
                        log.flush()
                    except OSError:
                        log = None
                if self.echo is not None:
                    try:
                        self.echo.write(line if self._echo_colours else plain)
                        self.echo.flush()
                    except (OSError, ValueError):  # terminal gone: keep writing the log
                        self.echo = None
        finally:
            if log is not None:
                log.close()


def log_tail(path: Path, lines: int = 20) -> list[str]:
    """The last ``lines`` non-empty lines of a text file (``[]`` if it cannot be read)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            tail = deque((strip_ansi(line).rstrip() for line in f if line.strip()), maxlen=lines)
    except OSError:
        return []
    return list(tail)


# ---------------------------------------------------------------- the summary


def summary_so_far(run_dir: Path) -> dict[str, Any]:
    """The run's ``summary.json``, or nothing when it is not there (yet) or unreadable: the view goes on."""
    try:
        return read_summary(run_dir)
    except RunFolderError:
        return {}


def summary_lines(run_dir: Path, rows: list[RoundRow], num_rounds: int, wall_s: float) -> list[str]:
    """The few lines printed when a run completes: accuracy, simulated time, dataset, where the results are."""
    summary = summary_so_far(run_dir)
    done = summary.get("rounds_completed")
    if not isinstance(done, int):
        done = rows[-1].round if rows else 0
    final = summary.get("final_accuracy", rows[-1].accuracy if rows else None)
    best_row = max(rows, key=lambda r: r.accuracy if math.isfinite(r.accuracy) else -1.0, default=None)
    best = summary.get("best_accuracy", best_row.accuracy if best_row else None)
    sim = summary.get("final_sim_time_s", rows[-1].sim_time_s if rows else None)

    def acc(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, int | float) else "n/a"

    best_at = ""
    if best_row is not None and isinstance(best, int | float) and math.isclose(best_row.accuracy, best, abs_tol=1e-9):
        best_at = f" (round {best_row.round})"
    sim_text = f"{sim:.3f} s" if isinstance(sim, int | float) else "n/a"
    lines = [
        f"{PREFIX} finished {done}/{num_rounds} rounds in {format_duration(wall_s)}: "
        f"final accuracy {acc(final)}, best {acc(best)}{best_at}, simulated time {sim_text}"
    ]
    if final is None and isinstance(summary.get("final_val_accuracy"), int | float):  # evaluation.test=false
        lines.append(f"{PREFIX} no test evaluation; final validation accuracy {acc(summary['final_val_accuracy'])}")
    personal = summary.get("personal_accuracy")
    if isinstance(personal, dict) and isinstance(personal.get("accuracy"), int | float):
        lines.append(
            f"{PREFIX} personalised accuracy {personal['accuracy']:.4f} (round {personal.get('round')}; "
            "mean over devices, each on its own labels)"
        )
    used, requested = summary.get("dataset_used"), summary.get("dataset_requested")
    if used and requested and used != requested:
        lines.append(f"{PREFIX} dataset: {used} (fallback: {requested!r} was unavailable; see {SUMMARY_FILE})")
    files = ", ".join((METRICS_FILE, SUMMARY_FILE, SCHEDULE_FILE, "*.png", FLOWER_LOG))
    lines.append(f"{PREFIX} results in {run_dir} ({files})")
    return lines


# ---------------------------------------------------------------- the views


class ProgressView(ABC):
    """Shows rows as they arrive; ``with view:`` around the run, then :meth:`summary` or :meth:`failure`."""

    def __init__(self, num_rounds: int, run_dir: Path, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.num_rounds = num_rounds
        self.run_dir = run_dir
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.rows: list[RoundRow] = []
        self.started = time.monotonic()
        self._eta: float | None = None
        self._eta_at = 0.0
        self._lock = threading.Lock()

    # --- context: the live part of the view
    def __enter__(self) -> ProgressView:
        self.started = time.monotonic()
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.write(f"{PREFIX} run folder: {self.run_dir} (Flower's log: {FLOWER_LOG})")

    def stop(self) -> None:  # noqa: B027 (a hook: the plain view has nothing to stop, the live bar does)
        """Stop drawing (the live view's refresh thread); nothing to do for plain lines."""

    def phase(self, text: str) -> None:
        """What the run waits for before its first round (from :class:`StartupPhases`); ignored after it."""
        if not self.rows:
            self.show_phase(text)

    @abstractmethod
    def show_phase(self, text: str) -> None:
        """Draw the start-up phase (a plain line, or the live bar's description)."""

    def update(self, new_rows: list[RoundRow]) -> None:
        """New rows (possibly none: then only the clock and the ETA move)."""
        if new_rows:
            self.rows.extend(new_rows)
            self._eta = estimate_eta(self.rows, self.num_rounds)
            self._eta_at = time.monotonic()
        self.show(new_rows)

    @abstractmethod
    def show(self, new_rows: list[RoundRow]) -> None:
        """Draw the view after an update (plain lines, or the live bar)."""

    def eta(self) -> float | None:
        """The latest estimate, counted down since it was made."""
        if self._eta is None:
            return None
        return max(0.0, self._eta - (time.monotonic() - self._eta_at))

    # --- after the run
    def write(self, line: str, err: bool = False) -> None:
        stream = self.err if err else self.out
        with self._lock:
            stream.write(line + "\n")
            stream.flush()

    def summary(self) -> None:
        for line in summary_lines(self.run_dir, self.rows, self.num_rounds, time.monotonic() - self.started):
            self.write(line)

    def failure(self, log_path: Path, lines: int = 20) -> None:
        done = self.rows[-1].round if self.rows else 0
        tail = log_tail(log_path, lines)
        self.write(f"{PREFIX} the run stopped after {done}/{self.num_rounds} rounds", err=True)
        if tail:
            self.write(f"{PREFIX} last {len(tail)} lines of {log_path}:", err=True)
            for line in tail:
                self.write(f"    {line}", err=True)


class PlainProgress(ProgressView):
    """Short plain lines: about :data:`PLAIN_LINES_PER_RUN` per run, the last round always."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.every = max(1, math.ceil(self.num_rounds / PLAIN_LINES_PER_RUN))
        self._last_line = time.monotonic()

    def start(self) -> None:
        super().start()
        self.write(f"{PREFIX} starting Flower ({self.num_rounds} rounds)")
        self._last_line = time.monotonic()

    def show_phase(self, text: str) -> None:
        self.write(f"{PREFIX} {text}")
        self._last_line = time.monotonic()

    def show(self, new_rows: list[RoundRow]) -> None:
        for row in new_rows:
            quiet_too_long = time.monotonic() - self._last_line >= PLAIN_MAX_SILENCE_S
            if row.round % self.every == 0 or row.round >= self.num_rounds or quiet_too_long:
                self.write(progress_line(row, self.num_rounds, self.eta()))
                self._last_line = time.monotonic()


class LiveProgress(ProgressView):
    """A ``rich`` progress bar, redrawn in place (stdout is a terminal)."""

    def __init__(self, *args: Any, console: Console | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.console = console if console is not None else Console(file=self.out)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=None),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
            refresh_per_second=4,
            expand=True,
        )
        self.waiting_for = "starting Flower"
        self.task = self.progress.add_task(self.waiting_for, total=self.num_rounds, stats="")

    def write(self, line: str, err: bool = False) -> None:
        if err:
            super().write(line, err=True)
        else:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def start(self) -> None:
        super().start()
        self.progress.start()

    def stop(self) -> None:
        self.progress.stop()

    def stats(self) -> str:
        if not self.rows:
            return ""
        row = self.rows[-1]
        keep = "-" if math.isnan(row.mean_keep_ratio) else f"{row.mean_keep_ratio:.2f}"
        eta = self.eta()
        eta_text = "-" if eta is None else format_duration(eta)
        failed = f"  {failed_replies(row)}" if row.num_failed else ""
        return f"sim {row.sim_time_s:.3f} s  {accuracy_text(row)}  keep {keep}{failed}  ETA {eta_text}"

    def show_phase(self, text: str) -> None:
        self.waiting_for = text
        self.progress.update(self.task, description=text)

    def show(self, new_rows: list[RoundRow]) -> None:
        if not self.rows:
            self.progress.update(self.task, description=self.waiting_for, stats="")
            return
        done, width = self.rows[-1].round, len(str(self.num_rounds))
        description = f"round {done:{width}d}/{self.num_rounds}"
        self.progress.update(self.task, completed=done, description=description, stats=self.stats())


def progress_view(num_rounds: int, run_dir: Path, verbose: bool = False, out: TextIO | None = None) -> ProgressView:
    """A live bar when ``out`` (stdout) is a terminal and not ``verbose``; plain lines otherwise."""
    out = out if out is not None else sys.stdout
    console = Console(file=out)
    if console.is_terminal and not verbose:
        return LiveProgress(num_rounds, run_dir, out=out, console=console)
    return PlainProgress(num_rounds, run_dir, out=out)
