"""A round's scheduled clients trained in one batched pass (``train.batched_clients``, in-process engine only).

Equal to :meth:`SubModelTrainer.fit` per client within float tolerance (batched kernels add in
another order), not bit for bit; so only the in-process engine uses it, and only when asked.

How. Every client's sub-model is zero-padded to a common width: per channel group, the largest
keep count among the clients; the padding goes after the kept channels (the corner
``[:c_out, :c_in * in_expand]`` of each array is the client's, the rest 0; channel-major
flattening keeps the first FC layer's columns of channel ``c`` at ``c*H*W ... c*H*W + H*W - 1``,
so the corner is right there too). All clients' arrays are stacked on a new leading axis, and
the architecture runs once as K models side by side (:func:`amp_fl.client.grouped.grouped_model`:
convolutions become grouped ones over client-major channels, linear layers batched matmuls),
each client on its own mini-batches, drawn from its own generator exactly as the trainer draws
them. One backward of the sum of the clients' losses gives each client the gradient of its own
loss (the clients share no parameter), and one foreach SGD step updates all.

Why the padding stays exactly 0 (so slicing the corner back out is the client's sub-model):
a padded output channel has zero weights and zero bias, so its activation is 0 (ReLU, max-pool
and a BatchNorm whose padded weight and bias are 0 all keep 0); the next layer's columns for it
are 0 too, so nothing reaches the loss from it. Hence the padded rows get gradient
``delta * input`` with ``delta`` a sum of products with those zero columns (exactly 0), and the
padded columns get ``delta * activation`` with activation exactly 0. SGD moves a zero entry by
``-eta * 0``; FedProx adds ``mu * (0 - 0)``. The test checks the padding is still 0 afterwards.
APFL's pair of models is not batched (its clients train one by one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from amp_fl.client.device import resolve_device
from amp_fl.client.grouped import clients_last_weight, clients_on_channels, grouped_model
from amp_fl.client.objectives import PlainSGD, add_proximal_gradient
from amp_fl.client.settings import TrainSettings
from amp_fl.client.trainer import FitResult, ModelInfo, batch_indices, upload_of
from amp_fl.data.datasets import ArraySplit
from amp_fl.errors import check_argument
from amp_fl.pruning.regions import KeptIndices, RegionMap, keep_counts_of
from amp_fl.pruning.submodel import build_submodel

BATCHED_OBJECTIVES = ("sgd", "fedprox")


@dataclass(frozen=True, eq=False)  # holds arrays
class ClientJob:
    """One scheduled client: its data, the sub-model it received and its mini-batch generator."""

    data: ArraySplit
    arrays: list[np.ndarray]
    kept: KeptIndices
    rng: np.random.Generator


def corner(shape: Sequence[int]) -> tuple[slice, ...]:
    """The leading ``shape`` block of a padded array: where the client's own entries sit."""
    return tuple(slice(0, int(d)) for d in shape)


def padded(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``array`` in the corner of zeros of ``shape`` (same dtype)."""
    out = np.zeros(shape, dtype=array.dtype)
    out[corner(array.shape)] = array
    return out


def fit_batched(
    model: ModelInfo, region_map: RegionMap, jobs: Sequence[ClientJob], settings: TrainSettings
) -> list[FitResult]:
    """Train every job's sub-model for ``settings`` in one batched pass; one :class:`FitResult` per job, in order."""
    check_argument(len(jobs) >= 1, "jobs", "needs at least one client")
    check_argument(
        settings.objective in BATCHED_OBJECTIVES,
        "objective",
        f"the batched pass trains {' and '.join(BATCHED_OBJECTIVES)} only, got {settings.objective!r}",
    )
    device = resolve_device(settings.device)
    counts = [keep_counts_of(job.kept) for job in jobs]
    width = [int(c) for c in np.max(np.array(counts), axis=0)]
    wide_shapes = [rule.sub_shape(width) for rule in region_map.arrays]
    state = _stacked(jobs, wide_shapes, region_map.param_names, device)
    module = build_submodel(
        model.name,
        model.input_shape,
        model.num_classes,
        region_map,
        [np.arange(w) for w in width],
        arrays=[a[0].cpu().numpy() for a in state.values()],
    ).to(device)
    module.train()
    params = {n: t.requires_grad_() for n, t in state.items() if n in dict(module.named_parameters())}
    buffers = {n: t for n, t in state.items() if n not in params}
    losses = _train(module, params, buffers, jobs, settings, device)
    ends = {n: t.detach().cpu().numpy() for n, t in state.items()}
    results = []
    trainable = [rule.is_parameter for rule in region_map.arrays]
    for k, job in enumerate(jobs):
        end = [np.array(ends[name][k][corner(a.shape)], order="C") for name, a in zip(ends, job.arrays, strict=True)]
        gradient = upload_of([np.asarray(s) for s in job.arrays], end, settings.learning_rate, trainable)
        results.append(
            FitResult(gradient, settings.local_steps * settings.batch_size, losses[k] / settings.local_steps, end)
        )
    return results


def _stacked(
    jobs: Sequence[ClientJob], shapes: Sequence[tuple[int, ...]], names: Sequence[str], device: torch.device
) -> dict[str, torch.Tensor]:
    """Each state_dict entry of all clients, zero-padded to ``shapes`` and stacked on a leading client axis."""
    state = {}
    for i, (name, shape) in enumerate(zip(names, shapes, strict=True)):
        arrays = [padded(np.asarray(job.arrays[i]), shape) for job in jobs]
        state[name] = clients_last_weight(torch.from_numpy(np.stack(arrays)).to(device))
    return state


def _train(
    module: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    jobs: Sequence[ClientJob],
    settings: TrainSettings,
    device: torch.device,
) -> list[float]:
    """``local_steps`` batched steps; returns each client's sum of mini-batch losses f(w)."""
    images, labels, index = _batches(jobs, settings, device)
    k, b = len(jobs), settings.batch_size
    together = grouped_model(module, k, {**params, **buffers})
    weights = list(params.values())
    optimiser = PlainSGD(weights, settings.learning_rate)
    anchor = [w.detach().clone() for w in weights] if settings.objective == "fedprox" else []
    step_losses = []
    for step_index in index:
        x = clients_on_channels(images.index_select(0, step_index).view(k, b, *images.shape[1:]))
        y = labels.index_select(0, step_index).view(k, b)
        optimiser.zero_grad(set_to_none=True)
        logits = together(x).view(b, k, -1)  # [B, K, classes]: client k's logits in block k
        loss = F.cross_entropy(logits.permute(0, 2, 1), y.t(), reduction="none").mean(dim=0)  # [K]
        loss.sum().backward()  # the clients share nothing: each gets the gradient of its own loss
        if anchor:
            add_proximal_gradient(weights, anchor, settings.proximal_mu)
        optimiser.step()
        step_losses.append(loss.detach())
    # One host sync; the per-step losses are added in float64, as the trainer adds Python floats.
    return [float(v) for v in torch.stack(step_losses).cpu().double().sum(dim=0)]


def _batches(
    jobs: Sequence[ClientJob], settings: TrainSettings, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """All clients' data concatenated, and per step the (client-major) indices of every client's mini-batch.

    Each client's indices come from its own generator, drawn as :meth:`SubModelTrainer.fit` draws them.
    """
    offsets = np.cumsum([0] + [len(job.data) for job in jobs[:-1]])
    per_client = [
        batch_indices(len(job.data), settings.batch_size, settings.local_steps, job.rng) for job in jobs
    ]  # [client][step] -> indices
    index = [
        torch.from_numpy(np.concatenate([per_client[c][s] + offsets[c] for c in range(len(jobs))])).to(device)
        for s in range(settings.local_steps)
    ]
    images = torch.from_numpy(np.concatenate([job.data.images for job in jobs])).to(device)
    labels = torch.from_numpy(np.concatenate([job.data.labels for job in jobs])).to(device)
    return images, labels, index
