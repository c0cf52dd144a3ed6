"""Run-config 'payload-dtype': smashed data and gradients travel as float16 (half the bytes),
are validated on arrival and computed on in float32; model weights stay float32."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Context, RecordDict

from pgsl_flower import protocol
from pgsl_flower.client_app import SplitClient
from pgsl_flower.config import ConfigError, RunConfig, parse_run_config
from pgsl_flower.simulation import simulate

SHAPE = (64, 14, 14)
HALF = torch.float16


def test_batches_and_gradients_round_trip_as_float16():
    h = [torch.randn(4, *SHAPE) for _ in range(2)]
    y = torch.tensor([0, 1, 2, 9])
    content = RecordDict({protocol.batch_record(i): protocol.encode_batch(h[i], y, HALF, protocol.batch_record(i))
                          for i in range(2)})
    assert {content[protocol.batch_record(i)]["h"].dtype for i in range(2)} == {"float16"}
    decoded = protocol.decode_batches(content, 2, smashed_shape=SHAPE, max_batch=4, num_classes=10,
                                      max_bytes=1 << 30, dtype=HALF)
    for (smashed, labels), sent in zip(decoded, h, strict=True):
        assert smashed.dtype == torch.float32 and torch.equal(labels, y)
        assert torch.equal(smashed, sent.half().float())
        assert (smashed - sent).abs().max() <= 1e-3 * sent.abs().max()  # float16: ~3 decimal digits
    grads = [torch.randn(4, *SHAPE) * 1e-3 for _ in range(3)]
    back = protocol.decode_gradients(RecordDict(protocol.encode_gradients(grads, HALF)), [(4, *SHAPE)] * 3,
                                     max_bytes=1 << 30, dtype=HALF)
    assert all(b.dtype == torch.float32 and torch.equal(b, g.half().float()) for b, g in zip(back, grads, strict=True))
    calibration = protocol.encode_calibration(torch.randn(6, *SHAPE).split(4), HALF)
    smashed = protocol.decode_calibration(RecordDict({protocol.CALIBRATION: calibration}), smashed_shape=SHAPE,
                                          max_batch=4, max_samples=6, max_bytes=1 << 30, dtype=HALF)
    assert smashed.dtype == torch.float32 and smashed.shape == (6, *SHAPE)


def test_float16_halves_the_payload_bytes():
    grads = [torch.randn(32, *SHAPE) for _ in range(4)]
    full = protocol.content_nbytes(RecordDict(protocol.encode_gradients(grads)))
    half = protocol.content_nbytes(RecordDict(protocol.encode_gradients(grads, HALF)))
    assert full >= 4 * 32 * 64 * 14 * 14 * 4
    assert 0.5 <= half / full < 0.501  # the .npy headers are all that is not halved


def test_float16_overflow_is_refused_by_the_sender_naming_the_field():
    h = torch.zeros(2, *SHAPE)
    h[1, 3, 4, 5] = 7e4  # float16's largest finite value is 65504
    with pytest.raises(protocol.PayloadError, match=r"field 'batch\.1\.h': \|values\| up to 7e\+04 overflow float16"):
        protocol.encode_batch(h, torch.tensor([0, 1]), HALF, protocol.batch_record(1))
    grads = [torch.zeros(2, *SHAPE), torch.full((2, *SHAPE), -1e5)]
    with pytest.raises(protocol.PayloadError, match=r"field 'grad\.1\.h'.*overflow float16.*'payload-dtype'"):
        protocol.encode_gradients(grads, HALF)
    assert protocol.encode_batch(h, torch.tensor([0, 1]))["h"].dtype == "float32"  # float32 carries it


def test_receiver_refuses_inf_and_the_wrong_wire_dtype_naming_the_field():
    inf = np.zeros((2, *SHAPE), np.float16)
    inf[0, 0, 0, 0] = np.inf
    content = RecordDict({protocol.BATCH: ArrayRecord({"h": Array(inf), "labels": Array(np.zeros(2, np.int64))})})
    with pytest.raises(protocol.PayloadError, match=r"field 'batch\.h': contains NaN or inf \(float16 on the wire"):
        protocol.decode_batch(content, smashed_shape=SHAPE, max_batch=4, num_classes=10, max_bytes=1 << 30,
                              dtype=HALF)
    full = RecordDict({protocol.BATCH: protocol.encode_batch(torch.randn(2, *SHAPE), torch.tensor([0, 1]))})
    with pytest.raises(protocol.PayloadError, match=r"field 'batch\.h': dtype float32, expected float16"):
        protocol.decode_batch(full, smashed_shape=SHAPE, max_batch=4, num_classes=10, max_bytes=1 << 30, dtype=HALF)
    half = RecordDict(protocol.encode_gradients([torch.randn(2, *SHAPE)], HALF))
    with pytest.raises(protocol.PayloadError, match=r"field 'grad\.0\.h': dtype float16, expected float32"):
        protocol.decode_gradients(half, [(2, *SHAPE)], max_bytes=1 << 30)


@pytest.mark.parametrize("value", ["bfloat16", "half", "float64", ""])
def test_bad_payload_dtype_is_refused(value):
    with pytest.raises(ConfigError, match=rf"run-config 'payload-dtype' must be one of \['float32', 'float16'\], got '{value}'"):
        parse_run_config({"payload-dtype": value})
    with pytest.raises(ConfigError, match="'payload-dtype' must be a str"):
        parse_run_config({"payload-dtype": 16})


def test_client_sends_float16_smashed_data_and_takes_float16_gradients():
    cfg = RunConfig(samples_per_client=200, batch_size=16, batches_per_message=2, payload_dtype="float16")
    context = Context(run_id=1, node_id=3, node_config={"partition-id": 0, "num-partitions": 4},
                      state=RecordDict(), run_config=cfg.as_run_config())
    client = SplitClient(cfg, context)
    records = client.forward_next(2)
    assert [records[protocol.batch_record(i)]["h"].dtype for i in range(2)] == ["float16", "float16"]
    weights = {k: v.clone() for k, v in client.model.state_dict().items()}
    grads = [torch.randn(16, *client.smashed_shape) * 1e-3 for _ in range(2)]
    client.apply_gradients(RecordDict(protocol.encode_gradients(grads, HALF)))
    assert any(not torch.equal(weights[k], v) for k, v in client.model.state_dict().items())
    assert all(v.dtype == weights[k].dtype for k, v in client.model.state_dict().items())  # weights stay float32
    client.pending_count = 2
    with pytest.raises(protocol.PayloadError, match=r"'grad\.0\.h': dtype float32, expected float16"):
        client.apply_gradients(RecordDict(protocol.encode_gradients(grads)))


@pytest.mark.slow
def test_simulation_with_float16_payloads_learns_like_float32(tmp_path):
    config = {"num-rounds": 2, "samples-per-client": 320, "batch-size": 32, "test-samples": 500,
              "local-eval-samples": 32, "seed": 3}
    rows = {}
    for dtype in ("float32", "float16"):
        simulate({**config, "payload-dtype": dtype}, num_clients=2, run_dir=tmp_path / dtype)
        with (tmp_path / dtype / "metrics.csv").open() as handle:
            rows[dtype] = list(csv.DictReader(handle))
    full, half = rows["float32"][-1], rows["float16"][-1]
    assert all(int(r["failed_clients"]) == 0 for r in rows["float16"])
    assert float(half["train_accuracy"]) > 0.6
    assert abs(float(half["test_accuracy"]) - float(full["test_accuracy"])) < 0.1
    # smashed data up (training batches, and BatchNorm calibration: 512 samples over 2 clients) and
    # dL/dh down are halved; the float32 weights are not
    per_sample = 64 * 14 * 14 * 4
    train = int(full["samples"]) // 2
    for column, samples in (("bytes_up_per_client", train + 256), ("bytes_down_per_client", train)):
        saved = int(full[column]) - int(half[column])
        assert 0.49 * samples * per_sample <= saved <= 0.51 * samples * per_sample, (column, saved, samples)
