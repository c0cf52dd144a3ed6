"""Several batches per message (run-config 'batches-per-message'): wire format, the
client's stale-gradient update, and a real simulation with fewer exchanges."""

from __future__ import annotations

import csv

import pytest
import ray
import torch
from flwr.app import ConfigRecord, Context, RecordDict

from pgsl_flower import protocol
from pgsl_flower.client_app import SplitClient
from pgsl_flower.config import ConfigError, RunConfig
from pgsl_flower.model import ClientNet, ServerNet, make_optimizer
from pgsl_flower.simulation import simulate

SHAPE = (64, 14, 14)


def _client(cfg: RunConfig) -> SplitClient:
    context = Context(run_id=1, node_id=3, node_config={"partition-id": 0, "num-partitions": 4},
                      state=RecordDict(), run_config=cfg.as_run_config())
    return SplitClient(cfg, context)


def test_batches_and_gradients_round_trip_and_reject_extras():
    batches = {protocol.batch_record(i): protocol.encode_batch(torch.randn(2, *SHAPE), torch.tensor([i, 9]))
               for i in range(3)}
    decoded = protocol.decode_batches(RecordDict(batches), 3, smashed_shape=SHAPE, max_batch=4,
                                      num_classes=10, max_bytes=1 << 30)
    assert [int(y[0]) for _, y in decoded] == [0, 1, 2]
    with pytest.raises(protocol.PayloadError, match=r"records \['batch.2'\]: 2 batch\(es\) were requested"):
        protocol.decode_batches(RecordDict(batches), 2, smashed_shape=SHAPE, max_batch=4,
                                num_classes=10, max_bytes=1 << 30)
    grads = [torch.randn(2, *SHAPE) for _ in range(2)]
    content = RecordDict(protocol.encode_gradients(grads))
    assert all(torch.equal(a, b) for a, b in zip(protocol.decode_gradients(content, [(2, *SHAPE)] * 2, max_bytes=1 << 30), grads, strict=True))
    with pytest.raises(protocol.PayloadError, match=r"record 'grad.2' missing"):
        protocol.decode_gradients(content, [(2, *SHAPE)] * 3, max_bytes=1 << 30)
    with pytest.raises(protocol.PayloadError, match=r"field 'grad.1.h': shape"):
        protocol.decode_gradients(content, [(2, *SHAPE), (3, *SHAPE)], max_bytes=1 << 30)


def test_client_applies_k_stale_gradients_in_order():
    """k = 3: all forwards use w0; batch i's step uses the server's dL/dh for h(w0) and a
    fresh Jacobian at w_i -- checked against a direct re-implementation."""
    cfg = RunConfig(samples_per_client=400, batch_size=16, seed=2, batches_per_message=3)
    client = _client(cfg)
    reference = ClientNet(1)
    reference.load_state_dict(client.model.state_dict())
    ref_opt = make_optimizer(reference, cfg.lr, cfg.weight_decay)
    server = ServerNet(10).eval()

    records = client.forward_next(3)
    grads, inputs = [], []
    for i, counter in enumerate(range(3)):
        batch = records[protocol.batch_record(i)]
        h = torch.from_numpy(batch["h"].numpy()).requires_grad_(True)
        labels = torch.from_numpy(batch["labels"].numpy())
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(server(h), labels), [h])
        grads.append(grad)
        inputs.append(client.data.inputs(client._indices(counter)))
    client.apply_gradients(RecordDict(protocol.encode_gradients(grads)))

    reference.train()
    for x, grad in zip(inputs, grads, strict=True):
        saved = {k: v.clone() for k, v in reference.named_buffers()}
        ref_opt.zero_grad()
        reference(x).backward(grad)
        ref_opt.step()
        with torch.no_grad():
            for name, buf in reference.named_buffers():
                buf.copy_(saved[name])
    for a, b in zip(client.model.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
    assert client.counter == 3 and client.pending_count == 0


def test_client_refuses_more_batches_than_configured():
    cfg = RunConfig(samples_per_client=200, batch_size=16, batches_per_message=2)
    client = _client(cfg)
    with pytest.raises(protocol.PayloadError, match=r"expected 1..2 \(run-config 'batches-per-message'\)"):
        client.forward_next(5)
    assert client.counter == 0


@pytest.mark.slow
def test_simulation_with_chunked_exchange_learns_in_fewer_messages(tmp_path):
    config = {"num-rounds": 2, "samples-per-client": 320, "batch-size": 32, "test-samples": 500,
              "local-eval-samples": 32, "seed": 3,
              "bn-recalibration": "off"}  # only the training exchange is counted here
    rows = {}
    for k in (1, 4):
        run_dir = tmp_path / f"k{k}"
        summary = simulate({**config, "batches-per-message": k}, num_clients=2, run_dir=run_dir)
        with (run_dir / "metrics.csv").open() as handle:
            rows[k] = list(csv.DictReader(handle))
        # two tiny rounds: training accuracy is high, BN running statistics (test) lag behind
        assert float(rows[k][-1]["train_accuracy"]) > 0.6 and summary["final_test_accuracy"] > 0.15
    # 288 training images per client: 9 batches of 32 -> 9 + 1 messages with k = 1, 3 + 1 with k = 4
    assert [int(r["messages_per_client"]) for r in rows[1]] == [10, 10]
    assert [int(r["messages_per_client"]) for r in rows[4]] == [4, 4]
    assert rows[1][0]["samples"] == rows[4][0]["samples"] == str(2 * 9 * 32)
    # the same smashed data crosses the network: bytes up differ only by per-message overhead
    up1, up4 = int(rows[1][0]["bytes_up_per_client"]), int(rows[4][0]["bytes_up_per_client"])
    assert abs(up1 - up4) / up1 < 0.01


def _server_gradients(records: dict, server: torch.nn.Module) -> list[torch.Tensor]:
    """dL/dh of each sent batch through a fixed server part."""
    grads = []
    for i in range(len(records)):
        batch = records[protocol.batch_record(i)]
        h = torch.from_numpy(batch["h"].numpy()).requires_grad_(True)
        labels = torch.from_numpy(batch["labels"].numpy())
        grads.append(torch.autograd.grad(torch.nn.functional.cross_entropy(server(h), labels), [h])[0])
    return grads


def test_two_messages_in_flight_take_the_oldest_batches_gradients_first():
    """messages-in-flight = 2: the client sends a second message's batches before the first's
    gradients come back; those gradients then step on the first message's batches only, and
    the second's stay pending -- the same weights as stepping on the first batches alone."""
    cfg = RunConfig(samples_per_client=400, batch_size=16, seed=3, batches_per_message=2, messages_in_flight=2)
    client, alone = _client(cfg), _client(RunConfig(samples_per_client=400, batch_size=16, seed=3,
                                                        batches_per_message=2))
    alone.model.load_state_dict(client.model.state_dict())
    server = ServerNet(10).eval()
    first = client.forward_next(2)
    assert alone.forward_next(2).keys() == first.keys()
    client.forward_next(2)  # the second message's batches, computed before any step
    assert (client.pending_first, client.pending_count, client.counter) == (0, 4, 4)

    grads = RecordDict(protocol.encode_gradients(_server_gradients(first, server)))
    client.apply_gradients(grads)
    alone.apply_gradients(grads)
    assert (client.pending_first, client.pending_count) == (2, 2)
    for a, b in zip(client.model.parameters(), alone.model.parameters(), strict=True):
        assert torch.equal(a, b)
    client.forward_next(2)
    assert (client.pending_first, client.pending_count, client.counter) == (2, 4, 6)
    with pytest.raises(protocol.PayloadError, match=r"5 gradient\(s\) for 4 pending batch\(es\)"):
        client.apply_gradients(RecordDict(protocol.encode_gradients([torch.zeros(16, *SHAPE)] * 5)))
    assert (client.pending_first, client.pending_count) == (2, 4)  # refused before any step


def test_client_refuses_train_messages_out_of_order():
    client = _client(RunConfig(samples_per_client=200, batch_size=16, messages_in_flight=2))
    client.check_order(ConfigRecord({"message": 0}), starts=True)
    client.check_order(ConfigRecord({"message": 1}), starts=False)
    with pytest.raises(protocol.PayloadError, match=r"'instructions.message' = 3, expected 2: .*out of order"):
        client.check_order(ConfigRecord({"message": 3}), starts=False)
    with pytest.raises(protocol.PayloadError, match=r"'instructions.message' = 2, expected 0"):
        client.check_order(ConfigRecord({"message": 2}), starts=True)  # the weights come with message 0


def test_simulation_refuses_several_messages_in_flight_before_ray_starts():
    with pytest.raises(ConfigError, match=r"'messages-in-flight' = 2: more than 1 is for deployments"):
        simulate({"messages-in-flight": 2}, 2)
    with pytest.raises(ConfigError, match=r"'messages-in-flight' must be >= 1, got 0"):
        simulate({"messages-in-flight": 0}, 2)
    assert not ray.is_initialized()
