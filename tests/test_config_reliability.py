"""Issue 11, item 5: the reliability settings are checked at start, and every mistake is one ``error:`` line.

(``tests/test_config.py`` holds the earlier 24 invalid-value cases and the data-dependent ones;
these add the keys issue 11 introduced, and the command line's exit code and single line.)
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from amp_fl.config import load_config
from amp_fl.errors import ConfigError
from amp_fl.launch.launcher import PROJECT_ROOT

LATE = {"late_prob": 0.2, "late_delay_s": 2.0}


@pytest.mark.parametrize(
    ("values", "key", "problem"),
    [
        ({"failures": {"raise_prob": 1.5}}, "failures.raise_prob", "must be in [0, 1], got 1.5"),
        ({"failures": {"late_prob": -0.1}}, "failures.late_prob", "must be in [0, 1], got -0.1"),
        ({"failures": {"corrupt_prob": math.nan}}, "failures.corrupt_prob", "must be in [0, 1], got nan"),
        (
            {"failures": {"raise_prob": 0.5, "late_prob": 0.3, "corrupt_prob": 0.3, "late_delay_s": 999}},
            "failures.raise_prob",
            "raise_prob + late_prob + corrupt_prob = 1.1 > 1",
        ),
        ({"failures": {"late_delay_s": -1}}, "failures.late_delay_s", "must be a finite number of seconds >= 0"),
        (
            {"failures": LATE, "strategy": {"reply_timeout_s": 2.0}},
            "failures.late_delay_s",
            "a late reply must miss the round: 2.0 s is not more than strategy.reply_timeout_s=2.0 s",
        ),
        (
            {"failures": {"raise_prob": 0.1}, "strategy": {"memory_friendly": True}},
            "strategy.memory_friendly",
            "the failure injector needs memory_friendly=false",
        ),
        ({"failures": {"raise_prob": "often"}}, "failures.raise_prob", "expected float"),
        ({"failures": {"drop_prob": 0.1}}, "failures.drop_prob", "unknown key"),
        ({"strategy": {"max_update_norm": 0}}, "strategy.max_update_norm", "must be a finite number > 0 or null"),
        ({"strategy": {"max_update_norm": math.inf}}, "strategy.max_update_norm", "got inf"),
        ({"strategy": {"reply_timeout_s": 0}}, "strategy.reply_timeout_s", "must be a finite number of seconds > 0"),
        ({"strategy": {"reply_timeout_s": math.nan}}, "strategy.reply_timeout_s", "got nan"),
        ({"strategy": {"reply_timeout_s": None}}, "strategy.reply_timeout_s", "must not be null"),
        ({"strategy": {"clip_update_norm": -1.0}}, "strategy.clip_update_norm", "must be a finite number > 0 or null"),
        ({"checkpoint": {"every": -1}}, "checkpoint.every", "must be >= 0 rounds (0: no checkpoints), got -1"),
        ({"checkpoint": {"every": 1.5}}, "checkpoint.every", "expected int, got 1.5"),
        ({"resume": 3}, "resume", "expected str | None, got 3"),
    ],
)
def test_reliability_settings_are_checked_with_the_key(values, key, problem):
    with pytest.raises(ConfigError) as info:
        load_config(values)
    assert info.value.key == key
    assert problem in str(info.value), str(info.value)


def test_reliability_defaults_change_nothing():
    cfg = load_config({})
    assert not cfg.failures.enabled
    assert cfg.strategy.max_update_norm is None and cfg.strategy.reply_timeout_s == 600.0
    # A late delay above the timeout is what the injector needs.
    assert load_config({"failures": LATE, "strategy": {"reply_timeout_s": 1.5}}).failures.late_prob == 0.2


def _cli(*args: str, tmp_path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr_home")}
    cmd = [sys.executable, "-m", "amp_fl", *args]
    return subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ("failures.raise_prob=2",),
            "error: invalid config failures.raise_prob: must be in [0, 1], got 2.0",
        ),
        (
            # Data-dependent, in a Hydra multirun: still one line and exit 2, not a Hydra traceback.
            ("-m", "dataset=mnist5k", "dataset.shards_per_device=30", "wireless.num_devices=200"),
            "error: invalid config dataset.shards_per_device: 200 devices x 30 shards = 6000 shards "
            "but only 4000 samples",
        ),
        (
            ("resume=/nonexistent/run",),
            "error: invalid config resume: /nonexistent/run is not a run folder (no run_config.json)",
        ),
        (
            ("resume=/nonexistent/run", "num_rounds=3"),
            "error: invalid config resume: continues the run's saved configuration; drop the other settings "
            "(num_rounds=3)",
        ),
    ],
    ids=["failures", "shards-multirun", "resume-nowhere", "resume-with-overrides"],
)
def test_command_line_mistake_is_one_error_line_and_exit_2(tmp_path, args, line):
    where = [f"hydra.sweep.dir={tmp_path / 'multi'}"] if args[0] == "-m" else [f"hydra.run.dir={tmp_path / 'run'}"]
    out = _cli(*args, *where, tmp_path=tmp_path)
    assert out.returncode == 2, out.stderr
    assert line in out.stderr.strip().splitlines()
    assert [x for x in out.stderr.splitlines() if x.startswith("error:")] == [line]
    assert "Traceback" not in out.stdout + out.stderr
