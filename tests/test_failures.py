"""Issue 11, item 3: failing PIUs (the failure injector, the reply timeout, and the unscheduled-device rules)."""

from __future__ import annotations

import csv
import json
import time

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp
from strategy_doubles import LR, make_strategy, reply_to

from amp_fl import protocol as P
from amp_fl.client.failures import FAILURE_MODES, corrupted, injected_failure
from amp_fl.config import load_config
from amp_fl.launch.inprocess import InProcessGrid, run_in_process
from amp_fl.protocol.setup import FailureSettings
from amp_fl.pruning.submodel import extract_arrays, scatter_arrays


# ------------------------------------------------------------------------------ the injector
def test_injected_failures_are_a_function_of_seed_round_and_device():
    settings = FailureSettings(raise_prob=0.1, late_prob=0.1, corrupt_prob=0.1, late_delay_s=1.0)
    draws = [[injected_failure(settings, 7, t, k) for k in range(100)] for t in range(1, 51)]
    again = [[injected_failure(settings, 7, t, k) for k in range(100)] for t in range(1, 51)]
    other_seed = [[injected_failure(settings, 8, t, k) for k in range(100)] for t in range(1, 51)]
    assert draws == again
    assert draws != other_seed
    # 5,000 draws per mode at p = 0.1: the count is 500 +- 5 standard deviations (21.2 each).
    flat = [mode for row in draws for mode in row]
    for mode in FAILURE_MODES:
        assert abs(flat.count(mode) - 500) < 5 * 21.2, (mode, flat.count(mode))
    assert set(flat) == {*FAILURE_MODES, None}


def test_no_failure_is_injected_when_off_and_every_one_when_certain():
    off = FailureSettings()
    assert not off.enabled
    assert {injected_failure(off, 0, t, k) for t in range(1, 20) for k in range(20)} == {None}
    always_late = FailureSettings(late_prob=1.0, late_delay_s=0.5)
    assert {injected_failure(always_late, 0, t, k) for t in range(1, 20) for k in range(20)} == {"late"}


def test_corrupted_upload_is_nan_in_the_first_array_only():
    arrays = [np.ones((2, 3), dtype=np.float32), np.zeros(4, dtype=np.float32)]
    bad = corrupted(arrays)
    assert np.isnan(bad[0]).all() and bad[0].shape == (2, 3)
    np.testing.assert_array_equal(bad[1], arrays[1])


def test_injector_settings_travel_in_the_train_setup():
    from strategy_doubles import setup

    failures = FailureSettings(raise_prob=0.25, late_prob=0.05, corrupt_prob=0.1, late_delay_s=3.0)
    original = setup(4).__class__(**{**setup(4).__dict__, "failures": failures})
    content = ConfigRecord(original.to_config())
    parsed = P.TrainSetup._from_fields(P.Fields(content, "train instruction", ValueError))
    assert parsed.failures == failures


# ------------------------------------------------------------------------------ the strategy's rules, by hand
def _faulty_client(modes, values, late_s):
    """Device k sends the constant ``values[k]``, or fails as ``modes[round][k]`` says (raise / late / corrupt)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        device = P.partition_id(context.node_config)
        instruction = P.TrainInstruction.from_content(msg.content)
        mode = modes.get(instruction.round, {}).get(device)
        if mode == "raise":
            raise RuntimeError("injected")
        arrays = [np.full_like(a, values[instruction.round][device]) for a in instruction.arrays]
        if mode == "corrupt":
            arrays = corrupted(arrays)
        if mode == "late":
            time.sleep(late_s)
        return reply_to(instruction, device, arrays).to_reply(msg)

    return app


def test_failed_devices_follow_the_rules_for_unscheduled_devices(cnn):
    """Round 1: four devices train the full model (constants 1, 2, 3, 4): G_k = k + 1, all ages 0.

    Round 2: all four are scheduled on a sub-model; device 0 raises, device 1 replies after the
    reply timeout, device 2 sends NaN, device 3 sends 5.0. Failed devices count as unscheduled:
    their caches keep round 1's values and all their ages grow by one; device 3's cache takes 5.0
    on its held entries (4.0 elsewhere) and its kept ages reset to 0. Compensation ``all``:
    w2 = w1 - LR * (G_0 + G_1 + G_2 + G_3) / 4.
    """
    regions, _w0 = cnn
    full = regions.full_kept()
    sub = [np.array([0, 4]), np.array([2, 3, 9]), np.arange(10, 30)]
    plan = {1: [(k, full) for k in range(4)], 2: [(k, sub) for k in range(4)]}
    values = {1: {k: float(k + 1) for k in range(4)}, 2: {k: 5.0 for k in range(4)}}
    modes = {2: {0: "raise", 1: "late", 2: "corrupt"}}
    timeout = 0.3
    strategy, reports = make_strategy(cnn, plan, num_devices=4, compensation="all")
    grid = InProcessGrid(_faulty_client(modes, values, late_s=timeout + 0.3), 4)

    for server_round in (1, 2):
        if server_round == 2:
            w1 = [w.copy() for w in strategy.weights]
        messages = strategy.configure_train(server_round, ArrayRecord(), ConfigRecord(), grid)
        strategy.aggregate_train(server_round, grid.send_and_receive(messages, timeout=timeout))

    report = reports[-1]
    assert report.received_devices == (3,)
    assert report.failure_kinds == {0: "error", 1: "timeout", 2: "invalid"}
    assert report.failure_counts == {"error": 1, "timeout": 1, "invalid": 1, "silent": 0}
    held = scatter_arrays(extract_arrays(w1, regions, sub), regions, sub, regions.shapes)[1]
    for k in range(3):  # failed: caches as after round 1
        for g in strategy.cache.get(k):
            np.testing.assert_array_equal(g, np.full_like(g, k + 1.0))
    for g, h in zip(strategy.cache.get(3), held, strict=True):
        np.testing.assert_array_equal(g, np.where(h, 5.0, 4.0))
    ages = strategy.aoi.ages
    np.testing.assert_array_equal(ages[:3], np.ones((3, regions.num_regions)))
    expected3 = np.ones(regions.num_regions, dtype=int)
    for g, kept in enumerate(sub):
        expected3[regions.offsets[g] + kept] = 0
    np.testing.assert_array_equal(ages[3], expected3)
    for w, w_prev, h in zip(strategy.weights, w1, held, strict=True):
        direction = (1.0 + 2.0 + 3.0 + np.where(h, 5.0, 4.0)) / 4
        np.testing.assert_allclose(w, w_prev - LR * direction, atol=1e-5)


# ------------------------------------------------------------------------------ a whole run with 30% failing
def test_run_with_30_percent_failing_completes_and_improves(tmp_path):
    """10 PIUs, 5 scheduled per round; each scheduled PIU fails with probability 0.3 (0.1 per mode).

    The real ClientApp acts the failures out (raise, sleep past the 2.5 s reply timeout, NaN), the
    strategy drops them, metrics.csv counts them by kind, and the model still learns. The timeout
    leaves the honest replies room on a loaded machine: at 1 s, one of them once missed it in CI.
    """
    values = {
        "dataset": {"name": "mnist5k"},
        "wireless": {"num_devices": 10, "num_rbs": 5},
        "num_rounds": 25,
        "seed": 3,
        "strategy": {"compensation": "scheduled", "reply_timeout_s": 2.5},
        "failures": {"raise_prob": 0.1, "late_prob": 0.1, "corrupt_prob": 0.1, "late_delay_s": 2.8},
    }
    cfg = load_config(values)
    run = run_in_process(cfg, tmp_path)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["round"]) for r in rows] == list(range(26))
    records = [json.loads(line) for line in (run / "schedule.jsonl").read_text().splitlines()]
    settings = cfg.failures
    scheduled = failed = 0
    for row, record in zip(rows[1:], records, strict=True):
        expected = {
            d: injected_failure(settings, cfg.seed, int(row["round"]), d)
            for d in record["device_ids"]
            if injected_failure(settings, cfg.seed, int(row["round"]), d) is not None
        }
        assert {int(d) for d in record["failures"]} == set(expected)  # exactly the injected ones failed
        kinds = {"raise": "failed_error", "late": "failed_timeout", "corrupt": "failed_invalid"}
        for mode, column in kinds.items():
            assert int(row[column]) == list(expected.values()).count(mode)
        assert int(row["num_failed"]) == len(expected)
        assert int(row["num_received"]) == len(record["device_ids"]) - len(expected)
        scheduled += len(record["device_ids"])
        failed += len(expected)
    assert 0.2 < failed / scheduled < 0.4, failed / scheduled  # about 30% of the scheduled PIUs failed
    accuracy = [float(r["accuracy"]) for r in rows]
    assert max(accuracy[-5:]) > accuracy[0] + 0.3, accuracy
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
