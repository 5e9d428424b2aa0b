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

import math
from dataclasses import dataclass

import numpy as np

from amp_fl.errors import check_argument
from amp_fl.wireless.seeding import derive_rng

FAILURE_MODES = ("raise", "late", "corrupt")
STREAM = "failures.inject"


class InjectedFailure(RuntimeError):
    """Raised by a ClientApp that the injector told to fail (mode ``raise``)."""


@dataclass(frozen=True)
class FailureSettings:
    """Per scheduled PIU and round: the probability of each failure mode (they exclude each other).

    Parameters
    ----------
    raise_prob, late_prob, corrupt_prob : float
        In [0, 1], summing to at most 1.
    late_delay_s : float
        How long a ``late`` device waits before replying (make it exceed the reply timeout).
    """

    raise_prob: float = 0.0
    late_prob: float = 0.0
    corrupt_prob: float = 0.0
    late_delay_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("raise_prob", "late_prob", "corrupt_prob"):
            value = getattr(self, name)
            check_argument(math.isfinite(value) and 0.0 <= value <= 1.0, name, f"must be in [0, 1], got {value}")
        check_argument(self.total <= 1.0, "raise_prob", f"the three probabilities sum to {self.total} > 1")
        check_argument(
            math.isfinite(self.late_delay_s) and self.late_delay_s >= 0,
            "late_delay_s",
            f"must be a finite number >= 0, got {self.late_delay_s}",
        )

    @property
    def total(self) -> float:
        return self.raise_prob + self.late_prob + self.corrupt_prob

    @property
    def enabled(self) -> bool:
        return self.total > 0


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
