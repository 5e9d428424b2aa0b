"""Errors shared by every package, so callers can catch one type per kind of bad input."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is impossible; the message names the key (e.g. ``data.num_devices``)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"invalid config {key}: {problem}")
        self.key = key


def require(condition: bool, key: str, problem: str) -> None:
    """Raise :class:`ConfigError` for ``key`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(key, problem)


class InvalidReplyError(ValueError):
    """A client's reply cannot be aggregated (wrong shapes, missing records, non-finite values)."""
