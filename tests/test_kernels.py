"""Training kernels (amp_fl.models.kernels): conv-pool-ReLU as one autograd node against autograd's reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from amp_fl.client.settings import TrainSettings
from amp_fl.client.trainer import ModelInfo, SubModelTrainer, batch_indices
from amp_fl.data.datasets import ArraySplit
from amp_fl.models import build_model
from amp_fl.models.kernels import conv_pool_relu, reference_conv_pool_relu
from amp_fl.pruning import build_submodel, extract_arrays, module_arrays, region_map

SHAPE = (1, 28, 28)
LAYOUTS = [torch.contiguous_format, torch.channels_last]


def run_block(block, x, weight, bias, grad_out, need_x):  # type: ignore[no-untyped-def]
    """Output and (input, weight, bias) gradients of ``block`` for the upstream gradient ``grad_out``."""
    x = x.detach().clone().requires_grad_(need_x)
    weight, bias = weight.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()
    out = block(x, weight, bias)
    out.backward(grad_out)
    return out.detach(), x.grad, weight.grad, bias.grad


def random_block(in_channels: int, out_channels: int, size: int, layout: torch.memory_format, seed: int):  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, in_channels, size, size, generator=gen)
    x[:, :, : size // 2] = 0.0  # a constant background: tied conv outputs inside pooling windows
    weight = torch.randn(out_channels, in_channels, 5, 5, generator=gen)
    bias = torch.randn(out_channels, generator=gen)
    return x.contiguous(memory_format=layout), weight.contiguous(memory_format=layout), bias


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    ("in_channels", "out_channels", "size", "need_x"),
    [(1, 4, 28, False), (1, 6, 28, False), (4, 11, 12, True), (6, 16, 12, True), (3, 5, 11, True)],
)
def test_block_equals_autograd_of_conv_pool_relu(
    in_channels: int, out_channels: int, size: int, need_x: bool, layout: torch.memory_format
) -> None:
    x, weight, bias = random_block(in_channels, out_channels, size, layout, seed=in_channels * 100 + out_channels)
    pooled = (size - 4) // 2
    grad_out = torch.randn(3, out_channels, pooled, pooled, generator=torch.Generator().manual_seed(1))
    ours = run_block(conv_pool_relu, x, weight, bias, grad_out, need_x)
    theirs = run_block(reference_conv_pool_relu, x, weight, bias, grad_out, need_x)
    assert torch.equal(ours[0], theirs[0])  # the same ops forward: bit-for-bit
    if not need_x:
        assert ours[1] is None  # the first layer's input gradient is never formed
    for got, want in zip(ours[1:], theirs[1:], strict=True):
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_all_tied_windows_send_the_gradient_to_the_first_maximum(layout: torch.memory_format) -> None:
    # A zero input and a positive bias: every conv output equals the bias, every 2x2 window ties.
    # max_pool2d routes a tie's gradient to the window's first (top-left) entry, so the
    # input gradient is conv_transpose of grad_out placed at the even positions only.
    x = torch.zeros(2, 2, 12, 12).contiguous(memory_format=layout)
    weight = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(2)).contiguous(memory_format=layout)
    bias = torch.tensor([0.5, 1.0, 2.0])
    grad_out = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    out, grad_x, grad_w, grad_b = run_block(conv_pool_relu, x, weight, bias, grad_out, need_x=True)
    assert torch.equal(out, bias.view(1, 3, 1, 1).expand(2, 3, 4, 4))
    grad_y = torch.zeros(2, 3, 8, 8)
    grad_y[:, :, 0::2, 0::2] = grad_out  # first maximum of each window
    torch.testing.assert_close(grad_x, nn.functional.conv_transpose2d(grad_y, weight.contiguous()))
    torch.testing.assert_close(grad_b, grad_out.sum((0, 2, 3)))  # every output is active
    assert torch.equal(grad_w, torch.zeros_like(grad_w))  # the input is zero


def test_windows_whose_max_is_negative_pass_no_gradient() -> None:
    x = torch.zeros(1, 1, 16, 16)
    weight = torch.ones(2, 1, 5, 5)
    bias = torch.tensor([-1.0, 1.0])  # channel 0 is all -1: ReLU zeroes it, no gradient
    grad_out = torch.ones(1, 2, 6, 6)
    _, _, _, grad_b = run_block(conv_pool_relu, x, weight, bias, grad_out, need_x=False)
    assert grad_b.tolist() == [0.0, 36.0]


def test_block_under_vmap_takes_the_plain_ops() -> None:
    x, weight, bias = random_block(2, 3, 12, torch.contiguous_format, seed=4)
    stacked = torch.stack([x, x + 1.0])
    batched = torch.func.vmap(conv_pool_relu, in_dims=(0, None, None))(stacked, weight, bias)
    for k in range(2):
        assert torch.equal(batched[k], reference_conv_pool_relu(stacked[k], weight, bias))


def test_cnn_training_forward_equals_its_evaluation_forward() -> None:
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=10, input_shape=SHAPE)
    x = torch.randn(8, *SHAPE)
    trained_path = model.train()(x)
    with torch.no_grad():
        module_path = model(x)  # no grad: the modules' path
    assert trained_path.grad_fn is not None
    assert torch.equal(trained_path.detach(), module_path)


def plain_autograd_training(
    module: nn.Module, data: ArraySplit, settings: TrainSettings, seed: int
) -> list[np.ndarray]:
    """The sub-model's layers called as modules (plain autograd), NCHW, torch.optim.SGD."""
    f, c = module.features, module.classifier  # type: ignore[union-attr]
    layers = nn.Sequential(*f, *c)
    optimiser = torch.optim.SGD(layers.parameters(), lr=settings.learning_rate, foreach=False)
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    for idx in batch_indices(len(labels), settings.batch_size, settings.local_steps, np.random.default_rng(seed)):
        optimiser.zero_grad()
        nn.functional.cross_entropy(layers(images[idx]), labels[idx]).backward()
        optimiser.step()
    return [p.detach().numpy() for p in layers.parameters()]


@pytest.mark.parametrize("widths", [(4, 11, 95), (6, 16, 128), (1, 1, 1)])
def test_trainer_matches_plain_autograd_training(widths: tuple[int, int, int]) -> None:
    regions = region_map("cnn", SHAPE, 10)
    torch.manual_seed(9)
    full = build_model("cnn", num_classes=10, input_shape=SHAPE)
    kept = [np.arange(w) for w in widths]
    arrays = extract_arrays(module_arrays(full), regions, kept)
    rng = np.random.default_rng(11)
    images = rng.standard_normal((200, *SHAPE)).astype(np.float32)
    images[:, :, :8] = 0.0  # a constant background, as Fashion-MNIST's
    data = ArraySplit(images, rng.integers(0, 10, 200))
    settings = TrainSettings(learning_rate=0.05, local_steps=6, batch_size=32)
    result = SubModelTrainer(data, ModelInfo("cnn", SHAPE, 10), regions).fit(
        arrays, kept, settings, np.random.default_rng(5)
    )
    expected = plain_autograd_training(build_submodel("cnn", SHAPE, 10, regions, kept, arrays=arrays), data, settings, 5)
    for got, want, sent in zip(result.weights, expected, arrays, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=5e-6)
        assert not np.array_equal(got, sent)  # it trained
    again = SubModelTrainer(data, ModelInfo("cnn", SHAPE, 10), regions).fit(
        arrays, kept, settings, np.random.default_rng(5)
    )
    for a, b in zip(result.weights, again.weights, strict=True):
        np.testing.assert_array_equal(a, b)  # deterministic
