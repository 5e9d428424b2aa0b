"""Issue 10: the compact sparse encoding and the masked train messages; payload bytes against hand counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_train_setup

from amp_fl.client.sparse_fedavg import prunable_arrays
from amp_fl.errors import InvalidReplyError
from amp_fl.models import build_model
from amp_fl.protocol.sparse_fedavg import MaskedTrainInstruction, MaskedTrainReply
from amp_fl.pruning.magnitude import MagnitudePruner
from amp_fl.pruning.maps import region_map_for
from amp_fl.pruning.sparse_encoding import (
    EncodedTensor,
    best_format,
    decode,
    encode,
    encoded_bytes,
    index_dtype,
    pack_values,
    unpack_values,
)
from amp_fl.pruning.submodel import module_arrays


def _mask(shape, kept, seed=0):
    rng = np.random.default_rng(seed)
    flat = np.zeros(math.prod(shape), dtype=bool)
    flat[rng.choice(flat.size, size=kept, replace=False)] = True
    return flat.reshape(shape)


@pytest.mark.parametrize(
    ("shape", "kept", "fmt", "nbytes"),
    [
        # 100 entries: dense 400 B; bitmap 4k + 13; uint8 indices 5k.
        ((10, 10), 7, "indices", 4 * 7 + 1 * 7),  # 35 < bitmap 41 < dense 400
        ((10, 10), 60, "bitmap", 4 * 60 + 13),  # 253 < indices 300 < dense 400
        ((10, 10), 100, "dense", 400),  # dense 400 < bitmap 413
        ((10, 10), 0, "indices", 0),  # nothing survives: no values, no index
        ((300,), 10, "indices", 4 * 10 + 2 * 10),  # uint16 indices 60 < bitmap 40 + 38 = 78
        ((300,), 40, "bitmap", 4 * 40 + 38),  # 198 < indices 240
        ((6, 16, 5, 5), 240, "bitmap", 4 * 240 + 300),  # 2,400 entries: bitmap 1,260 < uint16 indices 1,440
        ((70_000,), 100, "indices", 4 * 100 + 4 * 100),  # uint32 indices 800 < bitmap 400 + 8,750
    ],
)
def test_encoded_bytes_match_a_hand_count(shape, kept, fmt, nbytes):
    array = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    mask = _mask(shape, kept)
    tensor = encode(array, mask)
    assert tensor.format == fmt == best_format(math.prod(shape), kept)
    assert tensor.nbytes == nbytes == encoded_bytes(math.prod(shape), kept)[fmt]
    out, out_mask = decode(tensor)
    np.testing.assert_array_equal(out_mask, mask)
    np.testing.assert_array_equal(out, np.where(mask, array, 0))


def test_index_dtype_is_the_smallest_that_fits():
    assert index_dtype(256) == np.uint8 and index_dtype(257) == np.uint16
    assert index_dtype(65_536) == np.uint16 and index_dtype(65_537) == np.uint32


@pytest.mark.parametrize("shape", [(), (1,), (3, 5), (4, 3, 2, 2)])
def test_round_trips(shape):
    rng = np.random.default_rng(2)
    array = rng.standard_normal(shape).astype(np.float32)
    for kept in sorted({0, 1, math.prod(shape) // 2, math.prod(shape)}):
        mask = _mask(shape, kept, seed=kept)
        out, out_mask = decode(encode(array, mask))
        np.testing.assert_array_equal(out, np.where(mask, array, 0))
        np.testing.assert_array_equal(out_mask, mask)
        packed = pack_values(array, mask)
        assert packed.size == kept and packed.dtype == np.float32
        np.testing.assert_array_equal(unpack_values(packed, shape, mask), np.where(mask, array, 0))


def test_decode_rejects_inconsistent_encodings():
    good = encode(np.arange(20, dtype=np.float32), _mask((20,), 2))
    assert good.format == "indices"  # 8 + 2 bytes < bitmap 8 + 3
    bad_order = EncodedTensor(good.shape, "indices", good.values, good.index[::-1].copy())
    with pytest.raises(ValueError, match="increasing"):
        decode(bad_order)
    with pytest.raises(ValueError, match="values"):
        decode(EncodedTensor(good.shape, "indices", good.values[:1], good.index))
    with pytest.raises(ValueError, match="bitmap"):
        decode(EncodedTensor((20,), "bitmap", good.values, np.zeros(2, dtype=np.uint8)))


SETUP = make_train_setup(
    batch_size=4,
)


@pytest.fixture
def server_identity(monkeypatch):
    """Messages built outside a Flower process need a task identity (as the in-process grid sets)."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, attr, 1)


@pytest.fixture(scope="module")
def pruned_cnn():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("cnn", num_classes=10, input_shape=(1, 28, 28))
    regions = region_map_for(model, (1, 28, 28))
    pruner = MagnitudePruner(regions.shapes, prunable_arrays(regions), method="one_shot", target=0.9)
    weights = module_arrays(model)
    pruner.prune_after(0, weights)
    return regions, pruner, pruner.apply(weights)


def test_downlink_bytes_of_a_pruned_cnn_by_hand(pruned_cnn):
    """The paper's CNN at 90 %: every weight tensor in its cheapest format, biases dense, one format byte each."""
    regions, pruner, weights = pruned_cnn
    tensors = tuple(encode(w, m) for w, m in zip(weights, pruner.masks, strict=True))
    instruction = MaskedTrainInstruction(1, 0, SETUP, tuple(regions.param_names), tensors)
    expected = len(weights)  # format bytes
    for shape, mask in zip(regions.shapes, pruner.masks, strict=True):
        n = math.prod(shape)
        if mask is None:
            expected += 4 * n
            continue
        k = int(mask.sum())
        index = 1 if n <= 256 else 2 if n <= 65_536 else 4
        expected += min(4 * n, 4 * k + math.ceil(n / 8), (4 + index) * k)
    assert instruction.downlink_bytes == expected
    # ... and it is what the Flower message carries: every array's buffer in the content, measured.
    content = instruction.to_content()
    carried = sum(a.numpy().nbytes for record in content.array_records.values() for a in record.values())
    assert carried == expected
    # The dense model would take 4 bytes per parameter plus the format bytes.
    dense = 4 * sum(math.prod(s) for s in regions.shapes) + len(weights)
    assert instruction.downlink_bytes < 0.3 * dense


def test_instruction_round_trip_and_decode(pruned_cnn, server_identity):
    regions, pruner, weights = pruned_cnn
    tensors = tuple(encode(w, m) for w, m in zip(weights, pruner.masks, strict=True))
    instruction = MaskedTrainInstruction(3, 1, SETUP, tuple(regions.param_names), tensors)
    message = instruction.to_message(dst_node_id=1234)
    assert message.metadata.message_type == "train.masked"
    parsed = MaskedTrainInstruction.from_content(instruction.to_content())
    assert (parsed.round, parsed.device, parsed.setup) == (3, 1, SETUP)
    arrays, masks = parsed.decode(regions.param_names, regions.shapes, prunable_arrays(regions))
    for a, w, m, m0 in zip(arrays, weights, masks, pruner.masks, strict=True):
        np.testing.assert_array_equal(a, w)
        assert (m is None) == (m0 is None)
        if m is not None:
            np.testing.assert_array_equal(m, m0)
    with pytest.raises(ValueError, match="features.0.weight"):  # an encoding of another model's shapes
        parsed.decode(regions.param_names, [(7,)] * len(regions.shapes), prunable_arrays(regions))


def test_reply_uplink_bytes_are_four_per_surviving_value(pruned_cnn):
    regions, pruner, _ = pruned_cnn
    update = [np.ones(s, dtype=np.float32) for s in regions.shapes]
    values = tuple(pack_values(u, m) for u, m in zip(update, pruner.masks, strict=True))
    reply = MaskedTrainReply(0, tuple(regions.param_names), values, 4, 1.0, 0.1, round=3)
    survivors = sum(
        math.prod(s) if m is None else int(m.sum()) for s, m in zip(regions.shapes, pruner.masks, strict=True)
    )
    assert reply.uplink_bytes == 4 * survivors
    assert MaskedTrainReply.from_content(reply.to_content()).round == 3  # the round travels back
    parsed = MaskedTrainReply.from_content(reply.to_content())
    full = parsed.for_model(regions.param_names, regions.shapes, pruner.masks)
    for f, m in zip(full, pruner.masks, strict=True):
        np.testing.assert_array_equal(f, np.ones_like(f) if m is None else m.astype(np.float32))
    wrong = [np.ones(s, dtype=bool) for s in regions.shapes]  # a mask the reply was not made for
    with pytest.raises(InvalidReplyError, match="values"):
        parsed.for_model(regions.param_names, regions.shapes, wrong)
