"""Hydra entry point: ``python -m amp_fl [group=option ...] [key=value ...]`` (``-m`` for sweeps).

Hydra composes ``conf/``; the result is validated into :class:`amp_fl.config.RunConfig` before any
Flower process starts, then one Flower run is launched per job (see ``amp_fl.experiments.launch``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from amp_fl.config import load_config
from amp_fl.errors import ConfigError
from amp_fl.experiments.launch import launch

log = logging.getLogger("amp_fl")
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(conf: DictConfig) -> None:
    values = OmegaConf.to_container(conf, resolve=True)
    assert isinstance(values, dict)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    values["output_dir"] = str(run_dir)
    try:
        cfg = load_config(values)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    log.info("run folder: %s", run_dir)
    launch(cfg, run_dir)
    print(f"[amp-fl] done: results in {run_dir} (metrics.csv, summary.json, *.png)", flush=True)


if __name__ == "__main__":
    main()
