"""Physically smaller sub-models: slice global arrays, build the sub-model, scatter replies back.

The three operations of one AMP-FL round on the model side:

1. the server slices the global arrays for a device's kept regions (:func:`extract_arrays`);
2. the device builds a sub-model of exactly that size (:func:`build_submodel`), loads the
   arrays (:func:`load_arrays`), trains, and returns :func:`module_arrays`;
3. the server puts the reply back into full-size arrays and learns which entries the device
   actually trained (:func:`scatter_arrays`), for region-wise aggregation.

With the model tag ``+scaler`` (``"cnn+scaler"``, :data:`~amp_fl.models.registry.MODEL_TAGS`) the
sub-model carries HeteroFL's Scaler (:func:`add_scaler`): in training, every pruned layer's output is
divided by the fraction of its regions kept, as inverted dropout does; in evaluation it is the identity.

Arrays travel in ``RegionMap.param_names`` order (the model's ``state_dict`` order, BatchNorm
buffers included). Floating-point arrays are ``float32``; integer buffers
(``num_batches_tracked``) keep their integer dtype.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from amp_fl.errors import InvalidReplyError

from .regions import KeptIndices, RegionMap, check_kept, keep_counts_of, owns_state

ArrayInput = Sequence[np.ndarray] | Mapping[str, np.ndarray]


def _ordered(arrays: ArrayInput, region_map: RegionMap, error: type[ValueError] = ValueError) -> list[np.ndarray]:
    """``arrays`` as a list in ``param_names`` order (a mapping is looked up by name)."""
    names = region_map.param_names
    if isinstance(arrays, Mapping):
        missing = [n for n in names if n not in arrays]
        extra = [n for n in arrays if n not in set(names)]
        if missing or extra:
            raise error(f"array names do not match the region map: missing {missing[:5]}, unexpected {extra[:5]}")
        return [np.asarray(arrays[n]) for n in names]
    if len(arrays) != len(names):
        raise error(f"expected {len(names)} arrays (one per state_dict entry), got {len(arrays)}")
    return [np.asarray(a) for a in arrays]


@lru_cache(maxsize=64)
def _wire_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """``float32`` for floating data; integer buffers (``num_batches_tracked``) keep their dtype."""
    return np.dtype(np.float32) if np.issubdtype(dtype, np.floating) else dtype


def _as_wire(array: np.ndarray) -> np.ndarray:
    """A new contiguous array in wire dtype (always a copy, so callers never alias their input)."""
    return np.array(array, dtype=_wire_dtype(array.dtype), order="C", copy=True)


def _gather(array: np.ndarray, rows: np.ndarray | None, cols: np.ndarray | None) -> np.ndarray:
    """The held block of ``array`` (``rows`` of axis 0, ``cols`` of axis 1; ``None``: the whole axis), a new array.

    One ``take`` per axis: the same values as one open-mesh gather ``array[rows[:, None], cols]``
    (trailing kernel axes whole), about 4x faster for the class layer's inputs.
    """
    block = array if rows is None else array.take(rows, axis=0)
    return block if cols is None else block.take(cols, axis=1)


def _held(shape: tuple[int, ...], rows: np.ndarray | None, cols: np.ndarray | None) -> np.ndarray:
    """Element-wise mask of the held block: ``True`` at ``(r, c, ...)`` for ``r`` in ``rows`` and ``c`` in ``cols``."""
    if rows is None and cols is None:
        return np.ones(shape, dtype=bool)  # also 0-d arrays (num_batches_tracked): never sliced
    held = np.zeros(shape, dtype=bool)
    if cols is None:
        held[rows] = True
    elif rows is None:
        held[:, cols] = True
    else:  # one held row pattern, written into the kept rows: cheaper than an open-mesh write
        row = np.zeros(shape[1:], dtype=bool)
        row[cols] = True
        held[rows] = row
    return held


def extract_arrays(global_arrays: ArrayInput, region_map: RegionMap, kept: KeptIndices) -> list[np.ndarray]:
    """Slice full-model arrays down to the sub-model keeping ``kept`` regions.

    Parameters
    ----------
    global_arrays : list of np.ndarray or dict[str, np.ndarray]
        Full-size arrays in ``region_map.param_names`` order, or keyed by those names.
    region_map : RegionMap
        The model's region map.
    kept : KeptIndices
        Sorted unique kept indices per group.

    Returns
    -------
    list of np.ndarray
        New, physically smaller, contiguous arrays (``float32`` for floating data) in
        ``param_names`` order.

    Raises
    ------
    ValueError
        Wrong number of arrays, a wrong shape (naming the parameter) or invalid kept indices.
    """
    kept = check_kept(region_map, kept)
    arrays = _ordered(global_arrays, region_map)
    out = []
    for rule, array in zip(region_map.arrays, arrays, strict=True):
        if array.shape != rule.shape:
            raise ValueError(f"array {rule.name!r} has shape {array.shape}, the model expects {rule.shape}")
        rows, cols = rule.axis_indices(kept)
        if rows is None and cols is None:
            out.append(_as_wire(array))
        else:  # _gather's result is new and contiguous already: only the dtype may still change
            out.append(_gather(array, rows, cols).astype(_wire_dtype(array.dtype), copy=False))
    return out


def scatter_arrays(
    sub_arrays: ArrayInput,
    region_map: RegionMap,
    kept: KeptIndices,
    full_shapes: Sequence[Sequence[int]] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Place a sub-model's arrays into full-size arrays and say which entries it held.

    Parameters
    ----------
    sub_arrays : list of np.ndarray or dict[str, np.ndarray]
        The sub-model's arrays (typically a client's reply), ``param_names`` order.
    region_map : RegionMap
        The model's region map.
    kept : KeptIndices
        The kept indices the sub-model was built with.
    full_shapes : sequence of shapes, optional
        Full shapes, checked against the region map; defaults to ``region_map.shapes``.

    Returns
    -------
    full_arrays : list of np.ndarray
        Full-shaped arrays with the sub-model's values at held entries and 0 elsewhere.
    held_masks : list of np.ndarray of bool
        Element-wise: ``True`` where the entry's output region and input region were both kept
        (all ``True`` for arrays that are never sliced, such as the class-layer bias).

    Raises
    ------
    amp_fl.errors.InvalidReplyError
        (a ``ValueError``) Wrong number of arrays or a wrong shape, naming the parameter.
    ValueError
        Invalid kept indices or ``full_shapes`` that do not match the region map.
    """
    kept = check_kept(region_map, kept)
    if full_shapes is not None and [tuple(int(d) for d in s) for s in full_shapes] != region_map.shapes:
        raise ValueError("full_shapes do not match the region map's array shapes")
    arrays = _ordered(sub_arrays, region_map, InvalidReplyError)
    counts = keep_counts_of(kept)
    full_arrays, masks = [], []
    for rule, sub in zip(region_map.arrays, arrays, strict=True):
        expected = rule.sub_shape(counts)
        if sub.shape != expected:
            raise InvalidReplyError(f"array {rule.name!r} has shape {sub.shape}, the sub-model has {expected}")
        rows, cols = rule.axis_indices(kept)
        if rows is None and cols is None:
            full_arrays.append(_as_wire(sub))
            masks.append(np.ones(rule.shape, dtype=bool))
            continue
        held = _held(rule.shape, rows, cols)
        full = np.zeros(rule.shape, dtype=_wire_dtype(sub.dtype))
        # Kept indices are sorted, so the held entries in C order are the sub-model's entries in C order:
        # one boolean-mask write, about 3x faster than an open-mesh scatter for the class layer's inputs.
        full[held] = sub.ravel()
        full_arrays.append(full)
        masks.append(held)
    return full_arrays, masks


def held_masks(region_map: RegionMap, kept: KeptIndices) -> list[np.ndarray]:
    """Element-wise held masks of the sub-model keeping ``kept`` (as returned by :func:`scatter_arrays`)."""
    kept = check_kept(region_map, kept)
    return [_held(rule.shape, *rule.axis_indices(kept)) for rule in region_map.arrays]


def region_held_masks(region_map: RegionMap, kept: KeptIndices) -> list[np.ndarray]:
    """The entries a sub-model refreshes in its device's cache under ``cache_granularity=region``.

    Eq. (2) read per region: region i (a filter or neuron with all its input connections and its
    bias) is refreshed whenever it was kept, whole, so an entry counts as held when its *own*
    (output, axis-0) region was kept, whatever its input region; an array with no output region
    (the class layer, never pruned) is held whole by every scheduled device. Entries held here but
    not in :func:`held_masks` (input region pruned) carry the masked model's gradient there: 0.
    """
    kept = check_kept(region_map, kept)
    masks = []
    for rule in region_map.arrays:
        rows, _ = rule.axis_indices(kept)
        held = np.ones(rule.shape, dtype=bool)
        if rows is not None:
            held[...] = False
            held[rows] = True
        masks.append(held)
    return masks


# --------------------------------------------------------------------------------------------
# Modules.


def _pair(values: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d's 2-D size (torch types it ``tuple[int, ...]`` on the module, ``tuple[int, int]`` in ``__init__``)."""
    first, second = values
    return int(first), int(second)


def _shrunk_module(module: nn.Module, prefix: str, shapes: Mapping[str, tuple[int, ...]]) -> nn.Module:
    """An uninitialised (``meta``) copy of ``module`` with the sub-model's widths."""

    def shape(attr: str) -> tuple[int, ...]:
        return shapes[f"{prefix}.{attr}" if prefix else attr]

    if isinstance(module, nn.Conv2d):
        out_ch, in_ch = shape("weight")[:2]
        return nn.Conv2d(
            in_ch,
            out_ch,
            _pair(module.kernel_size),
            _pair(module.stride),
            module.padding if isinstance(module.padding, str) else _pair(module.padding),
            _pair(module.dilation),
            module.groups,
            module.bias is not None,
            module.padding_mode,
            device="meta",
        )
    if isinstance(module, nn.Linear):
        out_f, in_f = shape("weight")
        return nn.Linear(in_f, out_f, module.bias is not None, device="meta")
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        width = shape("weight" if module.affine else "running_mean")[0]
        return type(module)(
            width, module.eps, module.momentum, module.affine, module.track_running_stats, device="meta"
        )
    raise ValueError(f"cannot shrink module {prefix!r} of type {type(module).__name__}")


def _replace(root: nn.Module, name: str, new: nn.Module) -> nn.Module:
    if not name:
        return new
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name), child, new)
    return root


def build_submodel(
    model_name: str,
    input_shape: Sequence[int],
    num_classes: int,
    region_map: RegionMap,
    kept: KeptIndices,
    arrays: ArrayInput | None = None,
) -> nn.Module:
    """Build the physically smaller sub-model that keeps ``kept`` regions.

    The full architecture is built on the ``meta`` device (no weights allocated); every
    Conv2d / Linear / BatchNorm is then replaced by one of the sub-model's width, and only those
    are materialised on the CPU. The result is the same architecture (same module names and
    forward code), and its ``state_dict`` shapes equal those of :func:`extract_arrays`.

    The module of each sub-model size is built once per process and copied afterwards: a
    device gets a sub-model every round, and building one costs about 3x a copy.

    Parameters
    ----------
    model_name, input_shape, num_classes
        As for :func:`amp_fl.models.build_model`; must be the model ``region_map`` describes.
    region_map : RegionMap
        The model's region map.
    kept : KeptIndices
        Sorted unique kept indices per group.
    arrays : list of np.ndarray or dict, optional
        Sub-model arrays to load (e.g. from :func:`extract_arrays`); without them the layers
        get their default random initialisation.
    """
    from amp_fl.models.registry import split_model_name

    counts = keep_counts_of(check_kept(region_map, kept))
    base, tags = split_model_name(model_name)
    # The template is the architecture (``static_bn`` changes it); the Scaler hooks only the copy.
    architecture = "+".join([base, *sorted(tags - {"scaler"})])
    key = (
        architecture,
        tuple(int(d) for d in input_shape),
        int(num_classes),
        tuple(region_map.param_names),
        tuple(region_map.shapes),
        tuple(int(c) for c in counts),
    )
    template = _TEMPLATES.get(key)
    if template is None:
        template = _build_template(architecture, key[1], key[2], region_map, counts)
        if len(_TEMPLATES) >= _MAX_TEMPLATES:
            _TEMPLATES.pop(next(iter(_TEMPLATES)))  # oldest first
        _TEMPLATES[key] = template
    model = copy.deepcopy(template)
    if arrays is None:
        # Module order, as building fresh would: the same draws from torch's generator.
        for module in model.modules():
            if owns_state(module):
                module.reset_parameters()  # type: ignore[operator]
    else:
        load_arrays(model, _ordered(arrays, region_map))
    if "scaler" in tags:
        add_scaler(model, region_map, counts)
    return model


def kept_rates(region_map: RegionMap, counts: Sequence[int]) -> dict[str, float]:
    """Each pruned conv / linear layer's kept fraction of its output regions, ``c_g / I_g``, by module name.

    Layers whose output is never pruned (the class layer) are left out.
    """
    rates = {}
    for rule in region_map.arrays:
        if rule.role == "weight" and rule.out_group is not None:
            size = region_map.groups[rule.out_group].size
            rates[rule.name.removesuffix(".weight")] = int(counts[rule.out_group]) / size
    return rates


class _Scale:
    """A forward hook dividing a layer's output by its kept rate in training mode only (HeteroFL's Scaler)."""

    def __init__(self, rate: float) -> None:
        self.rate = float(rate)

    def __call__(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        if not module.training or self.rate == 1.0:
            return None  # identity: the full model, and every evaluation
        return output / self.rate


def add_scaler(model: nn.Module, region_map: RegionMap, counts: Sequence[int]) -> nn.Module:
    """HeteroFL's Scaler on a sub-model keeping ``counts``, in place: hooks, so ``state_dict`` is unchanged.

    In training, every pruned conv / linear layer's output (before its BatchNorm, as HeteroFL
    places it) is divided by its kept rate (:func:`kept_rates`), so the next layer's input sum has
    the full model's scale in expectation; the full model (rate 1) and evaluation are unscaled.
    """
    for name, rate in kept_rates(region_map, counts).items():
        model.get_submodule(name).register_forward_hook(_Scale(rate))
    return model


# Sub-model modules by (model, input, classes, region map, keep counts); their state is
# uninitialised memory, overwritten in every copy. A run meets a few hundred sizes at most.
_TEMPLATES: dict[tuple[Any, ...], nn.Module] = {}
_MAX_TEMPLATES = 256


def _build_template(
    model_name: str, input_shape: tuple[int, ...], num_classes: int, region_map: RegionMap, counts: Sequence[int]
) -> nn.Module:
    """The sub-model's module with uninitialised state (see :func:`build_submodel`)."""
    from amp_fl.models import build_model

    with torch.device("meta"):
        model = build_model(model_name, num_classes=num_classes, input_shape=input_shape)  # type: ignore[arg-type]
    full_state = model.state_dict()
    if list(full_state) != region_map.param_names or [tuple(t.shape) for t in full_state.values()] != region_map.shapes:
        raise ValueError(
            f"region map does not describe model {model_name!r} with input {tuple(input_shape)} and "
            f"{num_classes} classes (state_dict names or shapes differ)"
        )
    shapes = {rule.name: rule.sub_shape(counts) for rule in region_map.arrays}
    for name, module in list(model.named_modules()):
        if not owns_state(module):
            continue
        new = _on_cpu_uninitialised(_shrunk_module(module, name, shapes))
        new.train(module.training)
        model = _replace(model, name, new)
    leftover = [n for n, t in model.state_dict().items() if t.is_meta]
    if leftover:
        raise ValueError(f"sub-model of {model_name!r} still has unmaterialised state {leftover[:5]}")
    return model


def _on_cpu_uninitialised(module: nn.Module) -> nn.Module:
    """``module.to_empty(device="cpu")`` for a meta-device module, without torch's meta-tensor route.

    ``to_empty`` calls ``empty_like`` on each meta tensor, whose reference implementation imports
    ``torch.fx.experimental.symbolic_shapes`` and sympy: some 0.7-1.4 s in every process that
    builds its first sub-model (each Ray actor, campaign worker, board). The state is overwritten
    in every copy, so only shapes and dtypes matter; ``torch.empty`` gives the same contiguous tensors.
    """
    return module._apply(lambda t: torch.empty(t.shape, dtype=t.dtype, device="cpu"))


def load_arrays(module: nn.Module, arrays: Sequence[np.ndarray]) -> None:
    """Copy NumPy arrays into ``module``'s state (``state_dict`` order), in place.

    Raises
    ------
    ValueError
        Wrong number of arrays or a wrong shape, naming the state_dict entry.
    """
    state = module.state_dict()
    if len(arrays) != len(state):
        raise ValueError(f"expected {len(state)} arrays for the module's state_dict, got {len(arrays)}")
    with torch.no_grad():
        for (name, tensor), array in zip(state.items(), arrays, strict=True):
            array = np.asarray(array)
            if tuple(array.shape) != tuple(tensor.shape):
                raise ValueError(f"array for {name!r} has shape {array.shape}, the module has {tuple(tensor.shape)}")
            # copy_ casts (e.g. float32 -> int64 for num_batches_tracked) and writes into the module.
            # (np.asarray keeps 0-d arrays 0-d; from_numpy needs a writeable array, so read-only ones are copied.)
            source = np.asarray(array, order="C")
            tensor.copy_(torch.from_numpy(source if source.flags.writeable else source.copy()))


def module_arrays(module: nn.Module) -> list[np.ndarray]:
    """The module's state as NumPy arrays in ``state_dict`` order (copies; floating data as ``float32``)."""
    return [_as_wire(t.detach().cpu().numpy()) for t in module.state_dict().values()]
