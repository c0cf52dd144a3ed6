"""The Flower simulation computes what an in-process run of the same steps computes."""

from __future__ import annotations

import json

import pytest
import torch
from flwr.app import ArrayRecord, Context, RecordDict

import pgsl_flower.model
from pgsl_flower import protocol
from pgsl_flower.client_app import SplitClient
from pgsl_flower.config import RunConfig
from pgsl_flower.local_data import batches_per_epoch
from pgsl_flower.data import load_dataset
from pgsl_flower.model import ClientNet, ServerNet, prepare_input
from pgsl_flower.simulation import simulate
from pgsl_flower.strategy import ServerModel, fedavg


def _reference(cfg: RunConfig, order: list[int]) -> tuple[dict, dict]:
    """SplitFed, one round, driven by direct calls in the server's processing order."""
    torch.manual_seed(cfg.seed)
    template = ClientNet(1)
    server = ServerModel(cfg, 10, torch.device("cpu"))
    clients = []
    for partition in order:
        context = Context(run_id=0, node_id=partition, state=RecordDict(), run_config={},
                          node_config={"partition-id": partition, "num-partitions": len(order)})
        client = SplitClient(cfg, context)
        client.load_weights(protocol.encode_state(template.state_dict()))
        clients.append(client)
    steps = [batches_per_epoch(len(c.data.train_labels), cfg.batch_size) for c in clients]
    for step in range(max(steps)):
        for client, n_steps in zip(clients, steps, strict=True):
            if step >= n_steps:
                continue
            batch = RecordDict({protocol.BATCH: client.forward_next()[protocol.batch_record(0)]})
            smashed, labels = protocol.decode_batch(batch, smashed_shape=(64, 14, 14), max_batch=cfg.batch_size,
                                                    num_classes=10, max_bytes=1 << 30)
            grad, _, _ = server.step(smashed, labels)
            client.apply_gradients(RecordDict(protocol.encode_gradients([grad])))
    merged = fedavg([c.model.state_dict() for c in clients], [len(c.data.train_labels) for c in clients])
    return merged, server.model.state_dict()


def _logits(client_state: dict, server_state: dict, images: torch.Tensor) -> torch.Tensor:
    client, server = ClientNet(1), ServerNet(10)
    client.load_state_dict(client_state)
    server.load_state_dict(server_state)
    client.eval()
    server.eval()
    with torch.no_grad():
        return server(client(prepare_input(images.float() / 255)))


@pytest.mark.slow
@pytest.mark.parametrize("max_in_flight", [0, 2])  # all 3 clients in flight; a window of 2
def test_splitfed_simulation_matches_in_process_reference(tmp_path, monkeypatch, max_in_flight):
    """Same model as the reference in the server's processing order; not in another order.

    Dropout draws from the server process's global RNG, which Flower's threads
    share, so it is off here. Weights are compared through the network's
    outputs: Adam turns float-rounding noise in zero-gradient parameters (conv
    biases before BN) into lr-sized steps, which BN then cancels.
    """
    monkeypatch.setattr(pgsl_flower.model, "DROPOUT", 0.0)
    cfg = RunConfig(num_rounds=1, samples_per_client=150, batch_size=32, local_eval_samples=0,
                    test_samples=100, seed=5, max_in_flight=max_in_flight,
                    bn_recalibration="off")  # the reference is plain SplitFed; recalibration is tested in test_batchnorm
    simulate(cfg, num_clients=3, run_dir=tmp_path)
    final = torch.load(tmp_path / "final_model.pt")
    order = json.loads((tmp_path / "config.json").read_text())["partition-order"]
    images = load_dataset("mnist")[1].images[:200]
    got = _logits(final["client"], final["server"], images)
    want = _logits(*_reference(cfg, order), images)
    other = _logits(*_reference(cfg, order[::-1]), images)
    error = (got - want).abs().max()
    assert error < 0.1 * want.abs().max()
    assert (other - want).abs().max() > 3 * error  # the processing order is what the reference mimics
    assert (got.argmax(1) == want.argmax(1)).float().mean() >= 0.98
