"""The results ledger: every finished campaign run, compact, in a folder that git keeps.

A campaign's run folders live under ``runs/`` (ignored by git: checkpoints, figures, logs). A
campaign longer than one working session must not lose what it computed when the machine goes
away, so each run that finishes is also packed, without what no report reads (its checkpoint,
figures, Flower log, TensorBoard events), into one compressed archive under ``results/``, at the
same relative path: ``runs/reproduce/paper/s2/fig8/amp_fl-seed0`` ->
``results/reproduce/paper/s2/fig8/amp_fl-seed0.tar.xz``. Committing ``results/`` is what carries
a campaign to the next session: there, :func:`amp_fl.experiments.campaign.make_jobs` unpacks the
record of any run whose folder is missing, and the campaign's completeness check
(:func:`~amp_fl.experiments.campaign.is_complete`, the stored configuration against the
campaign's) decides whether it counts, exactly as for a folder that never left.

Only run folders under the project's ``runs/`` have a ledger record (a campaign pointed at a
scratch folder keeps its runs to itself). ``python -m amp_fl.experiments.ledger record runs/...``
records finished runs made before the ledger existed, or by hand.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from amp_fl.run_folder import (
    CHECKPOINT_FILE,
    FINAL_MODEL_FILE,
    FLOWER_LOG,
    SUMMARY_FILE,
    RunFolderError,
    is_outcome,
    read_summary,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RUNS_DIR = "runs"
RESULTS_DIR = "results"
SUFFIX = ".tar.xz"
# What a record leaves out: what a resume or a figure needs, never a report.
SKIPPED_FILES = frozenset({CHECKPOINT_FILE, FLOWER_LOG})
SKIPPED_SUFFIXES = (".png", ".pdf")
SKIPPED_DIRS = frozenset({"tensorboard", ".flwr"})
# The final model (incompressible floats: 85 % of a CNN run's record) is kept only for campaigns whose
# report reads it (keep_model), and never above this size (VGG-11's is 37 MB); a record without it
# says so (OMITTED_FILE) and the completeness check accepts its absence.
MAX_MODEL_BYTES = 4 * 1024 * 1024
OMITTED_FILE = "ledger_omitted.json"


# ------------------------------------------------------------------------------------------ archives
def pack_folder(folder: Path, *, compact: bool = False, keep_model: bool = False) -> bytes:
    """``folder``'s files as one tar archive: whole and uncompressed, or (``compact``) xz without what no report reads.

    The whole form sends a finished run back from a Ray worker; the compact one is a ledger record,
    with the final model when ``keep_model`` and it is not too large.
    """
    buffer = io.BytesIO()
    omitted = [path.name for path in _files(folder) if compact and _omitted(folder, path, keep_model)]
    with tarfile.open(fileobj=buffer, mode="w:xz" if compact else "w") as archive:
        for path in _files(folder):
            if compact and (_skipped(folder, path) or path.name in omitted):
                continue
            archive.add(path, arcname=str(path.relative_to(folder)), recursive=False)
        if omitted:
            reason = f"larger than {MAX_MODEL_BYTES} bytes" if keep_model else "no report of the campaign reads it"
            payload = json.dumps({"omitted": omitted, "reason": reason}).encode()
            info = tarfile.TarInfo(OMITTED_FILE)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def unpack_folder(data: bytes, folder: Path) -> None:
    """The files of :func:`pack_folder`'s archive (either form) into ``folder`` (plain files and folders only)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        archive.extractall(folder, filter="data")


def _files(folder: Path) -> Iterator[Path]:
    if folder.is_dir():
        yield from sorted(folder.rglob("*"))


def _skipped(folder: Path, path: Path) -> bool:
    parts = path.relative_to(folder).parts
    return (
        path.is_dir()
        or any(part in SKIPPED_DIRS for part in parts)
        or path.name in SKIPPED_FILES
        or path.suffix in SKIPPED_SUFFIXES
    )


def _omitted(folder: Path, path: Path, keep_model: bool) -> bool:
    if path.name != FINAL_MODEL_FILE or path.parent != folder:
        return False
    return not keep_model or path.stat().st_size > MAX_MODEL_BYTES


def omits_final_model(run_dir: Path) -> bool:
    """Whether ``run_dir`` was restored from a record that left its (too large) final model out."""
    path = run_dir / OMITTED_FILE
    try:
        return path.is_file() and FINAL_MODEL_FILE in json.loads(path.read_text()).get("omitted", [])
    except (OSError, ValueError, AttributeError):
        return False


# ------------------------------------------------------------------------------------------ records
def record_path(run_dir: Path, project_root: Path | None = None) -> Path | None:
    """Where the ledger keeps ``run_dir``'s record; None for a folder outside the project's ``runs/``."""
    project_root = PROJECT_ROOT if project_root is None else project_root
    try:
        relative = run_dir.resolve().relative_to((project_root / RUNS_DIR).resolve())
    except ValueError:
        return None
    if not relative.parts:
        return None
    return project_root / RESULTS_DIR / relative.parent / (relative.name + SUFFIX)


def record(run_dir: Path, keep_model: bool = False, project_root: Path | None = None) -> Path | None:
    """Writes ``run_dir``'s record (atomically, replacing an older one) if it is a finished run under ``runs/``.

    ``keep_model``: the record holds the final model too (a report of the campaign reads it).

    Returns the record's path, or None when ``run_dir`` has no place in the ledger or did not finish.
    """
    target = record_path(run_dir, project_root)
    if target is None or not is_finished(run_dir):
        return None
    if target.is_file() and target.stat().st_mtime >= max(p.stat().st_mtime for p in _files(run_dir)):
        return target  # up to date: the same bytes again would only cost the packing
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".partial", delete=False) as handle:
        handle.write(pack_folder(run_dir, compact=True, keep_model=keep_model))
    os.replace(handle.name, target)
    return target


def is_finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run: its summary gives an outcome (completed, or diverged:
    :func:`~amp_fl.run_folder.is_outcome`) and its final model is there, or was left out of the record it
    was restored from for its size. The server writes the final model last, after the summary, so a
    run killed in between is not taken for a finished one.
    """
    try:
        outcome = is_outcome(read_summary(run_dir).get("status"))
    except RunFolderError:
        return False
    return outcome and ((run_dir / FINAL_MODEL_FILE).is_file() or omits_final_model(run_dir))


def restore_to(run_dir: Path, scratch: Path, project_root: Path | None = None) -> Path | None:
    """``run_dir``'s record unpacked into a new folder under ``scratch`` (None: it has none) for the caller to judge."""
    source = record_path(run_dir, project_root)
    if source is None or not source.is_file():
        return None
    folder = Path(tempfile.mkdtemp(prefix="restore-", dir=scratch))
    try:
        unpack_folder(source.read_bytes(), folder)
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise RunFolderError(f"{source}: not a readable ledger record ({exc}); delete it to rerun the run") from exc
    return folder


def finished_runs(roots: Sequence[Path]) -> list[Path]:
    """The finished run folders under ``roots`` (each a run folder or a folder of them, at any depth)."""
    found = {summary.parent for root in roots for summary in [root / SUMMARY_FILE, *root.rglob(SUMMARY_FILE)]}
    return sorted(folder for folder in found if is_finished(folder))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m amp_fl.experiments.ledger", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("record", help="record every finished run under these folders (under runs/)")
    add.add_argument("folders", nargs="+", type=Path)
    add.add_argument("--with-models", action="store_true", help="keep each final model (a report reads it)")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.folders if not f.is_dir()]
    if missing:
        parser.error(f"record: no such folder: {', '.join(missing)}")
    written = [path for run in finished_runs(args.folders) if (path := record(run, args.with_models)) is not None]
    print(f"[ledger] {len(written)} run(s) recorded under {PROJECT_ROOT / RESULTS_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
