"""Server checkpoints: everything a run needs to continue after a crash, in one atomically replaced file.

``<run>/checkpoint.npz`` holds, after round ``t``:

- the global weights, the AoI table, the gradient cache G_k and its running sum (or Gbar), the
  server optimiser's state (steps, momentum / Adam moments);
- the simulated clock and every metrics row so far (``metrics.csv`` is rewritten from them on
  resume, so rows a crashed server wrote after its last checkpoint are dropped and redone);
- the run seed and the configuration it was made with (a resume must use the same).

The random components need no saved state: every generator is derived from ``(seed, stream,
round)`` (:mod:`amp_fl.wireless.seeding`: channel, scheduler, pruning policy, over-the-air noise,
failure injector, the clients' batches), so round ``t + 1`` of a resumed run draws what an
uninterrupted run draws. The file is written to a temporary name, flushed to disk and renamed over
the previous checkpoint (``os.replace``): a crash at any moment leaves the previous or the new
checkpoint, never half of one.

Client state is not in the server's checkpoint. Algorithm 3 (``strategy.memory_friendly``) keeps
each PIU's gradient cache G_k and APFL its personal model in Flower's ``context.state``, which a
new Flower run starts empty, so those runs cannot be resumed (:func:`check_resumable` refuses
with the reason); every other method keeps no client state across rounds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amp_fl import run_folder
from amp_fl.config import RunConfig, config_to_dict, load_config
from amp_fl.errors import ConfigError
from amp_fl.run_folder import RoundRow
from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.server.recorder import Recorder
from amp_fl.strategy.amp_fl import AmpFlStrategy
from amp_fl.strategy.server_optimizer import ServerOptimizerState

CHECKPOINT_FILE = "checkpoint.npz"
RUN_CONFIG_FILE = "run_config.json"
FORMAT = 1


@dataclass
class ServerState:
    """What a checkpoint holds (see the module docstring)."""

    round: int
    seed: int
    weights: list[np.ndarray]
    ages: np.ndarray
    cache: list[list[np.ndarray] | None] | None  # per device (cached variants); None with Algorithm 3
    cache_total: list[np.ndarray] | None
    gbar: list[np.ndarray] | None  # Algorithm 3's aggregate; None for the cached variants
    sim_time_s: float
    rows: list[RoundRow]
    config: dict[str, Any]
    # The server optimiser's memory (strategy.server_optimizer): steps taken, momentum / Adam moments.
    optimizer: ServerOptimizerState = dataclasses.field(default_factory=ServerOptimizerState)


def comparable_config(cfg: RunConfig) -> dict[str, Any]:
    """The part of the configuration a resume must not change (everything but where and how it runs)."""
    return run_folder.comparable_config(config_to_dict(cfg))


def save_checkpoint(run_dir: Path, state: ServerState) -> Path:
    """Write ``state`` to ``run_dir/checkpoint.npz`` atomically (temporary file, fsync, ``os.replace``)."""
    arrays: dict[str, np.ndarray] = {f"weights/{i}": w for i, w in enumerate(state.weights)}
    arrays["ages"] = state.ages
    if state.cache is not None:
        for device, cached in enumerate(state.cache):
            for i, g in enumerate(cached or []):
                arrays[f"cache/{device}/{i}"] = g
    for name, group in (
        ("cache_total", state.cache_total),
        ("gbar", state.gbar),
        ("optimizer_m", state.optimizer.first_moment),
        ("optimizer_v", state.optimizer.second_moment),
    ):
        for i, a in enumerate(group or []):
            arrays[f"{name}/{i}"] = a
    meta = {
        "format": FORMAT,
        "round": state.round,
        "seed": state.seed,
        "num_weights": len(state.weights),
        "cache_devices": None if state.cache is None else [c is not None for c in state.cache],
        "has_cache_total": state.cache_total is not None,
        "has_gbar": state.gbar is not None,
        "optimizer_step": state.optimizer.step,
        "optimizer_moments": [len(state.optimizer.first_moment), len(state.optimizer.second_moment)],
        "sim_time_s": state.sim_time_s,  # float -> JSON keeps all 17 digits
        "rows": [dataclasses.asdict(r) for r in state.rows],
        "config": state.config,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    path = run_dir / CHECKPOINT_FILE
    tmp = run_dir / (CHECKPOINT_FILE + ".tmp")
    with tmp.open("wb") as f:
        savez: Any = np.savez  # numpy's stub types **kwds as its own keyword arguments
        savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(run_dir: Path) -> ServerState:
    """Read ``run_dir/checkpoint.npz`` (``ConfigError`` naming ``resume`` if there is none or it is unreadable)."""
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigError("resume", f"no checkpoint in {run_dir} (checkpoint.every=0, or it stopped before round 1)")
    try:
        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
            if meta.get("format") != FORMAT:
                raise ValueError(f"checkpoint format {meta.get('format')}, this version reads {FORMAT}")
            n = int(meta["num_weights"])
            weights = [z[f"weights/{i}"] for i in range(n)]
            cache = None
            if meta["cache_devices"] is not None:
                cache = [
                    [z[f"cache/{k}/{i}"] for i in range(n)] if present else None
                    for k, present in enumerate(meta["cache_devices"])
                ]
            total = [z[f"cache_total/{i}"] for i in range(n)] if meta["has_cache_total"] else None
            gbar = [z[f"gbar/{i}"] for i in range(n)] if meta["has_gbar"] else None
            ages = z["ages"]
            m_count, v_count = meta["optimizer_moments"]
            optimizer = ServerOptimizerState(
                step=int(meta["optimizer_step"]),
                first_moment=[np.array(z[f"optimizer_m/{i}"]) for i in range(m_count)],
                second_moment=[np.array(z[f"optimizer_v/{i}"]) for i in range(v_count)],
            )
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError("resume", f"cannot read the checkpoint {path}: {exc}") from exc
    return ServerState(
        round=int(meta["round"]),
        seed=int(meta["seed"]),
        weights=weights,
        ages=ages,
        cache=cache,
        cache_total=total,
        gbar=gbar,
        sim_time_s=float(meta["sim_time_s"]),
        optimizer=optimizer,
        rows=[_row(r) for r in meta["rows"]],
        config=meta["config"],
    )


def _row(values: dict[str, Any]) -> RoundRow:
    fields: dict[str, Any] = {k: (math.nan if v is None else v) for k, v in values.items()}
    return RoundRow(**fields)


def check_resumable(cfg: RunConfig) -> None:
    """Refuse (``ConfigError`` naming ``resume``) the runs whose state is not all on the server."""
    if cfg.strategy.memory_friendly:
        raise ConfigError(
            "resume",
            "Algorithm 3 (strategy.memory_friendly=true) keeps each PIU's gradient cache G_k in Flower's "
            "context.state, which a new Flower run starts empty: a resumed run would not match; start it again",
        )
    if cfg.strategy.local_objective == "apfl":
        raise ConfigError(
            "resume",
            "APFL keeps each PIU's personal model in Flower's context.state, which a new Flower run starts "
            "empty: a resumed run would not match; start it again",
        )
    if cfg.algorithm == "sparse_fedavg":
        raise ConfigError("resume", "sparse FedAvg (algorithm=sparse_fedavg) runs are not checkpointed; start it again")


def resume_config(run_dir: Path) -> RunConfig:
    """The saved configuration of the run in ``run_dir``, set to resume it (checked: resumable, has a checkpoint)."""
    run_dir = run_dir.expanduser().resolve()
    path = run_dir / RUN_CONFIG_FILE
    if not path.is_file():
        raise ConfigError("resume", f"{run_dir} is not a run folder (no {RUN_CONFIG_FILE})")
    try:
        values = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError("resume", f"{path} is not valid JSON: {exc}") from exc
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


# ------------------------------------------------------------------------------ the server's parts
def capture(strategy: AmpFlStrategy, recorder: Recorder, cfg: RunConfig, server_round: int) -> ServerState:
    """The state after ``server_round`` (arrays are not copied: they are written out at once)."""
    return ServerState(
        round=server_round,
        seed=cfg.seed,
        weights=list(strategy.weights),
        ages=np.array(strategy.aoi.ages),
        cache=strategy.cache.cached() if strategy.cache is not None else None,
        cache_total=list(strategy.cache.total) if strategy.cache is not None else None,
        gbar=list(strategy.gbar.gbar) if strategy.gbar is not None else None,
        sim_time_s=recorder.sim_time_s,
        optimizer=strategy.server_state,
        rows=list(recorder.writer.rows),
        config=comparable_config(cfg),
    )


def restore(strategy: AmpFlStrategy, recorder: Recorder, state: ServerState) -> None:
    """Put a checkpoint's state into a freshly built strategy and recorder (the metrics rows go to the writer)."""
    strategy.weights = [np.array(w, dtype=np.float32) for w in state.weights]
    strategy.aoi = AoITable.from_array(state.ages, strategy.region_map.layer_sizes)
    if strategy.cache is not None:
        if state.cache is None or state.cache_total is None:
            raise ConfigError("resume", "the checkpoint holds no gradient cache, but this run keeps one")
        strategy.cache.restore(state.cache, state.cache_total)
    if strategy.gbar is not None:
        if state.gbar is None:
            raise ConfigError("resume", "the checkpoint holds no Gbar, but this run keeps one")
        strategy.gbar.gbar = [np.array(g, dtype=np.float64) for g in state.gbar]
    strategy.server_state = ServerOptimizerState(
        state.optimizer.step,
        [m.copy() for m in state.optimizer.first_moment],
        [v.copy() for v in state.optimizer.second_moment],
    )
    recorder.sim_time_s = state.sim_time_s
    recorder.latest_arrays = [w.copy() for w in strategy.weights]


@dataclass
class Checkpointer:
    """The recorder's ``on_row`` hook: save a checkpoint every ``cfg.checkpoint.every`` rounds and after the last."""

    run_dir: Path
    cfg: RunConfig
    strategy: AmpFlStrategy
    recorder: Recorder
    saved_round: int | None = None  # the round of the newest checkpoint on disk

    def __call__(self, server_round: int) -> None:
        every = self.cfg.checkpoint.every
        if server_round == 0 or every == 0:
            return
        if server_round % every and server_round != self.cfg.num_rounds:
            return
        save_checkpoint(self.run_dir, capture(self.strategy, self.recorder, self.cfg, server_round))
        self.saved_round = server_round
