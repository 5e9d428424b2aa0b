"""Benchmark: client training of one speedup-preset round through the real trainer, against a naive loop.

``python -m amp_fl.bench engine [--repeats N] [--seed S] [--samples N]``

The round: the speedup preset's system (``experiment=speedup``: 100 devices, 10 RBs, the paper's
CNN with its Table I costs, T_max 0.1 s, ``local_steps`` x ``batch_size`` = 8 x 64) scheduled by
AMP-FL once, which gives the 10 scheduled devices their sub-models. Data: synthetic tensors of
Fashion-MNIST's shape (1 x 28 x 28, 10 classes, standard-normal pixels as after normalisation),
540 samples per device (54,000 training images over 100 devices); the kernels' cost does not
depend on the pixel values, and the dataset need not be installed.

Three ways of doing the round's client work, alternated in every repeat (so load drifts hit
all alike), each timed from the arrays a device receives to the arrays it returns:

- ``trainer``: :meth:`SubModelTrainer.fit` on each device's sub-model (what a client runs);
- ``trainer_full``: the same trainer on the full model (the engine alone, without pruning);
- ``batched``: :func:`amp_fl.client.batched.fit_batched` on all sub-models in one pass (the
  in-process engine's ``train.batched_clients``);
- ``naive``: a plain-torch loop on the full model, written as a tutorial would: the paper's
  conv-ReLU-pool order, contiguous (NCHW) tensors, ``torch.optim.SGD`` with its defaults,
  ``load_state_dict`` per device, batches by tensor indexing (same batch indices).

Output: one JSON line with ``ratio`` = trainer / naive and ``batched_ratio`` = batched / naive
(per repeat; min/median/max; ``cpu_ratio_median`` the same ratio in thread CPU time, which a
shared machine's load disturbs less than the wall clock), the goal ``ratio <= 0.5``, and the compute limit: the round's
counted training FLOPs at the rate of a 1024^3 sgemm measured here. A second line breaks one
sub-model step of the trainer's engine into data (batch gather), forward (model and loss),
backward, optimizer (step and zero_grad). A third compares one central evaluation (the test set
and a validation set, the paper's CNN) by :class:`~amp_fl.client.trainer.ModelEvaluator` with the
evaluation it replaced (``old_evaluate``, kept here only for that comparison), alternated, and
checks both give the same accuracy.
Run with one thread (``torch.set_num_threads(1)``, as each client does).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from amp_fl.bench import emit
from amp_fl.client.batched import ClientJob, fit_batched
from amp_fl.client.objectives import PlainSGD
from amp_fl.client.settings import TrainSettings
from amp_fl.client.trainer import ModelEvaluator, ModelInfo, SubModelTrainer, batch_indices
from amp_fl.config import load_config
from amp_fl.data.datasets import ArraySplit
from amp_fl.models import build_model, model_spec
from amp_fl.pruning import extract_arrays, module_arrays, region_map, training_flops_per_sample
from amp_fl.pruning.regions import KeptIndices, RegionMap
from amp_fl.pruning.submodel import load_arrays
from amp_fl.scheduling import AmpScheduler, AoITable
from amp_fl.wireless import DevicePopulation, RayleighChannel, SystemModel, paper_latency_config

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
SAMPLES_PER_DEVICE = 540
GOAL_MAX_RATIO = 0.5

Device = tuple[ArraySplit, list[np.ndarray], KeptIndices]


def speedup_round(seed: int, samples: int) -> tuple[TrainSettings, RegionMap, list[np.ndarray], list[Device]]:
    """The speedup preset's training settings, the CNN's region map and global arrays, and the scheduled devices."""
    cfg = load_config({"dataset": {"name": "fashion_mnist"}, "model": {"name": "cnn"}, "seed": seed})
    settings = TrainSettings(cfg.train.learning_rate, cfg.train.local_steps, cfg.train.batch_size)
    regions = region_map("cnn", INPUT_SHAPE, NUM_CLASSES)
    torch.manual_seed(seed)
    global_arrays = module_arrays(build_model("cnn", num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE))
    population = DevicePopulation.simulated(cfg.wireless, seed)
    system = SystemModel(cfg.wireless, paper_latency_config("cnn"), population)
    state = RayleighChannel(cfg.wireless, population.distance_m, seed).observe(0)
    schedule = AmpScheduler(system, seed).schedule(0, state, AoITable(cfg.wireless.num_devices, regions.layer_sizes))
    rng = np.random.default_rng(seed)
    devices = []
    for kept in schedule.kept_indices:
        images = rng.standard_normal((samples, *INPUT_SHAPE)).astype(np.float32)
        data = ArraySplit(images, rng.integers(0, NUM_CLASSES, samples))
        devices.append((data, extract_arrays(global_arrays, regions, kept), kept))
    return settings, regions, global_arrays, devices


def naive_model() -> nn.Module:
    """The paper's CNN as a plain torch user writes it (conv, ReLU, pool)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 128),
        nn.ReLU(inplace=True),
        nn.Linear(128, NUM_CLASSES),
    )


def naive_round(global_arrays: list[np.ndarray], devices: list[Device], settings: TrainSettings, seed: int) -> None:
    model = naive_model()
    names = list(model.state_dict())
    state = {n: torch.from_numpy(a) for n, a in zip(names, global_arrays, strict=True)}
    loss_fn = nn.CrossEntropyLoss()
    for k, (data, _, _) in enumerate(devices):
        model.load_state_dict(state)
        optimiser = torch.optim.SGD(model.parameters(), lr=settings.learning_rate)
        images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels)
        rng = np.random.default_rng([seed, k])
        for idx in batch_indices(len(labels), settings.batch_size, settings.local_steps, rng):
            index = torch.from_numpy(idx)
            optimiser.zero_grad()
            loss_fn(model(images[index]), labels[index]).backward()
            optimiser.step()
        [p.detach().numpy().copy() for p in model.parameters()]  # what a client sends back


def trainer_round(
    regions: RegionMap,
    devices: list[Device],
    settings: TrainSettings,
    seed: int,
    full_arrays: list[np.ndarray] | None = None,
) -> None:
    """Each device's :meth:`SubModelTrainer.fit`; on the full model when ``full_arrays`` is given."""
    info = ModelInfo("cnn", INPUT_SHAPE, NUM_CLASSES)
    for k, (data, arrays, kept) in enumerate(devices):
        rng = np.random.default_rng([seed, k])
        if full_arrays is not None:
            arrays, kept = full_arrays, regions.full_kept()
        SubModelTrainer(data, info, regions).fit(arrays, kept, settings, rng)


def batched_round(regions: RegionMap, devices: list[Device], settings: TrainSettings, seed: int) -> None:
    """All devices' sub-models in one :func:`fit_batched` pass (same generators as :func:`trainer_round`)."""
    info = ModelInfo("cnn", INPUT_SHAPE, NUM_CLASSES)
    jobs = [
        ClientJob(data, arrays, kept, np.random.default_rng([seed, k]))
        for k, (data, arrays, kept) in enumerate(devices)
    ]
    fit_batched(info, regions, jobs, settings)


def old_evaluate(arrays: list[np.ndarray], model: nn.Module, data: ArraySplit, batch_size: int) -> tuple[float, float]:
    """The central evaluation before :class:`ModelEvaluator` (no_grad, NCHW, a host sync per batch)."""
    load_arrays(model, arrays)
    model.eval()
    correct, loss_sum = 0, 0.0
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            x = torch.from_numpy(data.images[start : start + batch_size])
            y = torch.from_numpy(data.labels[start : start + batch_size])
            logits = model(x)
            loss_sum += float(loss_fn(logits, y))
            correct += int((logits.argmax(dim=1) == y).sum())
    return correct / len(data), loss_sum / len(data)


def evaluation_line(seed: int, repeats: int, test_samples: int, validation_samples: int) -> dict[str, object]:
    """One central evaluation (test + validation set), old against new, alternated in every repeat."""
    rng = np.random.default_rng(seed)
    sets = [
        ArraySplit(rng.standard_normal((n, *INPUT_SHAPE)).astype(np.float32), rng.integers(0, NUM_CLASSES, n))
        for n in (test_samples, validation_samples)
    ]
    torch.manual_seed(seed)
    model = build_model("cnn", num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE)
    weights = module_arrays(model)
    batch = 1000  # strategy.eval_batch_size's default
    evaluator = ModelEvaluator(model, batch, memory_format=model_spec("cnn").train_memory_format)
    runs: dict[str, Callable[[], list[tuple[float, float]]]] = {
        "old": lambda: [old_evaluate(weights, model, data, batch) for data in sets],
        "new": lambda: [evaluator(weights, data) for data in sets],
    }
    scores = {name: run() for name, run in runs.items()}  # also the warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(timed(run))
    ratios = [n / o for n, o in zip(times["new"], times["old"], strict=True)]
    return {
        "bench": "engine",
        "evaluation": "central evaluation of the test and validation sets (cnn, synthetic 1x28x28)",
        "test_samples": test_samples,
        "validation_samples": validation_samples,
        "old_median_s": statistics.median(times["old"]),
        "new_median_s": statistics.median(times["new"]),
        "new_over_old_min": min(ratios),
        "new_over_old_median": statistics.median(ratios),
        "goal_new_over_old_le_0_5": statistics.median(ratios) <= GOAL_MAX_RATIO,
        "same_accuracy": [a for a, _ in scores["old"]] == [a for a, _ in scores["new"]],
        "max_loss_diff": max(abs(o[1] - n[1]) for o, n in zip(scores["old"], scores["new"], strict=True)),
        "repeats": repeats,
    }


def sgemm_gflops(size: int = 1024, repeats: int = 3) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def step_breakdown(regions: RegionMap, device: Device, settings: TrainSettings, steps: int) -> dict[str, float]:
    """Median seconds of each phase of one SGD step of the trainer's engine on ``device``'s sub-model."""
    data, arrays, kept = device
    trainer = SubModelTrainer(data, ModelInfo("cnn", INPUT_SHAPE, NUM_CLASSES), regions)
    module = trainer._build(arrays, kept)
    module.train()
    optimiser = PlainSGD(module.parameters(), settings.learning_rate)  # the trainer's update
    loss_fn = nn.CrossEntropyLoss()
    phases: dict[str, list[float]] = {"data": [], "forward": [], "backward": [], "optimizer": []}
    rng = np.random.default_rng(0)
    for idx in batch_indices(len(data), settings.batch_size, steps + 3, rng):
        t0 = time.perf_counter()
        index = torch.from_numpy(idx)
        x = trainer.images.index_select(0, index).contiguous(memory_format=trainer.memory_format)
        y = trainer.labels.index_select(0, index)
        t1 = time.perf_counter()
        loss = loss_fn(module(x), y)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        for name, value in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            phases[name].append(value)
    return {name: statistics.median(values[3:]) for name, values in phases.items()}


def timed(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m amp_fl.bench engine", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=SAMPLES_PER_DEVICE, help="samples per device")
    parser.add_argument("--test-samples", type=int, default=10_000, help="evaluation: test set size")
    parser.add_argument("--validation-samples", type=int, default=5_000, help="evaluation: validation set size")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings, regions, global_arrays, devices = speedup_round(args.seed, args.samples)
    runs: dict[str, Callable[[], None]] = {
        "trainer": lambda: trainer_round(regions, devices, settings, args.seed),
        "trainer_full": lambda: trainer_round(regions, devices, settings, args.seed, global_arrays),
        "batched": lambda: batched_round(regions, devices, settings, args.seed),
        "naive": lambda: naive_round(global_arrays, devices, settings, args.seed),
    }
    for run in runs.values():  # warm-up: allocator, oneDNN primitive caches, sub-model templates
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu_times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            cpu_start = time.thread_time()
            times[name].append(timed(run))
            cpu_times[name].append(time.thread_time() - cpu_start)
    ratios = [t / n for t, n in zip(times["trainer"], times["naive"], strict=True)]
    # The same ratio in this thread's CPU time: on a shared machine the wall clock also counts the
    # time other processes hold the core, which the CPU clock leaves out (cache contention stays).
    cpu_ratios = [t / n for t, n in zip(cpu_times["trainer"], cpu_times["naive"], strict=True)]
    batched_ratios = [t / n for t, n in zip(times["batched"], times["naive"], strict=True)]
    full_ratios = [t / n for t, n in zip(times["trainer_full"], times["naive"], strict=True)]
    steps = settings.local_steps * settings.batch_size
    flops = sum(training_flops_per_sample(regions, [len(k) for k in kept]) * steps for _, _, kept in devices)
    rate = sgemm_gflops()
    emit(
        {
            "bench": "engine",
            "data": "synthetic 1x28x28, 10 classes",
            "devices": len(devices),
            "local_steps": settings.local_steps,
            "batch_size": settings.batch_size,
            "keep_fraction": [round(sum(len(k) for k in kept) / sum(regions.layer_sizes), 3) for _, _, kept in devices],
            "ratio_min": min(ratios),
            "ratio_median": statistics.median(ratios),
            "ratio_max": max(ratios),
            "cpu_ratio_median": statistics.median(cpu_ratios),
            "full_model_ratio_median": statistics.median(full_ratios),
            "batched_ratio_min": min(batched_ratios),
            "batched_ratio_median": statistics.median(batched_ratios),
            "goal_batched_ratio_le_0_5": statistics.median(batched_ratios) <= GOAL_MAX_RATIO,
            **{f"{name}_median_s": statistics.median(values) for name, values in times.items()},
            **{f"{name}_min_s": min(values) for name, values in times.items()},
            **{f"{name}_cpu_median_s": statistics.median(values) for name, values in cpu_times.items()},
            "round_train_gflop": flops / 1e9,
            "sgemm_1024_gflops": rate,
            "compute_limit_s": flops / (rate * 1e9),
            "repeats": args.repeats,
            "goal_ratio_le_0_5": statistics.median(ratios) <= GOAL_MAX_RATIO,
            "cpu_count": os.cpu_count(),
            "loadavg_1m": os.getloadavg()[0],
        }
    )
    phases = step_breakdown(regions, devices[0], settings, steps=40)
    emit(
        {
            "bench": "engine",
            "breakdown": "one sub-model SGD step (device 0), median seconds",
            "keep_counts": [len(k) for k in devices[0][2]],
            **{f"{name}_s": value for name, value in phases.items()},
            "step_s": sum(phases.values()),
        }
    )
    emit(evaluation_line(args.seed, args.repeats, args.test_samples, args.validation_samples))
