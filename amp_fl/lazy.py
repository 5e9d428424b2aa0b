"""Lazy re-exports for a package ``__init__``: a name is imported from its module on first access.

The packages the configuration and the launcher import (``protocol``, ``pruning``) re-export
names whose modules need flwr or torch; importing those eagerly would make ``python -m amp_fl``
with a bad setting, or ``--help``, pay seconds of imports before its one-line answer. A package
lists those names here (and again under ``TYPE_CHECKING``, so that type checkers see the real
types; ``tests/test_lazy_imports.py`` checks that both lists agree).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps a module to the names it provides."""
    module_of = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later accesses are plain attribute reads
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(module_of))

    return __getattr__, __dir__
