"""The typed wire messages of amp_fl.protocol: round trips, validation naming the key, byte counts."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import make_train_setup
from flwr.app import Array, ConfigRecord, RecordDict

from amp_fl import protocol as P
from amp_fl.errors import InvalidReplyError
from amp_fl.pruning.submodel import extract_arrays
from amp_fl.wireless.config import WirelessConfig
from amp_fl.wireless.devices import DeviceProfile, simulated_device_profile

SETUP = make_train_setup(
    seed=3,
    data_root="/data",
    num_devices=10,
    partition="shards",
    local_steps=2,
    batch_size=16,
    memory_friendly=True,
)


@pytest.fixture
def server_identity(monkeypatch):
    """Messages built outside a Flower process need a task identity (as the in-process grid sets)."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, attr, 1)


def _kept(per_group):
    return [np.asarray(k, dtype=np.int64) for k in per_group]


def _instruction(cnn, kept=((0, 2), (1, 5, 7), (3,))):
    regions, weights = cnn
    kept = _kept(kept)
    return P.TrainInstruction(
        round=4,
        device=7,
        setup=SETUP,
        names=tuple(regions.param_names),
        arrays=tuple(extract_arrays(weights, regions, kept)),
        kept=tuple(kept),
    )


def _reply(cnn, instruction):
    return P.TrainReply(
        device=instruction.device,
        names=instruction.names,
        gradient=tuple(a * 2 for a in instruction.arrays),
        num_examples=32,
        train_loss=0.7,
        fit_seconds=0.25,
        round=instruction.round,
    )


def _config(content: RecordDict) -> ConfigRecord:
    return content.config_records[P.CONFIG]


# ------------------------------------------------------------------------------ round trips
def test_profile_query_round_trip_and_wireless_settings(server_identity):
    wireless = WirelessConfig(cell_radius_m=300.0, min_distance_m=2.0, tx_power_dbm=23.0, cpu_freqs_hz=(1e9, 2e9))
    query = P.ProfileQuery.from_wireless(9, wireless)
    back = P.ProfileQuery.from_content(query.to_content())
    assert back == query
    assert back.to_message(5).metadata.message_type == P.ProfileQuery.MESSAGE_TYPE
    # The client simulates exactly the profile the server's wireless settings give.
    assert simulated_device_profile(4, 9, back.wireless()) == simulated_device_profile(4, 9, wireless)


def test_device_profile_reply_round_trip():
    reply = P.DeviceProfileReply(partition_id=3, cpu_hz=1.2e9, flops_per_cycle=4.0, tx_power_w=1.0, distance_m=120.5)
    back = P.DeviceProfileReply.from_content(reply.to_content())
    assert back == reply
    assert back.to_profile() == DeviceProfile(1.2e9, 4.0, 1.0, 120.5)
    assert P.DeviceProfileReply.from_profile(3, back.to_profile()) == reply


def test_measured_profile_comes_from_the_node_config():
    node = {P.PARTITION_ID: 2, P.CPU_HZ: 1.5e9, P.FLOPS_PER_CYCLE: 8, P.TX_POWER_W: 0.2, P.DISTANCE_M: 10.0}
    assert P.DeviceProfileReply.from_node_config(node) == P.DeviceProfileReply(2, 1.5e9, 8.0, 0.2, 10.0)
    assert P.DeviceProfileReply.from_node_config(P.simulation_node_config(2, 5)) is None
    with pytest.raises(ValueError, match=re.escape(P.DISTANCE_M)):
        P.DeviceProfileReply.from_node_config({k: v for k, v in node.items() if k != P.DISTANCE_M})
    assert P.partition_id(P.simulation_node_config(2, 5)) == 2
    with pytest.raises(ValueError, match=P.PARTITION_ID):
        P.partition_id({})


def test_train_instruction_round_trip(cnn, server_identity):
    regions, _ = cnn
    instruction = _instruction(cnn)
    message = instruction.to_message(11)
    assert message.metadata.message_type == P.TrainInstruction.MESSAGE_TYPE
    back = P.TrainInstruction.from_content(instruction.to_content())
    assert (back.round, back.device, back.setup, back.names) == (4, 7, SETUP, instruction.names)
    for a, b in zip(back.arrays, instruction.arrays, strict=True):
        np.testing.assert_array_equal(a, b)
    arrays, kept = back.for_model(regions)
    assert [k.tolist() for k in kept] == [[0, 2], [1, 5, 7], [3]]
    assert [a.shape for a in arrays] == [a.shape for a in instruction.arrays]


def test_train_reply_round_trip(cnn):
    regions, _ = cnn
    instruction = _instruction(cnn)
    reply = _reply(cnn, instruction)
    back = P.TrainReply.from_content(reply.to_content())
    assert (back.device, back.num_examples, back.train_loss, back.fit_seconds) == (7, 32, 0.7, 0.25)
    for a, b in zip(back.for_model(regions, list(instruction.kept)), reply.gradient, strict=True):
        np.testing.assert_array_equal(a, b)


def test_metrics_for_flower():
    assert dict(P.RoundMetrics(3, 1).to_record()) == {P.NUM_UPDATES: 3, P.NUM_FAILURES: 1}
    assert dict(P.EvaluationMetrics(0.5, 1.25).to_record()) == {P.ACCURACY: 0.5, P.LOSS: 1.25}


def test_keys_are_kebab_case_and_distinct_per_message():
    keys = [v for k, v in vars(P).items() if k.isupper() and isinstance(v, str) and k not in ("MESSAGE_TYPE",)]
    for key in keys:
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", key), key
    config_keys = [*SETUP.to_config(), P.ROUND, P.DEVICE]
    # incl. local-objective, proximal-mu, apfl-alpha, apfl-alpha-lr, validation-fraction, train-device
    # and the failure injector's four fail-* keys
    assert len(config_keys) == len(set(config_keys)) == 25


# ------------------------------------------------------------------------------ validation
QUERY_CASES = [
    (P.SEED, None, "missing"),
    (P.SEED, -1, ">= 0"),
    (P.SEED, 1.5, "integer"),
    (P.CELL_RADIUS_M, "far", "number"),
    (P.CELL_RADIUS_M, 0.5, "exceed"),
    (P.MIN_DISTANCE_M, 0.0, "> 0"),
    (P.TX_POWER_DBM, float("nan"), "finite"),
    (P.CPU_FREQS_HZ, [], "non-empty"),
    (P.CPU_FREQS_HZ, [1e9, -1.0], "> 0"),
    (P.FLOPS_PER_CYCLE, None, "missing"),
]


@pytest.mark.parametrize(("key", "value", "problem"), QUERY_CASES)
def test_profile_query_errors_name_the_key(key, value, problem):
    content = P.ProfileQuery.from_wireless(0, WirelessConfig()).to_content()
    _set(_config(content), key, value)
    with pytest.raises(ValueError, match=re.escape(key)) as info:
        P.ProfileQuery.from_content(content)
    assert problem in str(info.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [(P.PARTITION_ID, None), (P.PARTITION_ID, -2), (P.CPU_HZ, 0.0), (P.TX_POWER_W, "1 W"), (P.DISTANCE_M, True)],
)
def test_profile_reply_errors_name_the_key(key, value):
    content = P.DeviceProfileReply(1, 1e9, 4.0, 1.0, 10.0).to_content()
    _set(_config(content), key, value)
    with pytest.raises(InvalidReplyError, match=re.escape(key)):
        P.DeviceProfileReply.from_content(content)


INSTRUCTION_CASES = [
    (P.ROUND, 0),
    (P.DEVICE, None),
    (P.SEED, "3"),
    (P.DATASET, ""),
    (P.DATA_ROOT, None),
    (P.NUM_DEVICES, 0),
    (P.PARTITION, 1),
    (P.SHARDS_PER_DEVICE, 0),
    (P.MODEL, None),
    (P.INPUT_SHAPE, [1, 28]),
    (P.NUM_CLASSES, True),
    (P.LEARNING_RATE, -0.1),
    (P.LOCAL_STEPS, 0),
    (P.BATCH_SIZE, 2.0),
    (P.MEMORY_FRIENDLY, 1),
]


@pytest.mark.parametrize(("key", "value"), INSTRUCTION_CASES, ids=[k for k, _ in INSTRUCTION_CASES])
def test_train_instruction_errors_name_the_key(cnn, key, value):
    content = _instruction(cnn).to_content()
    _set(_config(content), key, value)
    with pytest.raises(ValueError, match=re.escape(repr(key))):
        P.TrainInstruction.from_content(content)


def test_train_instruction_errors_name_the_record_or_array(cnn):
    regions, _ = cnn
    for record in (P.CONFIG, P.ARRAYS, P.KEPT):
        content = _instruction(cnn).to_content()
        del content[record]
        with pytest.raises(ValueError, match=re.escape(repr(record))):
            P.TrainInstruction.from_content(content)
    content = _instruction(cnn).to_content()
    name = regions.param_names[0]
    content.array_records[P.ARRAYS][name] = Array(np.zeros(3, dtype=np.float64))
    with pytest.raises(ValueError, match=re.escape(name)):
        P.TrainInstruction.from_content(content)
    content = _instruction(cnn).to_content()
    content.array_records[P.KEPT]["5"] = Array(np.zeros(1, dtype=np.int32))
    with pytest.raises(ValueError, match=re.escape(repr(P.KEPT))):
        P.TrainInstruction.from_content(content)
    # Checked against the model: an index past the group, and a missing array.
    bad = _instruction(cnn)
    out_of_range = P.TrainInstruction(
        bad.round, bad.device, bad.setup, bad.names, bad.arrays, (*bad.kept[:2], np.array([200]))
    )
    with pytest.raises(ValueError, match="out of range"):
        out_of_range.for_model(regions)
    missing = P.TrainInstruction(bad.round, bad.device, bad.setup, bad.names[1:], bad.arrays[1:], bad.kept)
    with pytest.raises(ValueError, match=re.escape(name)):
        missing.for_model(regions)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (P.DEVICE, None),
        (P.DEVICE, 1.0),
        (P.NUM_EXAMPLES, 0),
        (P.TRAIN_LOSS, float("inf")),
        (P.TRAIN_LOSS, -1.0),
        (P.FIT_SECONDS, None),
    ],
)
def test_train_reply_errors_name_the_key(cnn, key, value):
    content = _reply(cnn, _instruction(cnn)).to_content()
    _set(content.metric_records[P.METRICS], key, value)
    with pytest.raises(InvalidReplyError, match=re.escape(repr(key))):
        P.TrainReply.from_content(content)


def test_train_reply_errors_name_the_record_or_array(cnn):
    regions, _ = cnn
    instruction = _instruction(cnn)
    for record in (P.METRICS, P.ARRAYS):
        content = _reply(cnn, instruction).to_content()
        del content[record]
        with pytest.raises(InvalidReplyError, match=re.escape(repr(record))):
            P.TrainReply.from_content(content)
    name = regions.param_names[2]
    content = _reply(cnn, instruction).to_content()
    content.array_records[P.ARRAYS][name] = Array(np.full((2,), np.nan, dtype=np.float32))
    with pytest.raises(InvalidReplyError, match=re.escape(name) + ".*NaN"):
        P.TrainReply.from_content(content)
    # Shapes are checked against the sub-model the server sent.
    reply = _reply(cnn, instruction)
    wrong = P.TrainReply(7, reply.names, (np.zeros(1, np.float32), *reply.gradient[1:]), 1, 0.0, 0.0, 4)
    with pytest.raises(InvalidReplyError, match=re.escape(regions.param_names[0]) + ".*shape"):
        wrong.for_model(regions, list(instruction.kept))


# ------------------------------------------------------------------------------ bytes
def test_byte_counts_by_hand(cnn):
    """Sub-model keeping 2, 3, 1 regions of the paper's CNN (conv1 6, conv2 16, fc1 128 regions)."""
    instruction = _instruction(cnn)
    # conv1 2x1x5x5 + 2, conv2 3x2x5x5 + 3, fc1 1x(3*4*4) + 1, fc2 10x1 + 10 parameters.
    params = (2 * 25 + 2) + (3 * 2 * 25 + 3) + (1 * 48 + 1) + (10 * 1 + 10)
    assert sum(a.size for a in instruction.arrays) == params
    assert instruction.downlink_bytes == 4 * params + 4 * (2 + 3 + 1)
    assert _reply(cnn, instruction).uplink_bytes == 4 * params
    # ... and what goes on the wire is float32 arrays and int32 indices of exactly those sizes.
    content = instruction.to_content()
    wire = [a.numpy() for a in content.array_records[P.ARRAYS].values()]
    kept = [a.numpy() for a in content.array_records[P.KEPT].values()]
    assert {a.dtype for a in wire} == {np.dtype(np.float32)} and {k.dtype for k in kept} == {np.dtype(np.int32)}
    assert (sum(a.nbytes for a in wire), sum(k.nbytes for k in kept)) == (4 * params, 4 * 6)


def _set(record, key, value):
    """Set ``record[key]`` (``None``: delete it)."""
    if value is None:
        del record[key]
    else:
        record[key] = value
