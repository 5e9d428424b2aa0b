"""Policy registry: ``build_policy(name, seed)``.

Policies of other packages join through the ``amp_fl.pruning_policies`` entry points
(:mod:`amp_fl.plugins`), loaded on the first lookup, or by calling :func:`register_policy` (in
this process only).
"""

from __future__ import annotations

from amp_fl.plugins import POLICIES_GROUP, register_entry_points

from .aoi import AoIPolicy
from .base import PruningPolicy
from .dropout import FederatedDropoutPolicy
from .importance import ImportancePolicy
from .rolling import FedRolexPolicy, RollingPolicy
from .static import StaticPolicy

_POLICIES: dict[str, type[PruningPolicy]] = {}
_plugins_loaded = False


def register_policy(cls: type[PruningPolicy]) -> type[PruningPolicy]:
    """Register a policy class under its ``name``; a duplicate name is an error."""
    if cls.name in _POLICIES:
        raise ValueError(f"pruning policy {cls.name!r} is already registered")
    _POLICIES[cls.name] = cls
    return cls


for _cls in (AoIPolicy, ImportancePolicy, FederatedDropoutPolicy, StaticPolicy, RollingPolicy, FedRolexPolicy):
    register_policy(_cls)


def _load_plugins() -> None:
    """Register the installed packages' policies (entry points), once per process."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    register_entry_points(POLICIES_GROUP, PruningPolicy, _POLICIES, register_policy)


def available_policies() -> list[str]:
    """Names accepted by :func:`build_policy` (the installed packages' included)."""
    _load_plugins()
    return sorted(_POLICIES)


def build_policy(name: str, seed: int = 0) -> PruningPolicy:
    """The pruning policy called ``name`` (``aoi``, ``importance``, ``random``, ``static``, ``rolling``,
    ``fedrolex``)."""
    _load_plugins()
    if name not in _POLICIES:
        raise ValueError(f"unknown pruning policy {name!r}; available: {', '.join(available_policies())}")
    return _POLICIES[name](seed=seed)
