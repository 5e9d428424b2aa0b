"""``amp-fl --help``: every method preset and experiment on one line, from its YAML header, without heavy imports."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from amp_fl.launch import catalogue

ROOT = Path(__file__).resolve().parents[1]


def test_every_preset_is_listed_with_its_first_header_line():
    text = catalogue.render()
    for group in catalogue.LISTED:
        files = sorted((ROOT / "conf" / group).glob("*.yaml"))
        assert files, group
        for path in files:
            description = catalogue.first_comment_line(path)
            assert description, f"{path} has no describing header line"
            lines = [line for line in text.splitlines() if line.split()[:1] == [path.stem]]
            assert len(lines) == 1, path.stem
            shown = lines[0].split(None, 1)[1]
            assert description.startswith(shown.removesuffix("...")), path.stem
    assert max(len(line) for line in text.splitlines()) <= catalogue.WIDTH
    assert "dataset: cifar10, fashion_mnist, mnist, mnist5k" in text


def test_the_header_line_skips_hydras_package_directive(tmp_path):
    (tmp_path / "a.yaml").write_text("# @package _global_\n#\n# The description.\n# More.\nkey: 1\n")
    (tmp_path / "b.yaml").write_text("key: 1\n# not a header\n")
    assert catalogue.first_comment_line(tmp_path / "a.yaml") == "The description."
    assert catalogue.first_comment_line(tmp_path / "b.yaml") == ""
    assert catalogue.wants_help(["experiment=quick", "-h"]) and not catalogue.wants_help(["--hydra-help"])


def test_help_answers_without_torch_flwr_or_ray():
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['amp-fl', '--help']\n"
        "runpy.run_module('amp_fl', run_name='__main__')\n"
        "print('HEAVY', [m for m in ('torch', 'flwr', 'ray') if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert "FL methods (method=...):" in done.stdout and "amp_fl_tuned" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_the_console_script_is_the_same_entry_point():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"amp-fl": "amp_fl.__main__:cli"}
    from amp_fl.__main__ import cli

    assert callable(cli)
