"""Whether a run still means something: the checks that stop one whose result would be noise.

A run can go on, round after round, with nothing useful happening: every scheduled reply rejected
(a learning rate so large that each update is NaN), no device ever scheduled (a deadline
``model.t_max_s`` no device can meet: the simulated clock never moves), or a loss and a model that
grow without bound. :class:`RunHealth` looks at each new round's row (and the global model) after
it is written and raises :class:`~amp_fl.errors.UnhealthyRunError` naming the bound it passed and
the key that sets it (``health.*``); the server records that status in ``summary.json``, keeps
the checkpoint and the model of the last round that passed, and the launcher exits non-zero.

It keeps no state of its own: the streaks are read from the rows (``metrics.csv``, which a resumed
run restores), so a checkpoint needs nothing new and a resumed run counts on where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from amp_fl.errors import UnhealthyRunError, require
from amp_fl.run_folder import RoundRow


@dataclass
class HealthConfig:
    """The ``health`` section: when a run is stopped as meaningless (0 or null: that check is off).

    ``max_rejected_rounds``: rounds in a row in which no reply was aggregated and some were lost
    (rejected, failed or late). ``max_idle_rounds``: rounds in a row in which no device was
    scheduled and nothing arrived. ``max_loss``: the central test loss (cross-entropy; about 2.3 for
    a 10-class model that guesses) above which the run has diverged; also a non-finite loss.
    ``max_weight_norm``: the same for the L2 norm of the global model's weights.
    """

    max_rejected_rounds: int = 5
    max_idle_rounds: int = 5
    max_loss: float | None = 1.0e3
    max_weight_norm: float | None = 1.0e6

    def validate(self) -> None:
        for key, rounds in (
            ("max_rejected_rounds", self.max_rejected_rounds),
            ("max_idle_rounds", self.max_idle_rounds),
        ):
            require(rounds >= 0, f"health.{key}", f"must be >= 0 rounds (0: never stop), got {rounds}")
        for key, bound in (("max_loss", self.max_loss), ("max_weight_norm", self.max_weight_norm)):
            require(
                bound is None or (math.isfinite(bound) and bound > 0),
                f"health.{key}",
                f"must be a finite number > 0 or null (no bound), got {bound}",
            )


def trailing(rows: Sequence[RoundRow], condition: str) -> int:
    """How many of the last rows (round 0 excluded) are ``rejected`` or ``idle`` rounds, in a row."""
    count = 0
    for row in reversed(rows):
        if row.round == 0:
            break
        # Nothing aggregated, and either work was lost (rejected) or none was sent (idle). Keyed on
        # what arrived, not on what was sent: a FedBuff step may dispatch nobody new yet apply B updates.
        lost = row.num_received == 0 and row.num_failed > 0
        idle = row.num_received == 0 and row.num_failed == 0 and row.num_scheduled == 0
        hit = idle if condition == "idle" else lost
        if not hit:
            break
        count += 1
    return count


def failure_summary(row: RoundRow) -> str:
    """The last round's failed replies by kind, e.g. ``10 of 10 failed: 10 invalid``."""
    kinds = {"error": row.failed_error, "timeout": row.failed_timeout, "invalid": row.failed_invalid}
    kinds["silent"] = row.failed_silent
    why = ", ".join(f"{n} {kind}" for kind, n in kinds.items() if n)
    return f"round {row.round}: {row.num_failed} of {row.num_scheduled} failed" + (f": {why}" if why else "")


def weight_norm(weights: Sequence[np.ndarray]) -> float:
    """The L2 norm of all the model's weights together, summed over the arrays in float64.

    Each array's sum of squares is taken in its own dtype (one BLAS dot, no copy: it runs every
    round, and a float64 copy of every array cost the server more than the rest of the check);
    float32 rounding moves the norm by far less than any bound on it needs. An array whose sum
    overflows its dtype (a float32 norm above about 1.8e19) is summed again in float64, so the
    norm is infinite only when the weights really are.
    """
    total = 0.0
    for w in weights:
        flat = w.ravel()
        with np.errstate(over="ignore"):  # an overflow is caught below and summed again
            squares = float(np.dot(flat, flat))
        if not math.isfinite(squares):
            wide = flat.astype(np.float64)
            squares = float(np.dot(wide, wide))
        total += squares
    return math.sqrt(total)


@dataclass
class RunHealth:
    """Raises :class:`UnhealthyRunError` from :meth:`check` once the rows or the model pass a bound."""

    config: HealthConfig

    def check(self, rows: Sequence[RoundRow], weights: Sequence[np.ndarray]) -> None:
        """After the newest row (``rows[-1]``) is written, before it is checkpointed."""
        if not rows:
            return
        row = rows[-1]
        cfg = self.config
        rejected = trailing(rows, "rejected")
        if cfg.max_rejected_rounds and rejected >= cfg.max_rejected_rounds:
            raise UnhealthyRunError(
                row.round,
                f"every scheduled reply was rejected or lost for {rejected} rounds in a row "
                f"({failure_summary(row)}; health.max_rejected_rounds={cfg.max_rejected_rounds}); "
                "a too large train.learning_rate makes every update NaN",
            )
        idle = trailing(rows, "idle")
        if cfg.max_idle_rounds and idle >= cfg.max_idle_rounds:
            raise UnhealthyRunError(
                row.round,
                f"no device could be scheduled for {idle} rounds in a row (the simulated clock stands at "
                f"{row.sim_time_s:.3f} s; health.max_idle_rounds={cfg.max_idle_rounds}): no device meets the "
                "round deadline; raise model.t_max_s or wireless.num_rbs",
            )
        if cfg.max_loss is not None and not math.isnan(row.loss) and not row.loss <= cfg.max_loss:
            raise UnhealthyRunError(
                row.round,
                f"test loss {row.loss:.4g} is above health.max_loss={cfg.max_loss:g}",
                diverged=True,
            )
        if cfg.max_weight_norm is not None:
            norm = weight_norm(weights)
            if not norm <= cfg.max_weight_norm:
                raise UnhealthyRunError(
                    row.round,
                    f"the global model's weight norm {norm:.4g} is above "
                    f"health.max_weight_norm={cfg.max_weight_norm:g}",
                    diverged=True,
                )
