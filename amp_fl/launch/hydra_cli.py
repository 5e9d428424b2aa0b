"""What ``python -m amp_fl`` adds around Hydra: its errors in one line, and run folders it must not touch.

Hydra reports a bad command line (an unknown key, a group option that does not exist, an
override it cannot parse) in several lines and exits 1, and it creates the run folder (``.hydra/``,
a log) before the task function sees the configuration. :func:`run_cli` lets Hydra's exceptions
reach it (``HYDRA_FULL_ERROR``) and rewords them into one ``error:`` line, exit 2;
:class:`RunFolderGuard`, a Hydra callback (``hydra.callbacks`` in ``conf/config.yaml``), checks the
run folder before Hydra writes into it: a folder that holds a run is refused (never overwritten), a
path that cannot be a folder is named, and ``resume=`` writes into the resumed run's folder instead
of a new stub one. A run that fails on bad input leaves no folder behind (:func:`remove_stub`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.errors import HydraException, MissingConfigException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from amp_fl.errors import ConfigError
from amp_fl.launch.launcher import cli_errors
from amp_fl.launch.progress import one_line
from amp_fl.run_folder import RESULT_FILES, RunFolderError, check_fresh_run_folder

FULL_ERROR = "HYDRA_FULL_ERROR"
EXIT_BAD_INPUT = 2

# Folders this process created for its runs (they did not exist when Hydra was about to make them):
# only these are removed when a run fails on bad input.
_fresh: set[Path] = set()
_made_parents: set[Path] = set()  # the folders above them that did not exist either (e.g. runs/)


def _note_fresh(path: Path) -> None:
    _fresh.add(path)
    _made_parents.update(p for p in path.parents if not p.exists())


def run_cli(main: Callable[[], Any]) -> None:
    """Call the ``@hydra.main`` function ``main``; Hydra's own errors end in one ``error:`` line, exit 2."""
    user_wants_full = os.environ.get(FULL_ERROR) == "1"
    os.environ[FULL_ERROR] = "1"  # Hydra raises instead of printing its report: reworded below
    try:
        main()
    except (HydraException, OmegaConfBaseException) as exc:
        if user_wants_full:
            raise
        print(f"error: {hydra_error_line(exc)}", file=sys.stderr, flush=True)
        prune_fresh()  # e.g. a multirun's folder, made before a job's overrides failed to compose
        raise SystemExit(EXIT_BAD_INPUT) from exc
    except OSError as exc:  # Hydra making a run folder it cannot (under a file, in /proc, read-only)
        if user_wants_full:
            raise
        path = exc.filename if exc.filename is not None else "the run folder"
        print(f"error: hydra.run.dir: cannot create {path}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_BAD_INPUT) from exc


_MISSING_OPTION = re.compile(r"Could not find '([^']+)/([^']+)'")
_OVERRIDE = re.compile(r"Could not override '([^']+)'")
_NO_KEY = re.compile(r"Key '([^']+)' is not in struct")


def hydra_error_line(exc: BaseException) -> str:
    """One line for a Hydra or OmegaConf error, naming the key or the group option."""
    text = str(exc)
    cause = str(exc.__cause__) if exc.__cause__ is not None else ""
    if isinstance(exc, MissingConfigException) and (found := _MISSING_OPTION.search(text)):
        group, option = found.groups()
        options = [o.strip() for o in re.findall(r"^\t(\S+)$", text, flags=re.MULTILINE)]
        choices = f"; choose from {', '.join(options)}" if options else ""
        return f"invalid config {group}: no option {option!r} in conf/{group}/{choices}"
    if (found := _OVERRIDE.search(text)) and _NO_KEY.search(cause):
        key = found.group(1)
        return (
            f"invalid config {key}: unknown key (check its spelling; `python -m amp_fl --cfg job` lists every "
            f"key; +{key}=... adds a new one)"
        )
    detail = one_line(text if not cause else f"{text} {cause}")
    return f"invalid command line: {detail}"


def _fresh_parent(path: Path) -> Path | None:
    """The folder of ``_fresh`` that holds ``path`` (or is it), if any."""
    return next((f for f in _fresh if path == f or f in path.parents), None)


def remove_stub(run_dir: Path) -> None:
    """Remove the folder Hydra made for a run that failed on bad input (only a folder this process created)."""
    run_dir = run_dir.resolve()
    if _fresh_parent(run_dir) is not None:
        shutil.rmtree(run_dir, ignore_errors=True)
    prune_fresh()


def prune_fresh() -> None:
    """Remove each folder this process created that holds no run's results (a sweep folder with only
    Hydra's ``multirun.yaml``), then the folders made above it (``runs/``) while they are empty."""
    for fresh in sorted(_fresh):
        if fresh.is_dir() and not any(p.name in RESULT_FILES for p in fresh.rglob("*")):
            shutil.rmtree(fresh, ignore_errors=True)
    for parent in sorted(_made_parents, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty (another run's folder), or already gone
            parent.rmdir()


def check_run_folder(path: Path) -> None:
    """A new run may be written in ``path``: it is not a run's folder, and it is, or can be made, a folder."""
    check_fresh_run_folder(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise RunFolderError(f"{path}: cannot be made a folder ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunFolderError(f"{path}: cannot be created ({existing} is not writable)")


def check_resume_overrides(overrides: list[str]) -> None:
    """``resume=`` continues the saved configuration: any other setting on the command line is a mistake."""
    allowed = ("resume=", "verbose=", "hydra.")
    others = [o for o in overrides if not o.lstrip("+~").startswith(allowed)]
    if others:
        raise ConfigError(
            "resume", f"continues the run's saved configuration; drop the other settings ({' '.join(others)})"
        )


def _named(key: str, check: Callable[[Path], None], path: Path) -> None:
    """``check(path)``, its :class:`RunFolderError` prefixed with the key that chose the folder."""
    try:
        check(path)
    except RunFolderError as exc:
        raise RunFolderError(f"{key}: {exc}") from exc


class RunFolderGuard(Callback):
    """Hydra callback: checks (and for ``resume=``, redirects) the run folder before Hydra writes into it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with cli_errors():
            if config.get("resume") is not None:
                self._into_resumed_folder(config)
                return
            run_dir = Path(str(config.hydra.run.dir)).expanduser().resolve()
            _named("hydra.run.dir", check_run_folder, run_dir)
            if not run_dir.exists():
                _note_fresh(run_dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with cli_errors():
            sweep_dir = Path(str(config.hydra.sweep.dir)).expanduser().resolve()
            _named("hydra.sweep.dir", check_run_folder, sweep_dir)
            if sweep_dir.is_dir():
                for job_dir in sweep_dir.iterdir():
                    if job_dir.is_dir():  # a job folder of an earlier sweep is not overwritten
                        _named("hydra.sweep.dir", check_fresh_run_folder, job_dir)
            else:
                _note_fresh(sweep_dir)

    @staticmethod
    def _into_resumed_folder(config: DictConfig) -> None:
        """``resume=DIR``: checked before Hydra writes anything; then Hydra's log goes into DIR (appended), and
        there is no new ``runs/<time>/`` stub, no new ``.hydra/``."""
        from amp_fl.server.checkpoint import resume_config  # the server's modules: only when resuming

        check_resume_overrides(list(config.hydra.overrides.task))
        run_dir = Path(str(config.resume)).expanduser().resolve()
        resume_config(run_dir)  # ConfigError naming resume: not a run folder, no or a corrupt checkpoint, finished
        with read_write(config.hydra), open_dict(config.hydra):
            OmegaConf.update(config, "hydra.run.dir", str(run_dir), force_add=True)
            config.hydra.output_subdir = None  # keep the run's own record of how it was started
