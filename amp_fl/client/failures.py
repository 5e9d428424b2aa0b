"""A failure injector for tests and studies: a scheduled PIU raises, replies late or sends garbage.

Whether (and how) device ``k`` fails in round ``t`` is a pure function of ``(seed, t, k)``
(:func:`injected_failure`, drawn from :func:`~amp_fl.wireless.seeding.derive_rng`): the same run
seed gives the same failures on every engine, in any process, and after a resume. The ClientApp
acts it out for real, so the server sees exactly what a faulty board would send:

- ``raise``: the ClientApp raises before training (Flower turns it into an error reply);
- ``late``: the device trains, then waits ``late_delay_s`` before replying, past the server's
  reply timeout (``strategy.reply_timeout_s``), so its reply misses the round;
- ``corrupt``: the device replies with NaN in its first array (rejected by the server's checks).

The server is told nothing: it finds out the way it would with real devices.
"""

from __future__ import annotations

import numpy as np

from amp_fl.protocol.setup import FailureSettings
from amp_fl.wireless.seeding import derive_rng

FAILURE_MODES = ("raise", "late", "corrupt")
STREAM = "failures.inject"


class InjectedFailure(RuntimeError):
    """Raised by a ClientApp that the injector told to fail (mode ``raise``)."""


def injected_failure(settings: FailureSettings, seed: int, server_round: int, device: int) -> str | None:
    """How device ``device`` fails in round ``server_round`` (one of :data:`FAILURE_MODES`), or ``None``."""
    if not settings.enabled:
        return None
    u = float(derive_rng(seed, STREAM, server_round, device).random())
    bound = 0.0
    for mode, prob in zip(FAILURE_MODES, (settings.raise_prob, settings.late_prob, settings.corrupt_prob), strict=True):
        bound += prob
        if u < bound:
            return mode
    return None


def corrupted(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The upload of a ``corrupt`` device: NaN in the first array, the rest as trained."""
    return [np.full_like(arrays[0], np.nan), *arrays[1:]]
