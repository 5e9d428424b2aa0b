"""Omega of Eq. (18) from per-device sorted-age prefix sums, kept up to date across rounds.

Omega(k, r) sums ``a^2 = (tau + 1)^2`` over the ``c_l(k, r)`` oldest regions of every layer.
With each layer's ``a`` sorted oldest first, that is a prefix sum read at ``c_l``. Between two
rounds a device that was not scheduled ages by one in every region: its order is unchanged and
every ``a`` grows by the same ``d``, so its old prefix sums still give Omega exactly:

    sum over the c oldest of (a + d)^2 = P2[c] + 2 d P1[c] + c d^2,

with ``P1`` and ``P2`` the prefix sums of ``a`` and ``a^2`` when the device was last sorted.
Only the devices updated since (at most one per RB each round) are sorted again, so keeping the
sums costs O(S I log I_max) per round instead of O(K I log I_max).

The cache is derived state: it is rebuilt from the table whenever it sees another table object
(a fresh run, a table loaded from a checkpoint), and gives the same integers as a from-scratch
computation (tests/test_scheduling_age_sums.py), so a resumed run schedules exactly as the
uninterrupted one.
"""

from __future__ import annotations

import numpy as np

from amp_fl.pruning.counts import keep_counts
from amp_fl.scheduling.aoi_table import AoITable

_INT32_MAX = int(np.iinfo(np.int32).max)
# Rows sorted per chunk in a full rebuild: bounds the temporaries to a few tens of MB.
_REBUILD_CHUNK_ROWS = 1024


class SortedAgeSums:
    """Prefix sums of every device's ages, each layer sorted oldest first, for one AoI table.

    Layout: layer ``l`` of a row occupies columns ``base[l] .. base[l] + I_l`` (``I_l + 1``
    entries, the first 0), so a flat index ``row * width + base[l] + c`` reads the sum of the
    ``c`` oldest. Storage is int32 while a sum cannot overflow it (two K x (I + L) arrays, as
    large as the table itself each), int64 otherwise.
    """

    def __init__(self, grid_steps: int) -> None:
        self.grid_steps = int(grid_steps)
        self._identity: object | None = None
        self._p1 = np.zeros((0, 0), dtype=np.int32)
        self._p2 = np.zeros((0, 0), dtype=np.int32)
        self._built_at = np.zeros(0, dtype=np.int64)  # the table's num_updates when a row was sorted
        self._shift = np.zeros(0, dtype=np.int64)  # d per row, as of the last sync
        self._base: tuple[int, ...] = ()
        self._grid_counts = np.zeros((0, 0), dtype=np.int64)  # (G + 1, L) counts at j / G
        self._grid_p1 = np.zeros((0, 0), dtype=np.int64)  # (K, G + 1) P1 summed over layers
        self._grid_p2 = np.zeros((0, 0), dtype=np.int64)

    def sync(self, table: AoITable) -> None:
        """Bring the sums up to ``table``'s current ages: rebuild for a new table, else re-sort updated rows."""
        dtype = _sum_dtype(table.max_age, max(table.layer_sizes))
        if self._identity is not table.identity or (dtype == np.int64 and self._p2.dtype != np.int64):
            self._rebuild(table, dtype)
        else:
            stale = np.flatnonzero(table.last_update > self._built_at)
            if stale.size:
                self._sort_rows(table, stale)
        self._shift = table.num_updates - self._built_at

    def omega(self, rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Omega (int64) of device ``rows`` keeping ``counts`` regions per layer.

        ``rows`` (any shape, int) broadcasts against ``counts.shape[:-1]``; ``counts[..., l]`` is
        in ``[0, I_l]``. Call :meth:`sync` first.
        """
        rows = np.asarray(rows, dtype=np.intp)
        counts = np.asarray(counts, dtype=np.intp)
        width = self._p1.shape[1]
        index = (rows * width)[..., None] + (counts + np.asarray(self._base, dtype=np.intp))
        p1 = self._p1.ravel().take(index).sum(axis=-1, dtype=np.int64)
        p2 = self._p2.ravel().take(index).sum(axis=-1, dtype=np.int64)
        d = self._shift[rows]
        return p2 + 2 * d * p1 + d * d * counts.sum(axis=-1)

    def omega_on_grid(self) -> np.ndarray:
        """(K, G + 1) Omega of every device at the keep fractions ``j / G``, j = 0..G.

        The grid's sums over layers are stored per row when the row is sorted, so this costs
        O(K G) per round, not O(K G L) gathers.
        """
        d = self._shift[:, None]
        return self._grid_p2 + 2 * d * self._grid_p1 + d * d * self._grid_counts.sum(axis=-1)

    def _rebuild(self, table: AoITable, dtype: type) -> None:
        self._grid_counts = keep_counts(np.arange(self.grid_steps + 1) / self.grid_steps, table.layer_sizes)
        self._grid_p1 = np.zeros((table.num_devices, self.grid_steps + 1), dtype=np.int64)
        self._grid_p2 = np.zeros_like(self._grid_p1)
        self._base = tuple(offset + layer for layer, offset in enumerate(table.offsets[:-1]))
        shape = (table.num_devices, table.num_regions + table.num_layers)
        self._p1 = np.empty(shape, dtype=dtype)  # every entry is written by _sort_rows
        self._p2 = np.empty(shape, dtype=dtype)
        self._built_at = np.zeros(table.num_devices, dtype=np.int64)
        for start in range(0, table.num_devices, _REBUILD_CHUNK_ROWS):
            self._sort_rows(table, slice(start, start + _REBUILD_CHUNK_ROWS))
        self._identity = table.identity

    def _sort_rows(self, table: AoITable, rows: np.ndarray | slice) -> None:
        """Sort ``rows``' ages oldest first per layer and store the prefix sums of a and a^2.

        ``rows`` is a slice in a rebuild (the sums are written in place) or the updated devices.
        """
        ages = table.ages[rows]
        in_place = isinstance(rows, slice)
        p1 = self._p1[rows] if in_place else np.empty((ages.shape[0], self._p1.shape[1]), dtype=self._p1.dtype)
        p2 = self._p2[rows] if in_place else np.empty_like(p1)
        for layer, size in enumerate(table.layer_sizes):
            lo, base = table.offsets[layer], self._base[layer]
            a = np.sort(ages[:, lo : lo + size], axis=1)[:, ::-1] + p1.dtype.type(1)  # a = tau + 1, oldest first
            p1[:, base] = 0
            p2[:, base] = 0
            np.cumsum(a, axis=1, out=p1[:, base + 1 : base + 1 + size])
            np.multiply(a, a, out=a)
            np.cumsum(a, axis=1, out=p2[:, base + 1 : base + 1 + size])
        if not in_place:
            self._p1[rows] = p1
            self._p2[rows] = p2
        self._built_at[rows] = table.num_updates
        shape = (ages.shape[0], *self._grid_counts.shape)
        columns = (self._grid_counts + np.asarray(self._base, dtype=np.intp)).ravel()
        self._grid_p1[rows] = p1[:, columns].reshape(shape).sum(axis=-1, dtype=np.int64)
        self._grid_p2[rows] = p2[:, columns].reshape(shape).sum(axis=-1, dtype=np.int64)


def _sum_dtype(max_age: int, max_layer_size: int) -> type:
    """int32 when ``(max_age + 1)^2 * I_l`` fits (every stored prefix sum is below it), else int64."""
    return np.int32 if (max_age + 1) ** 2 * max_layer_size <= _INT32_MAX else np.int64
