"""Errors shared by every package, so callers can catch one type per kind of bad input.

Library code (models, pruning, wireless, scheduling, strategy, client, data) raises ``ValueError``
or ``TypeError`` naming its own *parameter* (:func:`check_argument`). Only the configuration layer
(``amp_fl.config`` and the config dataclasses it composes) raises :class:`ConfigError`, whose
message names the *config key* a user can change.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is impossible; the message names the key (e.g. ``wireless.num_devices``)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"invalid config {key}: {problem}")
        self.key = key


def require(condition: bool, key: str, problem: str) -> None:
    """Raise :class:`ConfigError` for config key ``key`` unless ``condition`` holds (config layer only)."""
    if not condition:
        raise ConfigError(key, problem)


class ArgumentError(ValueError):
    """A library argument is impossible: ``name`` is the parameter, ``problem`` what is wrong with it.

    Kept apart (not only in the message) so that the configuration layer can name the config key the
    parameter came from when it lets a settings object check its own values.
    """

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


def check_argument(condition: bool, name: str, problem: str) -> None:
    """Raise :class:`ArgumentError` (a ``ValueError("<name>: <problem>")``) unless ``condition`` holds (library code).

    ``name`` is the function's parameter (``num_devices``, ``distance_m``), never a config key: where a
    config section is such a settings object, ``amp_fl.config`` turns the error into a
    :class:`ConfigError` naming the key.
    """
    if not condition:
        raise ArgumentError(name, problem)


class InvalidReplyError(ValueError):
    """A client's reply cannot be aggregated (wrong shapes, missing records, non-finite values)."""


# summary.json's status of a run its server stopped because the model blew up: "diverged at round N: ...".
DIVERGED = "diverged"


def diverged_status(server_round: int, reason: str) -> str:
    return f"{DIVERGED} at round {server_round}: {reason}"


class DivergedError(ArithmeticError):
    """The global model (or the aggregate about to update it) is no longer finite: the run cannot go on.

    ``round`` is the round whose update diverged; the model of the round before is the last good one.
    """

    def __init__(self, server_round: int, reason: str) -> None:
        super().__init__(diverged_status(server_round, reason))
        self.round = server_round
        self.reason = reason


class UnhealthyRunError(RuntimeError):
    """The run goes on but its result would mean nothing (:mod:`amp_fl.health`): it stops, kept as it was.

    ``status`` is what ``summary.json`` records: ``failed: ...`` (every reply rejected, no device
    schedulable) or ``diverged at round N: ...`` (loss or weight norm past its bound).
    """

    def __init__(self, server_round: int, reason: str, diverged: bool = False) -> None:
        self.status = diverged_status(server_round, reason) if diverged else f"failed: round {server_round}: {reason}"
        super().__init__(self.status)
        self.round = server_round
        self.reason = reason


class ValidationTargetReached(Exception):
    """The validation accuracy reached ``evaluation.stop_at_val_accuracy``: the run stops early, as planned."""

    def __init__(self, server_round: int, val_accuracy: float, target: float, window_s: float = 0.0) -> None:
        what = f"mean validation accuracy of the last {window_s:g} s" if window_s > 0 else "validation accuracy"
        super().__init__(
            f"stopped at round {server_round}: {what} {val_accuracy:.4f} reached "
            f"evaluation.stop_at_val_accuracy={target:g}"
        )
        self.round = server_round
        self.val_accuracy = val_accuracy


class SimTimeLimitReached(Exception):
    """The simulated clock passed ``sim_time_limit_s``: the run stops, as planned (a time horizon)."""

    def __init__(self, server_round: int, sim_time_s: float, limit_s: float) -> None:
        super().__init__(
            f"stopped at round {server_round}: simulated time {sim_time_s:.6g} s reached sim_time_limit_s={limit_s:g}"
        )
        self.round = server_round
        self.sim_time_s = sim_time_s
