"""The campaign commands' last word on a mistake: one ``error:`` line, exit 2, never a traceback.

Each command (``reproduce``, ``tune``, ``ota_imp``) reports the mistakes it knows (a config key,
a figure name) itself, through :func:`error_line`; :func:`campaign_cli` catches what reaches its
entry point from the file system (a runs or reports folder that is a file, read-only, a full disk).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from amp_fl.launch.progress import one_line

EXIT_BAD_INPUT = 2


def error_line(exc: BaseException) -> str:
    """``error: <message>`` on one line (Hydra's messages span several)."""
    return f"error: {one_line(str(exc))}"


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
