"""Every payload is validated: dtype, shape, finite values, size cap."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, RecordDict

from pgsl_flower import protocol
from pgsl_flower.model import ClientNet

SHAPE = (64, 14, 14)


def _content(h, labels):
    return RecordDict({protocol.BATCH: ArrayRecord({"h": Array(h), "labels": Array(labels)})})


def _decode(content, max_bytes=1 << 30):
    return protocol.decode_batch(content, smashed_shape=SHAPE, max_batch=64, num_classes=10, max_bytes=max_bytes)


def test_valid_batch_round_trips():
    h = torch.randn(4, *SHAPE)
    y = torch.tensor([0, 1, 2, 9])
    smashed, labels = _decode(RecordDict({protocol.BATCH: protocol.encode_batch(h, y)}))
    assert torch.equal(smashed, h) and torch.equal(labels, y)


@pytest.mark.parametrize(
    ("h", "labels", "fragment"),
    [
        (np.full((2, *SHAPE), np.nan, np.float32), np.zeros(2, np.int64), "NaN or inf"),
        (np.full((2, *SHAPE), np.inf, np.float32), np.zeros(2, np.int64), "NaN or inf"),
        (np.zeros((2, 64, 7, 7), np.float32), np.zeros(2, np.int64), "'batch.h': shape"),
        (np.zeros((2, *SHAPE), np.float64), np.zeros(2, np.int64), "'batch.h': dtype float64"),
        (np.zeros((2, *SHAPE), np.float32), np.zeros(3, np.int64), "'batch.labels': shape"),
        (np.zeros((2, *SHAPE), np.float32), np.array([0, 10]), "outside 0..9"),
        (np.zeros((2, *SHAPE), np.float32), np.zeros(2, np.int32), "'batch.labels': dtype int32"),
        (np.zeros((65, *SHAPE), np.float32), np.zeros(65, np.int64), "batch of 65"),
    ],
)
def test_bad_batches_are_rejected_naming_the_field(h, labels, fragment):
    with pytest.raises(protocol.PayloadError, match=fragment):
        _decode(_content(h, labels))


def test_oversized_payload_rejected_before_parsing():
    content = _content(np.zeros((64, *SHAPE), np.float32), np.zeros(64, np.int64))
    with pytest.raises(protocol.PayloadError, match="exceeds the cap"):
        _decode(content, max_bytes=1024)


def test_header_lying_about_shape_is_rejected():
    good = Array(np.zeros((2, *SHAPE), np.float32))
    liar = Array(dtype="float32", shape=(4, *SHAPE), stype=good.stype, data=good.data)
    with pytest.raises(protocol.PayloadError, match="header declared"):
        protocol.array_to_tensor(liar, field="batch.h", dtype=torch.float32, shape=(None, *SHAPE), max_bytes=1 << 30)


def test_garbage_bytes_are_rejected():
    junk = Array(dtype="float32", shape=(2, *SHAPE), stype="numpy.ndarray", data=b"not an npy file")
    with pytest.raises(protocol.PayloadError, match="undecodable"):
        protocol.array_to_tensor(junk, field="batch.h", dtype=torch.float32, shape=(None, *SHAPE), max_bytes=1 << 30)


def test_missing_record_and_field_are_named():
    with pytest.raises(protocol.PayloadError, match="record 'batch' missing"):
        _decode(RecordDict())
    with pytest.raises(protocol.PayloadError, match="'batch.labels' missing"):
        _decode(RecordDict({protocol.BATCH: ArrayRecord({"h": Array(np.zeros((1, *SHAPE), np.float32))})}))


def test_state_validation():
    ref = ClientNet(1).state_dict()
    ok = protocol.decode_state(protocol.encode_state(ref), ref, field="client-weights", max_bytes=1 << 30)
    assert all(torch.equal(ok[k], ref[k]) for k in ref)
    bad = dict(ref)
    bad["features.0.weight"] = torch.full_like(ref["features.0.weight"], float("nan"))
    with pytest.raises(protocol.PayloadError, match="client-weights.features.0.weight': contains NaN"):
        protocol.decode_state(protocol.encode_state(bad), ref, field="client-weights", max_bytes=1 << 30)
    missing = {k: v for k, v in ref.items() if k != "features.1.bias"}
    with pytest.raises(protocol.PayloadError, match="missing keys \\['features.1.bias'\\]"):
        protocol.decode_state(protocol.encode_state(missing), ref, field="client-weights", max_bytes=1 << 30)
