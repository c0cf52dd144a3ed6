"""PGSL server side: recovery on up-sampled activations, three streams, fused-only gradient."""

from __future__ import annotations

import copy

import torch
from torch.nn import functional as F

from pgsl_flower.config import RunConfig
from pgsl_flower.pgsl.server_model import PGSLServerModel, ProximalSettings, recover


def test_recover_removes_sparse_spikes_from_channel_correlated_maps():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 1, 28, 28, generator=g, dtype=torch.float64)
    mixing = torch.randn(1, 16, 1, 1, generator=g, dtype=torch.float64)
    clean = mixing * image  # every up-sampled channel is a multiple of one image: rank 1
    spikes = torch.zeros_like(clean)
    spikes[:, :, 5, 7] = 4.0  # a pixel attack hits the same pixel in every channel
    smashed = F.pixel_unshuffle(clean + spikes, 2)
    recovered = recover(smashed, ProximalSettings(mu=1e-4, max_iter=500, tol=1e-8))
    assert recovered.shape == smashed.shape
    error_before = (smashed - F.pixel_unshuffle(clean, 2)).norm()
    error_after = (recovered - F.pixel_unshuffle(clean, 2)).norm()
    assert error_after < 0.1 * error_before


def _server(seed: int = 0) -> PGSLServerModel:
    torch.manual_seed(seed)
    return PGSLServerModel(RunConfig(defense="pgsl", pgsl_max_iter=5), 10, torch.device("cpu"))


def test_gradient_sent_to_client_is_the_fused_streams_only():
    server = _server()
    before = copy.deepcopy(server.model)
    h = torch.randn(8, 64, 14, 14)
    y = torch.randint(0, 10, (8,))

    torch.manual_seed(123)
    grad, loss_sum, _ = server.step(h, y)

    # Reference: autograd of the fused stream's loss alone, same weights, same dropout draws.
    torch.manual_seed(123)
    ref_h = h.clone().requires_grad_(True)
    before.train()
    logits = before(ref_h, recover(h, server.settings))
    fused_loss = F.cross_entropy(logits["fused"], y)
    (expected,) = torch.autograd.grad(fused_loss, ref_h)
    assert torch.allclose(grad, expected, atol=1e-6)
    assert loss_sum == fused_loss.item() * 8

    # Nothing from the other streams leaks in: changing their towers changes nothing.
    altered = copy.deepcopy(before)
    with torch.no_grad():
        for name in ("attacked", "recovered"):
            for p in altered.towers[name].parameters():
                p.add_(torch.randn_like(p))
    torch.manual_seed(123)
    alt_h = h.clone().requires_grad_(True)
    alt_logits = altered(alt_h, recover(h, server.settings))
    (alt_grad,) = torch.autograd.grad(F.cross_entropy(alt_logits["fused"], y), alt_h)
    assert torch.allclose(alt_grad, expected, atol=1e-6)


def test_all_three_towers_are_trained():
    server = _server()
    before = {k: v.clone() for k, v in server.model.state_dict().items()}
    server.step(torch.randn(8, 64, 14, 14), torch.randint(0, 10, (8,)))
    after = server.model.state_dict()
    for name in ("recovered", "fused", "attacked"):
        key = f"towers.{name}.head.3.weight"
        assert not torch.equal(before[key], after[key]), name
    assert not torch.equal(before["fusion.conv.weight"], after["fusion.conv.weight"])


def test_scores_are_distributions_and_fusion_mixes_them():
    server = _server()
    scores = server.stream_scores(torch.randn(4, 64, 14, 14))
    assert set(scores) == {"recovered", "fused", "attacked"}
    decision = server.decide(scores)
    for value in [*scores.values(), decision]:
        assert value.shape == (4, 10)
        assert torch.allclose(value.sum(1), torch.ones(4), atol=1e-5)
