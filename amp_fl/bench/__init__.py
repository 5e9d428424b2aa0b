"""Benchmarks: ``python -m amp_fl.bench <name> [...]`` prints one JSON line per measurement."""

from __future__ import annotations

import json
import platform
import sys
from typing import Any

import torch


def emit(record: dict[str, Any]) -> None:
    """Print one measurement as a JSON line (flushed, so partial runs keep what they measured)."""
    base = {"python": platform.python_version(), "torch_threads": torch.get_num_threads()}
    print(json.dumps({**record, **base}, sort_keys=True), file=sys.stdout, flush=True)
