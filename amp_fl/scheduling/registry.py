"""Scheduler registry: ``build_scheduler(name, system, seed=..., **options)``.

Like torchvision's ``get_model``: every :class:`~amp_fl.scheduling.schedule.Scheduler` subclass
is registered once under its class attribute ``name``; options are keyword arguments of its
constructor and are checked eagerly, with ``ValueError`` messages naming the option.

Schedulers of other packages join through the ``amp_fl.schedulers`` entry points
(:mod:`amp_fl.plugins`), loaded on the first lookup, or by calling :func:`register_scheduler`
(in this process only).
"""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

from amp_fl.plugins import SCHEDULERS_GROUP, register_entry_points
from amp_fl.scheduling.amp import AmpScheduler
from amp_fl.scheduling.c_scheduling import CScheduler
from amp_fl.scheduling.fixed_ratio import FixedRatioScheduler
from amp_fl.scheduling.full_model import FullModelScheduler
from amp_fl.scheduling.levels import WidthLevelScheduler
from amp_fl.scheduling.paper_route import PaperRouteScheduler
from amp_fl.scheduling.pr_scheduling import PRScheduler
from amp_fl.scheduling.random_scheduling import RandomScheduler
from amp_fl.scheduling.schedule import Scheduler
from amp_fl.wireless.latency import SystemModel

SchedulerType = TypeVar("SchedulerType", bound=type[Scheduler])

_SCHEDULERS: dict[str, type[Scheduler]] = {}
_BUILT_IN = ("system", "seed")  # constructor arguments every scheduler takes; not options
_plugins_loaded = False


def register_scheduler(cls: SchedulerType) -> SchedulerType:
    """Register a scheduler class under its ``name`` (usable as a class decorator); a duplicate name is an error."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name' to be registered")
    if name in _SCHEDULERS:
        raise ValueError(f"scheduler {name!r} is already registered ({_SCHEDULERS[name].__name__})")
    _SCHEDULERS[name] = cls
    return cls


for _cls in (
    AmpScheduler,
    PaperRouteScheduler,
    PRScheduler,
    CScheduler,
    RandomScheduler,
    FixedRatioScheduler,
    FullModelScheduler,
    WidthLevelScheduler,
):
    register_scheduler(_cls)


def _load_plugins() -> None:
    """Register the installed packages' schedulers (entry points), once per process."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    register_entry_points(SCHEDULERS_GROUP, Scheduler, _SCHEDULERS, register_scheduler)


def available_schedulers() -> list[str]:
    """Names accepted by :func:`build_scheduler` (the installed packages' included)."""
    _load_plugins()
    return sorted(_SCHEDULERS)


def build_scheduler(name: str, system: SystemModel, *, seed: int, **options: Any) -> Scheduler:
    """Build the scheduler registered as ``name``.

    Names: ``amp`` (AMP-FL), ``paper_route`` (the paper's K x R sorts + LP), ``pr``, ``channel``,
    ``random`` (scheduling baselines with AoI pruning), ``fixed_ratio`` (Figs. 2-5; needs
    ``pruning_ratio`` and ``num_scheduled``), ``full_model`` (Synchronous FL), ``levels`` (HeteroFL's width levels).

    Raises
    ------
    ValueError
        For an unknown name, an option the scheduler does not take, a missing required option,
        or an invalid value (each message names the scheduler and the option).
    """
    _load_plugins()
    if name not in _SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose from {', '.join(available_schedulers())}")
    cls = _SCHEDULERS[name]
    parameters = inspect.signature(cls).parameters
    accepted = [key for key in parameters if key not in _BUILT_IN]
    for key in options:
        if key not in accepted:
            raise ValueError(
                f"unknown scheduler option {key!r} for {name!r}; accepted: {', '.join(accepted) or 'none'}"
            )
    for key in accepted:
        if parameters[key].default is inspect.Parameter.empty and key not in options:
            raise ValueError(f"scheduler {name!r} needs option {key!r}")
    return cls(system, seed, **options)
