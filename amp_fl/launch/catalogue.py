"""``amp-fl --help``: how to call it, and the presets it ships (``conf/method``, ``conf/experiment``), one line each.

Each preset's line is the first line of its header comment (after Hydra's ``# @package``
directive), so a new preset is listed as soon as its YAML file is there. Reading a few YAML
headers is all this does: ``--help`` answers without importing Hydra's composition, torch, flwr or
Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
HELP_FLAGS = ("--help", "-h")
WIDTH = 100

USAGE = """\
usage: amp-fl [group=option ...] [key=value ...]      (also: python -m amp_fl ...)
       amp-fl -m key=v1,v2 ...                         a Hydra multirun: one run per value

Runs one federated-learning job through Flower (a local simulation by default) and writes its
run folder under runs/<date>_<time>/ (metrics.csv, summary.json, figures, final model).

examples:
  amp-fl experiment=quick                              a smoke run: 10 PIUs, 5 rounds, offline data
  amp-fl experiment=main method=amp_fl_best            the main job (make run)
  amp-fl experiment=main method=fedprox seed=3         a baseline, another seed
  amp-fl experiment=quick tracking.tensorboard=true    also log to TensorBoard (<run>/tensorboard/)
  amp-fl resume=runs/<run>                             continue a stopped run from its checkpoint
"""

FOOTER = """\
more:
  amp-fl --cfg job [overrides]     print the composed configuration and stop
  amp-fl --hydra-help              Hydra's own flags
  docs/configuration.md            every key (also: docs/methods.md, docs/extending.md)
"""


def wants_help(argv: Sequence[str]) -> bool:
    """Whether the command line asks for this help (Hydra's ``--hydra-help`` stays Hydra's)."""
    return any(arg in HELP_FLAGS for arg in argv)


def first_comment_line(path: Path) -> str:
    """The first line of a YAML file's header comment, skipping ``# @package``; '' if it has none."""
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text.startswith("#"):
            return ""  # the header comment ended without a describing line
        text = text.lstrip("#").strip()
        if text and not text.startswith("@package"):
            return text
    return ""


def presets(group: str, conf_dir: Path = CONF_DIR) -> list[tuple[str, str]]:
    """``(name, one-line description)`` of every option of a config group, by name."""
    return [(path.stem, first_comment_line(path)) for path in sorted((conf_dir / group).glob("*.yaml"))]


LISTED = ("method", "experiment")  # the groups listed one option per line


def groups(conf_dir: Path = CONF_DIR) -> list[tuple[str, list[str]]]:
    """The other config groups and their options (``dataset: cifar10, fashion_mnist, ...``)."""
    return [
        (folder.name, [p.stem for p in sorted(folder.glob("*.yaml"))])
        for folder in sorted(conf_dir.iterdir())
        if folder.is_dir() and folder.name not in LISTED
    ]


def _listing(title: str, entries: list[tuple[str, str]]) -> list[str]:
    name_width = max((len(name) for name, _ in entries), default=0) + 2
    lines = [title]
    for name, text in entries:
        room = WIDTH - name_width - 2
        short = text if len(text) <= room else text[: room - 3].rstrip() + "..."
        lines.append(f"  {name.ljust(name_width)}{short}")
    return lines


def render(conf_dir: Path = CONF_DIR) -> str:
    """The whole ``--help`` page."""
    lines = [USAGE]
    lines += _listing("FL methods (method=...):", presets("method", conf_dir))
    lines.append("")
    lines += _listing("experiments (experiment=...):", presets("experiment", conf_dir))
    lines.append("")
    lines.append("other config groups (group=option):")
    lines += [f"  {name}: {', '.join(options)}" for name, options in groups(conf_dir)]
    lines.append("")
    lines.append(FOOTER)
    return "\n".join(lines)
