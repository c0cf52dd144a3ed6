"""Run-config 'cut-layer': every cut of the seven convs is the same network, split elsewhere."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from flwr.app import Context, RecordDict

from pgsl_flower import checkpoint, protocol
from pgsl_flower.checkpoint import CheckpointError
from pgsl_flower.client_app import SplitClient
from pgsl_flower.config import ConfigError, RunConfig, default_run_config, parse_run_config
from pgsl_flower.local_data import dropout_seed
from pgsl_flower.model import (
    ClientNet,
    ServerNet,
    SplitNet,
    make_optimizer,
    prepare_input,
    seeded_dropout,
    smashed_shape,
)
from pgsl_flower.pgsl.server_model import build_pgsl_net
from pgsl_flower.simulation import simulate

CUTS = (1, 2, 3, 4, 5, 6)


def _split(k: int, tower: str = "paper") -> tuple[ClientNet, ServerNet]:
    return ClientNet(1, cut_layer=k), ServerNet(10, tower, cut_layer=k)


def _copy_weights(reference: SplitNet, client: ClientNet, server: ServerNet) -> None:
    """The reference's parameters and buffers, in network order, into the k-split halves."""
    with torch.no_grad():
        for src, dst in zip(reference.parameters(), [*client.parameters(), *server.parameters()], strict=True):
            dst.copy_(src)
        for src, dst in zip(reference.buffers(), [*client.buffers(), *server.buffers()], strict=True):
            dst.copy_(src)


def _no_dropout(*modules: torch.nn.Module) -> None:
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, torch.nn.Dropout):
                layer.p = 0.0


@pytest.mark.parametrize("tower", ["paper", "pooled"])
@pytest.mark.parametrize("k", CUTS)
def test_every_cut_is_the_paper_network_with_split_gradients_equal_unsplit(k, tower):
    """Same layers in the same order at every k; with the k=2 network's weights, the split
    forward/backward (h detached and sent, dL/dh sent back) gives the unsplit network's gradients."""
    if tower == "pooled" and k > 3:
        with pytest.raises(ValueError, match="cut_layer must be <= 3"):
            ServerNet(10, tower, cut_layer=k)
        return
    torch.manual_seed(7)
    reference = SplitNet(1, 10, ClientNet(1), ServerNet(10, tower)).double()
    client, server = (part.double() for part in _split(k, tower))

    def layer_types(*parts: torch.nn.Module) -> list[str]:
        return [type(m).__name__ for part in parts for m in part.features]

    assert layer_types(client, server) == layer_types(reference.client, reference.server)
    assert [type(m).__name__ for m in client.features][-1] == "ReLU"  # h is conv k's activation
    assert sum(isinstance(m, torch.nn.Conv2d) for m in client.features) == k
    _copy_weights(reference, client, server)
    _no_dropout(reference, client, server)  # train-mode BN, identical functions
    reference.train(), client.train(), server.train()

    x = prepare_input(torch.rand(6, 1, 28, 28, dtype=torch.float64))
    y = torch.randint(0, 10, (6,))
    full = torch.autograd.grad(torch.nn.functional.cross_entropy(reference(x), y), list(reference.parameters()))

    h = client(x)
    assert h.shape == (6, *smashed_shape(RunConfig(cut_layer=k, server_tower=tower), (28, 28)))
    h_sent = h.detach().requires_grad_(True)  # what crosses the network
    grad_h, *server_grads = torch.autograd.grad(
        torch.nn.functional.cross_entropy(server(h_sent), y), [h_sent, *server.parameters()])
    client_grads = torch.autograd.grad(h, list(client.parameters()), grad_outputs=grad_h)
    for a, b in zip(full, [*client_grads, *server_grads], strict=True):
        assert torch.allclose(a, b, atol=1e-9, rtol=0)


def test_parameter_count_is_the_same_at_every_cut():
    def count(*parts: torch.nn.Module) -> int:
        return sum(p.numel() for part in parts for p in part.parameters())

    counts = {k: count(*_split(k)) for k in CUTS}
    assert len(set(counts.values())) == 1, counts
    assert {count(*_split(k, "pooled")) for k in (1, 2, 3)} == {count(*_split(2, "pooled"))}
    assert count(ClientNet(1, cut_layer=1)) < count(ClientNet(1, cut_layer=2)) < count(ClientNet(1, cut_layer=6))
    cfg = RunConfig(cut_layer=4, defense="pgsl")
    towers = build_pgsl_net(cfg, 10).towers
    assert all(sum(isinstance(m, torch.nn.Conv2d) for m in t.features) == 3 for t in towers.values())


def test_bad_cut_layer_is_refused():
    for k in (0, 7, -1):
        with pytest.raises(ConfigError, match=rf"'cut-layer' must be in 1\.\.6, got {k}"):
            parse_run_config({"cut-layer": k})
        with pytest.raises(ValueError, match="cut_layer must be one of"):
            ClientNet(1, cut_layer=k)
    with pytest.raises(ConfigError, match="'cut-layer' = 4 with server-tower 'pooled'"):
        parse_run_config({"cut-layer": 4, "server-tower": "pooled"})
    assert parse_run_config({"cut-layer": 3, "server-tower": "pooled"}).cut_layer == 3


def test_checkpoint_without_cut_layer_resumes_at_the_default():
    """A checkpoint written before 'cut-layer' existed counts as cut-layer 2."""
    saved = {key: value for key, value in default_run_config().items() if key != "cut-layer"}
    checkpoint.check_compatible(saved, RunConfig().as_run_config(), checkpoint.RESUMABLE_CHANGES)
    with pytest.raises(CheckpointError, match="'cut-layer' is 4.*2 \\(the key's default: the checkpoint predates it\\)"):
        checkpoint.check_compatible(saved, RunConfig(cut_layer=4).as_run_config(), checkpoint.RESUMABLE_CHANGES)
    # only keys whose default reproduces the older runs: a checkpoint from before BatchNorm
    # recalibration existed did not recalibrate, whatever today's default is
    older = {key: value for key, value in saved.items() if key != "bn-recalibration"}
    with pytest.raises(CheckpointError, match="'bn-recalibration' is 'on'.*no such key"):
        checkpoint.check_compatible(older, RunConfig().as_run_config(), checkpoint.RESUMABLE_CHANGES)


def test_client_side_dropout_is_the_same_mask_when_the_client_recomputes():
    """cut-layer 4 puts the dropout after conv3 on the client: the step the client takes when
    dL/dh arrives equals direct training under the mask of the h it sent."""
    cfg = RunConfig(samples_per_client=200, batch_size=16, seed=3, cut_layer=4)
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 4},
                      state=RecordDict(), run_config=cfg.as_run_config())
    client = SplitClient(cfg, context)
    reference = ClientNet(1, cut_layer=4)
    reference.load_state_dict(client.model.state_dict())
    ref_opt = make_optimizer(reference, cfg.lr, cfg.weight_decay)
    server = ServerNet(10, cut_layer=4).eval()
    for _ in range(2):
        counter = client.counter
        batch = client.forward_next()[protocol.batch_record(0)]
        h = protocol.array_to_tensor(batch["h"], field="h", dtype=torch.float32,
                                     shape=(None, *client.smashed_shape), max_bytes=1 << 30)
        labels = torch.from_numpy(batch["labels"].numpy())
        h.requires_grad_(True)
        (grad_h,) = torch.autograd.grad(torch.nn.functional.cross_entropy(server(h), labels), [h])
        inputs = client._inputs(client._indices(counter), counter)
        reference.train()
        with torch.no_grad():
            unseeded = copy.deepcopy(reference)(inputs)  # a copy: its BN running stats move
        assert not torch.allclose(unseeded, h.detach(), atol=1e-4)  # the mask is live ...
        with seeded_dropout(reference, dropout_seed(cfg, 0, counter)):
            ref_h = reference(inputs)
        assert torch.allclose(ref_h, h.detach(), atol=1e-5)  # ... and the batch's seed reproduces it
        client.apply_gradients(RecordDict(protocol.encode_gradients([grad_h])))
        ref_opt.zero_grad()
        ref_h.backward(grad_h)
        ref_opt.step()
    for (name, a), b in zip(client.model.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name


@pytest.mark.slow
def test_simulation_with_client_side_dropout_learns_and_attacks(tmp_path):
    """cut-layer 4 (conv1-conv4 and a dropout on the client): a real Flower simulation learns
    and the white-box attack's ground truth reproduces the intercepted smashed data."""
    cfg = {"cut-layer": 4, "num-rounds": 2, "samples-per-client": 400, "batch-size": 32, "test-samples": 500,
           "local-eval-samples": 32, "seed": 2, "adversary": 0, "adversary-attacks": "white-box",
           "adversary-images": 8, "attack-steps": 4}
    summary = simulate(cfg, num_clients=3, run_dir=tmp_path / "run")
    assert summary["final_test_accuracy"] > 0.5, summary  # chance is 0.1
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert resolved["cut-layer"] == 4
    scores = json.loads((tmp_path / "run" / "attacks.json").read_text())["scores"]
    assert set(scores) == {"white-box"} and summary["attack_images"] == 8
    state = torch.load(tmp_path / "run" / "final_model.pt", weights_only=True)
    assert sum(key.endswith(".weight") and state["client"][key].dim() == 4 for key in state["client"]) == 4
