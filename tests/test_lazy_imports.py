"""The command line answers a bad setting or ``--help`` without importing torch, flwr or Ray.

Each check imports a module in a fresh interpreter and reads ``sys.modules``: deterministic, not timed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "flwr", "ray")


def loaded_after(statement: str) -> list[str]:
    """The heavy packages present in ``sys.modules`` after running ``statement`` in a new interpreter."""
    probe = f"import json, sys\n{statement}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "module",
    [
        "amp_fl.config",
        "amp_fl.__main__",
        "amp_fl.launch.launcher",
        "amp_fl.models",
        "amp_fl.protocol",
        "amp_fl.pruning",
    ],
)
def test_the_command_line_modules_import_no_torch_flwr_or_ray(module):
    assert loaded_after(f"import {module}") == []


def test_a_bad_setting_is_reported_before_torch_flwr_or_ray_load():
    statement = (
        "from amp_fl.config import load_config\n"
        "from amp_fl.errors import ConfigError\n"
        "try:\n"
        "    load_config({'num_rounds': -1})\n"
        "except ConfigError as exc:\n"
        "    assert 'num_rounds' in str(exc)\n"
        "else:\n"
        "    raise AssertionError('no ConfigError')"
    )
    assert loaded_after(statement) == []


def test_a_model_class_is_imported_when_the_model_is_built():
    assert loaded_after("from amp_fl.models import model_spec; model_spec('resnet18').default_input_shape") == []
    assert "torch" in loaded_after("from amp_fl.models import build_model; build_model('cnn')")


@pytest.mark.parametrize("package", ["amp_fl.protocol", "amp_fl.pruning"])
def test_lazy_re_exports_resolve_and_match_all(package):
    """Every name in ``__all__`` resolves (the lazy table and the ``TYPE_CHECKING`` imports agree)."""
    module = __import__(package, fromlist=["__all__"])
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    assert set(module.__all__) <= set(dir(module))
