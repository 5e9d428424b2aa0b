"""Server checkpoints: everything a run needs to continue after a crash, in one atomically replaced file.

``<run>/checkpoint.npz`` holds, after round ``t``, the state of every part of the server that
changes during a run, each as its own ``state_dict()`` (:mod:`amp_fl.state`): the strategy (its
global model and whatever else it keeps: AMP-FL's AoI table, gradient cache or Gbar and server
optimiser; sparse FedAvg's masks, rewind snapshot and history) and the recorder's simulated
clock, and the metrics writer's rows so far (``metrics.csv`` is rewritten from them on resume, so
rows a crashed server wrote after its last checkpoint are dropped and redone); plus the run seed
and the configuration it was made with (a resume must use the same).

This module knows no part's field names: a state tree is stored as its arrays, each under its
path (``strategy/cache/cached/3/0``), plus the tree with every array replaced by a reference to
its path, as JSON metadata (floats keep all 17 digits). Arrays that are views of one array (the
gradient cache's rows, one per device and parameter) are stored as that array once, with each
view's offset, shape and strides in the metadata (format 3; format 2 files still read).

Writes run on a background thread (:class:`BackgroundWriter`): the round pays for copying the
arrays, not for encoding and syncing the file.

The random components need no saved state: every generator is derived from ``(seed, stream,
round)`` (:mod:`amp_fl.wireless.seeding`: channel, scheduler, pruning policy, participation,
over-the-air noise, failure injector, the clients' batches), so round ``t + 1`` of a resumed run
draws what an uninterrupted run draws. The file is written to a temporary name, flushed to disk
and renamed over the previous checkpoint (``os.replace``): a crash at any moment leaves the
previous or the new checkpoint, never half of one.

Client state is not in the server's checkpoint. Algorithm 3 (``strategy.memory_friendly``) keeps
each PIU's gradient cache G_k and APFL its personal model in Flower's ``context.state``, which a
new Flower run starts empty, so those runs cannot be resumed (:func:`check_resumable` refuses
with the state it cannot save); every other method keeps no client state across rounds.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.lib import format as npy

from amp_fl import run_folder
from amp_fl.config import RunConfig, config_to_dict, load_config
from amp_fl.errors import ConfigError
from amp_fl.run_folder import CHECKPOINT_FILE, RUN_CONFIG_FILE, RunFolderError, read_config
from amp_fl.state import State, Stateful, StateValue

FORMAT = 3  # 3: views of one array stored as one block; 2: every array its own member; 1: AMP-FL's fields
READS = (2, 3)
BLOCK_SUFFIX = "#block"  # the member holding an array that several stored arrays are views of
META = "meta"
ARRAY_REF = "$array"  # in the metadata, {"$array": path} stands for the array stored under that path


@dataclass
class ServerState:
    """What a checkpoint holds (see the module docstring); ``parts`` maps a part's name to its state."""

    round: int
    seed: int
    parts: dict[str, State]
    config: dict[str, Any]


def comparable_config(cfg: RunConfig) -> dict[str, Any]:
    """The part of the configuration a resume must not change (everything but where and how it runs)."""
    return run_folder.comparable_config(config_to_dict(cfg))


def save_checkpoint(run_dir: Path, state: ServerState) -> Path:
    """Write ``state`` to ``run_dir/checkpoint.npz`` atomically (temporary file, fsync, ``os.replace``)."""
    arrays, meta = _encode(state)
    return _write(run_dir, _pack(arrays, lambda _, value: value), meta)


def _encode(state: ServerState) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays of ``state`` by path (live, not copies) and its JSON metadata (a new tree of scalars)."""
    arrays: dict[str, np.ndarray] = {}
    meta = {
        "format": FORMAT,
        "round": state.round,
        "seed": state.seed,
        "parts": {name: _flatten(part, name, arrays) for name, part in state.parts.items()},
        "config": state.config,
    }
    return arrays, meta


@dataclass
class _Packed:
    """What the file stores: ``members`` (zip members by name) and the arrays that are views of a block member."""

    members: dict[str, np.ndarray]
    views: list[tuple[str, str, np.ndarray, np.ndarray]]  # (path, block member, live view, live block)

    def view_table(self) -> dict[str, list[Any]]:
        """Per view: its block, byte offset, shape and strides (the metadata's ``views``)."""
        table = {}
        for path, member, view, root in self.views:
            offset = view.__array_interface__["data"][0] - root.__array_interface__["data"][0]
            table[path] = [member, offset, list(view.shape), list(view.strides)]
        return table


def _pack(arrays: dict[str, np.ndarray], store: Callable[[str, np.ndarray], np.ndarray]) -> _Packed:
    """Group ``arrays`` into zip members; ``store(name, array)`` gives what is written (the array or a copy).

    Views of one array that cover at least half of it (a cache table's rows: one per device and
    parameter) are stored as that array, once: one member, and one copy for a background write,
    instead of hundreds. Any other array is its own member.
    """
    groups: dict[int, tuple[np.ndarray, list[str]]] = {}
    for path, value in arrays.items():
        root = _root(value)
        groups.setdefault(id(root), (root, []))[1].append(path)
    packed = _Packed({}, [])
    for root, paths in groups.values():
        viewed = sum(arrays[p].nbytes for p in paths)
        if len(paths) > 1 and root.size and root.flags.c_contiguous and 2 * viewed >= root.nbytes:
            member = paths[0] + BLOCK_SUFFIX
            packed.members[member] = store(member, root)
            packed.views.extend((p, member, arrays[p], root) for p in paths)
        else:
            packed.members.update({p: store(p, arrays[p]) for p in paths})
    return packed


def _write(run_dir: Path, packed: _Packed, meta: dict[str, Any]) -> Path:
    meta = {**meta, "views": packed.view_table()}
    members = {**packed.members, META: np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)}
    path = run_dir / CHECKPOINT_FILE
    tmp = run_dir / (CHECKPOINT_FILE + ".tmp")
    try:
        with tmp.open("wb") as f:
            _savez(f, members)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk leaves the last good checkpoint, no .tmp beside it, and says which file
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _savez(f: BinaryIO, members: Mapping[str, np.ndarray]) -> None:
    """``np.savez(f, **members)``: the same archive, each C-contiguous array written straight from its memory.

    ``np.savez`` copies every array through ``tobytes`` (16 MiB at a time) holding the GIL: on the
    writer thread that stalled the next round's server work by milliseconds (measured by
    ``python -m amp_fl.bench server``). zipfile's CRC and the file write of a buffer release the
    GIL. Other arrays (not C-contiguous) go through numpy's own writer, as in ``np.savez``.
    """
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in members.items():
            array = np.asanyarray(value)
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                if not array.flags.c_contiguous or array.dtype.hasobject:
                    npy.write_array(member, array, allow_pickle=True)
                    continue
                header = npy.header_data_from_array_1_0(array)
                try:
                    npy.write_array_header_1_0(member, header)
                except ValueError:  # a header over 64 KiB: np.save writes version 2.0 then
                    npy.write_array_header_2_0(member, header)
                member.write(array.reshape(-1).view(np.uint8).data)


def load_checkpoint(run_dir: Path) -> ServerState:
    """Read ``run_dir/checkpoint.npz`` (``ConfigError`` naming ``resume`` if there is none or it is unreadable)."""
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigError("resume", f"no checkpoint in {run_dir} (checkpoint.every=0, or it stopped before round 1)")
    try:
        # allow_pickle stays off: a file that needs it is not a checkpoint (numpy would advise turning it on)
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("not an .npz archive")
            meta = json.loads(bytes(z[META]).decode("utf-8"))
            if meta.get("format") not in READS:
                raise ValueError(f"checkpoint format {meta.get('format')}, this version reads {READS}")
            fetch = _reader(z, meta.get("views", {}))
            parts = {name: _unflatten(tree, fetch) for name, tree in meta["parts"].items()}
        return ServerState(
            round=int(meta["round"]),
            seed=int(meta["seed"]),
            parts={name: _part(name, state) for name, state in parts.items()},
            config=meta["config"],
        )
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError("resume", f"cannot read the checkpoint {path}: {_why_unreadable(exc)}") from exc


def _why_unreadable(exc: BaseException) -> str:
    """numpy's reasons for a file that is not an archive (its advice to allow pickles among them) made plain."""
    if isinstance(exc, zipfile.BadZipFile | EOFError):
        return f"truncated or corrupt ({exc})"
    if isinstance(exc, ValueError) and "pickle" in str(exc):
        return "not a checkpoint (not an .npz archive)"
    return str(exc)


def _part(name: str, state: StateValue) -> State:
    if not isinstance(state, dict):
        raise ValueError(f"part {name!r} holds a {type(state).__name__}, not a state dict")
    return state


def _flatten(value: StateValue, path: str, arrays: dict[str, np.ndarray]) -> Any:
    """``value`` as JSON, each array moved to ``arrays[path]`` and replaced by ``{"$array": path}``."""
    if isinstance(value, np.ndarray):
        arrays[path] = value
        return {ARRAY_REF: path}
    if isinstance(value, dict):
        for key in value:
            if "/" in key or key == ARRAY_REF:
                raise ValueError(f"state: key {key!r} under {path!r} cannot be stored (no '/', not {ARRAY_REF!r})")
        return {key: _flatten(v, f"{path}/{key}", arrays) for key, v in value.items()}
    if isinstance(value, list):
        return [_flatten(v, f"{path}/{i}", arrays) for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"state: {path!r} holds a {type(value).__name__}, not an array or a JSON scalar")


def _reader(members: Mapping[str, np.ndarray], views: Mapping[str, list[Any]]) -> Callable[[str], np.ndarray]:
    """The array stored under a path: its own member, or a copy of its part of a block member."""
    blocks: dict[str, np.ndarray] = {}

    def fetch(path: str) -> np.ndarray:
        if path not in views:
            return np.array(members[path])
        member, offset, shape, strides = views[path]
        if member not in blocks:
            blocks[member] = np.ascontiguousarray(members[member])
        block = blocks[member]
        return np.ndarray(tuple(shape), dtype=block.dtype, buffer=block, offset=offset, strides=tuple(strides)).copy()

    return fetch


def _unflatten(tree: Any, fetch: Callable[[str], np.ndarray]) -> StateValue:
    """The inverse of :func:`_flatten` (arrays are read into memory)."""
    if isinstance(tree, dict):
        if set(tree) == {ARRAY_REF}:
            return fetch(tree[ARRAY_REF])
        return {key: _unflatten(v, fetch) for key, v in tree.items()}
    if isinstance(tree, list):
        return [_unflatten(v, fetch) for v in tree]
    return tree  # a JSON scalar


def check_resumable(cfg: RunConfig) -> None:
    """Refuse (``ConfigError`` naming ``resume``) the runs whose state is not all on the server."""
    if cfg.strategy.memory_friendly:
        raise ConfigError(
            "resume",
            "Algorithm 3 (strategy.memory_friendly=true) keeps each PIU's gradient cache G_k in Flower's "
            "context.state, which a new Flower run starts empty, and the server's checkpoint cannot save it: "
            "a resumed run would not match; start it again",
        )
    if cfg.strategy.local_objective == "apfl":
        raise ConfigError(
            "resume",
            "APFL keeps each PIU's personal model in Flower's context.state, which a new Flower run starts "
            "empty, and the server's checkpoint cannot save it: a resumed run would not match; start it again",
        )


def resume_config(run_dir: Path) -> RunConfig:
    """The saved configuration of the run in ``run_dir``, set to resume it (checked: resumable, has a checkpoint)."""
    run_dir = run_dir.expanduser().resolve()
    path = run_dir / RUN_CONFIG_FILE
    if not path.is_file():
        raise ConfigError("resume", f"{run_dir} is not a run folder (no {RUN_CONFIG_FILE})")
    try:
        values = read_config(run_dir)
    except RunFolderError as exc:
        raise ConfigError("resume", str(exc)) from exc
    values["resume"] = str(run_dir)
    values["output_dir"] = str(run_dir)
    cfg = load_config(values)
    check_resumable(cfg)
    state = load_checkpoint(run_dir)
    if state.round >= cfg.num_rounds:
        raise ConfigError("resume", f"nothing to resume: the checkpoint in {run_dir} is after the last round")
    return cfg


def check_state_matches(cfg: RunConfig, state: ServerState) -> None:
    """The checkpoint was made by this configuration (``ConfigError`` naming the first key that differs)."""
    saved, current = state.config, comparable_config(cfg)
    for key in _first_difference(saved, current, ""):
        raise ConfigError(key, "differs from the checkpointed run's (resume continues the same configuration)")


def _first_difference(a: Any, b: Any, prefix: str) -> Sequence[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
            if found:
                return found
        return []
    return [] if a == b else [prefix.rstrip(".") or "<root>"]


def _root(value: np.ndarray) -> np.ndarray:
    """The array whose memory ``value`` views (``value`` itself if it owns its data)."""
    while isinstance(value.base, np.ndarray):
        value = value.base
    return value


# ------------------------------------------------------------------------------ the server's parts
def capture(parts: Mapping[str, Stateful], cfg: RunConfig, server_round: int) -> ServerState:
    """The state after ``server_round`` (arrays are not copied: they are written out at once)."""
    return ServerState(
        round=server_round,
        seed=cfg.seed,
        parts={name: part.state_dict() for name, part in parts.items()},
        config=comparable_config(cfg),
    )


def restore(parts: Mapping[str, Stateful], state: ServerState) -> None:
    """Put a checkpoint's state into freshly built parts (``ConfigError`` naming ``resume`` if it does not fit)."""
    if set(parts) != set(state.parts):
        raise ConfigError("resume", f"the checkpoint holds the parts {sorted(state.parts)}, this run {sorted(parts)}")
    for name, part in parts.items():
        try:
            part.load_state_dict(state.parts[name])
        except ValueError as exc:
            raise ConfigError("resume", f"the checkpoint's {name} does not fit this run: {exc}") from exc


class BackgroundWriter:
    """Writes checkpoints off the round's critical path, one at a time, on a single thread.

    :meth:`submit` copies the state's arrays (into buffers kept from the previous checkpoint, so a
    round allocates nothing) and returns; the thread encodes the metadata and does the atomic
    write of :func:`save_checkpoint`. A submit first waits for the previous write (it reuses its
    buffers), which has had a whole round to finish. A write that failed raises from the next
    :meth:`submit` or :meth:`flush`, never silently.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.written_round: int | None = None  # the round of the newest checkpoint this writer put on disk
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending: Future[None] | None = None
        self._buffers: dict[str, np.ndarray] = {}

    def submit(self, state: ServerState) -> None:
        self.flush()
        arrays, meta = _encode(state)
        used: dict[str, np.ndarray] = {}
        packed = _pack(arrays, lambda name, value: self._copy(used, name, value))
        self._buffers = used  # buffers of parts that are gone are dropped: memory stays flat
        self._pending = self._executor.submit(self._write, packed, meta, state.round)

    def flush(self) -> None:
        """Wait for the write in progress; raise its error if it failed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Flush and stop the thread (the writer cannot be used afterwards)."""
        try:
            self.flush()
        finally:
            self._executor.shutdown(wait=True)

    def _copy(self, used: dict[str, np.ndarray], name: str, value: np.ndarray) -> np.ndarray:
        """``value`` copied into the buffer kept under ``name`` (allocated when its shape or dtype changed)."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape != value.shape or buffer.dtype != value.dtype:
            buffer = np.empty(value.shape, dtype=value.dtype)
        np.copyto(buffer, value)
        used[name] = buffer
        return buffer

    def _write(self, packed: _Packed, meta: dict[str, Any], server_round: int) -> None:
        _write(self.run_dir, packed, meta)  # the view table reads only the live views' shapes and offsets
        self.written_round = server_round


@dataclass
class Checkpointer:
    """The recorder's ``on_row`` hook: save a checkpoint every ``cfg.checkpoint.every`` rounds and after the last.

    With ``cfg.checkpoint.every_s`` > 0 a due round is also skipped until that many wall-clock
    seconds have passed since the last checkpoint (the last round is always saved). Writes run in
    the background (:class:`BackgroundWriter`); :meth:`close` waits for the last one, so call it
    before reporting :attr:`saved_round`.
    """

    run_dir: Path
    cfg: RunConfig
    parts: Mapping[str, Stateful]
    saved_round: int | None = None  # the round of the newest checkpoint on disk (after close: all written)
    _writer: BackgroundWriter | None = field(default=None, init=False, repr=False)
    # A lambda: time.monotonic is looked up at each construction (a test fakes the clock).
    _last_save_s: float = field(default_factory=lambda: time.monotonic(), init=False, repr=False)

    def __call__(self, server_round: int) -> None:
        if not self._due(server_round):
            return
        if self._writer is None:
            self._writer = BackgroundWriter(self.run_dir)
        self._writer.submit(capture(self.parts, self.cfg, server_round))
        self._last_save_s = time.monotonic()
        self._note_written()

    def _due(self, server_round: int) -> bool:
        every, every_s = self.cfg.checkpoint.every, self.cfg.checkpoint.every_s
        if server_round == 0 or every == 0:
            return False
        if server_round == self.cfg.num_rounds:
            return True
        return server_round % every == 0 and time.monotonic() - self._last_save_s >= every_s

    def close(self) -> None:
        """Wait for the checkpoint being written (raising its error, if any) and stop the writer."""
        if self._writer is None:
            return
        try:
            self._writer.close()
        finally:
            self._note_written()
            self._writer = None

    def _note_written(self) -> None:
        if self._writer is not None and self._writer.written_round is not None:
            self.saved_round = self._writer.written_round
