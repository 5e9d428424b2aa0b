"""Pruning policies: which regions a device keeps, given how many it may keep."""

from .aoi import AoIPolicy, tie_break_jitter, top_aoi_indices
from .base import (
    PruningPolicy,
    SelectionContext,
    device_rng,
    infeasible_layers,
    is_feasible,
    validate_keep_counts,
)
from .dropout import FederatedDropoutPolicy
from .importance import ImportancePolicy, region_l1_norms
from .registry import available_policies, build_policy, register_policy
from .rolling import FedRolexPolicy, RollingPolicy, fedrolex_window, rolling_window
from .static import StaticPolicy

__all__ = [
    "AoIPolicy",
    "FedRolexPolicy",
    "FederatedDropoutPolicy",
    "ImportancePolicy",
    "PruningPolicy",
    "RollingPolicy",
    "SelectionContext",
    "StaticPolicy",
    "available_policies",
    "build_policy",
    "device_rng",
    "fedrolex_window",
    "infeasible_layers",
    "is_feasible",
    "region_l1_norms",
    "register_policy",
    "rolling_window",
    "tie_break_jitter",
    "top_aoi_indices",
    "validate_keep_counts",
]
