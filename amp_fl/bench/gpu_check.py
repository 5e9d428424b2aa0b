"""GPU check: the trainer and the batched pass on an accelerator against the CPU (one prepared script, < 5 min).

``python -m amp_fl.bench gpu_check [--models vgg11 resnet18] [--clients 4] [--steps 8] [--batch-size 64]``

Flower-free. For each model (CIFAR-10 shapes: 3 x 32 x 32, 10 classes; synthetic standard-normal
data, ``--samples`` per client) and ``--clients`` sub-models of keep fractions 1, 3/4, 1/2, ...:

- ``trainer``: :meth:`SubModelTrainer.fit` per client on the accelerator;
- ``batched``: :func:`amp_fl.client.batched.fit_batched`, all clients in one pass on it;

each timed after a warm-up (samples/s = clients x steps x batch / seconds) with its peak memory
(``torch.cuda.max_memory_allocated``), and each compared with the CPU trainer on the same
sub-models and mini-batches for ``--check-steps`` steps: the largest absolute and relative
(to the array's largest entry) gradient difference. The comparison runs with TF32 off (exact
float32 kernels); the timing with torch's defaults. Deep BatchNorm nets at small batches are
ill-conditioned in float32 (ResNet-18's CPU gradients move by ~10 % between memory formats), so
the differences are reported, not judged.

On a machine without an accelerator it prints one "no accelerator" line and exits cleanly.
``--device cpu`` runs the same script on the CPU (a smoke test of the script, not a measurement).
Written without access to a GPU: untested on hardware.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from amp_fl.bench import emit
from amp_fl.client.batched import ClientJob, fit_batched
from amp_fl.client.settings import TrainSettings
from amp_fl.client.trainer import FitResult, ModelInfo, SubModelTrainer
from amp_fl.data.datasets import ArraySplit
from amp_fl.models import build_model
from amp_fl.pruning import extract_arrays, module_arrays, region_map
from amp_fl.pruning.regions import RegionMap

INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10
NO_ACCELERATOR = "gpu_check: no accelerator (torch.cuda.is_available() is False); nothing measured"

Clients = list[tuple[ArraySplit, list[np.ndarray], list[np.ndarray]]]


def clients_of(name: str, count: int, samples: int, seed: int) -> tuple[RegionMap, Clients]:
    """``count`` sub-models of ``name`` (keep fractions 1, 3/4, 1/2, ...; random kept regions) with synthetic data."""
    regions = region_map(name, INPUT_SHAPE, NUM_CLASSES)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        full = module_arrays(build_model(name, num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE))
    rng = np.random.default_rng(seed)
    clients = []
    for k in range(count):
        fraction = max(1.0 - 0.25 * k, 0.25)
        kept = [np.sort(rng.choice(g.size, max(1, int(g.size * fraction)), replace=False)) for g in regions.groups]
        data = ArraySplit(
            rng.standard_normal((samples, *INPUT_SHAPE)).astype(np.float32), rng.integers(0, NUM_CLASSES, samples)
        )
        clients.append((data, extract_arrays(full, regions, kept), kept))
    return regions, clients


def run_trainer(info: ModelInfo, regions: RegionMap, clients: Clients, settings: TrainSettings) -> list[FitResult]:
    return [
        SubModelTrainer(data, info, regions).fit(arrays, kept, settings, np.random.default_rng([1, k]))
        for k, (data, arrays, kept) in enumerate(clients)
    ]


def run_batched(info: ModelInfo, regions: RegionMap, clients: Clients, settings: TrainSettings) -> list[FitResult]:
    jobs = [
        ClientJob(data, arrays, kept, np.random.default_rng([1, k])) for k, (data, arrays, kept) in enumerate(clients)
    ]
    return fit_batched(info, regions, jobs, settings)


def gradient_difference(got: list[FitResult], want: list[FitResult], regions: RegionMap) -> dict[str, float]:
    """The largest absolute and relative gradient difference over clients and trainable arrays."""
    worst_abs = worst_rel = 0.0
    for g, w in zip(got, want, strict=True):
        for rule, a, b in zip(regions.arrays, g.gradient, w.gradient, strict=True):
            if not rule.is_parameter or a.size == 0:
                continue
            diff = float(np.abs(a - b).max())
            worst_abs = max(worst_abs, diff)
            worst_rel = max(worst_rel, diff / max(float(np.abs(b).max()), 1e-12))
    return {"max_abs_grad_diff": worst_abs, "max_rel_grad_diff": worst_rel}


@contextmanager
def exact_float32() -> Iterator[None]:
    """TF32 off for the comparison with the CPU (cuDNN convolutions use it by default)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def measured(device: torch.device, run: Callable[[], object]) -> tuple[float, float | None]:
    """Seconds of ``run()`` (synchronised) and its peak accelerator memory in GiB (``None`` on the CPU)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    run()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return seconds, (torch.cuda.max_memory_allocated() / 2**30 if cuda else None)


def check_model(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    info = ModelInfo(name, INPUT_SHAPE, NUM_CLASSES)
    regions, clients = clients_of(name, args.clients, args.samples, args.seed)
    check = TrainSettings(0.05, args.check_steps, args.batch_size, device="cpu")
    on_device = TrainSettings(0.05, args.check_steps, args.batch_size, device=str(device.type))  # type: ignore[arg-type]
    reference = run_trainer(info, regions, clients, check)
    with exact_float32():
        trainer_diff = gradient_difference(run_trainer(info, regions, clients, on_device), reference, regions)
        batched_diff = gradient_difference(run_batched(info, regions, clients, on_device), reference, regions)
    timed = TrainSettings(0.05, args.steps, args.batch_size, device=str(device.type))  # type: ignore[arg-type]
    samples = args.clients * args.steps * args.batch_size
    record: dict[str, Any] = {
        "bench": "gpu_check",
        "model": name,
        "device": str(device),
        "clients": args.clients,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "keep_counts": [[len(k) for k in kept] for _, _, kept in clients],
    }
    for label, run, diff in (("trainer", run_trainer, trainer_diff), ("batched", run_batched, batched_diff)):
        run(info, regions, clients, timed)  # warm-up: cuDNN autotuning, allocator, sub-model templates
        seconds, peak = measured(device, lambda run=run: run(info, regions, clients, timed))  # type: ignore[misc]
        record.update(
            {
                f"{label}_s": seconds,
                f"{label}_samples_per_s": samples / seconds,
                f"{label}_peak_gib": peak,
                **{f"{label}_{key}": value for key, value in diff.items()},
            }
        )
    return record


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m amp_fl.bench gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg11", "resnet18"])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8, help="local steps of the timed passes")
    parser.add_argument("--check-steps", type=int, default=2, help="local steps of the comparison with the CPU")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=512, help="samples per client")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda", help="cuda (the check) or cpu (a smoke test of the script)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(NO_ACCELERATOR, flush=True)
        return
    device = torch.device(args.device)
    for name in args.models:
        emit(check_model(name, args, device))
