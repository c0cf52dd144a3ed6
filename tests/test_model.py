"""The split network computes exactly what the unsplit network computes."""

import torch
from flwr.app import Context, RecordDict

from pgsl_flower import protocol
from pgsl_flower.client_app import SplitClient, keep_live, live_client
from pgsl_flower.config import RunConfig
from pgsl_flower.local_data import batch_indices, client_order_seed
from pgsl_flower.model import ClientNet, ServerNet, SplitNet, input_channels, make_optimizer, prepare_input
from pgsl_flower.strategy import fedavg


def test_prepare_input_shapes_and_reversibility():
    x = torch.rand(3, 1, 28, 28)
    inp = prepare_input(x)
    assert inp.shape == (3, input_channels(1), 14, 14)
    assert torch.equal(torch.nn.functional.pixel_shuffle(inp[:, :4], 2), x)
    assert torch.count_nonzero(inp[:, 4]) == 0


def test_split_gradients_equal_unsplit():
    torch.manual_seed(1)
    net = SplitNet(1, 10).double()
    net.eval()  # dropout off so both passes see the same function; BN uses running stats
    x = prepare_input(torch.rand(8, 1, 28, 28, dtype=torch.float64))
    y = torch.randint(0, 10, (8,))

    loss = torch.nn.functional.cross_entropy(net(x), y)
    full = torch.autograd.grad(loss, list(net.parameters()))

    h = net.client(x)
    h_sent = h.detach().requires_grad_(True)  # what crosses the network
    server_loss = torch.nn.functional.cross_entropy(net.server(h_sent), y)
    server_grads = torch.autograd.grad(server_loss, [h_sent, *net.server.parameters()])
    client_grads = torch.autograd.grad(h, list(net.client.parameters()), grad_outputs=server_grads[0])
    split = [*client_grads, *server_grads[1:]]
    for a, b in zip(full, split, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)


def test_split_gradients_equal_unsplit_in_train_mode():
    torch.manual_seed(2)
    net = SplitNet(1, 10).double()
    for module in net.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    net.train()
    x = prepare_input(torch.rand(16, 1, 28, 28, dtype=torch.float64))
    y = torch.randint(0, 10, (16,))
    loss = torch.nn.functional.cross_entropy(net(x), y)
    full = torch.autograd.grad(loss, list(net.parameters()))
    h = net.client(x)
    h_sent = h.detach().requires_grad_(True)
    server_loss = torch.nn.functional.cross_entropy(net.server(h_sent), y)
    grad_h, *server_grads = torch.autograd.grad(server_loss, [h_sent, *net.server.parameters()])
    client_grads = torch.autograd.grad(h, list(net.client.parameters()), grad_outputs=grad_h)
    for a, b in zip(full, [*client_grads, *server_grads], strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)


def test_client_protocol_step_equals_direct_training(tmp_path):
    """forward_next + apply_gradient (recompute, frozen BN stats) == one autograd step."""
    cfg = RunConfig(samples_per_client=200, batch_size=16, seed=3)
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 4},
                      state=RecordDict(), run_config=cfg.as_run_config())
    client = SplitClient(cfg, context)
    reference = ClientNet(1)
    reference.load_state_dict(client.model.state_dict())
    ref_opt = make_optimizer(reference, cfg.lr, cfg.weight_decay)
    server = ServerNet(10)
    server.eval()

    for _ in range(3):
        counter = client.counter
        batch = client.forward_next()[protocol.batch_record(0)]
        client.save()
        client = SplitClient(cfg, context)  # state survives only through context.state
        h = protocol.array_to_tensor(batch["h"], field="h", dtype=torch.float32,
                                     shape=(None, 64, 14, 14), max_bytes=1 << 30)
        labels = torch.from_numpy(batch["labels"].numpy())
        h.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(server(h), labels)
        (grad_h,) = torch.autograd.grad(loss, [h])
        client.apply_gradients(RecordDict(protocol.encode_gradients([grad_h])))
        client.save()

        idx = batch_indices(len(client.data.train_labels), 16, counter, client_order_seed(client.cfg, client.partition_id))
        assert torch.equal(client.data.labels(idx), labels)
        reference.train()
        ref_loss = torch.nn.functional.cross_entropy(server(reference(client.data.inputs(idx))), labels)
        ref_opt.zero_grad()
        ref_loss.backward()
        ref_opt.step()
        client = SplitClient(cfg, context)

    for (name, a), b in zip(client.model.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name


def _protocol_steps(cfg: RunConfig, context: Context, server: torch.nn.Module, steps: int, live: bool,
                    ) -> tuple[dict, list[torch.Tensor]]:
    """``steps`` forward/gradient exchanges, one handler call per message as the ClientApp does:
    the kept live client (its autograd graph) or a client rebuilt from context.state each time."""
    sent = []
    for step in range(steps + 1):
        client = live_client(cfg, context) if live else SplitClient(cfg, context)
        if step:
            client.apply_gradients(RecordDict(protocol.encode_gradients([grad_h])))
        client.drop_pending()
        if step < steps:
            batch = client.forward_next()[protocol.batch_record(0)]
            h = protocol.array_to_tensor(batch["h"], field="h", dtype=torch.float32,
                                         shape=(None, 64, 14, 14), max_bytes=1 << 30).requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(server(h), torch.from_numpy(batch["labels"].numpy()))
            (grad_h,) = torch.autograd.grad(loss, [h])
            sent.append(h.detach())
        client.save()
        keep_live(client)
    return {k: v.clone() for k, v in client.model.state_dict().items()}, sent


def test_live_client_reuses_its_graph_and_computes_what_a_rebuilt_client_computes():
    """A kept client (no recomputation; BN stats updated at the forward) ends in the same state,
    running statistics included, and sends the same smashed data as one rebuilt per message."""
    cfg = RunConfig(samples_per_client=200, batch_size=16, seed=3)
    server = ServerNet(10)
    server.eval()
    results = []
    for node, live in ((11, True), (12, False)):
        context = Context(run_id=2, node_id=node, node_config={"partition-id": 0, "num-partitions": 4},
                          state=RecordDict(), run_config=cfg.as_run_config())
        torch.manual_seed(0)
        results.append(_protocol_steps(cfg, context, server, 4, live))
        if live:
            kept = live_client(cfg, context)
            assert kept.token  # the last message's client, kept (a rebuilt one has saved nothing yet)
            keep_live(kept)
            assert live_client(cfg, context) is kept  # context.state is what it saved: reused
            keep_live(kept)
            context.state["client-progress"]["live-token"] = "written by another process"
            assert live_client(cfg, context) is not kept  # rebuilt from the state
    (live_state, live_sent), (rebuilt_state, rebuilt_sent) = results
    for a, b in zip(live_sent, rebuilt_sent, strict=True):
        assert torch.equal(a, b)
    for name, value in live_state.items():
        assert torch.allclose(value.float(), rebuilt_state[name].float(), atol=1e-6), name


def test_fedavg_weighted_mean():
    a = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([4.0, 2.0]), "n": torch.tensor(5)}
    out = fedavg([a, b], [1, 3])
    assert torch.allclose(out["w"], torch.tensor([3.0, 2.0]))
    assert int(out["n"]) == 5


def test_batch_indices_full_batches_without_repeats():
    epoch = [batch_indices(50, 16, c, seed=1) for c in range(3)]  # 3 full batches, 2 left over
    assert all(len(b) == 16 for b in epoch)
    seen = torch.cat(epoch).tolist()
    assert len(set(seen)) == 48 and set(seen) <= set(range(50))
    assert not torch.equal(batch_indices(50, 16, 0, seed=1), batch_indices(50, 16, 3, seed=1))
    assert len(batch_indices(10, 16, 0, seed=1)) == 10  # fewer samples than a batch


def test_time_based_lr_decay():
    from pgsl_flower.model import decayed_lr

    assert decayed_lr(1e-3, 3e-4, 0) == 1e-3
    assert abs(decayed_lr(1e-3, 3e-4, 10_000) - 1e-3 / 4) < 1e-12
    assert decayed_lr(1e-3, 0.0, 10_000) == 1e-3


def test_pooled_server_tower_splits_exactly_and_fits_any_size():
    torch.manual_seed(3)
    client, server = ClientNet(1).double().eval(), ServerNet(3, "pooled").double().eval()
    for side in (28, 64, 128):
        x = prepare_input(torch.rand(2, 1, side, side, dtype=torch.float64))
        assert server(client(x)).shape == (2, 3)
    x = prepare_input(torch.rand(4, 1, 64, 64, dtype=torch.float64))
    y = torch.tensor([0, 1, 2, 1])
    net = SplitNet(1, 3, client, server)
    full = torch.autograd.grad(torch.nn.functional.cross_entropy(net(x), y), list(net.parameters()))
    h = client(x)
    h_sent = h.detach().requires_grad_(True)
    grad_h, *server_grads = torch.autograd.grad(torch.nn.functional.cross_entropy(server(h_sent), y),
                                                [h_sent, *server.parameters()])
    client_grads = torch.autograd.grad(h, list(client.parameters()), grad_outputs=grad_h)
    for a, b in zip(full, [*client_grads, *server_grads], strict=True):
        assert torch.allclose(a, b, atol=1e-8, rtol=0)
    paper = ServerNet(3)
    assert sum(p.numel() for p in server.parameters()) < sum(p.numel() for p in paper.parameters())
    assert ClientNet(1, bn_momentum=0.0).features[1].momentum is None  # cumulative running statistics
