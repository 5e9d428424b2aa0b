"""Structured pruning: region maps, physically smaller sub-models, counts and policies.

- :mod:`.regions`: which slices of which arrays form each prunable region (derived by :mod:`.tracing`).
- :mod:`.submodel`: extract / build / scatter sub-models.
- :mod:`.counts`: keep counts of Eq. (16); parameter and FLOP counts of a sub-model without building it.
- :mod:`.policies`: which regions a device keeps (aoi, importance, random, static, rolling).
"""

from typing import TYPE_CHECKING

from amp_fl.lazy import lazy_exports

from .counts import (
    check_layer_sizes,
    forward_flops_per_sample,
    keep_counts,
    keep_counts_for_fraction,
    submodel_array_count,
    submodel_param_count,
    submodel_shapes,
    training_flops_per_sample,
)
from .maps import region_map, region_map_for
from .policies import (
    PruningPolicy,
    SelectionContext,
    available_policies,
    build_policy,
    infeasible_layers,
    is_feasible,
)
from .regions import (
    ArrayRule,
    KeptIndices,
    LayerInfo,
    RegionGroup,
    RegionMap,
    check_kept,
    keep_counts_of,
)

# The sub-model functions need torch: imported on first use (amp_fl.lazy says why).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "amp_fl.pruning.submodel": (
            "build_submodel",
            "extract_arrays",
            "held_masks",
            "load_arrays",
            "module_arrays",
            "scatter_arrays",
        )
    },
)
if TYPE_CHECKING:
    from .submodel import build_submodel, extract_arrays, held_masks, load_arrays, module_arrays, scatter_arrays

__all__ = [
    "ArrayRule",
    "KeptIndices",
    "LayerInfo",
    "PruningPolicy",
    "RegionGroup",
    "RegionMap",
    "SelectionContext",
    "available_policies",
    "build_policy",
    "build_submodel",
    "check_kept",
    "check_layer_sizes",
    "extract_arrays",
    "forward_flops_per_sample",
    "held_masks",
    "infeasible_layers",
    "is_feasible",
    "keep_counts",
    "keep_counts_for_fraction",
    "keep_counts_of",
    "load_arrays",
    "module_arrays",
    "region_map",
    "region_map_for",
    "scatter_arrays",
    "submodel_array_count",
    "submodel_param_count",
    "submodel_shapes",
    "training_flops_per_sample",
]
