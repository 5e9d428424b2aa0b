"""The campaign commands' last word on a mistake: one ``error:`` line, exit 2, never a traceback.

Each command (``reproduce``, ``tune``, ``ota_imp``) reports the mistakes it knows (a config key,
a figure name) itself, through :func:`error_line`; :func:`campaign_cli` catches what reaches its
entry point from the file system (a runs or reports folder that is a file, read-only, a full disk).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from amp_fl.launch.progress import one_line

EXIT_BAD_INPUT = 2


def error_line(exc: BaseException) -> str:
    """``error: <message>`` on one line (Hydra's messages span several)."""
    return f"error: {one_line(str(exc))}"


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (runs side by side, trials, rounds)."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"a whole number >= 1, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whole number >= 1, got {text!r}")
    return value


def seed_list(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated distinct seeds >= 0 (a run seed seeds NumPy generators), at least one."""
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"comma-separated whole numbers, got {text!r}") from exc
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"distinct seeds >= 0, at least one, got {text!r}")
    return seeds


def one_seed(text: str) -> int:
    """An argparse type: one seed >= 0."""
    seeds = seed_list(text)
    if len(seeds) != 1:
        raise argparse.ArgumentTypeError(f"one seed, got {text!r}")
    return seeds[0]


def check_folders(folders: Mapping[str, Path]) -> None:
    """Each folder (by its option) is one, or can be made one: ``ValueError`` naming the option before any run."""
    for option, path in folders.items():
        path = path.expanduser().resolve()
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir():
            raise ValueError(f"{option}: {path} cannot be a folder ({existing} is a file)")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"{option}: {path} cannot be created ({existing} is not writable)")


def campaign_cli(main: Callable[[], int]) -> int:
    """``main()``'s exit code; a file-system error becomes one line naming the path, exit 2."""
    try:
        return main()
    except OSError as exc:
        path = exc.filename if exc.filename is not None else "a campaign folder"
        print(f"error: cannot write {path}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
