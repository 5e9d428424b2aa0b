"""The arrays' wire encoding (amp_fl.protocol.arrays): Flower's .npy bytes, written and read without np.save/np.load."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from conftest import make_train_setup
from flwr.app import Array, ArrayRecord
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

from amp_fl import protocol as P
from amp_fl.errors import ArgumentError, InvalidReplyError
from amp_fl.protocol.arrays import STYPE

WHERE = "train reply"

# Every kind of array the protocol sends: float32 model arrays (1-d to 4-d), int32 kept indices,
# uint8 format codes, 0-d int64 counters (BatchNorm's num_batches_tracked), empty arrays, and
# what a client may keep in its own state (float64, bool).
CASES = [
    np.arange(6 * 1 * 5 * 5, dtype=np.float32).reshape(6, 1, 5, 5) / 7,
    np.linspace(-1, 1, 128 * 256, dtype=np.float32).reshape(128, 256),
    np.array([3.5, -0.0, np.float32(1e-38)], dtype=np.float32),
    np.array(np.float32(2.5)),  # 0-d float
    np.array(12345678901, dtype=np.int64),  # 0-d int64 counter
    np.array([0, 2, 5], dtype=np.int32),
    np.array([0, 1, 2], dtype=np.uint8),
    np.zeros(0, dtype=np.float32),
    np.zeros((2, 0, 3), dtype=np.int32),
    np.array([[True, False]]),
    np.array([1e300, -1e-300], dtype=np.float64),
    np.array([-(2**63), 2**63 - 1], dtype=np.int64),
]


def _decode(array: Array, name: str = "w") -> np.ndarray:
    return P.decode_array(array, name, WHERE, InvalidReplyError)


@pytest.mark.parametrize("value", CASES, ids=lambda v: f"{v.dtype}{v.shape}")
def test_round_trip_keeps_dtype_shape_and_every_bit(value):
    array = P.encode_array(value)
    back = _decode(array)
    assert back.dtype == value.dtype and back.shape == value.shape
    assert back.tobytes() == value.tobytes()  # bit for bit (-0.0, denormals, int64 extremes)
    assert not back.flags.writeable  # the fast route (a view of the bytes), not np.load's fallback
    # ... and it is what Flower itself writes and reads: the same bytes as Array(value), and Array.numpy() reads ours.
    flower = Array(value)
    fields = ("dtype", "shape", "stype", "data")
    assert [getattr(array, f) for f in fields] == [getattr(flower, f) for f in fields]
    assert array.numpy().tobytes() == value.tobytes() and array.numpy().shape == value.shape


def test_non_contiguous_and_big_endian_inputs_travel_as_their_values():
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    for value in (base.T, base[:, ::2], np.asfortranarray(base)):
        back = _decode(P.encode_array(value))
        assert back.shape == value.shape and back.flags.c_contiguous
        np.testing.assert_array_equal(back, value)
    big = np.arange(5, dtype=">i4")
    back = _decode(P.encode_array(big))
    assert back.dtype == np.dtype(">i4")
    np.testing.assert_array_equal(back, [0, 1, 2, 3, 4])


def test_any_flower_sender_is_read_even_in_a_layout_we_do_not_write():
    """np.save writes Fortran-ordered arrays as fortran_order=True: read through np.load, values equal."""
    value = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    array = Array(value)
    assert b"'fortran_order': True" in array.data
    back = _decode(array)
    assert back.flags.writeable  # np.load's result
    np.testing.assert_array_equal(back, value)


def test_decoded_arrays_are_read_only_views_and_client_state_reads_are_writable():
    array = P.encode_array(np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match="read-only"):
        _decode(array)[0] = 2.0
    names = ["a", "b"]
    state = P.arrays_to_record(names, [np.zeros(2, np.float32), np.array(3, dtype=np.int64)])
    cache, counter = P.record_to_arrays(state, names)
    cache[0] = 1.0  # the client updates its cache in place
    assert counter.shape == () and int(counter) == 3


def test_object_arrays_are_refused_on_the_way_out():
    with pytest.raises(ArgumentError, match="object"):
        P.encode_array(np.array([{"a": 1}], dtype=object))


def _npy(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value, allow_pickle=False)
    return buffer.getvalue()


GOOD = _npy(np.zeros(3, dtype=np.float32))


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (Array(dtype="float32", shape=(3,), stype="torch.Tensor", data=GOOD), "is serialised as 'torch.Tensor'"),
        (Array(dtype="float33", shape=(3,), stype=STYPE, data=GOOD), "declares an unknown dtype 'float33'"),
        (Array(dtype="object", shape=(3,), stype=STYPE, data=GOOD), "declares a dtype that cannot travel, 'object'"),
        (Array(dtype="float32", shape=(-3,), stype=STYPE, data=GOOD), "declares an impossible shape (-3,)"),
        (Array(dtype="float32", shape=(3,), stype=STYPE, data=GOOD[:-1]), "holds no valid .npy payload"),
        (Array(dtype="float32", shape=(3,), stype=STYPE, data=b"not numpy at all"), "holds no valid .npy payload"),
        (Array(dtype="float32", shape=(3,), stype=STYPE, data=b""), "holds no valid .npy payload"),
        (
            Array(dtype="float32", shape=(3,), stype=STYPE, data=_npy(np.zeros(4, dtype=np.float32))),
            "declares float32 (3,), its payload holds float32 (4,)",
        ),
        (
            Array(dtype="float32", shape=(3,), stype=STYPE, data=_npy(np.zeros(3, dtype=np.int32))),
            "declares float32 (3,), its payload holds int32 (3,)",
        ),
    ],
    ids=["stype", "dtype", "object", "shape", "truncated", "garbage", "empty", "payload-shape", "payload-dtype"],
)
def test_a_malformed_array_is_one_clear_error_of_the_callers_type(array, problem):
    with pytest.raises(InvalidReplyError, match=re.escape(f"{WHERE}: array 'conv.weight' {problem}")):
        _decode(array, "conv.weight")


def test_a_reply_with_a_malformed_array_is_rejected_naming_it(cnn):
    regions, weights = cnn
    reply = P.TrainReply(0, tuple(regions.param_names), tuple(weights), 1, 0.0, 0.0, 1)
    content = reply.to_content()
    name = regions.param_names[1]
    content.array_records[P.ARRAYS][name] = Array(dtype="float32", shape=(6,), stype=STYPE, data=b"\x00" * 24)
    with pytest.raises(InvalidReplyError, match=re.escape(f"train reply: array {name!r} holds no valid .npy payload")):
        P.TrainReply.from_content(content)


def _through_flower_object_store(record_dict):
    """Deflate every object of a message's content and inflate it again, as SuperLink and SuperNode do."""
    objects = get_all_nested_objects(record_dict)
    contents = {object_id: obj.deflate() for object_id, obj in objects.items()}
    return inflate_object_from_contents(record_dict.object_id, contents)


def test_an_instruction_survives_flowers_deflate_and_inflate_bit_for_bit(cnn):
    regions, weights = cnn
    kept = regions.full_kept()
    instruction = P.TrainInstruction(
        round=2,
        device=3,
        setup=make_train_setup(),
        names=tuple(regions.param_names),
        arrays=tuple(weights),
        kept=tuple(kept),
    )
    back = P.TrainInstruction.from_content(_through_flower_object_store(instruction.to_content()))
    assert back.names == instruction.names
    for got, sent in zip(back.arrays, weights, strict=True):
        assert got.dtype == np.float32 and got.tobytes() == sent.tobytes()
    for got, sent in zip(back.kept, kept, strict=True):
        np.testing.assert_array_equal(got, sent)


def test_records_keep_names_order_and_0d_arrays():
    record = P.to_array_record(["z", "a", "m"], [np.ones((2, 2)), np.array(7, dtype=np.int64), np.zeros(1)])
    assert isinstance(record, ArrayRecord) and list(record.keys()) == ["z", "a", "m"]
    assert record["a"].shape == () and int(_decode(record["a"])) == 7


def test_the_model_record_is_flowers_array_record_of_a_list(cnn):
    """What the strategies hand Flower each round: the keys and bytes of ArrayRecord(list), read back in order."""
    _, weights = cnn
    ours, flowers = P.model_record(weights), ArrayRecord(weights)
    assert list(ours.keys()) == list(flowers.keys()) == [str(i) for i in range(len(weights))]
    assert [a.data for a in ours.values()] == [a.data for a in flowers.values()]
    for back, sent in zip(P.model_arrays(flowers), weights, strict=True):
        assert back.dtype == sent.dtype and back.tobytes() == sent.tobytes()
