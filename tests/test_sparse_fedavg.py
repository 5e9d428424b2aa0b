"""Issue 10: the sparse FedAvg strategy (IMP / one-shot, digital or over the air) through its real Flower hooks.

Hand-built rounds use a scripted ClientApp whose device k returns the constant ``c_k`` on every
surviving entry, so the global model can be written down by hand; one short run goes through
the real ClientApp (masked local training on mnist5k) with the in-process grid.
"""

from __future__ import annotations

import csv
import json
import logging
import math

import numpy as np
import pytest
from conftest import make_train_setup
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from amp_fl import protocol as P
from amp_fl.client.sparse_fedavg import prunable_arrays
from amp_fl.config import load_config
from amp_fl.launch.inprocess import FIRST_NODE_ID, InProcessGrid, run_in_process
from amp_fl.models import build_model
from amp_fl.protocol.sparse_fedavg import MaskedTrainInstruction, MaskedTrainReply
from amp_fl.pruning.magnitude import MagnitudePruner
from amp_fl.pruning.maps import region_map_for
from amp_fl.pruning.sparse_encoding import pack_values
from amp_fl.strategy.report import RoundReport
from amp_fl.strategy.sparse_fedavg import SparseFedAvgStrategy, participants_per_round, sample_participants
from amp_fl.wireless.over_the_air import OtaSettings, OverTheAirChannel

SETUP = make_train_setup(
    num_devices=4,
    batch_size=4,
)


def scripted_masked_client(values_by_device):
    """Device k replies with ``values_by_device[k]`` on every entry it holds (the masks it was sent)."""
    app = ClientApp()

    @app.train("masked")
    def train(msg: Message, context: Context) -> Message:
        device = P.partition_id(context.node_config)
        instruction = MaskedTrainInstruction.from_content(msg.content)
        regions = region_map_for(build_model("cnn", num_classes=10), (1, 28, 28))
        arrays, masks = instruction.decode(regions.param_names, regions.shapes, prunable_arrays(regions))
        update = [np.full(a.shape, values_by_device[device], dtype=np.float32) for a in arrays]
        values = tuple(pack_values(u, m) for u, m in zip(update, masks, strict=True))
        return MaskedTrainReply(device, tuple(regions.param_names), values, 4, 1.0, 0.0, instruction.round).to_reply(
            msg
        )

    return app


def _strategy(cnn, *, participants=4, over_the_air=None, rewind_round=None, **plan):
    regions, weights = cnn
    reports: list[RoundReport] = []
    pruner = MagnitudePruner(regions.shapes, prunable_arrays(regions), **plan)
    strategy = SparseFedAvgStrategy(
        region_map=regions,
        initial_weights=weights,
        pruner=pruner,
        device_nodes={k: FIRST_NODE_ID + k for k in range(4)},
        train_setup=SETUP,
        seed=0,
        participants=participants,
        over_the_air=over_the_air,
        rewind_round=rewind_round,
        compute_latency_s=np.array([0.1, 0.2, 0.3, 0.4]),
        on_round_end=reports.append,
    )
    return strategy, reports


def _round(strategy, grid, server_round):
    messages = list(strategy.configure_train(server_round, ArrayRecord(), ConfigRecord(), grid))
    return messages, strategy.aggregate_train(server_round, grid.send_and_receive(messages))


VALUES = {0: 1.0, 1: 2.0, 2: 4.0, 3: 9.0}


def test_digital_round_is_the_mean_update_on_the_mask_and_prunes_on_schedule(cnn):
    regions, w0 = cnn
    strategy, reports = _strategy(cnn, method="imp", target=0.5, rate=0.3, interval=1, first_round=1)
    grid = InProcessGrid(scripted_masked_client(VALUES), 4)
    _round(strategy, grid, 1)  # everyone trains the dense model, then 30 % are pruned
    mask1 = strategy.pruner.masks
    for w, w_start, m in zip(strategy.weights, w0, mask1, strict=True):
        expected = w_start + 4.0  # mean of 1, 2, 4, 9
        np.testing.assert_allclose(w, expected if m is None else np.where(m, expected, 0.0), atol=1e-6)
    assert strategy.pruner.num_pruned == round(0.3 * strategy.pruner.plan.num_prunable)
    _, (record, _) = _round(strategy, grid, 2)  # the last step: exactly round(0.5 N) pruned in all
    assert strategy.pruner.num_pruned == round(0.5 * strategy.pruner.plan.num_prunable)
    for w, m1, m2 in zip(strategy.weights, mask1, strategy.pruner.masks, strict=True):
        if m2 is not None:
            assert np.all(w[~m2] == 0) and not np.any(m2 & ~m1)  # pruned stays pruned
    np.testing.assert_array_equal(record.to_numpy_ndarrays()[0], strategy.weights[0])
    report = reports[-1]
    assert report.received_devices == (0, 1, 2, 3) and report.failures == {}
    # Uplink: the surviving values of the round-2 masks (= round-1 masks), 4 bytes each.
    survivors = sum(math.prod(s) if m is None else int(m.sum()) for s, m in zip(regions.shapes, mask1, strict=True))
    assert report.uplink_bytes_per_device == {k: 4 * survivors for k in range(4)}
    assert report.round_latency_s == pytest.approx(0.4)  # slowest device's compute, no upload time
    assert [h.round for h in strategy.history] == [1, 2] and strategy.history[1].sparsity == pytest.approx(
        round(0.5 * strategy.pruner.plan.num_prunable) / strategy.pruner.plan.num_prunable
    )


def test_a_masked_reply_for_another_round_is_rejected(cnn, caplog):
    """Device 0's reply in round 2 says it answers round 1 (e.g. delayed): it is dropped, the others count."""
    stale_app = ClientApp()
    honest = scripted_masked_client(VALUES)

    @stale_app.train("masked")
    def stale(msg: Message, context: Context) -> Message:
        reply = honest(msg, context)
        if P.partition_id(context.node_config) == 0 and msg.content[P.CONFIG][P.ROUND] == 2:
            reply.content[P.METRICS][P.ROUND] = 1
        return reply

    strategy, reports = _strategy(cnn, method="imp", target=0.0)
    grid = InProcessGrid(stale_app, 4)
    _round(strategy, grid, 1)
    before = [w.copy() for w in strategy.weights]
    with caplog.at_level(logging.WARNING, logger="amp_fl.strategy.replies"):
        _round(strategy, grid, 2)
    report = reports[-1]
    assert report.failures == {0: "reply for round 1, but this is round 2"}
    assert report.failure_kinds == {0: "invalid"} and report.received_devices == (1, 2, 3)
    assert any("reply for round 1, but this is round 2" in r.getMessage() for r in caplog.records)
    for w, b in zip(strategy.weights, before, strict=True):
        np.testing.assert_allclose(w, b + (2.0 + 4.0 + 9.0) / 3, atol=1e-5)  # device 0's 1.0 left out


def test_noiseless_over_the_air_equals_the_digital_mean(cnn):
    digital, _ = _strategy(cnn, method="one_shot", target=0.8, first_round=0)
    ota = OverTheAirChannel(OtaSettings(snr_db=None, truncation_threshold=1e-12), seed=1)
    analog, reports = _strategy(cnn, method="one_shot", target=0.8, first_round=0, over_the_air=ota)
    grid = InProcessGrid(scripted_masked_client(VALUES), 4)
    for t in (1, 2):
        _round(digital, grid, t)
        _round(analog, grid, t)
    for a, b in zip(digital.weights, analog.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # The analog upload uses one channel use per surviving entry, all PIUs at once.
    survivors = sum(
        math.prod(s) if m is None else int(m.sum()) for s, m in zip(cnn[0].shapes, analog.pruner.masks, strict=True)
    )
    assert analog.history[-1].channel_uses == survivors
    assert reports[-1].participants[0].upload_latency_s == pytest.approx(survivors / 1e6)


def test_truncated_pius_are_reported_silent_and_left_out(cnn):
    settings = OtaSettings(snr_db=None, truncation_threshold=1.0)  # P(silent) = 63 %
    analog, reports = _strategy(
        cnn, method="one_shot", target=0.5, first_round=0, over_the_air=OverTheAirChannel(settings, seed=2)
    )
    grid = InProcessGrid(scripted_masked_client(VALUES), 4)
    for t in range(1, 6):
        before = [w.copy() for w in analog.weights]
        _round(analog, grid, t)
        report = reports[-1]
        sent = report.received_devices
        silent = {d for d, why in report.failures.items() if why.startswith("silent")}
        assert set(sent) | silent == {0, 1, 2, 3} and not set(sent) & silent
        step = np.mean([VALUES[d] for d in sent]) if sent else 0.0
        for w, b, m in zip(analog.weights, before, analog.pruner.masks, strict=True):
            expected = b + step
            np.testing.assert_allclose(w, expected if m is None else np.where(m, expected, 0.0), atol=1e-5)


def test_partial_participation_is_seeded_and_uniform():
    assert participants_per_round(0.5, 10) == 5 and participants_per_round(0.01, 10) == 1
    a = sample_participants(3, 7, range(10), 5)
    assert a == sample_participants(3, 7, range(10), 5) and len(set(a)) == 5
    assert sample_participants(3, 8, range(10), 5) != a or sample_participants(3, 9, range(10), 5) != a
    counts = np.zeros(10)
    for t in range(2000):
        for d in sample_participants(0, t, range(10), 3):
            counts[d] += 1
    assert np.all(np.abs(counts / 2000 - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 2000))


def test_partial_participation_sends_to_the_sampled_devices_only(cnn):
    strategy, reports = _strategy(cnn, participants=2, method="imp", target=0.0)
    grid = InProcessGrid(scripted_masked_client(VALUES), 4)
    messages, _ = _round(strategy, grid, 3)
    chosen = sample_participants(0, 3, range(4), 2)
    assert sorted(m.metadata.dst_node_id - FIRST_NODE_ID for m in messages) == chosen
    assert reports[-1].received_devices == tuple(chosen)


def test_rewinding_resets_survivors_to_the_rewind_round(cnn):
    _, w0 = cnn
    strategy, _ = _strategy(cnn, method="imp", target=0.36, rate=0.2, interval=1, first_round=1, rewind_round=0)
    grid = InProcessGrid(scripted_masked_client(VALUES), 4)
    _round(strategy, grid, 1)
    _round(strategy, grid, 2)
    for w, start, m in zip(strategy.weights, w0, strategy.pruner.masks, strict=True):
        np.testing.assert_array_equal(w, start if m is None else np.where(m, start, 0.0))


def test_rejects_a_rewind_round_after_the_first_pruning(cnn):
    with pytest.raises(ValueError, match="rewind_round"):
        _strategy(cnn, method="imp", target=0.5, first_round=2, rewind_round=3)


def test_short_run_with_the_real_client_app(tmp_path):
    """mnist5k, 4 PIUs, one-shot to 90 % at round 0, 2 rounds over the air, real masked local training."""
    values = {
        "dataset": {"name": "mnist5k"},
        "wireless": {"num_devices": 4},
        "num_rounds": 2,
        "seed": 1,
        "train": {"local_steps": 2, "batch_size": 16},
        "algorithm": "sparse_fedavg",
        "aggregation": "over_the_air",
        "sparse_fedavg": {"method": "one_shot", "target": 0.9, "first_round": 0, "participation": 0.5},
        "ota": {"snr_db": 20.0},
    }
    run = run_in_process(load_config(values), tmp_path / "run")
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["round"]) for r in rows] == [0, 1, 2]
    assert all(int(r["num_scheduled"]) == 2 for r in rows[1:])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    with np.load(run / "final_model.npz") as z:
        final = [z[f"arr_{i}"] for i in range(len(z.files))]
    regions = region_map_for(build_model("cnn", num_classes=10), (1, 28, 28))
    weights = [w for w, p in zip(final, prunable_arrays(regions), strict=True) if p]
    total = sum(w.size for w in weights)
    assert sum(int(np.count_nonzero(w == 0)) for w in weights) == round(0.9 * total)
    uplink = [json.loads(line)["uplink_bytes"] for line in (run / "schedule.jsonl").read_text().splitlines()]
    survivors = round(0.1 * total) + sum(w.size for w, p in zip(final, prunable_arrays(regions), strict=True) if not p)
    assert all(set(u.values()) == {4 * survivors} for u in uplink)
