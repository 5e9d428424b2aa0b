"""Age of information of every device's cached gradient, per model region (Eq. (9)).

``tau[k, i]`` counts the rounds since device k last uploaded a fresh gradient for region i.
Regions are numbered layer by layer (layer 0's regions first), matching the pruning engine's
``layer_sizes``; per-layer views use local indices ``0 .. I_l - 1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from amp_fl.errors import check_argument
from amp_fl.pruning.counts import check_layer_sizes
from amp_fl.pruning.regions import KeptIndices

# int32 halves the memory and sorting time of a K x I table (K = 10,000 devices x I = 2,880
# regions of VGG-11 = 28.8M ages: 115 MB instead of 230 MB); an age cannot reach 2^31 - 1 in
# any feasible run, and `update` refuses to overflow rather than wrap. (The int64 weights of
# Eq. (18) of a 512-region layer would overflow only past ages of about 1.3e8 rounds.)
AGE_DTYPE = np.int32
_AGE_LIMIT = int(np.iinfo(AGE_DTYPE).max) - 1


class AoITable:
    """The K x I table of gradient ages, with per-layer views.

    Parameters
    ----------
    num_devices : int
        K.
    layer_sizes : sequence of int
        I_l, regions per prunable layer (or coupled group); I = sum of them.
    initial_age : int, default 0
        Age of every entry at the start (the paper starts from 0).
    """

    def __init__(self, num_devices: int, layer_sizes: Sequence[int], initial_age: int = 0) -> None:
        check_argument(int(num_devices) >= 1, "num_devices", f"must be >= 1, got {num_devices!r}")
        check_argument(
            0 <= int(initial_age) <= _AGE_LIMIT, "initial_age", f"must be in [0, {_AGE_LIMIT}], got {initial_age!r}"
        )
        self.layer_sizes = check_layer_sizes(layer_sizes)
        self.offsets = tuple(int(o) for o in np.concatenate([[0], np.cumsum(self.layer_sizes)]))
        self._ages = np.full((int(num_devices), self.offsets[-1]), int(initial_age), dtype=AGE_DTYPE)
        self._max_age = int(initial_age)
        # Change log for caches derived from the table (the AMP scheduler's sorted-age sums):
        # between two updates a device that was not in ``device_ids`` only ages by one in every
        # region, which keeps the order of its ages, so a cache needs to redo only the devices
        # updated since it last looked. ``_identity`` tells a cache it is looking at another table.
        self._identity = object()
        self._updates = 0
        self._last_update = np.zeros(int(num_devices), dtype=np.int64)

    @classmethod
    def from_array(cls, ages: np.ndarray, layer_sizes: Sequence[int]) -> AoITable:
        """A table holding a copy of ``ages`` (K x I non-negative integers), e.g. from a checkpoint."""
        ages = np.asarray(ages)
        sizes = check_layer_sizes(layer_sizes)
        if ages.ndim != 2 or ages.shape[1] != sum(sizes):
            raise ValueError(f"ages must be K x {sum(sizes)} (sum of layer_sizes), got shape {ages.shape}")
        if not np.issubdtype(ages.dtype, np.integer) or (ages.size and (ages.min() < 0 or ages.max() > _AGE_LIMIT)):
            raise ValueError(f"ages must be integers in [0, {_AGE_LIMIT}]")
        table = cls(ages.shape[0], sizes)
        table._ages[...] = ages
        table._max_age = int(ages.max()) if ages.size else 0
        return table

    @property
    def ages(self) -> np.ndarray:
        """The K x I table, read-only (change it through :meth:`update`)."""
        view = self._ages.view()
        view.setflags(write=False)
        return view

    @property
    def max_age(self) -> int:
        """An upper bound on every age (exact after construction, +1 per update)."""
        return self._max_age

    @property
    def identity(self) -> object:
        """A token unique to this table object: caches keyed on it are rebuilt for another table."""
        return self._identity

    @property
    def num_updates(self) -> int:
        """How many times :meth:`update` has run on this table object (0 for a fresh or loaded table)."""
        return self._updates

    @property
    def last_update(self) -> np.ndarray:
        """Per device, :attr:`num_updates` right after the last update that listed it (0: never), read-only.

        A device with ``last_update[k] <= u`` had all its ages grow by exactly
        ``num_updates - u`` since update count ``u``: the order of its ages is unchanged.
        """
        view = self._last_update.view()
        view.setflags(write=False)
        return view

    @property
    def num_devices(self) -> int:
        return int(self._ages.shape[0])

    @property
    def num_regions(self) -> int:
        return int(self._ages.shape[1])

    @property
    def num_layers(self) -> int:
        return len(self.layer_sizes)

    def layer(self, layer: int) -> np.ndarray:
        """Read-only K x I_l view of layer ``layer``'s ages."""
        view = self._ages[:, self.offsets[layer] : self.offsets[layer + 1]]
        view.setflags(write=False)
        return view

    def layers(self) -> tuple[np.ndarray, ...]:
        """Read-only views of all layers, in order."""
        return tuple(self.layer(layer) for layer in range(self.num_layers))

    def mean_age(self) -> float:
        """Average age over all devices and regions (the paper's "average AoI", Figs. 6b, 10)."""
        return float(self._ages.mean(dtype=np.float64))

    def update(self, device_ids: Sequence[int] | np.ndarray, kept_indices: Sequence[KeptIndices]) -> None:
        """Advance one round by Eq. (9).

        ``tau <- 0`` for every region a scheduled device kept (and so uploaded), ``tau + 1`` for
        every other (device, region): pruned regions and unscheduled devices age.

        Parameters
        ----------
        device_ids : sequence of int
            Devices whose update arrived this round, each at most once.
        kept_indices : sequence (per device) of :data:`~amp_fl.pruning.regions.KeptIndices`
            Local region indices each device kept in each layer (e.g. a schedule's
            ``device_ids`` and ``kept_indices``).
        """
        device_ids = np.asarray(device_ids, dtype=np.int64).reshape(-1)
        if len(kept_indices) != device_ids.size:
            raise ValueError(f"got {device_ids.size} devices but {len(kept_indices)} kept-index lists")
        if device_ids.size and (device_ids.min() < 0 or device_ids.max() >= self.num_devices):
            raise ValueError(f"device ids must be in [0, {self.num_devices})")
        if np.unique(device_ids).size != device_ids.size:
            raise ValueError("a device can be updated at most once per round")
        # Validate everything before touching the table: a bad list must not leave it half-updated.
        columns = [self._global_columns(per_layer) for per_layer in kept_indices]
        if self._max_age + 1 > _AGE_LIMIT:
            raise OverflowError(f"ages would exceed {_AGE_LIMIT}")
        self._ages += 1
        self._max_age += 1
        for device, cols in zip(device_ids, columns, strict=True):
            self._ages[device, cols] = 0
        self._updates += 1
        self._last_update[device_ids] = self._updates

    def _global_columns(self, per_layer: KeptIndices) -> np.ndarray:
        """Map one device's per-layer local indices to columns of the table."""
        if len(per_layer) != self.num_layers:
            raise ValueError(f"kept indices must list {self.num_layers} layers, got {len(per_layer)}")
        parts = []
        for layer, indices in enumerate(per_layer):
            local = np.asarray(indices, dtype=np.int64).reshape(-1)
            if local.size and (local.min() < 0 or local.max() >= self.layer_sizes[layer]):
                raise ValueError(f"layer {layer} has {self.layer_sizes[layer]} regions; got index out of range")
            parts.append(local + self.offsets[layer])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
