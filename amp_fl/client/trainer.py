"""NumPy-in / NumPy-out local training of a sliced sub-model (the PIU's work, no Flower here).

``SubModelTrainer.fit`` follows ``NumPyClient.fit``'s shape: arrays and settings in, a
:class:`FitResult` (arrays, number of examples, training loss) out. It builds the physically
smaller sub-model directly from the received arrays and kept indices (no random initialisation
that would be overwritten), runs ``local_steps`` steps of the configured local objective
(:mod:`amp_fl.client.objectives`: plain SGD, FedProx or APFL) and returns the upload
(:func:`upload_of`: the cumulative gradient ``g = (w_start - w_end) / eta`` of every parameter,
the paper's step 4, and the trained value of every buffer), the trained weights ``w_end`` and,
for APFL, the updated personal model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from amp_fl.client.device import resolve_device
from amp_fl.client.inference import inference_model
from amp_fl.client.objectives import (
    PlainSGD,
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

CPU = torch.device("cpu")


def laid_out(images: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """``images`` in ``memory_format`` when they are a batch of images (4-D); other inputs as they are."""
    return images.contiguous(memory_format=memory_format) if images.dim() == 4 else images


@dataclass(frozen=True, eq=False)  # holds arrays
class FitResult:
    # The upload, in the sub-model's shapes (:func:`upload_of`): parameters (w_start - w_end) / eta
    # in float32; buffers (BatchNorm running statistics, counters) their trained values, in their dtype.
    gradient: list[np.ndarray]
    num_examples: int
    train_loss: float  # mean of f(w) over the local steps (the data loss, without FedProx's term)
    weights: list[np.ndarray]  # w_end, float32, the sub-model's shapes
    personal: list[np.ndarray] | None = None  # APFL: the updated personal model v (same shapes)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    input_shape: tuple[int, int, int]
    num_classes: int


def upload_of(
    start: list[np.ndarray], end: list[np.ndarray], learning_rate: float, trainable: list[bool]
) -> list[np.ndarray]:
    """What a device uploads per state_dict entry: ``(start - end) / eta`` for a parameter, ``end`` for a buffer.

    A buffer (BatchNorm's running mean and variance, its ``num_batches_tracked`` counter) is no
    gradient: dividing its change by eta and stepping it with the server's optimiser would turn
    running statistics into pseudo-gradients and truncate an integer counter. The server averages
    buffers as values instead (:mod:`amp_fl.strategy.buffers`).
    """
    check_argument(len(trainable) == len(start) == len(end), "trainable", "one flag per state_dict entry")
    return [
        ((s - e) / learning_rate).astype(np.float32) if is_parameter else np.array(e, copy=True)
        for s, e, is_parameter in zip(start, end, trainable, strict=True)
    ]


def batch_indices(num_samples: int, batch_size: int, steps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Mini-batches sampled uniformly from the local data (with replacement only if data < batch)."""
    replace = num_samples < batch_size
    return [rng.choice(num_samples, size=batch_size, replace=replace) for _ in range(steps)]


class SubModelTrainer:
    """Trains sub-models of one architecture on one device's data, on ``settings.device``."""

    def __init__(self, data: ArraySplit, model: ModelInfo, region_map: RegionMap) -> None:
        if len(data) == 0:
            raise ValueError("a device needs at least one training sample")
        # The model's training memory format (channels-last for the paper's CNN: its convs and
        # max-pools run ~1.25x faster); the images are laid out in it once, not per batch.
        self.memory_format = model_spec(model.name).train_memory_format
        self.images = laid_out(torch.from_numpy(data.images), self.memory_format)
        self.labels = torch.from_numpy(data.labels)
        self.model = model
        self.region_map = region_map
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

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
        device = resolve_device(settings.device)
        module = self._build(arrays, kept, device)
        personal_module = self._build(personal, kept, device) if personal is not None else None
        start = module_arrays(module)  # copies
        loss_sum = self._train(module, personal_module, settings, rng, device)
        end = module_arrays(module)
        trainable = [rule.is_parameter for rule in self.region_map.arrays]
        gradient = upload_of(start, end, settings.learning_rate, trainable)
        samples = settings.local_steps * settings.batch_size
        return FitResult(
            gradient,
            samples,
            loss_sum / settings.local_steps,
            weights=end,
            personal=module_arrays(personal_module) if personal_module is not None else None,
        )

    def _build(self, arrays: list[np.ndarray], kept: KeptIndices, device: torch.device = CPU) -> nn.Module:
        m = self.model
        module = build_submodel(m.name, m.input_shape, m.num_classes, self.region_map, kept, arrays=arrays)
        return module.to(device).to(memory_format=self.memory_format)  # .to(CPU) is a no-op for a CPU module

    def data_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels on ``device`` (copied there once per trainer; the CPU's are the originals)."""
        if device == CPU:
            return self.images, self.labels
        if device not in self._on_device:
            images = laid_out(self.images.to(device), self.memory_format)
            self._on_device[device] = images, self.labels.to(device)
        return self._on_device[device]

    def _train(
        self,
        module: nn.Module,
        personal: nn.Module | None,
        settings: TrainSettings,
        rng: np.random.Generator,
        device: torch.device = CPU,
    ) -> float:
        """``local_steps`` steps of the settings' objective; returns the sum of the mini-batch losses f(w)."""
        module.train()
        lr = settings.learning_rate
        optimiser = PlainSGD(module.parameters(), lr)
        loss_fn = nn.CrossEntropyLoss()
        # FedProx's w_g: the received model, frozen.
        anchor = [p.detach().clone() for p in module.parameters()] if settings.objective == "fedprox" else []
        personal_optimiser = None
        if personal is not None:
            personal.train()
            personal_optimiser = PlainSGD(personal.parameters(), lr)
        images, labels = self.data_on(device)
        loss_sum = 0.0
        for idx in batch_indices(len(self.labels), settings.batch_size, settings.local_steps, rng):
            index = torch.from_numpy(idx).to(device)  # drawn on the CPU: the same batches on every device
            x, y = images.index_select(0, index), labels.index_select(0, index)
            x = laid_out(x, self.memory_format)  # no-op once in it
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


# Evaluation batches on an accelerator: at least this many samples (a CPU keeps the configured
# batch: its caches, not kernel launches, bound it; 256-1000 measured alike for the paper's CNN).
ACCELERATOR_EVAL_BATCH = 4096


class ModelEvaluator:
    """Accuracy and mean cross-entropy of full-model arrays: the model is built once, loaded in place.

    Cheap as the model allows: ``torch.inference_mode``, the model's memory format (channels-last
    for the CNN), the inference forms of :mod:`amp_fl.client.inference` (2x2 max-pools without argmax
    indices, a few-channel convolution and its pool as one convolution on pixel blocks), each data set laid
    out and moved to ``device`` once (the recorder scores the same test and validation sets every
    round), one host sync per evaluation.
    """

    def __init__(
        self,
        model: nn.Module,
        batch_size: int,
        device: torch.device = CPU,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        check_argument(batch_size >= 1, "batch_size", f"must be >= 1, got {batch_size}")
        # A copy: the caller's module stays where and how it was.
        self.model = inference_model(copy.deepcopy(model)).to(device).to(memory_format=memory_format).eval()
        self.device = device
        self.memory_format = memory_format
        self.batch_size = batch_size if device == CPU else max(batch_size, ACCELERATOR_EVAL_BATCH)
        self._inputs: dict[int, tuple[ArraySplit, torch.Tensor, torch.Tensor]] = {}

    def __call__(self, arrays: list[np.ndarray], data: ArraySplit) -> tuple[float, float]:
        check_argument(len(data) > 0, "data", "an evaluation needs at least one sample")
        load_arrays(self.model, arrays)
        images, labels = self._prepared(data)
        correct, losses = [], []
        with torch.inference_mode():
            for start in range(0, len(labels), self.batch_size):
                x, y = images[start : start + self.batch_size], labels[start : start + self.batch_size]
                logits = self.model(x)
                losses.append(nn.functional.cross_entropy(logits, y, reduction="sum"))
                correct.append((logits.argmax(dim=1) == y).sum())
            # One transfer; the batch sums are added in float64 on the host (MPS has no float64).
            loss_sum = float(torch.stack(losses).cpu().double().sum())
            hits = int(torch.stack(correct).sum())
        return hits / len(labels), loss_sum / len(labels)

    def per_sample(self, arrays: list[np.ndarray], data: ArraySplit, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whether each of ``data``'s samples ``rows`` is classified right, and its cross-entropy (float32).

        The personalised evaluation's pass (:mod:`amp_fl.client.personal`): the same model and
        layout as :meth:`__call__`, on a subset of a data set laid out once.
        """
        check_argument(len(rows) > 0, "rows", "an evaluation needs at least one sample")
        load_arrays(self.model, arrays)
        images, labels = self._prepared(data)
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(self.device)
        correct, losses = [], []
        with torch.inference_mode():
            for start in range(0, len(index), self.batch_size):
                batch = index[start : start + self.batch_size]
                x = laid_out(images.index_select(0, batch), self.memory_format)
                y = labels.index_select(0, batch)
                logits = self.model(x)
                losses.append(nn.functional.cross_entropy(logits, y, reduction="none"))
                correct.append(logits.argmax(dim=1) == y)
            return torch.cat(correct).cpu().numpy(), torch.cat(losses).float().cpu().numpy()

    def _prepared(self, data: ArraySplit) -> tuple[torch.Tensor, torch.Tensor]:
        """``data`` on the device in the model's layout, made once per data set.

        The entry keeps ``data`` alive, so its ``id`` cannot be reused by another data set.
        """
        entry = self._inputs.get(id(data))
        if entry is None or entry[0] is not data:
            if len(self._inputs) >= 4:  # a run scores two sets (test, validation); more are passers-by
                self._inputs.clear()
            images = laid_out(torch.from_numpy(data.images).to(self.device), self.memory_format)
            entry = data, images, torch.from_numpy(data.labels).to(self.device)
            self._inputs[id(data)] = entry
        return entry[1], entry[2]
