"""The state protocol: how an object that changes during a run saves and restores itself.

Every such object (a strategy and the parts it owns, the simulated clock) has ``state_dict()``,
returning a :data:`State`, and ``load_state_dict(state)``, which puts a state it returned back
into a freshly built object of the same configuration (``ValueError`` if it does not fit). A
:data:`State` is a tree of dicts (string keys) and lists whose leaves are NumPy arrays or JSON
scalars; :mod:`amp_fl.server.checkpoint` stores any such tree without knowing its field names.
"""

from __future__ import annotations

from typing import Protocol, TypeAlias

import numpy as np

StateValue: TypeAlias = np.ndarray | int | float | str | bool | list["StateValue"] | dict[str, "StateValue"] | None
State: TypeAlias = dict[str, StateValue]


class Stateful(Protocol):
    """An object that saves and restores its own state (see the module docstring)."""

    def state_dict(self) -> State: ...

    def load_state_dict(self, state: State) -> None: ...


# Typed readers for ``load_state_dict``: a state read back from disk is checked as it is taken apart.
def array(state: State, key: str) -> np.ndarray:
    value = state.get(key)
    if not isinstance(value, np.ndarray):
        raise ValueError(f"state: {key!r} must be an array, got {type(value).__name__}")
    return value


def as_arrays(value: StateValue, what: str) -> list[np.ndarray]:
    """``value`` as a list of arrays (a model's weights, one device's cache); ``what`` names it in the error."""
    if not isinstance(value, list) or not all(isinstance(a, np.ndarray) for a in value):
        raise ValueError(f"state: {what} must be a list of arrays")
    return [a for a in value if isinstance(a, np.ndarray)]


def arrays(state: State, key: str) -> list[np.ndarray]:
    return as_arrays(state.get(key), repr(key))


def optional_arrays(state: State, key: str) -> list[np.ndarray] | None:
    return None if state.get(key) is None else arrays(state, key)


def part(state: State, key: str) -> State:
    """The state of a part (a nested dict)."""
    value = state.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"state: {key!r} must be a dict, got {type(value).__name__}")
    return value


def integer(state: State, key: str) -> int:
    value = state.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"state: {key!r} must be an integer, got {value!r}")
    return value


def number(state: State, key: str) -> float:
    value = state.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"state: {key!r} must be a number, got {value!r}")
    return float(value)
