"""Benchmark: local training time of a sliced sub-model versus a zero-masked full model.

For each model and keep fraction, times ``--steps`` SGD steps (batch ``--batch``, cross-entropy,
lr 0.05) of

- ``sliced``: the physically smaller sub-model from :func:`amp_fl.pruning.build_submodel`;
- ``masked``: the full model whose pruned entries are multiplied by the held mask after every
  step (pruning as a mask only: the compute stays that of the full model).

All configurations of a model are measured side by side: one warm-up step each, then
``--repeats`` rounds in which every configuration runs once (interleaved, so drifts in machine
load hit all of them alike); the median is reported. ``ratio_to_full`` divides by the median of
the unpruned full model measured in the same rounds; at keep 1.0 nothing is masked, so the
masked line repeats that measurement (``"measured_as": "sliced"``). Process CPU time is
reported beside wall time: on a shared machine it is less disturbed by other processes. The
goal line checks, on wall time, that at keep 0.5 the sliced VGG-11 trains in at most 0.35x the
full model's time.

Run time: VGG-11 dominates, since each round trains the full model four times over (the full
model and three masked ones); expect a few minutes on two idle cores and more on a loaded one.

Usage: ``python -m amp_fl.bench submodel [--models vgg11,cnn] [--keeps 1,0.75,0.5,0.25]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from amp_fl.bench import emit
from amp_fl.models import build_model
from amp_fl.pruning import (
    build_policy,
    build_submodel,
    extract_arrays,
    held_masks,
    keep_counts_for_fraction,
    load_arrays,
    module_arrays,
    region_map,
    training_flops_per_sample,
)
from amp_fl.pruning.policies import SelectionContext

INPUT_SHAPES: dict[str, tuple[int, int, int]] = {"vgg11": (3, 32, 32), "cnn": (1, 28, 28)}
NUM_CLASSES = 10
LEARNING_RATE = 0.05
# The goal: at keep 0.5 the sliced VGG-11 trains in at most 0.35x the full model's time.
GOAL_MODEL, GOAL_KEEP, GOAL_MAX_RATIO = "vgg11", 0.5, 0.35


@dataclass
class Config:
    """One timed configuration: a module and the step function that trains it."""

    model: str
    keep: float
    variant: str
    module: nn.Module
    step: Callable[[int], None]
    params: int
    bytes: int
    train_flops_per_sample: int
    times: list[float]  # wall-clock seconds per timed run
    cpu_times: list[float]  # CPU seconds of this process (all threads) per timed run


def _sgd_steps(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: list[tuple[torch.Tensor, torch.Tensor]] | None = None
) -> Callable[[int], None]:
    """A closure running ``steps`` SGD steps; with ``masks``, re-zeroes pruned entries after each."""
    optimizer = torch.optim.SGD(module.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()

    def run(steps: int) -> None:
        module.train()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(module(x), y).backward()
            optimizer.step()
            if masks is not None:
                with torch.no_grad():
                    for param, mask in masks:
                        param.mul_(mask)

    return run


def _configs(name: str, keeps: list[float], batch: int, seed: int) -> list[Config]:
    """Sliced and masked configurations per keep fraction (one shared full model at keep 1.0)."""
    shape = INPUT_SHAPES[name]
    rm = region_map(name, shape, NUM_CLASSES)
    torch.manual_seed(seed)
    full_arrays = module_arrays(build_model(name, num_classes=NUM_CLASSES, input_shape=shape))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *shape), generator=generator)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=generator)
    policy = build_policy("random", seed=seed)  # which regions are kept does not affect the timing
    full_flops = training_flops_per_sample(rm)
    full_bytes = sum(a.nbytes for a in full_arrays)
    full_params = sum(int(np.prod(r.shape)) for r in rm.arrays if r.is_parameter)
    configs = []
    for keep in keeps:
        counts = keep_counts_for_fraction(rm.layer_sizes, keep)
        kept = policy.select(counts, SelectionContext(rm))
        sub_arrays = extract_arrays(full_arrays, rm, kept)
        sliced = build_submodel(name, shape, NUM_CLASSES, rm, kept, arrays=sub_arrays)
        configs.append(
            Config(
                name,
                keep,
                "sliced",
                sliced,
                _sgd_steps(sliced, x, y),
                params=sum(p.numel() for p in sliced.parameters()),
                bytes=sum(a.nbytes for a in sub_arrays),
                train_flops_per_sample=training_flops_per_sample(rm, counts),
                times=[],
                cpu_times=[],
            )
        )
        if keep == 1.0:
            continue  # every entry is held: the masked model would be the same full model again
        masked = build_model(name, num_classes=NUM_CLASSES, input_shape=shape)
        masks = held_masks(rm, kept)
        load_arrays(masked, [a * m for a, m in zip(full_arrays, masks, strict=True)])
        state = masked.state_dict(keep_vars=True)
        param_masks = [
            (state[r.name], torch.from_numpy(m.astype(np.float32)))
            for r, m in zip(rm.arrays, masks, strict=True)
            if r.is_parameter and not m.all()
        ]
        configs.append(
            Config(
                name,
                keep,
                "masked",
                masked,
                _sgd_steps(masked, x, y, param_masks),
                params=full_params,
                bytes=full_bytes,
                train_flops_per_sample=full_flops,
                times=[],
                cpu_times=[],
            )
        )
    return configs


def _measure(configs: list[Config], steps: int, repeats: int) -> None:
    """Warm up every configuration with one step, then time ``repeats`` interleaved rounds.

    The order rotates between rounds so that no configuration always runs right after the most
    expensive one (caches, thermal state).
    """
    for config in configs:  # warm-up: allocator, oneDNN primitives, caches
        config.step(1)
    for round_index in range(repeats):
        shift = round_index % len(configs)
        for config in configs[shift:] + configs[:shift]:
            start, start_cpu = time.perf_counter(), time.process_time()
            config.step(steps)
            config.times.append(time.perf_counter() - start)
            config.cpu_times.append(time.process_time() - start_cpu)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m amp_fl.bench submodel", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg11,cnn", help="comma-separated: vgg11, cnn")
    parser.add_argument("--keeps", default="1.0,0.75,0.5,0.25", help="comma-separated keep fractions")
    parser.add_argument("--steps", type=int, default=8, help="SGD steps per timed run")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in INPUT_SHAPES]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(INPUT_SHAPES)}")
    keeps = [float(k) for k in args.keeps.split(",") if k]
    if any(not 0.0 < k <= 1.0 for k in keeps):
        parser.error("keep fractions must be in (0, 1]")
    # The unpruned model is the reference of every ratio, so it is always measured.
    keeps = sorted(set(keeps) | {1.0}, reverse=True)
    torch.set_num_threads(args.threads)

    for name in models:
        configs = _configs(name, keeps, args.batch, args.seed)
        _measure(configs, args.steps, args.repeats)
        full = next(c for c in configs if c.keep == 1.0)
        full_median, full_cpu = statistics.median(full.times), statistics.median(full.cpu_times)
        for c in sorted(configs, key=lambda c: (-c.keep, c.variant != "sliced")):
            median, cpu = statistics.median(c.times), statistics.median(c.cpu_times)
            record = {
                "bench": "submodel",
                "model": c.model,
                "keep": c.keep,
                "variant": c.variant,
                "median_s": round(median, 5),
                "times_s": [round(t, 5) for t in c.times],
                "ratio_to_full": round(median / full_median, 4),
                "median_cpu_s": round(cpu, 5),
                "cpu_ratio_to_full": round(cpu / full_cpu, 4),
                "params": c.params,
                "bytes": c.bytes,
                "train_flops_per_sample": c.train_flops_per_sample,
                "steps": args.steps,
                "batch": args.batch,
            }
            emit(record)
            if c is full:  # at keep 1.0 the masked model is the full model itself: measured once
                emit({**record, "variant": "masked", "measured_as": "sliced"})
        goal = next(
            (c for c in configs if c.model == GOAL_MODEL and c.keep == GOAL_KEEP and c.variant == "sliced"), None
        )
        if goal is not None:
            ratio = statistics.median(goal.times) / full_median
            emit(
                {
                    "bench": "submodel",
                    "summary": "goal",
                    "model": goal.model,
                    "keep": goal.keep,
                    "variant": "sliced",
                    "ratio_to_full": round(ratio, 4),
                    "cpu_ratio_to_full": round(statistics.median(goal.cpu_times) / full_cpu, 4),
                    "goal_max_ratio": GOAL_MAX_RATIO,
                    "goal_met": bool(ratio <= GOAL_MAX_RATIO),
                    "flops_ratio": round(goal.train_flops_per_sample / full.train_flops_per_sample, 4),
                }
            )
