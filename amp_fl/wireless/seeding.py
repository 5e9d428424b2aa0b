"""Seeded generators for the wireless and scheduling components.

Every random component derives its own generator from the run seed, a stream name and integer
keys (device index, round number). Deriving per key instead of drawing from one long-lived
stream makes a draw a pure function of ``(seed, stream, keys)``: a device's profile does not
depend on how many devices exist, and round ``t``'s channel does not depend on how many rounds
were observed before (a run resumed from a checkpoint sees the same channels).
"""

from __future__ import annotations

import zlib

import numpy as np

from amp_fl.errors import check_argument


def check_seed(seed: int, key: str = "seed") -> int:
    """Return ``seed`` as an ``int`` after checking it is a non-negative integer.

    ``numpy.random.SeedSequence`` rejects negative entropy; failing here names the key.
    """
    check_argument(
        isinstance(seed, int | np.integer) and not isinstance(seed, bool) and int(seed) >= 0,
        key,
        f"must be a non-negative integer, got {seed!r}",
    )
    return int(seed)


def derive_rng(seed: int, stream: str, *keys: int) -> np.random.Generator:
    """A generator determined by ``(seed, stream, *keys)`` only.

    ``stream`` names the component (``"channel.fading"``, ``"scheduler.amp"``); it is hashed with
    CRC-32, which unlike ``hash()`` is stable across processes, so two components given the same
    run seed still draw independent numbers.
    """
    seed = check_seed(seed)
    for key in keys:
        check_argument(int(key) >= 0, f"{stream}.key", f"must be a non-negative integer, got {key!r}")
    tag = zlib.crc32(stream.encode("utf-8"))
    return np.random.default_rng(np.random.SeedSequence([seed, tag, *(int(k) for k in keys)]))
