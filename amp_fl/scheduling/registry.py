"""Scheduler registry: ``build_scheduler(name, system, seed=..., **options)``.

Like torchvision's ``get_model``: each scheduler class is registered once under a unique name;
options are keyword arguments of its constructor and are checked eagerly, with errors naming
the config key (``scheduling.name``, ``scheduling.<option>``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from amp_fl.errors import ConfigError
from amp_fl.scheduling.amp import AmpScheduler
from amp_fl.scheduling.c_scheduling import CScheduler
from amp_fl.scheduling.fixed_ratio import FixedRatioScheduler
from amp_fl.scheduling.full_model import FullModelScheduler
from amp_fl.scheduling.paper_route import PaperRouteScheduler
from amp_fl.scheduling.pr_scheduling import PRScheduler
from amp_fl.scheduling.random_scheduling import RandomScheduler
from amp_fl.scheduling.schedule import Scheduler
from amp_fl.wireless.latency import SystemModel

SchedulerFactory = Callable[..., Scheduler]
_REGISTRY: dict[str, SchedulerFactory] = {}


def register_scheduler(name: str, factory: SchedulerFactory) -> None:
    """Register ``factory(system, seed, **options)`` under ``name``; a duplicate name is an error."""
    if name in _REGISTRY:
        raise ValueError(f"scheduler {name!r} is already registered")
    _REGISTRY[name] = factory


def available_schedulers() -> list[str]:
    return sorted(_REGISTRY)


def build_scheduler(name: str, system: SystemModel, *, seed: int, **options: Any) -> Scheduler:
    """Build the scheduler registered as ``name``.

    Names: ``amp`` (AMP-FL), ``paper_route`` (the paper's K x R sorts + LP), ``pr``, ``channel``,
    ``random`` (scheduling baselines with AoI pruning), ``fixed_ratio`` (Figs. 2-5; needs
    ``pruning_ratio`` and ``num_scheduled``), ``full_model`` (Synchronous FL).
    """
    if name not in _REGISTRY:
        raise ConfigError(
            "scheduling.name", f"unknown scheduler {name!r}; choose from {', '.join(available_schedulers())}"
        )
    factory = _REGISTRY[name]
    parameters = inspect.signature(factory).parameters
    accepted = [p for p in parameters if p not in ("system", "seed")]
    for key in options:
        if key not in accepted:
            listed = ", ".join(accepted) or "none"
            raise ConfigError(f"scheduling.{key}", f"not an option of scheduler {name!r}; accepted: {listed}")
    for key, parameter in parameters.items():
        if key not in ("system", "seed") and parameter.default is inspect.Parameter.empty and key not in options:
            raise ConfigError(f"scheduling.{key}", f"required by scheduler {name!r}")
    return factory(system, seed, **options)


for _name, _factory in (
    ("amp", AmpScheduler),
    ("paper_route", PaperRouteScheduler),
    ("pr", PRScheduler),
    ("channel", CScheduler),
    ("random", RandomScheduler),
    ("fixed_ratio", FixedRatioScheduler),
    ("full_model", FullModelScheduler),
):
    register_scheduler(_name, _factory)
