"""Optional experiment tracking: a run's metrics rows and resolved configuration as TensorBoard events.

Off by default; ``tracking.tensorboard=true`` makes the metrics writer
(:class:`~amp_fl.run_folder.MetricsWriter`) hand every ``metrics.csv`` row to a
:class:`TensorBoardTracker` as it writes it, so TensorBoard shows the run live::

    python -m amp_fl experiment=quick tracking.tensorboard=true
    tensorboard --logdir runs            # every run folder's tensorboard/ side by side

Each column of ``metrics.csv`` (accuracy, loss, simulated time, AoI, keep ratio, bytes, failures,
...) becomes one scalar under its own name, at step = the round; rounds that were not evaluated
(NaN) are left out rather than drawn as gaps. ``accuracy`` and ``val_accuracy`` are also logged
against the simulated clock (``sim_time_ms/...``, step = simulated milliseconds), the papers'
time-to-accuracy axis. The resolved configuration is the ``config`` text.

A resumed run opens the same folder with ``purge_step`` = the first redone round: TensorBoard then
discards what the crashed server logged after its last checkpoint, as ``metrics.csv`` does.

This module imports nothing of amp_fl (the run folder's writer below the server uses it);
TensorBoard's writer is imported only when tracking is on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"  # in the run folder
CONFIG_TAG = "config"
SIM_TIME_TAG = "sim_time_ms"
ON_SIM_TIME = ("accuracy", "val_accuracy")  # also logged against the simulated clock


def tensorboard_enabled(config: Mapping[str, Any] | None) -> bool:
    """Whether a resolved configuration (``run_config.json``'s mapping) turns TensorBoard logging on."""
    tracking = (config or {}).get("tracking") or {}
    return bool(tracking.get("tensorboard", False))


class TensorBoardTracker:
    """Writes scalars and the configuration to ``<run>/tensorboard/`` with torch's SummaryWriter."""

    def __init__(self, log_dir: Path, config: Mapping[str, Any], purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
        if purge_step is None:  # a resumed run's configuration is the one already logged
            text = json.dumps(dict(config), indent=2, sort_keys=True, default=list)
            self._writer.add_text(CONFIG_TAG, "```json\n" + text + "\n```", global_step=0)
            self._writer.flush()

    def log_row(self, values: Mapping[str, Any]) -> None:
        """One metrics row (column -> value) at step = its round; flushed, so a crash keeps what was logged."""
        step = int(values["round"])
        for name, value in values.items():
            if name == "round" or not _is_number(value):
                continue
            self._writer.add_scalar(name, float(value), step)
        sim_ms = (
            round(1000.0 * float(values.get("sim_time_s", math.nan))) if _is_number(values.get("sim_time_s")) else None
        )
        if sim_ms is not None:
            for name in ON_SIM_TIME:
                if _is_number(values.get(name)):
                    self._writer.add_scalar(f"{SIM_TIME_TAG}/{name}", float(values[name]), sim_ms)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def open_tracker(
    run_dir: Path, config: Mapping[str, Any] | None, purge_step: int | None = None
) -> TensorBoardTracker | None:
    """The run's tracker when its configuration turns tracking on, else ``None``."""
    if not tensorboard_enabled(config):
        return None
    assert config is not None
    return TensorBoardTracker(run_dir / TENSORBOARD_DIR, config, purge_step)
