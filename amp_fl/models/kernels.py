"""Training kernels for small CNNs on one CPU thread: conv, 2x2 max-pool and ReLU as one autograd node.

``conv_pool_relu(x, weight, bias)`` is ``relu(max_pool2d(conv2d(x, weight, bias), 2))`` (a
stride-1, unpadded, ungrouped convolution; pool, then ReLU, as :class:`~amp_fl.models.cnn.PaperCNN`
orders them) with the same values as those three torch calls and gradients equal to autograd's
within float summation order. What it does differently, each measured on one thread at batch 64
for the paper's CNN sub-models (docs/engine.md, "Client training kernels"):

- one autograd node instead of three, the ReLU's backward folded in front of the pool's;
- the max-pool runs in channels-last: a convolution of a 1-channel input returns a contiguous
  (NCHW) map, and torch's NCHW max-pool on it took 0.67-1.1 ms against 0.05 ms for the layout
  change plus 0.24-0.5 ms for the channels-last pool;
- the input gradient is computed only where one is needed (``ctx.needs_input_grad``: never for
  the first layer) and apart from the weight gradient: oneDNN's joint backward for the second
  conv (4->11 channels, 12x12) took 0.7-0.8 ms, the weight-only backward 0.13-0.16 ms plus a
  contiguous transposed convolution for the input gradient 0.34-0.40 ms.

The max-pool is torch's ``max_pool2d_with_indices`` and its backward the matching aten op, so a
tie inside a window sends its gradient to the first maximum, as ``nn.MaxPool2d`` does
(Fashion-MNIST's constant backgrounds make ties common); the ReLU's backward is torch's own
``threshold_backward`` (no gradient where the output is 0).

Under torch.func transforms (``vmap`` in :mod:`amp_fl.client.batched`) a custom autograd
Function without a vmap rule cannot run, so :func:`conv_pool_relu` takes the plain ops there.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

OPTS = {"pool_cl": True, "convT": True}
_POOL = ([2, 2], [2, 2])  # kernel, stride
_CONV = ([1, 1], [0, 0], [1, 1], False, [0, 0], 1)  # stride, padding, dilation, transposed, output padding, groups


def reference_conv_pool_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The plain torch composition: autograd's reference, and the path under functorch transforms."""
    return F.relu(F.max_pool2d(F.conv2d(x, weight, bias), 2))


def conv_pool_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``relu(max_pool2d(conv2d(x, weight, bias), 2))`` as one autograd node (module docstring)."""
    if bias is None or torch._C._are_functorch_transforms_active():
        return reference_conv_pool_relu(x, weight, bias)
    out: torch.Tensor = _ConvPoolReLU.apply(x, weight, bias)
    return out


class _ConvPoolReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, weight, bias)
        if OPTS["pool_cl"]:
            y = y.contiguous(memory_format=torch.channels_last)  # no-op unless NCHW
        pooled, indices = torch.ops.aten.max_pool2d_with_indices(y, *_POOL)
        out = torch.relu_(pooled)
        ctx.save_for_backward(x, weight, y, indices, out)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, y, indices, out = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        grad_pooled = torch.ops.aten.threshold_backward(grad_out, out, 0)
        grad_y = torch.ops.aten.max_pool2d_with_indices_backward(grad_pooled, y, *_POOL, [0, 0], [1, 1], False, indices)
        grad_w = grad_b = grad_x = None
        if need_w or need_b:
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad_y, x, weight, [weight.shape[0]], *_CONV, [False, need_w, need_b]
            )
        if need_x and not OPTS["convT"]:
            grad_x = torch.ops.aten.convolution_backward(grad_y, x, weight, None, *_CONV, [True, False, False])[0]
        elif need_x:
            grad_x = F.conv_transpose2d(grad_y.contiguous(), weight.contiguous())
        return grad_x, grad_w, grad_b
