"""Masked local training for sparse FedAvg (OTA-FL with magnitude pruning): trainer and Flower handler.

:class:`MaskedTrainer` (NumPy in, NumPy out, no Flower) trains the full-shape model with its
pruned entries held at exactly zero: each masked parameter's gradient is multiplied by the mask
(a tensor hook, so the optimiser never moves a pruned entry) and the mask is applied again after
every step (so nothing, not even a future optimiser with momentum or weight decay, can revive
one). It returns the update ``w_end - w_start`` of every parameter and the trained value of every
buffer (BatchNorm's running statistics are averaged as values by the server, never as updates:
:mod:`amp_fl.strategy.buffers`).

:func:`train_masked` is registered on the project's ClientApp (:mod:`amp_fl.client.app`) for ``train.masked``:
Flower routes the ``train.masked`` messages of :mod:`amp_fl.strategy.sparse_fedavg` to it,
leaving AMP-FL's ``train`` handler untouched. It decodes the sparse global model
(:class:`~amp_fl.protocol.sparse_fedavg.MaskedTrainInstruction`), trains, and replies with the
update's surviving values only (:class:`~amp_fl.protocol.sparse_fedavg.MaskedTrainReply`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Context, Message
from torch import nn

from amp_fl import protocol as P
from amp_fl.client.local import batch_rng, local_data, model_info, train_settings
from amp_fl.client.objectives import sgd_step
from amp_fl.client.settings import TrainSettings
from amp_fl.client.trainer import ModelInfo, batch_indices
from amp_fl.data.datasets import ArraySplit
from amp_fl.errors import check_argument
from amp_fl.protocol.sparse_fedavg import MaskedTrainInstruction, MaskedTrainReply
from amp_fl.pruning.maps import region_map
from amp_fl.pruning.regions import RegionMap
from amp_fl.pruning.sparse_encoding import pack_values
from amp_fl.pruning.submodel import build_submodel, module_arrays


def prunable_arrays(regions: RegionMap) -> list[bool]:
    """Which of the model's arrays magnitude pruning may prune: the conv and linear weights."""
    return [rule.role == "weight" for rule in regions.arrays]


@dataclass(frozen=True, eq=False)  # holds arrays
class MaskedFitResult:
    # Full shapes. Parameters: w_end - w_start in float32 (exactly 0 at pruned entries); buffers: w_end.
    update: list[np.ndarray]
    weights: list[np.ndarray]  # w_end, float32
    num_examples: int
    train_loss: float  # mean mini-batch loss over the local steps


class MaskedTrainer:
    """Local SGD on the full-shape model with fixed pruning masks (one device's data)."""

    def __init__(self, data: ArraySplit, model: ModelInfo, regions: RegionMap) -> None:
        check_argument(len(data) > 0, "data", "a device needs at least one training sample")
        self.images = torch.from_numpy(data.images)
        self.labels = torch.from_numpy(data.labels)
        self.model = model
        self.regions = regions

    def fit(
        self,
        arrays: Sequence[np.ndarray],
        masks: Sequence[np.ndarray | None],
        settings: TrainSettings,
        rng: np.random.Generator,
    ) -> MaskedFitResult:
        """``settings.local_steps`` SGD steps from ``arrays`` keeping every entry outside ``masks`` at 0."""
        names = self.regions.param_names
        check_argument(len(arrays) == len(names), "arrays", f"{len(arrays)} arrays for {len(names)} model arrays")
        check_argument(len(masks) == len(names), "masks", f"{len(masks)} masks for {len(names)} model arrays")
        check_argument(settings.objective == "sgd", "settings", "sparse FedAvg trains with plain local SGD only")
        m = self.model
        module = build_submodel(
            m.name, m.input_shape, m.num_classes, self.regions, self.regions.full_kept(), arrays=list(arrays)
        )
        params = dict(module.named_parameters())
        masked: list[tuple[nn.Parameter, torch.Tensor]] = []
        for name, mask in zip(names, masks, strict=True):
            if mask is None:
                continue
            check_argument(name in params, "masks", f"{name!r} is a buffer, not a parameter: it cannot be masked")
            param = params[name]
            check_argument(tuple(mask.shape) == tuple(param.shape), "masks", f"mask of {name!r} has shape {mask.shape}")
            keep = torch.from_numpy(np.asarray(mask, dtype=bool).copy()).to(param.dtype)
            param.register_hook(lambda grad, keep=keep: grad * keep)
            masked.append((param, keep))
        self._apply(masked)  # the received model is already masked; this guards against a stray entry
        start = module_arrays(module)
        module.train()
        optimiser = torch.optim.SGD(module.parameters(), lr=settings.learning_rate)
        loss_fn = nn.CrossEntropyLoss()
        loss_sum = 0.0
        for idx in batch_indices(len(self.labels), settings.batch_size, settings.local_steps, rng):
            index = torch.from_numpy(idx)
            loss_sum += sgd_step(module, optimiser, self.images[index], self.labels[index], loss_fn)
            self._apply(masked)
        end = module_arrays(module)
        update = [
            (e.astype(np.float64) - s).astype(np.float32) if rule.is_parameter else e.copy()
            for s, e, rule in zip(start, end, self.regions.arrays, strict=True)
        ]
        return MaskedFitResult(update, end, settings.local_steps * settings.batch_size, loss_sum / settings.local_steps)

    @staticmethod
    def _apply(masked: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
        with torch.no_grad():
            for param, keep in masked:
                param.mul_(keep)


def train_masked(msg: Message, context: Context) -> Message:
    """Decode the sparse global model, train it with its mask, reply with the update's surviving values."""
    torch.set_num_threads(1)  # one actor per core, as AMP-FL's handler
    instruction = MaskedTrainInstruction.from_content(msg.content)
    device = P.partition_id(context.node_config)
    if instruction.device != device:
        raise ValueError(f"masked train instruction for device {instruction.device} delivered to partition-id {device}")
    setup = instruction.setup
    if setup.local_objective != "sgd" or setup.memory_friendly:
        raise ValueError("masked train instruction: sparse FedAvg trains with plain local SGD only")
    info = model_info(setup)
    regions = region_map(info.name, info.input_shape, info.num_classes)
    arrays, masks = instruction.decode(regions.param_names, regions.shapes, prunable_arrays(regions))
    started = time.perf_counter()
    result = MaskedTrainer(local_data(setup, device), info, regions).fit(
        arrays,
        masks,
        train_settings(setup),
        batch_rng(setup, device, instruction.round),
    )
    reply = MaskedTrainReply(
        device=device,
        names=tuple(regions.param_names),
        values=tuple(pack_values(u, m) for u, m in zip(result.update, masks, strict=True)),
        num_examples=result.num_examples,
        train_loss=result.train_loss,
        fit_seconds=time.perf_counter() - started,
        round=instruction.round,
    )
    return reply.to_reply(msg)


__all__ = ["MaskedTrainer", "prunable_arrays", "train_masked"]
