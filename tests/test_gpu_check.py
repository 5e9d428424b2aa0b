"""The GPU check exits cleanly without an accelerator, and its script runs end to end (on the CPU here)."""

from __future__ import annotations

import json

import pytest
import torch

from amp_fl.bench import gpu_check
from amp_fl.bench.__main__ import main as bench_main

SMOKE = [
    "--device",
    "cpu",
    "--models",
    "vgg11",
    "resnet18",
    "--clients",
    "2",
    "--steps",
    "1",
    "--check-steps",
    "1",
    "--batch-size",
    "2",
    "--samples",
    "4",
]


def test_no_accelerator_is_one_line_and_a_clean_exit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_main(["gpu_check"]) == 0
    assert capsys.readouterr().out.splitlines() == [gpu_check.NO_ACCELERATOR]


def test_the_script_runs_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    try:
        gpu_check.main(SMOKE)
    finally:
        torch.set_num_threads(threads)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["model"] for line in lines] == ["vgg11", "resnet18"]
    for line in lines:
        assert line["trainer_samples_per_s"] > 0 and line["batched_samples_per_s"] > 0
        assert line["trainer_max_abs_grad_diff"] == 0.0  # the CPU trainer against itself
        assert line["batched_max_rel_grad_diff"] < 1.0  # ResNet's float32 gradients are ill-conditioned
        assert line["trainer_peak_gib"] is None
