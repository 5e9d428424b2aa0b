"""Inference forms of a model's layers: the same function, cheaper, for evaluation only (never training).

:func:`inference_model` rewrites a module in place:

- every plain 2x2 / stride-2 ``nn.MaxPool2d`` becomes :class:`MaxPool2x2` (no argmax indices);
- a plain ``nn.Conv2d`` with few input channels directly followed by such a pool becomes
  :class:`PooledConv2d` (the pool then an ``nn.Identity``): the convolution on 2x2 pixel blocks
  and a max over the four window positions.

Parameters keep their names and ``state_dict`` order, so arrays load into the rewritten module
as into the original. Values equal the original's up to float rounding (a max is exact; the
convolution sums the same products in another order).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn


class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2)`` for inference: a max over row pairs, then over column pairs; no argmax indices.

    The same values (a max is exact); on one CPU thread ~5x faster than ``max_pool2d``, which
    computes the indices even under ``inference_mode`` and was half of the CNN's evaluation time.
    Not for training: ``torch.maximum`` splits the gradient at ties, ``max_pool2d`` does not.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2  # floor, as max_pool2d without ceil_mode
        rows = torch.maximum(x[..., 0:h:2, :w], x[..., 1:h:2, :w])
        return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def with_inference_pooling(model: nn.Module) -> nn.Module:
    """``model`` with every plain 2x2 / stride-2 ``nn.MaxPool2d`` replaced by :class:`MaxPool2x2` (in place)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.MaxPool2d) and _is_plain_2x2(module):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, MaxPool2x2())
    return model


def _is_plain_2x2(pool: nn.MaxPool2d) -> bool:
    def pair(v: object) -> tuple[object, object]:
        return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[arg-type,return-value]

    stride = pool.stride if pool.stride is not None else pool.kernel_size
    return (
        pair(pool.kernel_size) == (2, 2)
        and pair(stride) == (2, 2)
        and pair(pool.padding) == (0, 0)
        and pair(pool.dilation) == (1, 1)
        and not pool.ceil_mode
        and not pool.return_indices
    )


# A convolution with at most this many input channels is fused with its pool. The paper's CNN's first
# layer (1 -> 6 channels, 5x5, 28x28) runs at some 21 GFLOP/s in oneDNN's direct convolution here, its
# second (6 -> 16) at 85: on 2x2 pixel blocks the first becomes a 4 -> 24 channel 3x3 convolution,
# 1.44x the multiply-adds at about twice the rate, and its pool a max over four channel slices.
FUSED_MAX_IN_CHANNELS = 4
_WINDOW = ((0, 0), (0, 1), (1, 0), (1, 1))  # (row, column) of a 2x2 pool window, in output-slice order
_POOL = MaxPool2x2()


class PooledConv2d(nn.Conv2d):
    """``max_pool2d(conv(x), 2)`` for inference, as one convolution on ``pixel_unshuffle(x, 2)`` and a max.

    Output pixel ``(2i + dy, 2j + dx)`` of a k x k convolution reads input rows ``2i + dy ..
    2i + dy + k - 1``: blocks ``i .. i + b - 1`` with ``b = (k + 2) // 2``. So one b x b convolution on
    the 2x2 blocks (4x the input channels) with four kernels per output channel, one per window
    position ``(dy, dx)`` (the k x k kernel placed at that offset in a 2b x 2b window of zeros),
    gives the four pixels of every pool window as four channel slices; their max is the pool.
    Same parameters (``weight``, ``bias``) as the convolution it replaces.
    """

    @classmethod
    def replacing(cls, conv: nn.Conv2d) -> PooledConv2d:
        kh, kw = conv.kernel_size
        fused = cls(conv.in_channels, conv.out_channels, (kh, kw), bias=conv.bias is not None)
        fused.weight, fused.bias = conv.weight, conv.bias  # the same Parameter objects (and their names)
        return fused

    def _blocks_for_current_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`blocks_weight`, rebuilt only when the parameters changed (an evaluation loads them once,
        then runs many batches): keyed by the tensors, their storage and their in-place version counters."""
        key = tuple((id(t), t.data_ptr(), t._version) if t is not None else None for t in (self.weight, self.bias))
        cached = self.__dict__.get("_blocks_cache")
        if cached is None or cached[0] != key:
            cached = key, self.blocks_weight()
            self.__dict__["_blocks_cache"] = cached
        return cached[1]

    def blocks_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The block convolution's kernels ``[4 * out, 4 * in, b, b]`` (window-position major) and bias."""
        out_ch, in_ch, kh, kw = self.weight.shape
        bh, bw = (kh + 2) // 2, (kw + 2) // 2
        placed = self.weight.new_zeros(4, out_ch, in_ch, 2 * bh, 2 * bw)
        for g, (dy, dx) in enumerate(_WINDOW):
            placed[g, :, :, dy : dy + kh, dx : dx + kw] = self.weight
        # [g, o, c, bh, 2(py), bw, 2(px)] -> channel (c, py, px) as pixel_unshuffle orders it.
        blocks = placed.reshape(4 * out_ch, in_ch, bh, 2, bw, 2).permute(0, 1, 3, 5, 2, 4)
        weight = blocks.reshape(4 * out_ch, 4 * in_ch, bh, bw).contiguous(memory_format=torch.channels_last)
        bias = None if self.bias is None else self.bias.repeat(4)
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        bh, bw = (kh + 2) // 2, (kw + 2) // 2
        ph, pw = (x.shape[-2] - kh + 1) // 2, (x.shape[-1] - kw + 1) // 2  # the pool's output size
        rows, cols = 2 * (ph + bh - 1), 2 * (pw + bw - 1)  # the input pixels the blocks cover
        if ph < 1 or pw < 1 or rows > x.shape[-2] or cols > x.shape[-1]:
            return _POOL(super().forward(x))  # an even kernel on a tight input: the plain route
        weight, bias = self._blocks_for_current_weights()
        windows = F.conv2d(_pixel_blocks(x[..., :rows, :cols]), weight, bias)
        c = self.out_channels
        top = torch.maximum(windows[:, 0:c], windows[:, c : 2 * c])
        return torch.maximum(top, torch.maximum(windows[:, 2 * c : 3 * c], windows[:, 3 * c :]))


def _pixel_blocks(x: torch.Tensor) -> torch.Tensor:
    """``pixel_unshuffle(x, 2)`` (channel ``c * 4 + 2 * py + px``), laid out channels-last.

    A stack of the ``4 * C`` strided pixel planes: 0.3 ms per 1,000 CNN images here, against
    1.4 ms for ``pixel_unshuffle`` (which writes NCHW, for the channels-last convolution to
    reorder again) and 3.5 ms for a 6-d permute copy.
    """
    planes = [x[:, c, py::2, px::2] for c in range(x.shape[1]) for py, px in _WINDOW]
    return torch.stack(planes, dim=-1).permute(0, 3, 1, 2)


def inference_model(model: nn.Module) -> nn.Module:
    """``model`` with its layers in their inference forms (module docstring), in place."""
    for container in list(model.modules()):
        if isinstance(container, nn.Sequential):
            _fuse_conv_pools(container)
    return with_inference_pooling(model)


def _fuse_conv_pools(sequence: nn.Sequential) -> None:
    children = list(sequence.named_children())
    for (name, conv), (pool_name, pool) in itertools.pairwise(children):
        if _fusable(conv) and isinstance(pool, nn.MaxPool2d) and _is_plain_2x2(pool):
            assert isinstance(conv, nn.Conv2d)
            setattr(sequence, name, PooledConv2d.replacing(conv))
            setattr(sequence, pool_name, nn.Identity())


def _fusable(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.in_channels <= FUSED_MAX_IN_CHANNELS
        and conv.groups == 1
        and conv.stride == (1, 1)
        and conv.padding == (0, 0)
        and conv.dilation == (1, 1)
    )
