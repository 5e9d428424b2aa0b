"""NumPy-in / NumPy-out local training of a sliced sub-model (the PIU's work, no Flower here).

``SubModelTrainer.fit`` follows ``NumPyClient.fit``'s shape: arrays and settings in, a
:class:`FitResult` (arrays, number of examples, training loss) out. It builds the physically
smaller sub-model directly from the received arrays and kept indices (no random initialisation
that would be overwritten), runs ``local_steps`` steps of the configured local objective
(:mod:`amp_fl.client.objectives`: plain SGD, FedProx or APFL) and returns the cumulative gradient
``g = (w_start - w_end) / eta`` (the paper's step 4), the trained weights ``w_end`` and, for APFL,
the updated personal model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from amp_fl.client.objectives import (
    apfl_step,
    fedprox_step,
    sgd_step,
)
from amp_fl.client.settings import TrainSettings
from amp_fl.data.datasets import ArraySplit
from amp_fl.errors import check_argument
from amp_fl.models import model_spec
from amp_fl.pruning.regions import KeptIndices, RegionMap
from amp_fl.pruning.submodel import build_submodel, load_arrays, module_arrays


@dataclass(frozen=True, eq=False)  # holds arrays
class FitResult:
    gradient: list[np.ndarray]  # float32, the sub-model's shapes: (w_start - w_end) / eta
    num_examples: int
    train_loss: float  # mean of f(w) over the local steps (the data loss, without FedProx's term)
    weights: list[np.ndarray]  # w_end, float32, the sub-model's shapes
    personal: list[np.ndarray] | None = None  # APFL: the updated personal model v (same shapes)


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
        # The model's training memory format (channels-last for the paper's CNN: its convs and
        # max-pools run ~1.25x faster); the images are laid out in it once, not per batch.
        self.memory_format = model_spec(model.name).train_memory_format
        images = torch.from_numpy(data.images)
        self.images = images.contiguous(memory_format=self.memory_format) if images.dim() == 4 else images
        self.labels = torch.from_numpy(data.labels)
        self.model = model
        self.region_map = region_map

    def fit(
        self,
        arrays: list[np.ndarray],
        kept: KeptIndices,
        settings: TrainSettings,
        rng: np.random.Generator,
        personal: list[np.ndarray] | None = None,
    ) -> FitResult:
        """Train the sub-model given by ``arrays``/``kept``; return its cumulative gradient and loss.

        ``personal`` (APFL only, required there) is the device's personal model in the same
        shapes as ``arrays``; the result carries its updated copy.
        """
        check_argument(
            (personal is not None) == (settings.objective == "apfl"),
            "personal",
            f"the personal model is needed by, and only by, the apfl objective (objective={settings.objective!r})",
        )
        module = self._build(arrays, kept)
        personal_module = self._build(personal, kept) if personal is not None else None
        start = module_arrays(module)  # copies
        loss_sum = self._train(module, personal_module, settings, rng)
        end = module_arrays(module)
        gradient = [((s - e) / settings.learning_rate).astype(np.float32) for s, e in zip(start, end, strict=True)]
        samples = settings.local_steps * settings.batch_size
        return FitResult(
            gradient,
            samples,
            loss_sum / settings.local_steps,
            weights=end,
            personal=module_arrays(personal_module) if personal_module is not None else None,
        )

    def _build(self, arrays: list[np.ndarray], kept: KeptIndices) -> nn.Module:
        m = self.model
        module = build_submodel(m.name, m.input_shape, m.num_classes, self.region_map, kept, arrays=arrays)
        return module.to(memory_format=self.memory_format)

    def _train(
        self, module: nn.Module, personal: nn.Module | None, settings: TrainSettings, rng: np.random.Generator
    ) -> float:
        """``local_steps`` steps of the settings' objective; returns the sum of the mini-batch losses f(w)."""
        module.train()
        lr = settings.learning_rate
        # foreach: one fused update over all parameters per step; the same arithmetic as the loop.
        optimiser = torch.optim.SGD(module.parameters(), lr=lr, foreach=True)
        loss_fn = nn.CrossEntropyLoss()
        # FedProx's w_g: the received model, frozen.
        anchor = [p.detach().clone() for p in module.parameters()] if settings.objective == "fedprox" else []
        personal_optimiser = None
        if personal is not None:
            personal.train()
            personal_optimiser = torch.optim.SGD(personal.parameters(), lr=lr, foreach=True)
        loss_sum = 0.0
        for idx in batch_indices(len(self.labels), settings.batch_size, settings.local_steps, rng):
            index = torch.from_numpy(idx)
            x, y = self.images.index_select(0, index), self.labels.index_select(0, index)
            x = x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x  # no-op once in it
            if settings.objective == "fedprox":
                loss_sum += fedprox_step(module, optimiser, x, y, loss_fn, anchor=anchor, mu=settings.proximal_mu)
            elif settings.objective == "apfl":
                assert personal is not None and personal_optimiser is not None  # checked in fit
                loss_sum += apfl_step(
                    module, optimiser, personal, personal_optimiser, x, y, loss_fn, alpha=settings.alpha
                )
            else:
                loss_sum += sgd_step(module, optimiser, x, y, loss_fn)
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
