"""Typed, validated run configuration.

The Hydra tree in ``conf/`` composes a plain mapping; :func:`load_config` turns it into these
dataclasses and validates every value at start, so an impossible setting fails before any
process is started, with a message naming the key (``ConfigError``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin, get_type_hints

import numpy as np

from amp_fl.data.datasets import DATASETS
from amp_fl.errors import ConfigError, require
from amp_fl.models import available_models
from amp_fl.scheduling.fixed_ratio import FIXED_RATIO_SELECTIONS
from amp_fl.scheduling.full_model import FULL_MODEL_SELECTIONS
from amp_fl.scheduling.pr_scheduling import PR_ASSIGNMENTS
from amp_fl.strategy.aggregation import COMPENSATION_SCOPES, Compensation
from amp_fl.wireless.config import WirelessConfig

Partition = Literal["iid", "shards"]
CostModel = Literal["paper", "model"]
PARTITION_SCHEMES: tuple[str, ...] = get_args(Partition)
COST_MODELS: tuple[str, ...] = get_args(CostModel)

# Options a scheduler takes beyond (system, seed), by scheduler name, with the values each allows
# (None: any value the option's own check accepts). Keys of ``SchedulingConfig``.
SCHEDULER_OPTIONS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "fixed_ratio": {"num_scheduled": None, "selection": FIXED_RATIO_SELECTIONS},
    "full_model": {"selection": FULL_MODEL_SELECTIONS, "deadline_s": None},
    "pr": {"assignment": PR_ASSIGNMENTS},
}


@dataclass
class DataConfig:
    name: str = "mnist"
    root: str = "data"
    download: bool = True
    # Used only when ``name`` cannot be loaded; the run records the dataset actually used.
    fallback: str | None = None
    partition: str = "shards"
    shards_per_device: int = 2

    def validate(self) -> None:
        require(
            self.name in DATASETS, "dataset.name", f"unknown dataset {self.name!r}; choose from {', '.join(DATASETS)}"
        )
        require(
            self.fallback is None or self.fallback in DATASETS,
            "dataset.fallback",
            f"unknown dataset {self.fallback!r}; choose from {', '.join(DATASETS)} or null",
        )
        require(
            self.partition in PARTITION_SCHEMES,
            "dataset.partition",
            f"unknown scheme {self.partition!r}; choose from {', '.join(PARTITION_SCHEMES)}",
        )
        require(self.shards_per_device >= 1, "dataset.shards_per_device", f"must be >= 1, got {self.shards_per_device}")


@dataclass
class ModelConfig:
    name: str = "cnn"
    # ``paper``: the paper's Q, C and T_max for its models (so the time axis matches the paper);
    # ``model``: Q and C counted from the model itself.
    cost_model: CostModel = "paper"
    t_max_s: float | None = None  # None: the paper's value for cnn / vgg11

    def validate(self) -> None:
        require(
            self.name in available_models(),
            "model.name",
            f"unknown model {self.name!r}; choose from {', '.join(available_models())}",
        )
        require(self.cost_model in COST_MODELS, "model.cost_model", f"choose from {', '.join(COST_MODELS)}")
        require(self.t_max_s is None or self.t_max_s > 0, "model.t_max_s", f"must be > 0, got {self.t_max_s}")


@dataclass
class TrainConfig:
    learning_rate: float = 0.05
    local_steps: int = 8
    batch_size: int = 64

    def validate(self) -> None:
        require(
            self.learning_rate > 0 and math.isfinite(self.learning_rate),
            "train.learning_rate",
            f"must be a positive number, got {self.learning_rate}",
        )
        require(self.local_steps >= 1, "train.local_steps", f"must be >= 1, got {self.local_steps}")
        require(self.batch_size >= 1, "train.batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass
class PruningConfig:
    policy: str = "aoi"
    # Pruning ratio beta of every sub-model under ``scheduling.name=fixed_ratio`` (Figs. 2-5);
    # the other schedulers size each sub-model by Eq. (16).
    ratio: float = 0.1

    def validate(self) -> None:
        from amp_fl.pruning.policies import available_policies

        require(
            self.policy in available_policies(),
            "pruning.policy",
            f"unknown policy {self.policy!r}; choose from {', '.join(available_policies())}",
        )
        require(0.0 <= self.ratio < 1.0, "pruning.ratio", f"must be in [0, 1), got {self.ratio}")


@dataclass
class SchedulingConfig:
    """Which scheduler runs, and its options (each accepted only by the schedulers that take it).

    ``num_scheduled``: devices per round (``fixed_ratio``, <= RBs). ``selection``: how devices are
    picked (``fixed_ratio``: aoi | random; ``full_model``: rate | random). ``deadline_s``: round
    deadline of Synchronous FL (``full_model``; null waits for the slowest device). ``assignment``:
    ``pr``'s device/RB rule (greedy | matching). Null means the scheduler's own default.
    """

    name: str = "amp"
    num_scheduled: int | None = None
    selection: str | None = None
    deadline_s: float | None = None
    assignment: str | None = None

    def options(self, pruning_ratio: float) -> dict[str, Any]:
        """Keyword options for ``build_scheduler(self.name, ...)``: the set (non-null) ones it takes."""
        options: dict[str, Any] = {"pruning_ratio": pruning_ratio} if self.name == "fixed_ratio" else {}
        for key in SCHEDULER_OPTIONS.get(self.name, {}):
            value = getattr(self, key)
            if value is not None:
                options[key] = value
        return options

    def validate(self) -> None:
        from amp_fl.scheduling import available_schedulers

        require(
            self.name in available_schedulers(),
            "scheduling.name",
            f"unknown scheduler {self.name!r}; choose from {', '.join(available_schedulers())}",
        )
        accepted = SCHEDULER_OPTIONS.get(self.name, {})
        for key in ("num_scheduled", "selection", "deadline_s", "assignment"):
            value = getattr(self, key)
            if value is None:
                continue
            takers = sorted(name for name, opts in SCHEDULER_OPTIONS.items() if key in opts)
            require(
                key in accepted,
                f"scheduling.{key}",
                f"scheduler {self.name!r} does not take this option (taken by: {', '.join(takers)}); set it to null",
            )
            allowed = accepted[key]
            require(
                allowed is None or value in allowed,
                f"scheduling.{key}",
                f"scheduler {self.name!r} accepts {', '.join(allowed or ())}, got {value!r}",
            )
        require(
            self.num_scheduled is None or self.num_scheduled >= 1,
            "scheduling.num_scheduled",
            f"must be >= 1, got {self.num_scheduled}",
        )
        require(
            self.deadline_s is None or (math.isfinite(self.deadline_s) and self.deadline_s > 0),
            "scheduling.deadline_s",
            f"must be a positive number of seconds or null, got {self.deadline_s}",
        )
        require(
            self.name != "fixed_ratio" or self.num_scheduled is not None,
            "scheduling.num_scheduled",
            "the fixed_ratio scheduler needs the number of devices per round",
        )


@dataclass
class StrategyConfig:
    compensation: Compensation = "all"
    memory_friendly: bool = False
    target_accuracy: float = 0.9
    eval_batch_size: int = 1000

    def validate(self) -> None:
        require(
            self.compensation in COMPENSATION_SCOPES,
            "strategy.compensation",
            f"choose from {', '.join(COMPENSATION_SCOPES)}, got {self.compensation!r}",
        )
        require(
            0.0 < self.target_accuracy <= 1.0,
            "strategy.target_accuracy",
            f"must be in (0, 1], got {self.target_accuracy}",
        )
        require(self.eval_batch_size >= 1, "strategy.eval_batch_size", f"must be >= 1, got {self.eval_batch_size}")
        require(
            not (self.memory_friendly and self.compensation != "all"),
            "strategy.memory_friendly",
            "Algorithm 3 reproduces compensation=all only; set strategy.compensation=all",
        )


@dataclass
class SimulationConfig:
    # CPUs per ClientApp actor: 1 on a 2-core machine gives two Ray actors training in parallel.
    client_cpus: int = 1
    client_gpus: float = 0.0
    # Seconds to wait for all SuperNodes to come online before round 1.
    node_wait_timeout_s: float = 120.0

    def validate(self) -> None:
        require(self.client_cpus > 0, "simulation.client_cpus", f"must be > 0, got {self.client_cpus}")
        require(self.client_gpus >= 0, "simulation.client_gpus", f"must be >= 0, got {self.client_gpus}")
        require(self.node_wait_timeout_s > 0, "simulation.node_wait_timeout_s", "must be > 0")


@dataclass
class DeploymentConfig:
    """Run on an existing SuperLink (real SuperNodes, e.g. boards) instead of a local simulation."""

    superlink: str | None = None  # "host:port" of the SuperLink's Control API; None: local simulation
    insecure: bool = True
    root_certificates: str | None = None  # CA certificate for a TLS SuperLink (then insecure=false)

    def validate(self) -> None:
        if self.superlink is None:
            return
        host, _, port = self.superlink.rpartition(":")
        require(
            bool(host) and port.isdigit() and 0 < int(port) < 65536,
            "deployment.superlink",
            f"expected host:port, got {self.superlink!r}",
        )
        require(
            self.insecure or self.root_certificates is not None,
            "deployment.root_certificates",
            "a TLS connection (insecure=false) needs the CA certificate",
        )


@dataclass
class RunConfig:
    seed: int = 0
    num_rounds: int = 200
    output_dir: str = "runs/default"
    # Stream Flower's full log to the terminal too (it is always kept in the run folder's flower.log).
    verbose: bool = False
    dataset: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    wireless: WirelessConfig = field(default_factory=WirelessConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    scheduling: SchedulingConfig = field(default_factory=SchedulingConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    deployment: DeploymentConfig = field(default_factory=DeploymentConfig)

    @property
    def num_devices(self) -> int:
        return self.wireless.num_devices

    def validate(self) -> RunConfig:
        require(self.num_rounds >= 1, "num_rounds", f"must be >= 1, got {self.num_rounds}")
        require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        for section in (
            self.dataset,
            self.model,
            self.train,
            self.wireless,
            self.pruning,
            self.scheduling,
            self.strategy,
            self.simulation,
            self.deployment,
        ):
            section.validate()
        if self.scheduling.num_scheduled is not None:
            require(
                self.scheduling.num_scheduled <= min(self.wireless.num_rbs, self.wireless.num_devices),
                "scheduling.num_scheduled",
                f"{self.scheduling.num_scheduled} devices per round but only {self.wireless.num_rbs} RBs "
                f"and {self.wireless.num_devices} devices",
            )
        return self


def _build(cls: type, values: Any, prefix: str) -> Any:
    """Recursively build dataclass ``cls`` from a mapping, rejecting unknown keys by name."""
    if not isinstance(values, dict):
        raise ConfigError(prefix or "<root>", f"expected a mapping, got {type(values).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}", f"unknown key; known keys: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in values.items():
        hint = hints[key]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check scalar types (ints may stand for floats; None only where the field allows it; Literal choices)."""
    if get_origin(hint) is Literal:
        choices = get_args(hint)
        require(value in choices, key, f"choose from {', '.join(map(str, choices))}, got {value!r}")
        return value
    if get_origin(hint) in (tuple, list):
        require(isinstance(value, list | tuple), key, f"expected a list, got {value!r}")
        item = get_args(hint)[0]
        return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    allowed = get_args(hint) or (hint,)
    if value is None:
        require(type(None) in allowed, key, "must not be null")
        return None
    if isinstance(value, bool):
        require(bool in allowed, key, f"expected {hint}, got a boolean")
        return value
    if float in allowed and isinstance(value, int | float):
        return float(value)
    for typ in (int, str):
        if typ in allowed and isinstance(value, typ):
            return value
    raise ConfigError(key, f"expected {hint}, got {value!r}")


def load_config(values: dict[str, Any]) -> RunConfig:
    """Build and validate a :class:`RunConfig` from a plain mapping (e.g. a resolved Hydra config)."""
    return _build(RunConfig, values, "").validate()


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def check_partition(cfg: RunConfig, labels: np.ndarray) -> list[np.ndarray]:
    """Partition the training labels as configured; an impossible split names the key to change.

    Run before any Flower process starts (the launcher's preflight), so a data-dependent mistake
    (more shards than samples) ends in one ``ConfigError`` line instead of a failed run.
    """
    from amp_fl.data.partition import partition

    num_samples, k = len(labels), cfg.num_devices
    require(num_samples >= k, "wireless.num_devices", f"{k} devices but the training set has {num_samples} samples")
    if cfg.dataset.partition == "shards":
        shards = k * cfg.dataset.shards_per_device
        require(
            shards <= num_samples,
            "dataset.shards_per_device",
            f"{k} devices x {cfg.dataset.shards_per_device} shards = {shards} shards but only {num_samples} samples",
        )
    try:
        return partition(labels, k, cfg.dataset.partition, cfg.dataset.shards_per_device, cfg.seed)
    except ValueError as exc:
        raise ConfigError("dataset.shards_per_device", str(exc)) from exc


def check_keep_counts(cfg: RunConfig, layer_sizes: Sequence[int]) -> None:
    """Fixed-ratio mode: ``pruning.ratio`` must leave every layer of the model at least one region."""
    if cfg.scheduling.name != "fixed_ratio":
        return
    from amp_fl.pruning.counts import keep_counts

    counts = keep_counts(np.float64(1.0 - cfg.pruning.ratio), layer_sizes)
    empty = [int(size) for size, count in zip(layer_sizes, counts, strict=True) if count < 1]
    require(
        not empty,
        "pruning.ratio",
        f"{cfg.pruning.ratio} leaves a layer of {empty[0] if empty else 0} regions of model {cfg.model.name!r} empty",
    )
