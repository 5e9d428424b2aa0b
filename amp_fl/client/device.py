"""``train.device`` resolved on the hardware this process sees (client training, central evaluation).

Resolved where the work runs, not on the server: a board, a Ray actor with a GPU share
(``simulation.client_gpus`` > 0) and the server may each see different accelerators, so the
configured name travels (:class:`amp_fl.protocol.TrainSetup`) and every process asks its own torch.
"""

from __future__ import annotations

from functools import cache

import torch

from amp_fl.errors import ConfigError
from amp_fl.protocol.setup import TRAIN_DEVICES


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


@cache  # the answer does not change within a process; cuda.is_available() is not free
def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` (``auto`` | ``cpu`` | ``cuda`` | ``mps``) means here.

    ``auto``: CUDA when visible, then MPS, else the CPU. A named accelerator this process does
    not see is a :class:`~amp_fl.errors.ConfigError` naming ``train.device``.
    """
    if name not in TRAIN_DEVICES:
        raise ConfigError("train.device", f"must be one of {', '.join(TRAIN_DEVICES)}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "train.device",
            "cuda, but this process sees no CUDA device (torch.cuda.is_available() is False; under Flower's "
            "simulation set simulation.client_gpus > 0); use train.device=auto or cpu",
        )
    if name == "mps" and not _mps_available():
        raise ConfigError("train.device", "mps, but torch.backends.mps.is_available() is False here; use auto or cpu")
    return torch.device(name)


def is_accelerator(device: torch.device) -> bool:
    return device.type != "cpu"
