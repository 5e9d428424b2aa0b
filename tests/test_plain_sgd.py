"""PlainSGD: torch.optim.SGD's update (no momentum, no weight decay) bit for bit, without torch.optim."""

from __future__ import annotations

import subprocess
import sys

import torch

from amp_fl.client.objectives import PlainSGD, fedprox_step, sgd_step
from amp_fl.models import build_model


def _pair(seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        a = build_model("cnn", num_classes=10)
    b = build_model("cnn", num_classes=10)
    b.load_state_dict(a.state_dict())
    return a, b


def test_plain_sgd_steps_as_torch_optim_sgd_does_bit_for_bit() -> None:
    ours, theirs = _pair(1)
    mine, reference = PlainSGD(ours.parameters(), 0.05), torch.optim.SGD(theirs.parameters(), lr=0.05, foreach=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(2)
    anchor = [p.detach().clone() for p in theirs.parameters()]
    for step in range(6):
        x, y = torch.randn(16, 1, 28, 28, generator=gen), torch.randint(0, 10, (16,), generator=gen)
        if step % 2:
            a = fedprox_step(ours, mine, x, y, loss_fn, anchor=anchor, mu=0.1)
            b = fedprox_step(theirs, reference, x, y, loss_fn, anchor=anchor, mu=0.1)
        else:
            a, b = sgd_step(ours, mine, x, y, loss_fn), sgd_step(theirs, reference, x, y, loss_fn)
        assert a == b
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(p, q)
        assert p.grad is not None  # zero_grad(set_to_none=True) comes before each step's backward


def test_a_parameter_without_a_gradient_stays_and_zero_grad_can_zero() -> None:
    used, unused = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    sgd = PlainSGD([used, unused], 0.5)
    (used * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    sgd.step()
    assert torch.equal(used.detach(), torch.tensor([0.5, 0.0, -0.5])) and torch.equal(unused.detach(), torch.ones(2))
    sgd.zero_grad(set_to_none=False)
    assert used.grad is not None and torch.equal(used.grad, torch.zeros(3))
    sgd.zero_grad()
    assert used.grad is None


def test_training_imports_neither_torch_optim_nor_dynamo_nor_sympy() -> None:
    """Costly first imports in every training process: the first torch.optim optimiser imports
    torch._dynamo (1.4 s here); ``Module.to_empty`` of a meta-device sub-model template imports sympy
    (0.7-1.4 s)."""
    probe = (
        "import sys, numpy as np\n"
        "from amp_fl.client.trainer import ModelInfo, SubModelTrainer\n"
        "from amp_fl.client.settings import TrainSettings\n"
        "from amp_fl.data.datasets import ArraySplit\n"
        "from amp_fl.pruning.maps import region_map\n"
        "rng = np.random.default_rng(0)\n"
        "data = ArraySplit(rng.standard_normal((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64))\n"
        "info = ModelInfo('cnn', (1, 28, 28), 10)\n"
        "regions = region_map('cnn', (1, 28, 28), 10)\n"
        "from amp_fl.pruning.submodel import module_arrays\n"
        "from amp_fl.models import build_model\n"
        "arrays = module_arrays(build_model('cnn', num_classes=10))\n"
        "settings = TrainSettings(learning_rate=0.1, local_steps=2, batch_size=16)\n"
        "SubModelTrainer(data, info, regions).fit(arrays, regions.full_kept(), settings, rng)\n"
        "print([m for m in ('torch._dynamo', 'sympy') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
