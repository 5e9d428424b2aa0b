"""docs/extending.md runs as written: its example package, installed through its own entry points, runs a run.

The blocks marked ``# file: <path>`` become the files of a package in a temporary folder; its
``pyproject.toml`` entry points become the package's installed metadata (a ``.dist-info`` folder on
``sys.path``, which is what ``pip install`` leaves), so the registries find the classes exactly as
they would for a user. The page's command line then runs in process, and its claims about the
result are checked: devices take turns, the tail policy keeps the last regions, a misspelt name
is refused with the known names.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest

from amp_fl.config import load_config
from amp_fl.errors import ConfigError
from amp_fl.experiments.campaign import compose_values
from amp_fl.launch.inprocess import run_in_process
from amp_fl.models import build_model
from amp_fl.pruning.maps import region_map_for
from amp_fl.pruning.policies import SelectionContext, build_policy
from amp_fl.pruning.policies import registry as policy_registry
from amp_fl.run_folder import SUMMARY_FILE, read_schedule
from amp_fl.scheduling import registry as scheduler_registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def doc_blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(DOC.read_text())


def install_example(root: Path) -> None:
    """Write the page's files under ``root`` and register its entry points as an installed distribution."""
    files = {}
    for _, body in doc_blocks():
        first, _, rest = body.partition("\n")
        if first.startswith("# file: "):
            files[first.removeprefix("# file: ").strip()] = rest
    assert set(files) == {"my_ext/scheduling.py", "my_ext/pruning.py", "pyproject.toml"}
    for name, text in files.items():
        if name != "pyproject.toml":
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
    (root / "my_ext" / "__init__.py").write_text("")
    project = tomllib.loads(files["pyproject.toml"])["project"]
    dist = root / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (dist / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items()) + "\n"
            for group, points in project["entry-points"].items()
        )
    )


@pytest.fixture
def example_installed(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    install_example(root)
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    # fresh registries: the built-in classes only, the entry points not yet read in this process
    for registry, table in ((scheduler_registry, "_SCHEDULERS"), (policy_registry, "_POLICIES")):
        builtin = {k: v for k, v in getattr(registry, table).items() if not v.__module__.startswith("my_ext")}
        monkeypatch.setattr(registry, table, builtin)
        monkeypatch.setattr(registry, "_plugins_loaded", False)
    yield
    for module in [m for m in sys.modules if m == "my_ext" or m.startswith("my_ext.")]:
        del sys.modules[module]


def test_the_pages_command_runs_its_scheduler_and_policy(example_installed, tmp_path):
    commands = [line for _, body in doc_blocks() for line in body.splitlines() if line.startswith("python -m amp_fl ")]
    assert len(commands) == 1
    overrides = shlex.split(commands[0])[3:]
    values = compose_values(overrides)
    run = run_in_process(load_config({**values, "output_dir": str(tmp_path / "run")}), tmp_path / "run")
    summary = json.loads((run / SUMMARY_FILE).read_text())
    assert summary["status"] == "completed"
    # as the page says: devices 0-4 in round 1, 5-9 in round 2, 0-4 again in round 3 (K = 10, R = 5)
    devices = [sorted(record["device_ids"]) for record in read_schedule(run)]
    assert devices == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [0, 1, 2, 3, 4]]


def test_the_tail_policy_keeps_the_last_regions(example_installed):
    regions = region_map_for(build_model("cnn", num_classes=10), (1, 28, 28))
    sizes = regions.layer_sizes
    counts = [max(1, size // 3) for size in sizes]
    kept = build_policy("tail", seed=0).select(counts, SelectionContext(regions, server_round=1, device_id=0))
    for indices, size, count in zip(kept, sizes, counts, strict=True):
        assert indices.tolist() == list(range(size - count, size))


def test_a_misspelt_name_is_refused_with_the_known_names(example_installed):
    with pytest.raises(
        ConfigError, match=r"scheduling.name: unknown scheduler 'round_robbin'; choose from .*round_robin"
    ):
        load_config({"scheduling": {"name": "round_robbin"}}).validate()
    with pytest.raises(ConfigError, match=r"pruning.policy: unknown policy 'tale'; choose from .*tail"):
        load_config({"pruning": {"policy": "tale"}}).validate()
