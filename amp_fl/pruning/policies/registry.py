"""Policy registry: ``build_policy(name, seed)``."""

from __future__ import annotations

from .aoi import AoIPolicy
from .base import PruningPolicy
from .dropout import FederatedDropoutPolicy
from .importance import ImportancePolicy
from .rolling import FedRolexPolicy, RollingPolicy
from .static import StaticPolicy

_POLICIES: dict[str, type[PruningPolicy]] = {}


def register_policy(cls: type[PruningPolicy]) -> type[PruningPolicy]:
    """Register a policy class under its ``name``; a duplicate name is an error."""
    if cls.name in _POLICIES:
        raise ValueError(f"pruning policy {cls.name!r} is already registered")
    _POLICIES[cls.name] = cls
    return cls


for _cls in (AoIPolicy, ImportancePolicy, FederatedDropoutPolicy, StaticPolicy, RollingPolicy, FedRolexPolicy):
    register_policy(_cls)


def available_policies() -> list[str]:
    """Names accepted by :func:`build_policy`."""
    return sorted(_POLICIES)


def build_policy(name: str, seed: int = 0) -> PruningPolicy:
    """The pruning policy called ``name`` (``aoi``, ``importance``, ``random``, ``static``, ``rolling``,
    ``fedrolex``)."""
    if name not in _POLICIES:
        raise ValueError(f"unknown pruning policy {name!r}; available: {', '.join(available_policies())}")
    return _POLICIES[name](seed=seed)
