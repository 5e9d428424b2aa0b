"""Reading run folders (``metrics.csv`` + ``summary.json`` [+ ``run_config.json``]) and grouping them.

A run folder is what ``python -m amp_fl`` (Flower) or the in-process loop writes. :func:`load_run`
checks what a comparison needs and raises :class:`RunFolderError` (a ``ValueError``) naming the
folder, the file and the problem: not a folder, not a run (no ``metrics.csv``; with a hint when it
holds run folders), a missing column, a truncated or malformed row, an unreadable ``summary.json``.

Runs of one method over several seeds form a :class:`Group`: by default the runs whose
configuration is the same apart from the seed (and settings that do not change the numbers, see
:data:`IGNORED_KEYS`) and whose dataset actually used is the same; or the runs given one label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from amp_fl.run_folder import (
    METRICS_FILE,
    RUN_CONFIG_FILE,
    SUMMARY_FILE,
    RunFolderError,
    read_columns,
    read_config,
    read_summary,
)

# Config keys (dotted) that say where or how a run was executed, not what it computed: left out of
# the group key. ``seed`` is what varies within a group; ``dataset.*`` location/fallback settings are
# replaced by the dataset actually used (summary.json).
IGNORED_KEYS = (
    "seed",
    "output_dir",
    "verbose",
    "dataset.root",
    "dataset.download",
    "dataset.fallback",
    "strategy.target_accuracy",
    "strategy.eval_batch_size",
    "simulation",
    "deployment.insecure",
    "deployment.root_certificates",
    "deployment.ray_address",
)


@dataclass(frozen=True)
class Run:
    """One run's curves (one entry per evaluated round, round 0 = the initial model) and its metadata."""

    path: Path
    seed: int
    config: dict[str, Any]
    summary: dict[str, Any]
    columns: dict[str, np.ndarray]

    @property
    def rounds(self) -> np.ndarray:
        return self.columns["round"]

    @property
    def sim_time_s(self) -> np.ndarray:
        return self.columns["sim_time_s"]

    @property
    def accuracy(self) -> np.ndarray:
        return self.columns["accuracy"]

    @property
    def dataset_used(self) -> str:
        return str(self.summary.get("dataset_used") or self.config.get("dataset", {}).get("name", "?"))

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "unknown"))

    @property
    def last_round(self) -> int:
        return int(self.rounds[-1])

    @property
    def final_sim_time_s(self) -> float:
        return float(self.sim_time_s[-1])

    @property
    def final_accuracy(self) -> float:
        return float(self.accuracy[-1])

    @property
    def best_accuracy(self) -> float:
        return float(np.nanmax(self.accuracy))


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    """The evaluated rounds of a ``metrics.csv`` (:func:`~amp_fl.run_folder.read_columns`, strict about its shape).

    Rounds the server did not evaluate (evaluation.every_sim_s) carry NaN accuracy: curves, times to
    target and final values are over the evaluated rounds only.
    """
    columns = read_columns(path)
    evaluated = ~np.isnan(columns["accuracy"])
    if not evaluated.any():
        raise RunFolderError(f"{path}: no evaluated round (every accuracy is NaN)")
    return {c: v[evaluated] for c, v in columns.items()}


def _nested_run_folders(path: Path) -> list[Path]:
    return sorted(p.parent for p in path.glob(f"*/{METRICS_FILE}"))


def load_run(path: str | Path) -> Run:
    """Read one run folder; :class:`RunFolderError` names what is wrong with it."""
    folder = Path(path)
    if not folder.exists():
        raise RunFolderError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise RunFolderError(f"{folder}: not a folder (give a run folder, the one holding {METRICS_FILE})")
    if not (folder / METRICS_FILE).is_file():
        nested = _nested_run_folders(folder)
        hint = (
            f"; it holds {len(nested)} run folder(s), pass them instead, e.g. {folder}/*"
            if nested
            else " (is the run still starting, or is this not a run folder?)"
        )
        raise RunFolderError(f"{folder}: not a run folder: no {METRICS_FILE}{hint}")
    if not (folder / SUMMARY_FILE).is_file():
        raise RunFolderError(f"{folder}: no {SUMMARY_FILE} (not written by amp_fl, or the run never started)")
    columns = read_metrics(folder / METRICS_FILE)
    summary = read_summary(folder)
    if (folder / RUN_CONFIG_FILE).is_file():
        config = read_config(folder)
    elif isinstance(summary.get("config"), dict):
        config = summary["config"]
    else:
        raise RunFolderError(f"{folder}: neither {RUN_CONFIG_FILE} nor a 'config' in {SUMMARY_FILE}")
    seed = config.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise RunFolderError(f"{folder}: the run's config has no integer 'seed' (got {seed!r})")
    return Run(path=folder, seed=seed, config=config, summary=summary, columns=columns)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists become tuples so values can be compared and hashed)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = tuple(value) if isinstance(value, list) else value
    return flat


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in IGNORED_KEYS)


def group_key(run: Run) -> tuple[tuple[str, Any], ...]:
    """What must match for two runs to be seeds of one method: config without :data:`IGNORED_KEYS`, dataset used."""
    flat = {k: v for k, v in flatten(run.config).items() if not _ignored(k)}
    flat["dataset_used"] = run.dataset_used
    return tuple(sorted(flat.items(), key=lambda kv: kv[0]))


@dataclass
class Group:
    """Runs of one method (one per seed), under one label."""

    label: str
    runs: list[Run] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def datasets(self) -> list[str]:
        return sorted({r.dataset_used for r in self.runs})


def describe_method(config: Mapping[str, Any]) -> str:
    """A short human name of the FL method a config runs (e.g. ``AMP-FL``, ``Synchronous FL``, ``FedProx``)."""
    flat = flatten(config)
    objective = flat.get("strategy.local_objective", "sgd")
    scheduler = flat.get("scheduling.name", "amp")
    if flat.get("algorithm") == "fedbuff":  # its scheduling group is not read (full_model only names the model)
        return "FedBuff" if objective == "sgd" else f"FedBuff ({objective})"
    if objective == "fedprox":
        return "FedProx"
    if objective == "apfl":
        return "APFL"
    names = {
        "amp": "AMP-FL",
        "full_model": "Synchronous FL",
        "pr": "PR-scheduling",
        "channel": "C-scheduling",
        "random": "random scheduling",
        "paper_route": "AMP-FL (P4 route)",
    }
    if scheduler == "fixed_ratio":
        return f"fixed ratio {flat.get('pruning.ratio')}, {flat.get('scheduling.num_scheduled')} devices"
    return names.get(str(scheduler), str(scheduler))


def _value_text(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def differing_keys(groups_runs: Sequence[Sequence[Run]]) -> list[str]:
    """Config keys (group-key view) whose values are not the same across ``groups_runs``.

    Keys that some of the runs do not have at all (configs written by different versions) are
    listed only when nothing else tells the groups apart.
    """
    keys = [dict(group_key(runs[0])) for runs in groups_runs]
    every = sorted(set().union(*keys)) if keys else []
    differ = [k for k in every if len({_value_text(d.get(k)) for d in keys}) > 1]
    shared = [k for k in differ if all(k in d for d in keys)]
    if shared and len({tuple(_value_text(d[k]) for k in shared) for d in keys}) == len(keys):
        return shared
    return differ


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """The last part of each dotted key where that is unambiguous and telling (not ``name``), else the full key."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 and s != "name" else k) for k, s in zip(keys, last, strict=True)}


def group_runs(runs: Sequence[Run], labels: Sequence[str] | None = None) -> list[Group]:
    """Group ``runs`` into methods, in order of first appearance.

    ``labels`` (one per run): runs with the same label form one group. Otherwise runs with the same
    :func:`group_key` do, labelled by :func:`describe_method`, plus the settings that tell apart
    groups that would share a name. Two runs of one seed in one group is an error (give labels).
    """
    if labels is not None and len(labels) != len(runs):
        raise ValueError(f"labels: {len(labels)} labels for {len(runs)} runs (give one label per run folder)")
    buckets: dict[Any, list[Run]] = {}
    names: dict[Any, str] = {}
    for i, run in enumerate(runs):
        key: Any = labels[i] if labels is not None else group_key(run)
        buckets.setdefault(key, []).append(run)
        if labels is not None:
            names[key] = labels[i]
    if labels is None:
        by_name: dict[str, list[Any]] = {}
        for key, members in buckets.items():
            by_name.setdefault(describe_method(members[0].config), []).append(key)
        for name, keys in by_name.items():
            if len(keys) == 1:
                names[keys[0]] = name
                continue
            differ = differing_keys([buckets[k] for k in keys])
            short = short_names(differ)
            for k in keys:
                values = dict(k)
                detail = ", ".join(f"{short[d]}={_value_text(values.get(d))}" for d in differ)
                names[k] = f"{name} [{detail}]" if detail else name
    groups = [Group(names[k], sorted(members, key=lambda r: r.seed)) for k, members in buckets.items()]
    for group in groups:
        seen: dict[int, Path] = {}
        for run in group.runs:
            if run.seed in seen:
                raise ValueError(
                    f"runs: {seen[run.seed]} and {run.path} are both seed {run.seed} of {group.label!r}; "
                    "a group holds one run per seed (give --labels to tell them apart)"
                )
            seen[run.seed] = run.path
    return groups
