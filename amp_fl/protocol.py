"""The wire protocol between the AMP-FL ServerApp and ClientApp: record names, keys, codecs.

Both sides import these names, so a typo cannot silently drop a field. Keys are kebab-case by
Flower convention.

Messages
--------
``query`` (round 0, every node): server -> ``config`` {seed, wireless settings for simulated
profiles}; client -> ``config`` {partition-id, cpu-hz, flops-per-cycle, tx-power-w, distance-m}.
A real board reports measured values from its node config instead of simulated ones.

``train`` (every scheduled node): server -> ``arrays`` (the sliced sub-model, physically smaller),
``kept`` (one int32 index array per region group) and ``config`` (round, device, training and data
settings); client -> ``arrays`` (cumulative gradient, or ``g - G_k`` in memory-friendly mode, same
shapes as the sub-model) and ``metrics`` (num-examples, train-loss).

Byte accounting: downlink = float32 sub-model bytes + 4 bytes per kept region index (int32);
uplink = float32 gradient bytes only (4 x sub-model entries): the server already knows the kept
indices, so the client sends none back (index overhead on the uplink: 0 bytes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flwr.app import Array, ArrayRecord

from amp_fl.errors import InvalidReplyError

ARRAYS = "arrays"
KEPT = "kept"
CONFIG = "config"
METRICS = "metrics"
STATE_CACHE = "amp-fl-gradient-cache"  # client state record for memory-friendly AMP-FL

PROFILE_KEYS = ("cpu-hz", "flops-per-cycle", "tx-power-w", "distance-m")


def arrays_to_record(names: Sequence[str], arrays: Sequence[np.ndarray]) -> ArrayRecord:
    """Named arrays -> ArrayRecord (insertion order kept, names checked later on receipt)."""
    if len(names) != len(arrays):
        raise ValueError(f"{len(names)} names for {len(arrays)} arrays")
    return ArrayRecord({name: Array(np.ascontiguousarray(a)) for name, a in zip(names, arrays, strict=True)})


def record_to_arrays(record: ArrayRecord, names: Sequence[str]) -> list[np.ndarray]:
    """ArrayRecord -> arrays in ``names`` order; a missing or extra name is an InvalidReplyError."""
    keys = list(record.keys())
    if sorted(keys) != sorted(names):
        missing = sorted(set(names) - set(keys))
        extra = sorted(set(keys) - set(names))
        raise InvalidReplyError(
            f"array names differ from the expected ones (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    return [record[name].numpy() for name in names]


def kept_to_record(kept: Sequence[np.ndarray]) -> ArrayRecord:
    return ArrayRecord({str(g): Array(np.asarray(idx, dtype=np.int32)) for g, idx in enumerate(kept)})


def record_to_kept(record: ArrayRecord, num_groups: int) -> list[np.ndarray]:
    names = [str(g) for g in range(num_groups)]
    return [a.astype(np.int64) for a in record_to_arrays(record, names)]
