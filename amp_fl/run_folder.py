"""A run's outputs: ``metrics.csv`` (one row per round, written as it happens), ``schedule.jsonl``
(one line per round: devices, RBs, keep counts, latencies, bytes), ``summary.json``, figures.

Rows are appended and flushed every round, so an interrupted run keeps every finished round.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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


class MetricsWriter:
    """Appends rows to ``metrics.csv`` and remembers them for the summary and figures."""

    def __init__(self, run_dir: Path, resume_rows: list[RoundRow] | None = None) -> None:
        """A new ``metrics.csv``; with ``resume_rows`` (a checkpoint's), it restarts from those rows.

        Resuming rewrites the file from the checkpoint's rows and keeps the ``schedule.jsonl`` lines
        of those rounds only: whatever a crashed server wrote after its last checkpoint is redone.
        """
        self.path = run_dir / "metrics.csv"
        run_dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[RoundRow] = []
        rows = resume_rows or []
        self._start = time.perf_counter() - (rows[-1].wall_time_s if rows else 0.0)  # wall time goes on
        with self.path.open("w", newline="") as f:
            csv.writer(f).writerow(METRIC_COLUMNS)
        schedule = run_dir / "schedule.jsonl"
        last = rows[-1].round if rows else 0
        kept = []
        if rows and schedule.exists():
            kept = [line for line in schedule.read_text().splitlines() if line and json.loads(line)["round"] <= last]
        schedule.write_text("".join(line + "\n" for line in kept))
        for row in rows:
            self.append(row)

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def append_schedule(self, record: dict[str, Any]) -> None:
        """One JSON line per round in ``schedule.jsonl`` (devices, RBs, keep counts, latencies, bytes)."""
        with (self.path.parent / "schedule.jsonl").open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def append(self, row: RoundRow) -> None:
        self.rows.append(row)
        values = asdict(row)
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([_fmt(values[c]) for c in METRIC_COLUMNS])


def progress_line(row: RoundRow, num_rounds: int, eta_s: float | None = None) -> str:
    """One short plain-text progress line (the launcher's view when stdout is not a terminal)."""
    width = len(str(num_rounds))
    keep = "    -" if math.isnan(row.mean_keep_ratio) else f"{row.mean_keep_ratio:5.3f}"
    line = (
        f"[amp-fl] round {row.round:{width}d}/{num_rounds}  sim {row.sim_time_s:9.3f} s  "
        f"acc {row.accuracy:6.4f}  keep {keep}"
    )
    if eta_s is not None:
        hours, rest = divmod(max(0, round(eta_s)), 3600)
        line += f"  ETA {hours}:{rest // 60:02d}:{rest % 60:02d}"
    return line


def time_to_accuracy(rows: list[RoundRow], target: float, column: str = "accuracy") -> dict[str, float | int | None]:
    """First round (and simulated time) at which ``column`` (test ``accuracy`` or ``val_accuracy``) hit ``target``."""
    for row in rows:
        if getattr(row, column) >= target:
            return {"target": target, "round": row.round, "sim_time_s": row.sim_time_s}
    return {"target": target, "round": None, "sim_time_s": None}


def last_personal_accuracy(rows: list[RoundRow]) -> dict[str, float | int | None]:
    """The latest measured mean personalised accuracy and its round (``None`` when never measured)."""
    for row in reversed(rows):
        if not math.isnan(row.personal_accuracy):
            return {"accuracy": row.personal_accuracy, "round": row.round}
    return {"accuracy": None, "round": None}


def write_summary(run_dir: Path, payload: dict[str, Any]) -> Path:
    path = run_dir / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    tmp.replace(path)  # atomic: a crash never leaves half a summary
    return path


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
