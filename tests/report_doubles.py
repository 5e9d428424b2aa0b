"""Hand-built runs for report tests: a group of seeds whose accuracy curves are given, no run folders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from amp_fl.report.runs import Group, Run


def hand_built_group(label: str, curves: Mapping[int, Sequence[float]], times: Sequence[float]) -> Group:
    """One run per seed of ``curves`` (accuracy per evaluation at ``times``), under ``label``."""
    runs = [
        Run(
            path=Path(f"{label}{seed}"),
            seed=seed,
            config={"seed": seed},
            summary={"status": "completed", "dataset_used": "fashion_mnist"},
            columns={"round": np.arange(len(times)), "sim_time_s": np.array(times), "accuracy": np.array(acc)},
        )
        for seed, acc in curves.items()
    ]
    return Group(label, runs)
