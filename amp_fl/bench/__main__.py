"""Dispatch ``python -m amp_fl.bench <name>`` to ``amp_fl.bench.<name>.main(argv)``."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = (
    "submodel",
    "scheduler",
    "engine",
    "server",
    "simulation",
    "scale",
    "server_memory",
    "startup",
    "gpu_check",
    "reproduce_estimate",
    "campaign",
)


def main(argv: list[str]) -> int:
    names = argv[:1] or list(BENCHMARKS)
    if names[0] == "all":
        names = list(BENCHMARKS)
    for name in names:
        if name not in BENCHMARKS:
            print(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)} or all", file=sys.stderr)
            return 2
    for name in names:
        importlib.import_module(f"amp_fl.bench.{name}").main(argv[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
