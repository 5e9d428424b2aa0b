"""A SuperNode's training throughput, measured on the run's actual model at start.

:func:`measure_training_throughput` builds the full model the server will train, feeds it random
mini-batches of the run's batch size and input shape, and times full SGD steps (forward,
backward, update) with the same single intra-op thread the ClientApp trains with. It returns the
seconds per training sample, and from it:

- ``flops_per_s``: the throughput in exact FLOPs of this model (forward + backward, as
  :func:`~amp_fl.pruning.counts.training_flops_per_sample` counts them): a hardware figure;
- ``effective_flops_per_s(C)``: the throughput in the server's cost units, ``C / seconds per
  sample``, where ``C`` is the FLOPs per sample the server's latency model charges (the paper's
  constant or the exact count). With it Eq. (6) predicts exactly the time the board measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from amp_fl.client.objectives import PlainSGD
from amp_fl.models import build_model
from amp_fl.pruning.counts import training_flops_per_sample
from amp_fl.pruning.maps import region_map

WARMUP_STEPS = 2
MIN_STEPS = 3
MAX_STEPS = 50
MIN_SECONDS = 0.5


@dataclass(frozen=True)
class ThroughputMeasurement:
    """What the benchmark measured: ``steps`` SGD steps of ``batch_size`` samples in ``seconds``."""

    model: str
    batch_size: int
    steps: int
    seconds: float
    exact_flops_per_sample: int

    @property
    def seconds_per_sample(self) -> float:
        return self.seconds / (self.steps * self.batch_size)

    @property
    def flops_per_s(self) -> float:
        """Exact FLOPs of the model per second."""
        return self.exact_flops_per_sample / self.seconds_per_sample

    def effective_flops_per_s(self, cost_flops_per_sample: float) -> float:
        """Throughput in the server's FLOP units: ``C / seconds per sample``."""
        if not cost_flops_per_sample > 0:
            raise ValueError(f"cost_flops_per_sample: must be > 0, got {cost_flops_per_sample}")
        return cost_flops_per_sample / self.seconds_per_sample


def measure_training_throughput(
    model: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    batch_size: int,
    *,
    min_seconds: float = MIN_SECONDS,
    max_steps: int = MAX_STEPS,
    seed: int = 0,
) -> ThroughputMeasurement:
    """Time full-model SGD steps of ``model`` on random data (at least ``MIN_STEPS`` and ``min_seconds``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    if max_steps < MIN_STEPS:
        raise ValueError(f"max_steps: must be >= {MIN_STEPS}, got {max_steps}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ClientApp trains (one intra-op thread)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net = build_model(model, num_classes=num_classes, input_shape=input_shape)
            rng = np.random.default_rng(seed)
            images = torch.from_numpy(rng.standard_normal((batch_size, *input_shape), dtype=np.float32))
            labels = torch.from_numpy(rng.integers(0, num_classes, size=batch_size))
            net.train()
            optimiser = PlainSGD(net.parameters(), 1e-3)  # the trainer's update
            loss_fn = nn.CrossEntropyLoss()

            def step() -> None:
                optimiser.zero_grad(set_to_none=True)
                loss_fn(net(images), labels).backward()
                optimiser.step()

            for _ in range(WARMUP_STEPS):
                step()
            steps, started = 0, time.perf_counter()
            while steps < MIN_STEPS or (time.perf_counter() - started < min_seconds and steps < max_steps):
                step()
                steps += 1
            seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    exact = training_flops_per_sample(region_map(model, input_shape, num_classes))
    return ThroughputMeasurement(model, batch_size, steps, seconds, int(exact))
