"""Pruning policies: which regions a device keeps, given how many it may keep."""

from .aoi import aoi_priority_order, select_top_aoi
from .aoi_policy import AoIPolicy
from .base import (
    PruningPolicy,
    SelectionContext,
    context_rng,
    infeasible_layers,
    is_feasible,
    keep_counts_for_fraction,
    validate_keep_counts,
)
from .dropout import FederatedDropoutPolicy
from .importance import ImportancePolicy, region_l1_norms
from .registry import available_policies, build_policy, register_policy
from .rolling import RollingPolicy, rolling_window
from .static import StaticPolicy

__all__ = [
    "AoIPolicy",
    "FederatedDropoutPolicy",
    "ImportancePolicy",
    "PruningPolicy",
    "RollingPolicy",
    "SelectionContext",
    "StaticPolicy",
    "aoi_priority_order",
    "available_policies",
    "build_policy",
    "context_rng",
    "infeasible_layers",
    "is_feasible",
    "keep_counts_for_fraction",
    "region_l1_norms",
    "register_policy",
    "rolling_window",
    "select_top_aoi",
    "validate_keep_counts",
]
