"""Hydra entry point: ``python -m amp_fl [group=option ...] [key=value ...]`` (``-m`` for sweeps).

Hydra composes ``conf/``; the result is validated into :class:`amp_fl.config.RunConfig` before any
Flower process starts, then one Flower run is launched per job (see ``amp_fl.launch.launcher``).
The terminal shows a progress view and a summary (``verbose=true``: Flower's full log as well; it
is always in the run folder's ``flower.log``). Bad input, an unavailable dataset or a failed run
end in one ``error: ...`` line on stderr (exit code 2 for input, 1 for a failed run), never in a
traceback; Hydra's own errors too (:mod:`amp_fl.launch.hydra_cli`), and a run that never started
leaves no run folder. A folder that holds a run is never written over.

Only Hydra and the configuration's own modules are imported before the config is checked: torch,
flwr and Ray load in the processes that train (``tests/test_lazy_imports.py``), so a bad setting or
``--help`` answers in well under a second.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import TextIO

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from amp_fl.config import load_config
from amp_fl.launch.hydra_cli import EXIT_BAD_INPUT, check_resume_overrides, remove_stub, run_cli
from amp_fl.launch.launcher import cli_errors, launch

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def show_warning_on_one_line(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Warnings meant for the user (e.g. a dataset fallback) as one line, without a source excerpt."""
    print(f"[amp-fl] warning: {message}", file=file if file is not None else sys.stderr, flush=True)


warnings.showwarning = show_warning_on_one_line


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(conf: DictConfig) -> None:
    # Hydra wraps what escapes this function in its own report: errors are turned into
    # one line and SystemExit here (cli_errors).
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        _run(conf, run_dir)
    except SystemExit as exc:
        if exc.code == EXIT_BAD_INPUT:
            remove_stub(run_dir)  # a run that never started leaves no runs/<time>/ folder
        raise


def _run(conf: DictConfig, run_dir: Path) -> None:
    with cli_errors(run_dir):
        if conf.get("resume") is not None:
            run_dir = Path(str(conf.resume)).expanduser().resolve()
            check_resume_overrides(list(HydraConfig.get().overrides.task))
            from amp_fl.server.checkpoint import resume_config  # the server's modules: only when resuming

            cfg = resume_config(run_dir)
            cfg.verbose = bool(conf.verbose)
            print(f"[amp-fl] resuming {run_dir}", flush=True)
            launch(cfg, run_dir)
            return
        container = OmegaConf.to_container(conf, resolve=True)
        assert isinstance(container, dict)
        values = {str(key): value for key, value in container.items()}
        values["output_dir"] = str(run_dir)
        launch(load_config(values), run_dir)


def cli() -> None:
    """``amp-fl`` (the console script) and ``python -m amp_fl``: ``--help`` lists the presets, the rest is Hydra's."""
    from amp_fl.launch import catalogue

    if catalogue.wants_help(sys.argv[1:]):
        print(catalogue.render())
        return
    run_cli(main)  # Hydra's own errors (unknown key, missing option) in one line, exit 2


if __name__ == "__main__":
    cli()
