"""Issue 8: our Synchronous FL against a real peer, Flower's own ``flwr.serverapp.strategy.FedAvg``.

Same 4 devices, data, seed and initial model; both run 3 rounds with every device training every
round. Our side is the whole project path (config, ServerApp runner, AmpFlStrategy with
``scheduling=full_model``, ``compensation=none``, our ClientApp) on the in-process grid; Flower's
side is its stock FedAvg driving a small ClientApp that runs our trainer and returns the trained
weights, as a FedAvg client does.

Why the two global models are the same, not just close: device k starts from ``w`` and returns
``g_k = (w - w_k) / eta`` (its cumulative gradient); our server steps ``w - eta * mean_k g_k``
with the same ``eta``, which is ``mean_k w_k``. FedAvg returns ``sum_k n_k w_k / sum_k n_k``
with ``n_k`` = the reply's ``num-examples``, here ``local_steps * batch_size`` for every device
(the samples each one processed), so its weights are equal and it is the same mean. Full
participation needs min(K, R) = K: 4 devices and 4 RBs, and the channel-aware matching
(``selection=rate``) then schedules all four (every device has a positive rate on some RB); no
deadline, so none is dropped. Mini-batches come from ``batch_rng(seed, device, round)`` on both
sides.

What remains is float32 rounding: we send ``g_k`` rounded to float32 and step in float64, FedAvg
sums ``0.25 * w_k`` in float32, in reply order (which Flower samples at random). Each path is
within a few float32 ulps of the exact mean per round. Measured here (learning rate 0.02, over
several reply orders): the largest difference after 3 rounds is 4.5e-8 (the weights stay below
0.25), the tolerance is 8 epsilons (9.5e-7), and a FedProx run (another local objective) misses
by far. At the default learning rate 0.05, a one-ulp difference after round 1 can flip a
max-pool or ReLU choice and grow to 2e-4 by round 3, so the test uses 0.02.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg

from amp_fl import protocol as P
from amp_fl.client.local import batch_rng, local_data, model_info, train_settings
from amp_fl.client.trainer import SubModelTrainer
from amp_fl.config import RunConfig, load_config
from amp_fl.experiments.inprocess import InProcessGrid, run_in_process
from amp_fl.experiments.wiring import initial_model, run_data, train_setup
from amp_fl.pruning.regions import region_map
from amp_fl.pruning.submodel import module_arrays

ROUNDS = 3
DEVICES = 4
SYNCHRONOUS = {
    "dataset": {"name": "mnist5k"},
    "wireless": {"num_devices": DEVICES, "num_rbs": DEVICES},
    "num_rounds": ROUNDS,
    "seed": 5,
    # A smaller step than the default 0.05: with it, float32 rounding differences of one ulp in round 1
    # can flip a max-pool / ReLU choice by round 3 and grow to 2e-4 (measured), for either path.
    "train": {"learning_rate": 0.02},
    "scheduling": {"name": "full_model", "selection": "rate"},
    "strategy": {"compensation": "none"},
}
# float32 epsilon (spacing at 1.0) is 1.19e-7; the CNN's weights stay below 1, and each of the 3
# rounds may add a few ulps on either path.
ATOL = 8 * float(np.finfo(np.float32).eps)


def fedavg_client(setup: P.TrainSetup) -> ClientApp:
    """A FedAvg client: Flower's default message keys in, trained weights and ``num-examples`` out."""
    app = ClientApp()
    regions = region_map(setup.model, setup.input_shape, setup.num_classes)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        # One intra-op thread, as our ClientApp trains: a thread count changes float summation order,
        # and the test must not depend on which test set the process-wide count before it.
        torch.set_num_threads(1)
        device = P.partition_id(context.node_config)
        server_round = int(msg.content.config_records["config"]["server-round"])
        weights = msg.content.array_records["arrays"].to_numpy_ndarrays()
        trainer = SubModelTrainer(local_data(setup, device), model_info(setup), regions)
        result = trainer.fit(
            weights, regions.full_kept(), train_settings(setup), batch_rng(setup, device, server_round)
        )
        content = RecordDict(
            {"arrays": ArrayRecord(result.weights), "metrics": MetricRecord({"num-examples": result.num_examples})}
        )
        return Message(content, reply_to=msg)

    return app


def _final_model(run: Path) -> list[np.ndarray]:
    with np.load(run / "final_model.npz") as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def _max_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(x.astype(np.float64) - y))) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def flower_fedavg(tmp_path_factory) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The initial model and Flower FedAvg's global model after ``ROUNDS`` rounds."""
    cfg: RunConfig = load_config(SYNCHRONOUS)
    data = run_data(cfg, tmp_path_factory.mktemp("fedavg"))
    initial = module_arrays(initial_model(cfg, data.data))
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=DEVICES, min_available_nodes=DEVICES)
    grid = InProcessGrid(fedavg_client(train_setup(cfg, data)), DEVICES)
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(initial), num_rounds=ROUNDS)
    return initial, result.arrays.to_numpy_ndarrays()


def test_synchronous_fl_equals_flower_fedavg(tmp_path, flower_fedavg):
    initial, fedavg = flower_fedavg
    run = run_in_process(load_config(SYNCHRONOUS), tmp_path)
    schedules = [json.loads(line) for line in (run / "schedule.jsonl").read_text().splitlines()]
    assert [sorted(s["device_ids"]) for s in schedules] == [list(range(DEVICES))] * ROUNDS  # full participation
    assert all(s["failures"] == {} for s in schedules)

    ours = _final_model(run)
    assert [a.shape for a in ours] == [a.shape for a in fedavg]
    for a, b in zip(ours, fedavg, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)
    assert _max_difference(fedavg, initial) > 1000 * ATOL  # three rounds of training moved the model


def test_a_different_local_objective_misses_fedavg(tmp_path, flower_fedavg):
    """The comparison can fail: FedProx (mu = 1) on the same rounds is far outside the tolerance."""
    _, fedavg = flower_fedavg
    values = {**SYNCHRONOUS, "strategy": {"compensation": "none", "local_objective": "fedprox", "proximal_mu": 1.0}}
    fedprox = _final_model(run_in_process(load_config(values), tmp_path))
    assert _max_difference(fedprox, fedavg) > 100 * ATOL
