"""Config loading: the :class:`RunConfig` a ServerApp run uses, named by Flower's run config."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from amp_fl.config import RunConfig, load_config

CONFIG_FILE = "config-file"  # the only key of [tool.flwr.app.config] (pyproject.toml)


def config_from_run_config(run_config: Mapping[str, Any]) -> RunConfig:
    """The RunConfig in the JSON file Flower's run config names (``config-file``), or the defaults."""
    path = str(run_config.get(CONFIG_FILE, "") or "")
    if not path:
        return load_config({})
    try:
        with open(path) as f:
            values = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the run's config file {CONFIG_FILE}={path!r}: {exc}") from exc
    return load_config(values)
