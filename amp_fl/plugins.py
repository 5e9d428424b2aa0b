"""Extensions from other packages: scheduler and pruning-policy classes named by entry points.

A package adds a scheduler or a pruning policy without editing amp_fl by naming its classes in
its own ``pyproject.toml`` (docs/extending.md has a worked example)::

    [project.entry-points."amp_fl.schedulers"]
    round_robin = "my_ext.scheduling:RoundRobinScheduler"

    [project.entry-points."amp_fl.pruning_policies"]
    tail = "my_ext.pruning:TailPolicy"

Once that package is installed in the environment, every process (the launcher's checks, Flower's
ServerApp, a campaign's workers, Ray tasks) finds them the same way: the registries load the
entry points of their group the first time they are asked for a name. An entry point's name must
be its class's ``name``, the name the configuration uses (``scheduling.name``, ``pruning.policy``).

This module imports nothing of amp_fl.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

SCHEDULERS_GROUP = "amp_fl.schedulers"
POLICIES_GROUP = "amp_fl.pruning_policies"


def load_entry_points(group: str) -> list[type]:
    """The classes the installed packages name in entry-point ``group``, by entry-point name.

    Raises
    ------
    ImportError
        An entry point whose module or attribute cannot be loaded (naming the entry point).
    TypeError
        An entry point that names something other than a class whose ``name`` is the entry point's.
    """
    classes = []
    for point in sorted(entry_points(group=group), key=lambda p: p.name):
        try:
            loaded = point.load()
        except Exception as exc:
            raise ImportError(f"entry point {point.name!r} of {group} ({point.value}) cannot be loaded: {exc}") from exc
        if not isinstance(loaded, type) or getattr(loaded, "name", None) != point.name:
            raise TypeError(
                f"entry point {point.name!r} of {group} ({point.value}) must name a class whose 'name' is "
                f"{point.name!r}, got {loaded!r}"
            )
        classes.append(loaded)
    return classes


def register_entry_points(
    group: str, base: type, registered: Mapping[str, type], register: Callable[[Any], object]
) -> None:
    """``register`` every class of entry-point ``group`` (each must subclass ``base``) not in ``registered`` yet.

    A class already registered by a call under its name is left as it is (the same class twice is fine).
    """
    for cls in load_entry_points(group):
        if not issubclass(cls, base):
            raise TypeError(f"entry point {cls.__name__} is not a {base.__name__} subclass")
        if registered.get(cls.name) is not cls:  # type: ignore[attr-defined]  # load_entry_points checked it
            register(cls)
