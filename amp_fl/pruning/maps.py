"""A model's region map, derived on first use: the entry points to :mod:`amp_fl.pruning.tracing`.

Importing this module costs no torch (the tracing is imported inside the calls), so the
configuration checks and the launcher can name these functions without paying for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from amp_fl.pruning.regions import RegionMap

if TYPE_CHECKING:
    from torch import nn


def region_map_for(model: nn.Module, input_shape: Sequence[int]) -> RegionMap:
    """Derive the region map of ``model`` for inputs of shape ``input_shape`` (C, H, W): see
    :func:`amp_fl.pruning.tracing.trace_region_map`."""
    from amp_fl.pruning.tracing import trace_region_map

    return trace_region_map(model, input_shape)


def region_map(name: str, input_shape: Sequence[int] | None = None, num_classes: int = 10) -> RegionMap:
    """Region map of the registered model ``name`` (built on the ``meta`` device: no weights allocated).

    Maps are immutable and cached per ``(name, input_shape, num_classes)``, so the server can
    ask for one every round at no cost.
    """
    from amp_fl.models import model_spec
    from amp_fl.pruning.tracing import cached_region_map

    shape = tuple(int(d) for d in input_shape) if input_shape is not None else model_spec(name).default_input_shape
    return cached_region_map(name, shape, int(num_classes))
