"""A run folder: the files one run writes, their names and columns, and the one writer and reader of each.

The ServerApp writes ``metrics.csv`` (one row per round, appended and flushed as each round ends,
so an interrupted run keeps every finished round), ``schedule.jsonl`` (one line per round: devices,
RBs, keep counts, latencies, bytes), ``summary.json`` (the setup, then the outcome),
``final_model.npz`` and figures; the launcher writes ``run_config.json`` and ``flower.log``; a
campaign (:mod:`amp_fl.experiments.campaign`) adds its timing. Everything that reads a run folder
(the launcher's progress view, the campaigns, :mod:`amp_fl.report`) reads it through here.

This module imports nothing of amp_fl but :mod:`amp_fl.errors`, :mod:`amp_fl.state` and
:mod:`amp_fl.tracking` (which imports nothing of amp_fl): the server below it and the report and
campaigns above it all use it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, get_type_hints

import numpy as np

from amp_fl.errors import DIVERGED, check_argument
from amp_fl.state import State
from amp_fl.tracking import TensorBoardTracker, open_tracker

METRICS_FILE = "metrics.csv"
SCHEDULE_FILE = "schedule.jsonl"
SUMMARY_FILE = "summary.json"
RUN_CONFIG_FILE = "run_config.json"  # the resolved configuration the ServerApp reads
# The server writes the final model after the summary that says how the run ended: its presence
# means nothing of the run's outputs was cut off.
FINAL_MODEL_FILE = "final_model.npz"
CHECKPOINT_FILE = "checkpoint.npz"  # what a resume continues from (amp_fl.server.checkpoint)
FLOWER_LOG = "flower.log"  # Flower's output, written by the launcher
# Which dataset the launcher resolved (and why it fell back), so the ServerApp never resolves twice.
DATASET_RESOLUTION_FILE = "dataset.json"
TIMING_FILE = "campaign_timing.json"  # wall (and CPU) seconds of the run, measured by the campaign that ran it
COMPLETED = "completed"  # summary.json's status of a run that ran to its end (or planned early stop)
RUNNING = "running"  # summary.json's status while the server runs (never the last word: see finish_summary)
INTERRUPTED = "interrupted"  # stopped by a signal or a killed launcher; summary.json's "resume" says how to go on
FAILED = "failed"  # "failed: <reason>"; "diverged at round N: <reason>" (errors.DIVERGED) when the model blew up
# Files that make a folder a run's: a new run never writes over them (see check_fresh_run_folder).
RESULT_FILES = (SUMMARY_FILE, METRICS_FILE, CHECKPOINT_FILE, FINAL_MODEL_FILE)
# summary.json keys of a COMPLETED run that stopped before num_rounds, as planned: why, in words
# (STOPPED_EARLY), and which rule stopped it (STOP_REASON: one of STOP_REASONS).
STOPPED_EARLY = "stopped_early"
STOP_REASON = "stop_reason"
STOP_REASONS = ("val_accuracy", "sim_time_limit")  # evaluation.stop_at_val_accuracy, sim_time_limit_s

METRIC_COLUMNS = (
    "round",
    "sim_time_s",
    "round_latency_s",
    "accuracy",
    "loss",
    "val_accuracy",
    "val_loss",
    "personal_accuracy",
    "train_loss",
    "avg_aoi",
    "num_scheduled",
    "num_received",
    "num_failed",
    # Why they failed (amp_fl.strategy.replies.FAILURE_KINDS): the ClientApp raised, no reply within
    # strategy.reply_timeout_s, a reply rejected by validation, silent over the air.
    "failed_error",
    "failed_timeout",
    "failed_invalid",
    "failed_silent",
    "mean_keep_ratio",
    "uplink_bytes",
    "downlink_bytes",
    "objective",
    "wall_time_s",
)


@dataclass(frozen=True)
class RoundRow:
    round: int
    sim_time_s: float
    round_latency_s: float
    accuracy: float
    loss: float
    train_loss: float
    avg_aoi: float
    num_scheduled: int
    num_received: int
    num_failed: int
    mean_keep_ratio: float
    uplink_bytes: int
    downlink_bytes: int
    objective: float
    wall_time_s: float
    # Mean over devices of each one's personalised accuracy on its own label distribution; NaN when not measured.
    personal_accuracy: float = math.nan
    failed_error: int = 0
    failed_timeout: int = 0
    failed_invalid: int = 0
    failed_silent: int = 0
    # The global model on the validation split held out of the training set; NaN when there is none.
    val_accuracy: float = math.nan
    val_loss: float = math.nan


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(round(value, 10))
    return str(value)


def _row_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: (math.nan if v is None else v) for k, v in values.items()
    }  # JSON null: a NaN written by an older version


class MetricsWriter:
    """Appends rows to ``metrics.csv`` and remembers them for the summary and figures.

    The files are started (header, empty ``schedule.jsonl``) at the first write, or by
    :meth:`load_state_dict` on resume, so building a writer for a run being resumed destroys nothing.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / METRICS_FILE
        self.rows: list[RoundRow] = []
        self._start = time.perf_counter()
        self._started = False
        self._tracker: TensorBoardTracker | None = None  # tracking.tensorboard: each row to TensorBoard too

    def state_dict(self) -> State:
        """Every row so far (floats in full; NaN where a round was not evaluated)."""
        return {"rows": [dict(asdict(row)) for row in self.rows]}

    def load_state_dict(self, state: State) -> None:
        """Restart from a checkpoint's rows: ``metrics.csv`` is rewritten from them and ``schedule.jsonl``
        keeps the lines of those rounds only, so whatever a crashed server wrote after its last
        checkpoint is redone; the wall clock continues from the last row's."""
        saved = state.get("rows")
        if not isinstance(saved, list) or not all(isinstance(r, dict) for r in saved):
            raise ValueError("state: 'rows' must be a list of metrics rows")
        try:
            rows = [RoundRow(**_row_fields(r)) for r in saved if isinstance(r, dict)]
        except TypeError as exc:
            raise ValueError(f"state: a metrics row does not fit this version's columns ({exc})") from exc
        self._restart(rows)

    def _restart(self, rows: list[RoundRow]) -> None:
        run_dir = self.path.parent
        run_dir.mkdir(parents=True, exist_ok=True)
        self._started = True
        self.rows = []
        self._start = time.perf_counter() - (rows[-1].wall_time_s if rows else 0.0)  # wall time goes on
        with self.path.open("w", newline="") as f:
            csv.writer(f).writerow(METRIC_COLUMNS)
        schedule = run_dir / SCHEDULE_FILE
        last = rows[-1].round if rows else 0
        kept = []
        if rows and schedule.exists():
            kept = [line for line in schedule.read_text().splitlines() if line and json.loads(line)["round"] <= last]
        schedule.write_text("".join(line + "\n" for line in kept))
        for row in rows:
            self.append(row)
        # After the replay: a resumed run's rows are in TensorBoard already; it drops what came after them.
        self._tracker = open_tracker(run_dir, _stored_config(run_dir), purge_step=last + 1 if rows else None)

    def _ensure_started(self) -> None:
        if not self._started:
            self._restart([])

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def append_schedule(self, record: dict[str, Any]) -> None:
        """One JSON line per round in ``schedule.jsonl`` (devices, RBs, keep counts, latencies, bytes)."""
        self._ensure_started()
        with (self.path.parent / SCHEDULE_FILE).open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def append(self, row: RoundRow) -> None:
        self._ensure_started()
        self.rows.append(row)
        values = asdict(row)
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([_fmt(values[c]) for c in METRIC_COLUMNS])
        if self._tracker is not None:
            self._tracker.log_row({c: values[c] for c in METRIC_COLUMNS})


def _stored_config(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``run_config.json`` (what the tracker logs and is switched by); ``None`` for a bare folder."""
    try:
        return read_config(run_dir)
    except RunFolderError:
        return None


# ------------------------------------------------------------------------------ what a curve says
# Here, not in amp_fl.report.maths, because the server's summary.json states them too and the
# server cannot import the report: one definition for both.
@dataclass(frozen=True)
class Hit:
    """Where a run first reached a target accuracy: the round and the simulated seconds at its end."""

    round: int
    sim_time_s: float


def time_to_target(
    rounds: Sequence[int] | np.ndarray,
    sim_time_s: Sequence[float] | np.ndarray,
    accuracy: Sequence[float] | np.ndarray,
    target: float,
) -> Hit | None:
    """The first row whose accuracy is at least ``target`` (round 0, the initial model, counts); ``None`` if none.

    ``rounds`` and ``sim_time_s`` are the run's round numbers and cumulative simulated clock, one per
    evaluated round, in order; NaN accuracies never reach a target.
    """
    check_argument(0.0 < target <= 1.0, "target", f"must be an accuracy in (0, 1], got {target}")
    r = np.asarray(rounds)
    check_argument(r.ndim == 1 and r.size > 0, "rounds", "expected a non-empty 1-D sequence")
    check_argument(bool(np.all(np.diff(r) > 0)), "rounds", "must be strictly increasing")
    t, acc = np.asarray(sim_time_s, dtype=np.float64), np.asarray(accuracy, dtype=np.float64)
    check_argument(t.ndim == 1 and acc.ndim == 1, "sim_time_s", "expected 1-D sequences")
    check_argument(t.size == r.size, "sim_time_s", f"has {t.size} values but rounds has {r.size}")
    check_argument(acc.size == r.size, "accuracy", f"has {acc.size} values but rounds has {r.size}")
    check_argument(bool(np.all(np.isfinite(t))), "sim_time_s", "must be finite")
    check_argument(bool(np.all(np.diff(t) >= 0)), "sim_time_s", "must be non-decreasing")
    reached = np.flatnonzero(np.nan_to_num(acc, nan=-1.0) >= target)
    if reached.size == 0:
        return None
    i = int(reached[0])
    return Hit(round=int(r[i]), sim_time_s=float(t[i]))


SMOOTHING_WINDOW_S = 1.0  # the smoothed time to a target averages this much simulated time


def smoothed_time_to_target(
    rounds: Sequence[int] | np.ndarray,
    sim_time_s: Sequence[float] | np.ndarray,
    accuracy: Sequence[float] | np.ndarray,
    target: float,
    window_s: float = SMOOTHING_WINDOW_S,
) -> Hit | None:
    """The first evaluated row at which the mean accuracy of the last ``window_s`` simulated seconds reaches ``target``.

    At an evaluated row at time ``t`` the smoothed accuracy is the plain mean of the evaluations
    with times in ``(t - window_s, t]``; only rows at least ``window_s`` after the first evaluation
    count, so that every mean covers a whole window (:func:`smoothed_accuracy_at`). Unlike
    :func:`time_to_target` (the first crossing), one lucky evaluation of a noisy curve does not
    reach the target: a method is timed when it *holds* the target. ``None`` if no window reaches
    it. NaN accuracies (rounds not evaluated) are left out.
    """
    check_argument(math.isfinite(window_s) and window_s > 0, "window_s", f"must be > 0, got {window_s}")
    if time_to_target(rounds, sim_time_s, accuracy, target) is None:  # validates; never crossed: never held
        return None
    acc = np.asarray(accuracy, dtype=np.float64)
    measured = np.flatnonzero(np.isfinite(acc))
    r, t, a = np.asarray(rounds)[measured], np.asarray(sim_time_s, dtype=np.float64)[measured], acc[measured]
    for i in range(t.size):
        if holds_target_at(t, a, i, target, window_s):
            return Hit(round=int(r[i]), sim_time_s=float(t[i]))
    return None


def smoothed_accuracy_at(sim_time_s: np.ndarray, accuracy: np.ndarray, end: int, window_s: float) -> float | None:
    """The mean of the evaluations with times in ``(t[end] - window_s, t[end]]``; ``None`` before a whole window.

    ``sim_time_s`` and ``accuracy``: the evaluated rows only, in time order. A row less than
    ``window_s`` after the first evaluation has no whole window behind it: ``None``. The one
    definition of the smoothed curve, read by :func:`smoothed_time_to_target` after a run and by the
    server's early stop (``evaluation.stop_window_s``) during it.
    """
    t = sim_time_s
    if t[end] < t[0] + window_s:
        return None
    start = int(np.searchsorted(t[: end + 1], t[end] - window_s, side="right"))  # the oldest inside the window
    return float(np.mean(accuracy[start : end + 1]))  # exact, not a cumsum's


def holds_target_at(sim_time_s: np.ndarray, accuracy: np.ndarray, end: int, target: float, window_s: float) -> bool:
    """Whether the smoothed accuracy (:func:`smoothed_accuracy_at`) at evaluated row ``end`` reaches ``target``."""
    mean = smoothed_accuracy_at(sim_time_s, accuracy, end, window_s)
    return mean is not None and mean >= target


def time_to_accuracy(rows: list[RoundRow], target: float, column: str = "accuracy") -> dict[str, float | int | None]:
    """:func:`time_to_target` of ``column`` (test ``accuracy`` or ``val_accuracy``) as ``summary.json`` states it."""
    hit = None
    if rows:
        rounds, times = [r.round for r in rows], [r.sim_time_s for r in rows]
        hit = time_to_target(rounds, times, [getattr(r, column) for r in rows], target)
    if hit is None:
        return {"target": target, "round": None, "sim_time_s": None}
    return {"target": target, "round": hit.round, "sim_time_s": hit.sim_time_s}


def last_measured(rounds: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray) -> tuple[float, int] | None:
    """The last finite value of a sparsely measured column (e.g. ``personal_accuracy``) and its round."""
    for round_, value in zip(reversed(list(rounds)), reversed(list(values)), strict=True):
        if math.isfinite(value):
            return float(value), int(round_)
    return None


def last_personal_accuracy(rows: list[RoundRow]) -> dict[str, float | int | None]:
    """The latest measured mean personalised accuracy and its round (``None`` when never measured)."""
    found = last_measured([r.round for r in rows], [r.personal_accuracy for r in rows])
    if found is None:
        return {"accuracy": None, "round": None}
    return {"accuracy": found[0], "round": found[1]}


# ------------------------------------------------------------------------------ writers
def write_summary(run_dir: Path, payload: dict[str, Any]) -> Path:
    path = run_dir / SUMMARY_FILE
    replace_atomically(path, json.dumps(payload, indent=2, sort_keys=True, default=str))  # never half a summary
    return path


def replace_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through ``<path>.tmp`` and ``os.replace``; on failure the ``.tmp`` is removed,
    the previous file stays, and the ``OSError`` names ``path`` (a full disk's ``write`` names no file)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def finish_summary(run_dir: Path, status: str, **fields: Any) -> bool:
    """Give a run whose ``summary.json`` still says ``running`` (or that has none) its final ``status``.

    Called by whoever notices that the server stopped without a word (an interrupt, a killed
    launcher, a Flower failure); a final status the server wrote itself is kept. True if written.
    """
    try:
        summary = read_summary(run_dir)
    except RunFolderError:
        summary = {}
    if summary.get("status", RUNNING) != RUNNING:
        return False
    write_summary(run_dir, {**summary, **fields, "status": status})
    return True


def resume_hint(run_dir: Path) -> str:
    """How to go on with the run in ``run_dir``: resume from its checkpoint, or start again without one."""
    if (run_dir / CHECKPOINT_FILE).is_file():
        return f"python -m amp_fl resume={run_dir}"
    return "no checkpoint was written: start the run again (in a new folder)"


def check_fresh_run_folder(run_dir: Path) -> None:
    """:class:`RunFolderError` unless ``run_dir`` is free for a new run: no run's results in it, a folder if it exists.

    A new run never writes over another's metrics, checkpoint or summary; a finished run is not
    extended (a longer run is a new run), an interrupted one is resumed.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: is a file, not a run folder")
    held = [name for name in RESULT_FILES if (run_dir / name).exists()]
    if not held:
        return
    try:
        status = str(read_summary(run_dir).get("status", "unknown"))
    except RunFolderError:
        status = "no summary"
    if status == COMPLETED:
        what = "a finished run cannot be extended: start a new run (with the num_rounds you want) in a new folder"
    elif status in (RUNNING, INTERRUPTED) and (run_dir / CHECKPOINT_FILE).is_file():
        what = f"continue it with: python -m amp_fl resume={run_dir}, or use a new folder"
    else:
        what = "use a new folder, or delete this one"
    raise RunFolderError(
        f"{run_dir}: already holds a run ({', '.join(held)}; status: {status.split(';')[0]}); not overwritten: {what}"
    )


def write_figures(run_dir: Path, rows: list[RoundRow], title: str) -> list[Path]:
    """Accuracy vs simulated time and vs rounds, and average AoI vs rounds, as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if not math.isnan(r.accuracy)]  # evaluation.every_sim_s leaves rounds unevaluated
    if not rows:
        return []
    rounds = [float(r.round) for r in rows]
    figures: dict[str, tuple[list[float], list[float], str, str]] = {
        "accuracy_vs_sim_time.png": (
            [r.sim_time_s for r in rows],
            [r.accuracy for r in rows],
            "simulated time (s)",
            "test accuracy",
        ),
        "accuracy_vs_round.png": (rounds, [r.accuracy for r in rows], "round", "test accuracy"),
        "avg_aoi_vs_round.png": (rounds, [r.avg_aoi for r in rows], "round", "average AoI (rounds)"),
    }
    paths = []
    for name, (x, y, xlabel, ylabel) in figures.items():
        fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
        ax.plot(x, y, lw=1.5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(run_dir / name)
        plt.close(fig)
        paths.append(run_dir / name)
    return paths


def write_config(run_dir: Path, values: Mapping[str, Any]) -> Path:
    """``run_config.json``: the resolved configuration (a plain mapping) the ServerApp reads."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RUN_CONFIG_FILE
    replace_atomically(path, json.dumps(values, indent=2, default=list))  # a resume's rewrite never loses it
    return path


def write_final_model(run_dir: Path, arrays: Sequence[np.ndarray]) -> Path:
    path = run_dir / FINAL_MODEL_FILE
    np.savez_compressed(path, *arrays)
    return path


def write_timing(run_dir: Path, timing: Mapping[str, Any]) -> Path:
    path = run_dir / TIMING_FILE
    path.write_text(json.dumps(dict(timing)) + "\n")
    return path


# ------------------------------------------------------------------------------ readers
class RunFolderError(ValueError):
    """A path given as a run folder cannot be read; the message names the path and the problem."""


def read_text(path: Path) -> str:
    """A run folder's text file; :class:`RunFolderError` naming it when it is missing, unreadable or not text."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise RunFolderError(f"{path}: not a text file (byte {exc.start} is not UTF-8; corrupt or binary?)") from exc


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of a run folder; :class:`RunFolderError` when missing, truncated or not an object."""
    try:
        payload = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}; truncated?)") from exc
    if not isinstance(payload, dict):
        raise RunFolderError(f"{path}: expected a JSON object, got {type(payload).__name__}")
    return payload


def is_outcome(status: object) -> bool:
    """Whether a summary's ``status`` is a run's result, one that running it again would repeat:
    completed, or diverged (the server stopped it cleanly; same seed, same divergence). A campaign
    keeps such a run and scores it; ``failed`` and ``interrupted`` runs are run again.
    """
    return status == COMPLETED or (isinstance(status, str) and status.startswith(f"{DIVERGED} at round "))


def read_summary(run_dir: Path) -> dict[str, Any]:
    return read_json(run_dir / SUMMARY_FILE)


def read_config(run_dir: Path) -> dict[str, Any]:
    """``run_config.json`` as written (a plain mapping; :mod:`amp_fl.config` turns it into a RunConfig)."""
    return read_json(run_dir / RUN_CONFIG_FILE)


def read_timing(run_dir: Path) -> dict[str, Any]:
    """The campaign's timing of the run; empty when it has none (a run made by hand, or an older campaign)."""
    try:
        return read_json(run_dir / TIMING_FILE)
    except RunFolderError:
        return {}


def read_schedule(run_dir: Path) -> list[dict[str, Any]]:
    """``schedule.jsonl``, one record per round."""
    text = read_text(run_dir / SCHEDULE_FILE)
    return [json.loads(line) for line in text.splitlines() if line]


def read_final_model(run_dir: Path) -> list[np.ndarray]:
    """The final model's arrays, in the model's order."""
    path = run_dir / FINAL_MODEL_FILE
    try:
        with np.load(path) as z:
            return [z[f"arr_{i}"] for i in range(len(z.files))]
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot read ({exc})") from exc


_ROW_TYPES = get_type_hints(RoundRow)


def parse_row(header: list[str], fields: list[str]) -> RoundRow | None:
    """One ``metrics.csv`` row as a :class:`RoundRow`; None when it is not a complete, numeric row.

    Columns missing from the header read as NaN (floats) or 0 (integers), so a reader keeps working
    when a column is added or removed; ``round`` is required.
    """
    if len(fields) != len(header) or "round" not in header:
        return None
    values = dict(zip(header, fields, strict=True))
    kwargs: dict[str, Any] = {}
    try:
        for name, hint in _ROW_TYPES.items():
            raw = values.get(name)
            if hint is int:
                kwargs[name] = int(float(raw)) if raw not in (None, "", "nan") else 0
            else:
                value = float(raw) if raw not in (None, "") else math.nan
                # One NaN object (math.nan), so a parsed row equals the RoundRow it was written from.
                kwargs[name] = math.nan if math.isnan(value) else value
    except (TypeError, ValueError):
        return None
    return RoundRow(**kwargs)


class MetricsTail:
    """Incremental reader of a ``metrics.csv`` that another process is appending to.

    :meth:`poll` returns the rows completed since the last call. It never fails on a file that is
    missing (not created yet), truncated or rewritten (read again from the start), or that ends in a
    half-written line (left for the next poll, when its newline has arrived).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._identity: tuple[int, int] | None = None
        self._header: list[str] | None = None

    def poll(self) -> list[RoundRow]:
        try:
            with self.path.open("rb") as f:
                stat = os.fstat(f.fileno())
                identity = (stat.st_dev, stat.st_ino)
                if identity != self._identity or stat.st_size < self._offset:
                    self._identity, self._offset, self._header = identity, 0, None
                f.seek(self._offset)
                data = f.read()
        except OSError:  # not there yet (or gone): nothing new
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        rows = []
        for fields in csv.reader(data[: end + 1].decode("utf-8", errors="replace").splitlines()):
            if not fields:
                continue
            if self._header is None:
                self._header = fields
                continue
            row = parse_row(self._header, fields)
            if row is not None:
                rows.append(row)
        return rows


def read_rows(path: Path) -> list[RoundRow]:
    """Every complete row of a ``metrics.csv`` that may still be written (``[]`` when it does not exist yet)."""
    return MetricsTail(path).poll()


REQUIRED_COLUMNS = ("round", "sim_time_s", "accuracy")


def _float(text: str) -> float:
    return math.nan if text.strip().lower() == "nan" else float(text)


def read_columns(path: Path) -> dict[str, np.ndarray]:
    """Every column of a finished run's ``metrics.csv`` as a float array (``round`` as int); strict about its shape.

    Unlike :func:`read_rows` (a file still being written), a problem is an error: a missing file,
    a missing required column, a row with the wrong number of fields (a truncated write), a value
    that is not a number, no rows, rounds that do not increase or a simulated clock that goes back,
    each a :class:`RunFolderError` naming the file, the line and the column.
    """
    lines = read_text(path).splitlines()
    if not lines:
        raise RunFolderError(f"{path}: empty file (no header)")
    reader = csv.reader(lines)
    header = next(reader)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise RunFolderError(f"{path}: no column {missing[0]!r} (header: {','.join(header)})")
    values: dict[str, list[float]] = {c: [] for c in header}
    for line_no, row in enumerate(reader, start=2):
        if len(row) != len(header):
            where = "last line" if line_no == len(lines) else f"line {line_no}"
            raise RunFolderError(
                f"{path}: {where} has {len(row)} fields, the header has {len(header)} "
                "(truncated file? the run may have been killed while writing)"
            )
        for column, text in zip(header, row, strict=True):
            try:
                values[column].append(_float(text))
            except ValueError:
                raise RunFolderError(f"{path}: line {line_no}, column {column!r}: not a number: {text!r}") from None
    if not values["round"]:
        raise RunFolderError(f"{path}: no rows (the run has not finished its first evaluation)")
    columns = {c: np.asarray(v, dtype=np.float64) for c, v in values.items()}
    rounds = columns["round"]
    if not np.all(np.isfinite(rounds)) or np.any(rounds != np.round(rounds)) or np.any(np.diff(rounds) <= 0):
        raise RunFolderError(f"{path}: column 'round' must hold increasing whole numbers")
    if not np.all(np.isfinite(columns["sim_time_s"])) or np.any(np.diff(columns["sim_time_s"]) < 0):
        raise RunFolderError(f"{path}: column 'sim_time_s' must be finite and non-decreasing")
    columns["round"] = rounds.astype(np.int64)
    return columns


# ------------------------------------------------------------------------------ the same run
# Keys of a run's configuration that say where and how it ran, not what it computed: a resume may
# change them, and a campaign keeps a finished run made with other values of them.
# ``health``'s bounds only say when a meaningless run stops: a run they did not stop is the same run.
NOT_COMPARED = ("resume", "output_dir", "verbose", "checkpoint", "deployment", "simulation", "tracking", "health")


def comparable_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run's configuration (a plain mapping) without :data:`NOT_COMPARED`, as ``run_config.json`` reads back.

    Two runs with equal comparable configurations are the same run, wherever each was written.
    """
    values = json.loads(json.dumps(dict(config), default=list))  # tuples -> lists, a copy to trim
    for key in NOT_COMPARED:
        values.pop(key, None)
    values.get("dataset", {}).pop("root", None)  # made absolute by the launcher
    return values
