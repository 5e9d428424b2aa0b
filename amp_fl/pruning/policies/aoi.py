"""AoI pruning (Algorithm 1): keep the regions whose gradient is oldest. The one implementation.

Rule: in every layer (group) keep the ``c_l`` regions of largest age ``tau``. Ties between
equal ages are broken by a seeded random priority, so that at the start (all ages equal)
devices do not all keep the same first channels: regions are ranked by ``tau + u`` with
``u ~ U[0, 1)`` drawn per region; ages are integers, so ``u`` only ever reorders equal ages.

The jitter ``u`` of a device comes from its own generator,
:func:`~.base.device_rng` ``(seed, round, device)``, drawn for all regions at once in layer order
(:func:`tie_break_jitter`). It therefore depends on nothing but the run seed, the round and the
device: the schedulers (which run Algorithm 1 for all scheduled devices in one batch) and
:class:`AoIPolicy` (one device at a time, through the uniform policy call of the strategy) keep
exactly the same regions, given the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from amp_fl.errors import check_argument
from amp_fl.pruning.regions import KeptIndices

from .base import PruningPolicy, SelectionContext, device_rng


def tie_break_jitter(
    seed: int, server_round: int, device_ids: Sequence[int] | np.ndarray, num_regions: int
) -> np.ndarray:
    """The ``u ~ U[0, 1)`` of Algorithm 1's tie-break: ``(S, num_regions)``, row ``s`` for ``device_ids[s]``.

    Row ``s`` is ``device_rng(seed, server_round, device_ids[s]).random(num_regions)``: the
    jitter of every layer, drawn in layer order from the device's own generator.
    """
    device_ids = np.asarray(device_ids, dtype=np.int64).reshape(-1)
    jitter = np.empty((device_ids.size, int(num_regions)), dtype=np.float64)
    for row, device in zip(jitter, device_ids, strict=True):
        device_rng(seed, server_round, int(device)).random(out=row)
    return jitter


def top_aoi_indices(
    layer_ages: Sequence[np.ndarray], keep_counts: ArrayLike, jitter: np.ndarray
) -> tuple[KeptIndices, ...]:
    """Algorithm 1 for a batch of S devices: per layer, the ``keep_counts[s, l]`` oldest regions.

    Parameters
    ----------
    layer_ages : sequence (per layer) of (S, I_l) integer arrays
        The S devices' ages ``tau_{t-1}``, one row per device.
    keep_counts : (S, L) integers in [0, I_l]
        Regions each device keeps in each layer (:func:`~amp_fl.pruning.counts.keep_counts`).
    jitter : (S, sum I_l) floats in [0, 1)
        Tie-break priorities (:func:`tie_break_jitter`), layers side by side in layer order.

    Returns
    -------
    tuple (per device) of :data:`~amp_fl.pruning.regions.KeptIndices`
        Sorted, read-only ``int64`` local indices per layer.

    A device's result depends on its own row only: a batch of one gives the same indices as a
    batch of many.
    """
    sizes = [int(np.shape(ages)[1]) for ages in layer_ages]
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    jitter = np.asarray(jitter, dtype=np.float64)
    num_devices, num_layers = jitter.shape[0], len(sizes)
    counts = np.asarray(keep_counts, dtype=np.int64).reshape(num_devices, num_layers)
    check_argument(min(sizes, default=0) >= 1, "layer_ages", f"need >= 1 layer of >= 1 region each, got {sizes}")
    check_argument(
        jitter.shape == (num_devices, offsets[-1]), "jitter", f"must be (S, {offsets[-1]}), got {jitter.shape}"
    )
    check_argument(
        bool(np.all((counts >= 0) & (counts <= np.array(sizes, dtype=np.int64)))),
        "keep_counts",
        f"must lie in [0, I_l] for layer sizes {sizes}",
    )
    # keep[s, i]: device s keeps region i (regions of all layers side by side).
    keep = np.empty((num_devices, int(offsets[-1])), dtype=bool)
    rows = np.arange(num_devices)
    for layer, ages in enumerate(layer_ages):
        block = slice(int(offsets[layer]), int(offsets[layer + 1]))
        size, count = sizes[layer], counts[:, layer]
        priority = np.asarray(ages) + jitter[:, block]  # float64: integer age, fraction = jitter
        # Keep each row's regions at or above its count-th largest priority: a sort of the
        # values and a comparison, cheaper than an argsort of the layer.
        threshold = np.sort(priority, axis=1)[rows, (size - count) % size]
        threshold[count == 0] = np.inf
        np.greater_equal(priority, threshold[:, None], out=keep[:, block])
    for s in np.flatnonzero(np.count_nonzero(keep, axis=1) != counts.sum(axis=1)):
        _keep_lower_on_equal_priority(keep[s], [ages[s] for ages in layer_ages], jitter[s], counts[s], offsets)
    # Row-major nonzero lists device 0's kept regions layer by layer, then device 1's, ...: the
    # kept indices of (s, l) are one contiguous run, cut at the running sum of the counts.
    columns = np.flatnonzero(keep) % keep.shape[1]  # (a 1-d nonzero is much faster than a 2-d one)
    local = (np.arange(keep.shape[1]) - np.repeat(offsets[:-1], sizes))[columns]
    local.setflags(write=False)
    bounds = [0, *np.cumsum(counts.ravel()).tolist()]
    return tuple(
        tuple(local[bounds[s * num_layers + l] : bounds[s * num_layers + l + 1]] for l in range(num_layers))
        for s in range(num_devices)
    )


def _keep_lower_on_equal_priority(
    keep: np.ndarray, ages: Sequence[np.ndarray], jitter: np.ndarray, counts: np.ndarray, offsets: np.ndarray
) -> None:
    """Redo one device's layers whose threshold fell on equal priorities (equal age and equal jitter).

    Practically never happens; then the lower indices among the equal ones are kept, so the
    result stays a function of the inputs.
    """
    for layer, (layer_ages, count) in enumerate(zip(ages, counts, strict=True)):
        block = keep[offsets[layer] : offsets[layer + 1]]
        if np.count_nonzero(block) != count:
            priority = np.asarray(layer_ages) + jitter[offsets[layer] : offsets[layer + 1]]
            block[:] = False
            block[np.argsort(-priority, kind="stable")[:count]] = True


class AoIPolicy(PruningPolicy):
    """In every group keep the regions of largest AoI (Algorithm 1, :func:`top_aoi_indices`).

    Ties are broken by the jitter of ``(seed, round, device)`` (:func:`tie_break_jitter`), so with
    the run seed this keeps exactly the regions the schedulers chose for the device.
    """

    name = "aoi"

    def _select(self, keep_counts: list[int], ctx: SelectionContext) -> KeptIndices:
        if ctx.scheduled is not None and [len(k) for k in ctx.scheduled] == keep_counts:
            return ctx.scheduled  # the scheduler ran this very rule for the device (SelectionContext.scheduled)
        ages = ctx.group_ages()
        jitter = tie_break_jitter(self.seed, ctx.server_round, [ctx.device_id], sum(a.size for a in ages))
        return top_aoi_indices([a[None, :] for a in ages], [keep_counts], jitter)[0]
