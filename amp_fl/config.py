"""Typed, validated run configuration.

The Hydra tree in ``conf/`` composes a plain mapping; :func:`load_config` turns it into these
dataclasses and validates every value at start, so an impossible setting fails before any
process is started, with a message naming the key (``ConfigError``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin, get_type_hints

from amp_fl.data.datasets import DATASETS
from amp_fl.errors import ConfigError, require
from amp_fl.models import available_models
from amp_fl.wireless.config import WirelessConfig

PARTITION_SCHEMES = ("iid", "shards")
COMPENSATION_SCOPES = ("all", "scheduled", "none")
COST_MODELS = ("paper", "model")


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
    cost_model: str = "paper"
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
    # the other schedulers size each sub-model by eq. (16).
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
    name: str = "amp"
    # Devices per round for the fixed-ratio mode and the baselines that need a count (<= RBs).
    num_scheduled: int | None = None

    def validate(self) -> None:
        from amp_fl.scheduling import available_schedulers

        require(
            self.name in available_schedulers(),
            "scheduling.name",
            f"unknown scheduler {self.name!r}; choose from {', '.join(available_schedulers())}",
        )
        require(
            self.num_scheduled is None or self.num_scheduled >= 1,
            "scheduling.num_scheduled",
            f"must be >= 1, got {self.num_scheduled}",
        )


@dataclass
class StrategyConfig:
    compensation: str = "all"
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
        if self.scheduling.name == "fixed_ratio":
            require(
                self.scheduling.num_scheduled is not None,
                "scheduling.num_scheduled",
                "the fixed_ratio scheduler needs the number of devices per round",
            )
        if self.scheduling.num_scheduled is not None:
            require(
                self.scheduling.name == "fixed_ratio",
                "scheduling.num_scheduled",
                f"only the fixed_ratio scheduler takes a device count; {self.scheduling.name!r} decides it itself",
            )
            require(
                self.scheduling.num_scheduled <= self.wireless.num_rbs,
                "scheduling.num_scheduled",
                f"{self.scheduling.num_scheduled} devices per round but only {self.wireless.num_rbs} RBs",
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
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check scalar types (ints may stand for floats; None only where the field allows it)."""
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
