"""The checks before any process of a run starts: what only the data, the model or a checkpoint can tell.

:func:`preflight` resolves the dataset (downloading it, or falling back, once, in the launching
process) and checks the partition and the keep counts against the real data and model;
:func:`check_resume` checks that a resume names its own run folder and that the checkpoint there can
be continued by this configuration. Both raise :class:`~amp_fl.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import os
from pathlib import Path

from amp_fl.config import RunConfig, check_keep_counts, check_partition
from amp_fl.data.datasets import ResolvedDataset, load_dataset, resolve_dataset
from amp_fl.data.validation import split_validation
from amp_fl.errors import ConfigError
from amp_fl.pruning.maps import region_map


def preflight(cfg: RunConfig, batched: bool = False) -> ResolvedDataset:
    """Check what can only be checked with data (e.g. enough samples for the shards); return the dataset used.

    Runs in the launching process, so a download (or a failed one, and its fallback) happens once,
    before any client starts; the ServerApp reuses the outcome (see
    :func:`amp_fl.launch.launcher.write_run_config`). ``batched``: the engine trains the clients in
    one batched pass (the in-process engine's ``train.batched_clients``), so the model's layers must
    be ones the pass can group.
    """
    root = str(Path(cfg.dataset.root).expanduser().resolve())
    resolved = resolve_dataset(cfg.dataset.name, root, cfg.dataset.download, cfg.dataset.fallback)
    dataset = load_dataset(resolved.used, root, cfg.dataset.download)
    pool, _ = split_validation(dataset.train.labels, cfg.dataset.validation_fraction, cfg.seed)
    check_partition(cfg, dataset.train.labels[pool])  # ConfigError naming the key (e.g. dataset.shards_per_device)
    try:  # builds the model on the data's shape: a model the data does not fit fails here, not in the ServerApp
        regions = region_map(cfg.model.name, dataset.input_shape, dataset.num_classes)
    except (ValueError, RuntimeError) as exc:
        c, h, w = dataset.input_shape
        raise ConfigError(
            "model", f"{cfg.model.name} does not fit dataset={resolved.used} ({c}x{h}x{w} images): {exc}"
        ) from exc
    check_keep_counts(cfg, regions.layer_sizes)  # ConfigError naming pruning.ratio
    if batched:
        _check_groupable(cfg.model.name, dataset.input_shape, dataset.num_classes)
    return resolved


def _check_groupable(model_name: str, input_shape: tuple[int, int, int], num_classes: int) -> None:
    """The batched pass can group ``model_name``'s layers (else one error before round 1, naming a layer)."""
    import torch

    from amp_fl.client.grouped import check_groupable
    from amp_fl.models import build_model

    with torch.device("meta"):
        model = build_model(model_name, num_classes=num_classes, input_shape=input_shape)
    try:
        check_groupable(model)
    except ValueError as exc:
        raise ConfigError("train.batched_clients", f"model {model_name}: {exc}") from exc


def check_flower_engine(cfg: RunConfig) -> None:
    """Flower's engines refuse what only the in-process engine does (the launcher's check, before any import).

    ``train.batched_clients`` trains a round's clients in one pass, which needs them in one
    process; Flower runs one ClientApp per message, so the setting would be silently ignored.
    """
    if cfg.train.batched_clients:
        raise ConfigError(
            "train.batched_clients",
            "Flower's engines run one ClientApp per message; only the in-process engine (a campaign's "
            "workers, amp_fl.launch.inprocess) trains a round's clients in one pass: set train.batched_clients=false",
        )


def check_machine(cfg: RunConfig) -> None:
    """A local simulation asks this machine for no more CPUs per client than it has (Ray would start no actor).

    The launcher's check (the in-process engine starts no actors); a Ray cluster named by
    ``deployment.ray_address`` or ``RAY_ADDRESS`` has resources this machine cannot see.
    """
    if cfg.deployment.superlink is not None or cfg.deployment.ray_address is not None or os.environ.get("RAY_ADDRESS"):
        return  # the clients run elsewhere: that cluster's resources are not known here
    cpus = len(os.sched_getaffinity(0))
    if cfg.simulation.client_cpus > cpus:
        raise ConfigError(
            "simulation.client_cpus",
            f"{cfg.simulation.client_cpus} CPUs per client but this machine offers {cpus}: no client could start",
        )


def check_resume(cfg: RunConfig, run_dir: Path) -> None:
    """Before Flower starts: ``cfg.resume`` names ``run_dir``, whose checkpoint this configuration can continue."""
    from amp_fl.server.checkpoint import check_resumable, check_state_matches, load_checkpoint

    if Path(str(cfg.resume)).expanduser().resolve() != run_dir:
        raise ConfigError("resume", f"{cfg.resume} is not the run folder {run_dir} (a run resumes in its own folder)")
    check_resumable(cfg)
    state = load_checkpoint(run_dir)
    check_state_matches(cfg, state)
    if state.round >= cfg.num_rounds:
        raise ConfigError("resume", f"nothing to resume: the checkpoint in {run_dir} is after the last round")
