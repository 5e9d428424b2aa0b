"""The CNN trained through SubModelTrainer (channels-last, foreach SGD) against plain autograd training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from amp_fl.client.settings import TrainSettings
from amp_fl.client.trainer import ModelInfo, SubModelTrainer, batch_indices
from amp_fl.data.datasets import ArraySplit
from amp_fl.models import build_model
from amp_fl.pruning import build_submodel, extract_arrays, module_arrays, region_map

SHAPE = (1, 28, 28)


def plain_autograd_training(
    module: nn.Module, data: ArraySplit, settings: TrainSettings, seed: int
) -> list[np.ndarray]:
    """The sub-model's layers in the paper's conv-ReLU-pool order, NCHW, per-parameter torch.optim.SGD."""
    f, c = module.features, module.classifier  # type: ignore[union-attr]
    layers = nn.Sequential(f[0], nn.ReLU(), nn.MaxPool2d(2), f[3], nn.ReLU(), nn.MaxPool2d(2), *c)
    optimiser = torch.optim.SGD(layers.parameters(), lr=settings.learning_rate, foreach=False)
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    for idx in batch_indices(len(labels), settings.batch_size, settings.local_steps, np.random.default_rng(seed)):
        optimiser.zero_grad()
        nn.functional.cross_entropy(layers(images[idx]), labels[idx]).backward()
        optimiser.step()
    return [p.detach().numpy() for p in layers.parameters()]


@pytest.mark.parametrize("widths", [(4, 11, 95), (6, 16, 128), (1, 1, 1)])
def test_trainer_matches_plain_autograd_training_on_tied_inputs(widths: tuple[int, int, int]) -> None:
    """Sub-model widths of the engine bench's first device, the full model and the narrowest one."""
    regions = region_map("cnn", SHAPE, 10)
    torch.manual_seed(9)
    full = build_model("cnn", num_classes=10, input_shape=SHAPE)
    kept = [np.arange(w) for w in widths]
    arrays = extract_arrays(module_arrays(full), regions, kept)
    rng = np.random.default_rng(11)
    images = rng.standard_normal((200, *SHAPE)).astype(np.float32)
    images[:, :, :10] = 0.0  # a constant background, as Fashion-MNIST's: tied conv outputs in pooling windows
    data = ArraySplit(images, rng.integers(0, 10, 200))
    settings = TrainSettings(learning_rate=0.05, local_steps=6, batch_size=32)
    trainer = SubModelTrainer(data, ModelInfo("cnn", SHAPE, 10), regions)
    result = trainer.fit(arrays, kept, settings, np.random.default_rng(5))
    submodel = build_submodel("cnn", SHAPE, 10, regions, kept, arrays=arrays)
    expected = plain_autograd_training(submodel, data, settings, 5)
    for got, want, sent in zip(result.weights, expected, arrays, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=5e-6)
        assert not np.array_equal(got, sent)  # it trained
    again = trainer.fit(arrays, kept, settings, np.random.default_rng(5))
    for a, b in zip(result.weights, again.weights, strict=True):
        np.testing.assert_array_equal(a, b)  # same seed, same result
