"""Typed, validated run configuration.

The Hydra tree in ``conf/`` composes a plain mapping; :func:`load_config` turns it into these
dataclasses and validates every value at start, so an impossible setting fails before any
process is started, with a message naming the key (``ConfigError``).

Where the object that uses a section's values checks them itself (``ota`` is
:class:`~amp_fl.wireless.over_the_air.OtaSettings`, ``failures`` is
:class:`~amp_fl.protocol.setup.FailureSettings`, the ``strategy.server_*`` keys build
:class:`~amp_fl.strategy.server_optimizer.ServerOptimizerSettings`), that check is the only one:
this module builds the object and turns its ``ArgumentError`` into a ``ConfigError`` naming the key.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import numpy as np

from amp_fl.client.settings import TrainSettings, check_alpha, check_proximal_mu
from amp_fl.data.datasets import DATASETS
from amp_fl.errors import ArgumentError, ConfigError, require
from amp_fl.health import HealthConfig
from amp_fl.models import available_models
from amp_fl.protocol.provenance import CHANNEL_MODES, ChannelMode
from amp_fl.protocol.setup import LOCAL_OBJECTIVES, FailureSettings, LocalObjective, TrainDevice
from amp_fl.pruning.magnitude import PRUNING_METHODS, PruningMethod, imp_steps_needed, rewind_round_of
from amp_fl.scheduling.fixed_ratio import FIXED_RATIO_SELECTIONS
from amp_fl.scheduling.full_model import FULL_MODEL_SELECTIONS
from amp_fl.scheduling.levels import DEFAULT_LEVELS, LEVEL_ASSIGNMENTS, check_levels, check_levels_fit
from amp_fl.scheduling.pr_scheduling import PR_ASSIGNMENTS
from amp_fl.strategy.aggregation import COMPENSATION_SCOPES, Compensation, FreshMean, check_fresh_rules
from amp_fl.strategy.buffered import FedBuffSettings
from amp_fl.strategy.server_optimizer import ServerOptimizerName, ServerOptimizerSettings, server_learning_rate
from amp_fl.strategy.staleness import CACHE_GRANULARITIES, CacheGranularity
from amp_fl.wireless.config import WirelessConfig
from amp_fl.wireless.over_the_air import OtaSettings
from amp_fl.wireless.t_max import TmaxSchedule, TmaxShape

Partition = Literal["iid", "shards"]
CostModel = Literal["paper", "model"]
PARTITION_SCHEMES: tuple[str, ...] = get_args(Partition)
COST_MODELS: tuple[str, ...] = get_args(CostModel)

Algorithm = Literal["amp_fl", "sparse_fedavg", "fedbuff"]
"""The FL algorithm the server runs: AMP-FL's strategy (also Synchronous FL, FedProx, APFL, which differ
only in its ``strategy`` / ``scheduling`` settings), sparse FedAvg with magnitude pruning, or FedBuff
(buffered asynchronous aggregation, the ``fedbuff`` section)."""
Aggregation = Literal["digital", "over_the_air"]
"""How the replies reach the aggregator: each PIU's exactly (``digital``), or their analog superposition
(``over_the_air``, with the ``ota`` section's channel). Either algorithm takes either, so it is its own key."""

T = TypeVar("T")

# Options a scheduler takes beyond (system, seed), by scheduler name, with the values each allows
# (None: any value the option's own check accepts). Keys of ``SchedulingConfig``.
SCHEDULER_OPTIONS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "fixed_ratio": {"num_scheduled": None, "selection": FIXED_RATIO_SELECTIONS},
    "full_model": {"selection": FULL_MODEL_SELECTIONS, "deadline_s": None},
    "pr": {"assignment": PR_ASSIGNMENTS},
    "levels": {"levels": None, "assignment": LEVEL_ASSIGNMENTS, "selection": FULL_MODEL_SELECTIONS},
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
    # Share of the training set held out (stratified, seeded) before partitioning, evaluated each round
    # as val_accuracy / val_loss; tuning chooses on it, never on the test set. 0: none held out.
    validation_fraction: float = 0.0

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
        require(
            0.0 <= self.validation_fraction < 1.0,
            "dataset.validation_fraction",
            f"must be in [0, 1), got {self.validation_fraction}",
        )


@dataclass
class ModelConfig:
    name: str = "cnn"
    # ``paper``: the paper's Q, C and T_max for its models (so the time axis matches the paper);
    # ``model``: Q and C counted from the model itself.
    cost_model: CostModel = "paper"
    t_max_s: float | None = None  # None: the paper's value for cnn / vgg11
    # HeteroFL's static BatchNorm (no running statistics; batch statistics at evaluation too); no-op
    # for models without BatchNorm (the paper's cnn and vgg11).
    static_bn: bool = False
    # A T_max that changes over rounds (beyond the paper; amp_fl/wireless/t_max.py): constant (t_max_s
    # every round) | linear (t_max_s in round 1 to t_max_end_s in round 1 + t_max_rounds) | step
    # (t_max_s up to round t_max_rounds, t_max_end_s after).
    t_max_schedule: TmaxShape = "constant"
    t_max_end_s: float | None = None
    t_max_rounds: int | None = None

    def t_max_plan(self, start_s: float) -> TmaxSchedule | None:
        """The T_max schedule from ``start_s`` (the run's T_max); ``None`` for a constant one."""
        schedule = checked(
            lambda: TmaxSchedule(self.t_max_schedule, start_s, self.t_max_end_s, self.t_max_rounds),
            {
                "shape": "model.t_max_schedule",
                "start_s": "model.t_max_s",
                "end_s": "model.t_max_end_s",
                "rounds": "model.t_max_rounds",
            },
        )
        return None if schedule.shape == "constant" else schedule

    def validate(self) -> None:
        self.t_max_plan(self.t_max_s if self.t_max_s is not None else 1.0)  # the paper's T_max is > 0 too
        require(
            self.name in available_models(),
            "model.name",
            f"unknown model {self.name!r}; choose from {', '.join(available_models())}",
        )
        require(self.cost_model in COST_MODELS, "model.cost_model", f"choose from {', '.join(COST_MODELS)}")
        require(self.t_max_s is None or self.t_max_s > 0, "model.t_max_s", f"must be > 0, got {self.t_max_s}")


@dataclass
class TrainConfig:
    """Local training. ``device``: where clients train and the server evaluates (auto | cpu | cuda | mps;
    each process resolves it on its own hardware). ``batched_clients``: the in-process engine trains a
    round's scheduled clients in one batched pass (:mod:`amp_fl.client.batched`); equal to one-by-one
    training within float tolerance only, so in-process and Flower metrics agree exactly only with it off.
    """

    learning_rate: float = 0.05
    local_steps: int = 8
    batch_size: int = 64
    device: TrainDevice = "auto"
    batched_clients: bool = False

    def validate(self) -> None:
        """Checked by the device's :class:`~amp_fl.client.settings.TrainSettings` (the object that uses them)."""
        checked(
            lambda: TrainSettings(self.learning_rate, self.local_steps, self.batch_size, device=self.device),
            {name: f"train.{name}" for name in ("learning_rate", "local_steps", "batch_size", "device")},
        )


@dataclass
class PruningConfig:
    policy: str = "aoi"
    # Pruning ratio beta of every sub-model under ``scheduling.name=fixed_ratio`` (Figs. 2-5);
    # the other schedulers size each sub-model by Eq. (16).
    ratio: float = 0.1
    # HeteroFL's Scaler (docs/peer-methods.md): in training, divide every pruned layer's output by its
    # kept fraction (inverted dropout); the clients build their sub-models with it (model tag ``+scaler``).
    scaler: bool = False

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
    ``pr``'s device/RB rule (greedy | matching); ``levels``' level rule (fixed | channel). ``levels``:
    the keep fractions of scheduler ``levels`` (HeteroFL's width levels, e.g. [1.0, 0.5, 0.25]).
    Null (or an empty list of levels) means the scheduler's own default.
    """

    name: str = "amp"
    num_scheduled: int | None = None
    selection: str | None = None
    deadline_s: float | None = None
    assignment: str | None = None
    levels: tuple[float, ...] = ()
    # Beyond the paper (amp_fl/scheduling/spare_steps.py): a device with time to spare under T_max at its
    # keep ratio runs more local steps, up to this many; null: train.local_steps for every device.
    max_local_steps: int | None = None

    def options(self, pruning_ratio: float) -> dict[str, Any]:
        """Keyword options for ``build_scheduler(self.name, ...)``: the set (non-null) ones it takes."""
        options: dict[str, Any] = {"pruning_ratio": pruning_ratio} if self.name == "fixed_ratio" else {}
        for key in SCHEDULER_OPTIONS.get(self.name, {}):
            value = getattr(self, key)
            if value is not None and value != ():
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
        for key in ("num_scheduled", "selection", "deadline_s", "assignment", "levels"):
            value = getattr(self, key)
            if value is None or value == ():
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
        if self.levels:
            checked(lambda: check_levels(self.levels), {"levels": "scheduling.levels"})
        require(
            self.name != "fixed_ratio" or self.num_scheduled is not None,
            "scheduling.num_scheduled",
            "the fixed_ratio scheduler needs the number of devices per round",
        )


@dataclass
class StrategyConfig:
    """The server's aggregation and the FL method's local objective.

    ``local_objective``: what each device minimises, ``sgd`` (AMP-FL, Synchronous FL), ``fedprox``
    (needs ``proximal_mu`` >= 0) or ``apfl`` (needs ``apfl_alpha`` in [0, 1] and full-model
    scheduling). ``personal_eval_interval``: every this many rounds (and at the last) each device
    scores its personalised model on its own label distribution (``personal_accuracy`` in
    metrics.csv); null never.

    Beyond the paper (docs/tuning.md):
    ``staleness_decay``: gamma in (0, 1] of ``compensation=discounted`` (a cache entry of age a
    weighs gamma^a; 1 = ``all``). ``server_optimizer``: ``sgd`` (the paper's step), ``momentum`` or
    ``adam`` on the aggregated direction; ``server_lr``: its learning rate (null: the clients'
    ``train.learning_rate``; adam needs its own); ``server_momentum``: momentum's beta and Adam's
    b1; ``server_beta2``, ``server_eps``: Adam's b2 and epsilon.
    """

    compensation: Compensation = "all"
    memory_friendly: bool = False
    target_accuracy: float = 0.9
    eval_batch_size: int = 1000
    local_objective: LocalObjective = "sgd"
    proximal_mu: float | None = None
    apfl_alpha: float | None = None
    # fixed: APFL's alpha stays apfl_alpha; adaptive: apfl_alpha is each device's initial alpha, moved
    # by its gradient every local step with step size train.learning_rate (Deng et al.), clipped to [0, 1].
    apfl_alpha_mode: Literal["fixed", "adaptive"] = "fixed"
    personal_eval_interval: int | None = None
    # Reject a reply whose upload's L2 norm exceeds this (a board sending garbage); null: any finite norm.
    max_update_norm: float | None = None
    # Scale a reply whose upload's L2 norm exceeds this down to it (a guard against divergence); null: off.
    clip_update_norm: float | None = None
    # Seconds the server waits for the round's replies (Flower's send_and_receive timeout); a
    # scheduled PIU that has not replied by then counts as failed ("timeout") for that round.
    reply_timeout_s: float = 600.0
    staleness_decay: float = 1.0
    # What an upload refreshes in its device's cached gradient (Eq. (2)): entry (the entries its
    # sub-model held, the project's default) | region (every kept region whole, the paper's reading;
    # docs/fidelity.md).
    cache_granularity: CacheGranularity = "entry"
    server_optimizer: ServerOptimizerName = "sgd"
    server_lr: float | None = None
    server_momentum: float = 0.9
    server_beta2: float = 0.999
    server_eps: float = 1e-8
    # Per-entry rules (docs/peer-methods.md): scope none's divisor, scheduled (|S_t|, the paper) | holders
    # (HeteroFL); FedStale's beta on the cached gradients of scope all (1.0: Eq. (2)).
    fresh_mean: FreshMean = "scheduled"
    stale_weight: float = 1.0

    def validate(self) -> None:
        rules = (self.compensation, self.fresh_mean, self.stale_weight, self.memory_friendly)
        checked(
            lambda: check_fresh_rules(*rules),
            {"fresh_mean": "strategy.fresh_mean", "stale_weight": "strategy.stale_weight"},
        )
        self._validate_objective()
        self._validate_server()
        require(
            self.max_update_norm is None or (math.isfinite(self.max_update_norm) and self.max_update_norm > 0),
            "strategy.max_update_norm",
            f"must be a finite number > 0 or null, got {self.max_update_norm}",
        )
        require(
            self.clip_update_norm is None or (math.isfinite(self.clip_update_norm) and self.clip_update_norm > 0),
            "strategy.clip_update_norm",
            f"must be a finite number > 0 or null, got {self.clip_update_norm}",
        )
        require(
            math.isfinite(self.reply_timeout_s) and self.reply_timeout_s > 0,
            "strategy.reply_timeout_s",
            f"must be a finite number of seconds > 0, got {self.reply_timeout_s}",
        )
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
        require(
            self.cache_granularity in CACHE_GRANULARITIES,
            "strategy.cache_granularity",
            f"choose from {', '.join(CACHE_GRANULARITIES)}, got {self.cache_granularity!r}",
        )
        require(
            self.cache_granularity == "entry" or (self.compensation != "none" and not self.memory_friendly),
            "strategy.cache_granularity",
            "region refreshes the server's gradient cache: compensation=none and memory_friendly keep none there",
        )

    def _validate_server(self) -> None:
        """Staleness decay (the server optimiser's keys are checked by its settings: :meth:`server_settings`)."""
        require(
            0.0 < self.staleness_decay <= 1.0,
            "strategy.staleness_decay",
            f"must be in (0, 1], got {self.staleness_decay}",
        )
        require(
            self.staleness_decay == 1.0 or self.compensation == "discounted",
            "strategy.staleness_decay",
            f"only compensation=discounted reads it (got compensation={self.compensation}); leave it at 1.0",
        )

    def server_settings(self, learning_rate: float) -> ServerOptimizerSettings:
        """The server optimiser's settings, ``learning_rate`` the clients' eta (the default of ``server_lr``).

        Raises ``ConfigError`` naming the ``strategy.server_*`` key that its own check rejects.
        """
        return checked(
            lambda: ServerOptimizerSettings(
                self.server_optimizer,
                server_learning_rate(self.server_optimizer, self.server_lr, learning_rate),
                momentum=self.server_momentum,
                betas=(self.server_momentum, self.server_beta2),
                eps=self.server_eps,
            ),
            SERVER_OPTIMIZER_KEYS,
        )

    def _validate_objective(self) -> None:
        require(
            self.local_objective in LOCAL_OBJECTIVES,
            "strategy.local_objective",
            f"choose from {', '.join(LOCAL_OBJECTIVES)}, got {self.local_objective!r}",
        )
        for key, value, taker in (
            ("proximal_mu", self.proximal_mu, "fedprox"),
            ("apfl_alpha", self.apfl_alpha, "apfl"),
        ):
            if self.local_objective == taker:
                require(value is not None, f"strategy.{key}", f"local_objective={taker} needs it (e.g. method={taker})")
            else:
                require(
                    value is None,
                    f"strategy.{key}",
                    f"only local_objective={taker} takes it (not {self.local_objective}); set it to null",
                )
        mu, alpha = self.proximal_mu, self.apfl_alpha  # the values: checked as the device's objective checks them
        if mu is not None:
            checked(lambda: check_proximal_mu(mu), {"proximal_mu": "strategy.proximal_mu"})
        if alpha is not None:
            checked(lambda: check_alpha(alpha), {"alpha": "strategy.apfl_alpha"})
        require(
            self.apfl_alpha_mode in ("fixed", "adaptive"),
            "strategy.apfl_alpha_mode",
            f"choose from fixed, adaptive, got {self.apfl_alpha_mode!r}",
        )
        require(
            self.apfl_alpha_mode == "fixed" or self.local_objective == "apfl",
            "strategy.apfl_alpha_mode",
            f"only local_objective=apfl adapts alpha (not {self.local_objective}); leave it fixed",
        )
        require(
            self.personal_eval_interval is None or self.personal_eval_interval >= 1,
            "strategy.personal_eval_interval",
            f"must be >= 1 round or null, got {self.personal_eval_interval}",
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
    # ``measured``: devices that report ``uplink-rate-bps`` are scheduled with that rate (the others
    # with simulated Rayleigh fading); ``simulated``: Rayleigh fading for every device.
    channel: ChannelMode = "measured"
    # Simulation only: the address of a running Ray cluster (``ray start --head``) to run the
    # ClientApp actors on, e.g. "10.0.0.2:6379"; None: a Ray instance on this machine.
    ray_address: str | None = None

    def validate(self) -> None:
        require(
            self.channel in CHANNEL_MODES,
            "deployment.channel",
            f"choose from {', '.join(CHANNEL_MODES)}, got {self.channel!r}",
        )
        require(
            self.ray_address is None or self.superlink is None,
            "deployment.ray_address",
            "a Ray cluster runs simulations; a run on a SuperLink (deployment.superlink) uses its SuperNodes",
        )
        if self.ray_address is not None:
            host, _, port = self.ray_address.removeprefix("ray://").rpartition(":")
            require(
                bool(host) and port.isdigit() and 0 < int(port) < 65536,
                "deployment.ray_address",
                f"expected host:port of the Ray head (GCS), got {self.ray_address!r}",
            )
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
class SparseFedAvgConfig:
    """Sparse FedAvg with global unstructured magnitude pruning (the OTA-FL / IMP paper's setting), read
    with ``algorithm=sparse_fedavg`` (:mod:`amp_fl.strategy.sparse_fedavg`; the ``strategy``,
    ``scheduling`` and ``pruning`` sections are then unused).

    ``method``: ``imp`` (lottery-ticket IMP: every ``interval`` rounds from ``first_round`` on, prune
    ``rate`` of the remaining conv/linear weights by global magnitude until ``target``, rewinding the
    survivors each time), ``gradual`` (the same schedule, no rewinding) or ``one_shot`` (prune to
    ``target`` after ``first_round``); ``first_round`` 0 prunes the initial model. ``rewind_round``: at
    every IMP step, reset the survivors to the global model after that round (null: 0, the initial
    model; read by ``imp`` only: :attr:`rewind_to`). ``participation``: fraction of the
    PIUs that train each round (1: full participation).
    """

    method: PruningMethod = "imp"
    target: float = 0.0
    rate: float = 0.2
    first_round: int = 5
    interval: int = 5
    rewind_round: int | None = None
    participation: float = 1.0

    def validate(self) -> None:
        require(
            self.method in PRUNING_METHODS,
            "sparse_fedavg.method",
            f"choose from {', '.join(PRUNING_METHODS)}, got {self.method!r}",
        )
        require(0.0 <= self.target < 1.0, "sparse_fedavg.target", f"must be in [0, 1), got {self.target}")
        require(0.0 < self.rate <= 1.0, "sparse_fedavg.rate", f"must be in (0, 1], got {self.rate}")
        require(self.first_round >= 0, "sparse_fedavg.first_round", f"must be >= 0, got {self.first_round}")
        require(self.interval >= 1, "sparse_fedavg.interval", f"must be >= 1, got {self.interval}")
        require(
            self.rewind_round is None or 0 <= self.rewind_round <= self.first_round,
            "sparse_fedavg.rewind_round",
            f"must be null or in [0, sparse_fedavg.first_round={self.first_round}], got {self.rewind_round}",
        )
        require(
            0.0 < self.participation <= 1.0,
            "sparse_fedavg.participation",
            f"must be in (0, 1], got {self.participation}",
        )

    @property
    def rewind_to(self) -> int | None:
        """The round the survivors are rewound to at every step (:func:`~amp_fl.pruning.magnitude.rewind_round_of`)."""
        return rewind_round_of(self.method, self.rewind_round)

    def last_pruning_round(self) -> int | None:
        """The round after which ``target`` is reached (IMP step count without rounding); None if nothing is pruned."""
        if self.target == 0.0:
            return None
        if self.method == "one_shot":
            return self.first_round
        return self.first_round + (imp_steps_needed(self.target, self.rate) - 1) * self.interval


@dataclass
class CheckpointConfig:
    """Server checkpoints (:mod:`amp_fl.server.checkpoint`): ``every`` rounds (and after the last); 0: never.

    ``every_s`` > 0 also waits that many wall-clock seconds between two checkpoints (the last round
    is always saved): a long run of short rounds loses at most that much work to a crash. The
    default, 5 s, keeps capturing the state (and the writer thread competing with the next round)
    off most rounds of a fast run: on a 2-core machine a checkpoint every round cost a third of the
    server's time (``python -m amp_fl.bench server``); rounds longer than 5 s still save every round.
    """

    every: int = 1
    every_s: float = 5.0

    def validate(self) -> None:
        require(self.every >= 0, "checkpoint.every", f"must be >= 0 rounds (0: no checkpoints), got {self.every}")
        require(
            math.isfinite(self.every_s) and self.every_s >= 0,
            "checkpoint.every_s",
            f"must be a finite number of seconds >= 0 (0: every due round), got {self.every_s}",
        )


@dataclass
class EvaluationConfig:
    """How often the server evaluates the global model, and an optional stop at a validation accuracy.

    ``every_sim_s``: evaluate (test and validation) once the simulated clock has advanced this many
    seconds since the last evaluation; 0: every round. Round 0, the last round and rounds with a
    personalised evaluation are always evaluated. Evaluation dominates a round's CPU time on small
    models (10,000 test images against 10 PIUs x 8 steps of 64), and AMP-FL's rounds are short
    (T_max = 0.1 s), so a clock interval gives every method the same time resolution at a fraction
    of the cost; rows in between carry NaN accuracy.
    ``every_rounds``: evaluate every this many rounds instead (0: off), for figures read against
    rounds or after their last round (the paper's Figs. 2-3, whose rounds last 0.07-2.2 simulated
    seconds with the pruning ratio and the devices per round, so no one clock grid fits them); at most one of the two.
    ``stop_at_val_accuracy``: stop the run once the validation accuracy reaches it (time-to-target
    tuning needs nothing after that); the run ends with status ``completed`` and says so.
    ``stop_window_s``: 0 stops at the first evaluation that reaches ``stop_at_val_accuracy``; > 0
    once the mean of the validation evaluations of the last ``stop_window_s`` simulated seconds
    reaches it (the smoothed curve of :func:`~amp_fl.run_folder.smoothed_time_to_target`, so a run
    stops exactly when its smoothed time to the target is known).
    ``test``: false evaluates the validation split only (``accuracy`` and ``loss`` stay NaN): a
    tuning or screening run chooses on validation and so never looks at the test set, and skips
    its cost (two thirds of an evaluation with a 10 % split of Fashion-MNIST).
    """

    every_sim_s: float = 0.0
    every_rounds: int = 0
    stop_at_val_accuracy: float | None = None
    stop_window_s: float = 0.0
    test: bool = True

    def validate(self) -> None:
        require(
            math.isfinite(self.every_sim_s) and self.every_sim_s >= 0,
            "evaluation.every_sim_s",
            f"must be a finite number of simulated seconds >= 0 (0: every round), got {self.every_sim_s}",
        )
        require(
            self.every_rounds >= 0,
            "evaluation.every_rounds",
            f"must be a whole number of rounds >= 0 (0: off), got {self.every_rounds!r}",
        )
        require(
            self.every_sim_s == 0 or self.every_rounds == 0,
            "evaluation.every_rounds",
            f"cannot be combined with evaluation.every_sim_s={self.every_sim_s:g} (two grids): set one of them to 0",
        )
        stop = self.stop_at_val_accuracy
        require(
            stop is None or (math.isfinite(stop) and 0.0 < stop <= 1.0),
            "evaluation.stop_at_val_accuracy",
            f"must be in (0, 1] or null, got {stop}",
        )
        require(
            math.isfinite(self.stop_window_s) and self.stop_window_s >= 0,
            "evaluation.stop_window_s",
            f"must be finite simulated seconds >= 0 (0: stop at the first crossing), got {self.stop_window_s}",
        )


@dataclass
class TrackingConfig:
    """Experiment tracking (:mod:`amp_fl.tracking`): ``tensorboard`` writes every metrics row and the
    resolved configuration as TensorBoard events into ``<run>/tensorboard/``; off by default."""

    tensorboard: bool = False

    def validate(self) -> None:
        # find_spec imports nothing: a missing package is a one-line error now, not a ServerApp crash later.
        require(
            not self.tensorboard or importlib.util.find_spec("tensorboard") is not None,
            "tracking.tensorboard",
            "needs the tensorboard package (pip install tensorboard), which is not installed",
        )


def check_failures(cfg: RunConfig) -> None:
    """The failure injector against the rest of the configuration (its own values: :class:`FailureSettings`)."""
    if not cfg.failures.enabled:
        return
    require(
        cfg.failures.late_prob == 0 or cfg.failures.late_delay_s > cfg.strategy.reply_timeout_s,
        "failures.late_delay_s",
        f"a late reply must miss the round: {cfg.failures.late_delay_s} s is not more than "
        f"strategy.reply_timeout_s={cfg.strategy.reply_timeout_s} s",
    )
    require(
        not cfg.strategy.memory_friendly,
        "strategy.memory_friendly",
        "Algorithm 3's client caches assume every upload arrives (a client updates G_k whether or not the "
        "server got g - G_k); the failure injector needs memory_friendly=false",
    )
    require(
        cfg.algorithm != "sparse_fedavg",
        "failures.raise_prob",
        "the failure injector acts in the AMP-FL ClientApp only; algorithm=sparse_fedavg does not inject",
    )


@dataclass
class RunConfig:
    seed: int = 0
    num_rounds: int = 200
    # A horizon on the simulated clock: the run stops after the first round ending at or past it
    # (num_rounds stays a cap); null: rounds only. The recorder, which owns the clock, applies it.
    sim_time_limit_s: float | None = None
    output_dir: str = "runs/default"
    # Stream Flower's full log to the terminal too (it is always kept in the run folder's flower.log).
    verbose: bool = False
    # Set by the method presets (conf/method/); the only switch between the algorithms and between the uplinks.
    algorithm: Algorithm = "amp_fl"
    aggregation: Aggregation = "digital"
    dataset: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    wireless: WirelessConfig = field(default_factory=WirelessConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    scheduling: SchedulingConfig = field(default_factory=SchedulingConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    deployment: DeploymentConfig = field(default_factory=DeploymentConfig)
    sparse_fedavg: SparseFedAvgConfig = field(default_factory=SparseFedAvgConfig)
    ota: OtaSettings = field(default_factory=OtaSettings)
    fedbuff: FedBuffSettings = field(default_factory=FedBuffSettings)
    failures: FailureSettings = field(default_factory=FailureSettings)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    health: HealthConfig = field(default_factory=HealthConfig)  # when a meaningless run stops (amp_fl.health)
    # A run folder whose checkpoint this run continues (python -m amp_fl resume=runs/<run>).
    resume: str | None = None

    @property
    def num_devices(self) -> int:
        return self.wireless.num_devices

    def validate(self) -> RunConfig:
        """The sections' own checks, then the checks across sections (``ota`` and ``failures`` checked
        themselves when :func:`_build` made them)."""
        require(self.num_rounds >= 1, "num_rounds", f"must be >= 1, got {self.num_rounds}")
        require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        limit = self.sim_time_limit_s
        require(
            limit is None or (math.isfinite(limit) and limit > 0),
            "sim_time_limit_s",
            f"must be a finite number of simulated seconds > 0 or null, got {limit}",
        )
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
            self.sparse_fedavg,
            self.checkpoint,
            self.evaluation,
            self.tracking,
            self.health,
        ):
            section.validate()
        check_finite(self, "")  # after the sections' own checks, which name their own bounds
        self.strategy.server_settings(self.train.learning_rate)  # after train: eta is server_lr's default
        require(
            self.evaluation.stop_at_val_accuracy is None or self.dataset.validation_fraction > 0,
            "evaluation.stop_at_val_accuracy",
            "stops on the validation split: set dataset.validation_fraction > 0",
        )
        require(
            self.evaluation.test or self.dataset.validation_fraction > 0,
            "evaluation.test",
            "false leaves only the validation split to evaluate: set dataset.validation_fraction > 0",
        )
        if self.algorithm == "sparse_fedavg":
            check_sparse_fedavg(self)
        elif self.algorithm == "fedbuff":
            check_fedbuff(self)
        elif self.aggregation == "over_the_air":
            check_amp_fl_over_the_air(self)
        check_failures(self)
        require(
            self.scheduling.max_local_steps is None or self.scheduling.max_local_steps >= self.train.local_steps,
            "scheduling.max_local_steps",
            f"must be null or >= train.local_steps={self.train.local_steps}, got {self.scheduling.max_local_steps}",
        )
        require(
            self.scheduling.max_local_steps is None or not self.train.batched_clients,
            "scheduling.max_local_steps",
            "the batched in-process trainer runs one step count for all clients; set train.batched_clients=false",
        )
        require(
            not (self.pruning.scaler and self.train.batched_clients),
            "pruning.scaler",
            "the batched in-process trainer pads sub-models to one width and has no Scaler; set "
            "train.batched_clients=false",
        )
        require(
            self.strategy.local_objective != "apfl" or self.scheduling.name == "full_model",
            "strategy.local_objective",
            f"apfl mixes full models: it needs scheduling.name=full_model, not {self.scheduling.name!r}",
        )
        if self.scheduling.num_scheduled is not None:
            require(
                self.scheduling.num_scheduled <= min(self.wireless.num_rbs, self.wireless.num_devices),
                "scheduling.num_scheduled",
                f"{self.scheduling.num_scheduled} devices per round but only {self.wireless.num_rbs} RBs "
                f"and {self.wireless.num_devices} devices",
            )
        return self


def check_finite(section: Any, prefix: str) -> None:
    """No setting means anything at infinity (a deadline, a rate, a bound): ``ConfigError`` naming the first.

    Caught here, before any process starts, rather than where the value is first used (an infinite
    ``model.t_max_s`` used to pass and fail in the ServerApp under an internal name).
    """
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            check_finite(value, f"{prefix}{f.name}.")
        elif isinstance(value, float):
            require(not math.isinf(value), f"{prefix}{f.name}", f"must be a finite number, got {value}")


def check_sparse_fedavg(cfg: RunConfig) -> None:
    """``algorithm=sparse_fedavg`` against the rest: AMP-FL's options it cannot honour, and the pruning's length."""
    require(
        cfg.strategy.local_objective == "sgd",
        "strategy.local_objective",
        f"algorithm=sparse_fedavg trains with plain sgd, got {cfg.strategy.local_objective!r}",
    )
    require(
        not cfg.strategy.memory_friendly,
        "strategy.memory_friendly",
        "algorithm=sparse_fedavg keeps no gradient caches; set it to false",
    )
    require(
        cfg.strategy.server_optimizer == "sgd" and cfg.strategy.compensation != "discounted",
        "strategy.server_optimizer" if cfg.strategy.server_optimizer != "sgd" else "strategy.compensation",
        "sparse FedAvg (algorithm=sparse_fedavg) has its own server step; the AMP-FL server options do not apply",
    )
    s = cfg.sparse_fedavg
    last = s.last_pruning_round()
    require(
        last is None or last < cfg.num_rounds,
        "num_rounds",
        f"{s.method} reaches sparse_fedavg.target={s.target} after round {last}; num_rounds must exceed it "
        "(or raise sparse_fedavg.rate, lower sparse_fedavg.interval / sparse_fedavg.first_round)",
    )


def check_fedbuff(cfg: RunConfig) -> None:
    """``algorithm=fedbuff`` against the rest: the concurrency the radio allows, and AMP-FL options it does not read."""
    checked(
        lambda: cfg.fedbuff.slots(cfg.wireless.num_devices, cfg.wireless.num_rbs),
        {"concurrency": "fedbuff.concurrency", "buffer_size": "fedbuff.buffer_size"},
    )
    s = cfg.strategy
    require(
        s.local_objective != "apfl",
        "strategy.local_objective",
        "algorithm=fedbuff evaluates no personalised models; use sgd or fedprox",
    )
    require(
        s.compensation == "none" and not s.memory_friendly,
        "strategy.compensation",
        "algorithm=fedbuff keeps no gradient cache: set compensation=none, memory_friendly=false (method=fedbuff does)",
    )
    require(cfg.aggregation == "digital", "aggregation", "algorithm=fedbuff receives every update on its own RB")
    for key in ("max_update_norm", "clip_update_norm", "personal_eval_interval"):
        require(getattr(s, key) is None, f"strategy.{key}", "algorithm=fedbuff does not read it; set it to null")


def check_amp_fl_over_the_air(cfg: RunConfig) -> None:
    """AMP-FL with ``aggregation=over_the_air``: no gradient cache, since no single PIU's gradient arrives."""
    require(
        cfg.strategy.compensation == "none" and not cfg.strategy.memory_friendly,
        "strategy.compensation",
        "AMP-FL over the air (aggregation=over_the_air) needs compensation=none and memory_friendly=false: the "
        f"server receives only the sum of the updates, no single PIU's gradient (got {cfg.strategy.compensation!r})",
    )


# ServerOptimizerSettings' parameters -> the keys they come from. ``betas`` is (server_momentum,
# server_beta2) and ``momentum`` (the same b1) is checked first, so a rejected ``betas`` is server_beta2.
SERVER_OPTIMIZER_KEYS = {
    "name": "strategy.server_optimizer",
    "lr": "strategy.server_lr",
    "momentum": "strategy.server_momentum",
    "betas": "strategy.server_beta2",
    "eps": "strategy.server_eps",
}


def checked(build: Callable[[], T], keys: Mapping[str, str]) -> T:
    """``build()`` a settings object that checks its own values, naming the key (``keys[parameter]``) it rejects."""
    try:
        return build()
    except ArgumentError as exc:
        raise ConfigError(keys[exc.name], exc.problem) from exc


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
    # A section that is a settings object (``ota``, ``failures``) checks its values as it is made.
    return checked(lambda: cls(**kwargs), {name: f"{prefix}{name}" for name in names})


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
        require(bool in allowed, key, f"expected {_type_name(hint)}, got a boolean")
        return value
    if float in allowed and isinstance(value, int | float):
        return float(value)
    for typ in (int, str):
        if typ in allowed and isinstance(value, typ):
            return value
    raise ConfigError(key, f"expected {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    """``float`` rather than ``<class 'float'>`` in a message (unions print as ``float | None`` already)."""
    return str(getattr(hint, "__name__", hint))


def load_config(values: dict[str, Any]) -> RunConfig:
    """Build and validate a :class:`RunConfig` from a plain mapping (e.g. a resolved Hydra config)."""
    return _build(RunConfig, values, "").validate()


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def check_partition(cfg: RunConfig, labels: np.ndarray) -> list[np.ndarray]:
    """Partition the training labels (the validation split already removed) as configured; an impossible
    split names the key to change.

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
    """Fixed-ratio mode: ``pruning.ratio`` must leave every layer of the model at least one region; the
    ``levels`` scheduler: so must its smallest level."""
    if cfg.scheduling.name == "levels":
        levels = cfg.scheduling.levels or DEFAULT_LEVELS
        checked(lambda: check_levels_fit(levels, layer_sizes), {"levels": "scheduling.levels"})
        return
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
