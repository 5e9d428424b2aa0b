"""NumPy-in / NumPy-out local training of a sliced sub-model (the PIU's work, no Flower here).

``SubModelTrainer.fit`` follows ``NumPyClient.fit``'s shape: arrays and settings in, a
:class:`FitResult` (arrays, number of examples, training loss) out. It builds the physically
smaller sub-model directly from the received arrays and kept indices (no random initialisation
that would be overwritten), runs ``local_steps`` SGD steps and returns the cumulative gradient
``g = (w_start - w_end) / eta`` (the paper's step 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from amp_fl.data.datasets import ArraySplit
from amp_fl.pruning.regions import KeptIndices, RegionMap
from amp_fl.pruning.submodel import build_submodel, load_arrays, module_arrays


@dataclass(frozen=True)
class TrainSettings:
    learning_rate: float
    local_steps: int
    batch_size: int


@dataclass(frozen=True, eq=False)  # holds arrays
class FitResult:
    gradient: list[np.ndarray]  # float32, the sub-model's shapes
    num_examples: int
    train_loss: float  # mean over the local steps


@dataclass(frozen=True)
class ModelInfo:
    name: str
    input_shape: tuple[int, int, int]
    num_classes: int


def batch_indices(num_samples: int, batch_size: int, steps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Mini-batches sampled uniformly from the local data (with replacement only if data < batch)."""
    replace = num_samples < batch_size
    return [rng.choice(num_samples, size=batch_size, replace=replace) for _ in range(steps)]


class SubModelTrainer:
    """Trains sub-models of one architecture on one device's data."""

    def __init__(self, data: ArraySplit, model: ModelInfo, region_map: RegionMap) -> None:
        if len(data) == 0:
            raise ValueError("a device needs at least one training sample")
        self.images = torch.from_numpy(data.images)
        self.labels = torch.from_numpy(data.labels)
        self.model = model
        self.region_map = region_map

    def fit(
        self, arrays: list[np.ndarray], kept: KeptIndices, settings: TrainSettings, rng: np.random.Generator
    ) -> FitResult:
        """Train the sub-model given by ``arrays``/``kept``; return its cumulative gradient and loss."""
        module = build_submodel(
            self.model.name, self.model.input_shape, self.model.num_classes, self.region_map, kept, arrays=arrays
        )
        start = module_arrays(module)  # copies
        loss_sum = self._sgd(module, settings, rng)
        end = module_arrays(module)
        gradient = [((s - e) / settings.learning_rate).astype(np.float32) for s, e in zip(start, end, strict=True)]
        samples = settings.local_steps * settings.batch_size
        return FitResult(gradient, samples, loss_sum / settings.local_steps)

    def _sgd(self, module: nn.Module, settings: TrainSettings, rng: np.random.Generator) -> float:
        module.train()
        optimiser = torch.optim.SGD(module.parameters(), lr=settings.learning_rate)
        loss_fn = nn.CrossEntropyLoss()
        loss_sum = 0.0
        for idx in batch_indices(len(self.labels), settings.batch_size, settings.local_steps, rng):
            index = torch.from_numpy(idx)
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(module(self.images[index]), self.labels[index])
            loss.backward()
            optimiser.step()
            loss_sum += float(loss.detach())
        return loss_sum


def evaluate_arrays(
    arrays: list[np.ndarray], model: nn.Module, data: ArraySplit, batch_size: int
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` loaded with ``arrays`` on ``data``."""
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
