"""Config loading: the :class:`RunConfig` a ServerApp run uses, named by Flower's run config."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from amp_fl.config import RunConfig, load_config
from amp_fl.run_folder import RunFolderError, read_json

CONFIG_FILE = "config-file"  # the only key of [tool.flwr.app.config] (pyproject.toml)


def config_from_run_config(run_config: Mapping[str, Any]) -> RunConfig:
    """The RunConfig in the JSON file Flower's run config names (``config-file``), or the defaults."""
    path = str(run_config.get(CONFIG_FILE, "") or "")
    if not path:
        return load_config({})
    try:
        values = read_json(Path(path))
    except RunFolderError as exc:
        raise ValueError(f"cannot read the run's config file {CONFIG_FILE}={path!r}: {exc}") from exc
    return load_config(values)
