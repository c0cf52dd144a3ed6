"""BatchNorm recalibration: the pooled-moment math, the payload checks, and a real simulation where it
changes eval-mode accuracy."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from flwr.app import ArrayRecord, RecordDict

from pgsl_flower import protocol
from pgsl_flower.batchnorm import batchnorm_layers, input_moments, pool_moments, set_running_stats, update_bn
from pgsl_flower.model import ClientNet, ServerNet
from pgsl_flower.simulation import simulate


def test_pooled_moments_of_parts_equal_the_population_statistics():
    torch.manual_seed(0)
    client = ClientNet(1)
    parts = [torch.randn(n, 5, 14, 14) * 2 + 1 for n in (7, 20, 3)]  # three clients' inputs
    layers = batchnorm_layers(client)
    assert layers == ["features.1", "features.4"]
    state = client.state_dict()
    for layer in layers:  # layer by layer: the second layer's input uses the first's new statistics
        client.load_state_dict(state)
        mean, variance = pool_moments([input_moments(client, layer, part.split(4)) for part in parts])
        module = dict(client.named_modules())[layer]
        seen = []
        handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        client.eval()
        with torch.no_grad():
            client(torch.cat(parts))
        handle.remove()
        x = seen[0].transpose(0, 1).flatten(1).double()
        assert torch.allclose(mean.double(), x.mean(1), atol=1e-5)
        assert torch.allclose(variance.double(), x.var(1, unbiased=False), atol=1e-4)
        set_running_stats(state, layer, mean, variance)
    assert not torch.equal(state["features.1.running_mean"], ClientNet(1).state_dict()["features.1.running_mean"])


def test_update_bn_matches_torch_swa_utils():
    torch.manual_seed(1)
    server = ServerNet(3)
    batches = [torch.randn(8, 64, 8, 8) for _ in range(4)]
    reference = copy.deepcopy(server)
    torch.manual_seed(2)
    update_bn(server, server, batches)
    torch.manual_seed(2)  # the same dropout draws
    torch.optim.swa_utils.update_bn(batches, reference)
    for name, buffer in server.state_dict().items():
        if "running" in name:
            assert torch.allclose(buffer, reference.state_dict()[name], atol=1e-6), name
    assert server.features[1].momentum == 0.1  # restored


def _moments(total, squares, count) -> RecordDict:
    return RecordDict({protocol.BN_MOMENTS: protocol.encode_moments(total, squares, count)})


def test_bn_payloads_are_validated():
    ok = _moments(torch.ones(4), torch.full((4,), 3.0), 2)
    total, squares, count = protocol.decode_moments(ok, 4, max_bytes=1 << 20)
    assert count == 2 and total.dtype == torch.float64
    with pytest.raises(protocol.PayloadError, match="negative variance"):
        protocol.decode_moments(_moments(torch.full((4,), 10.0), torch.ones(4), 2), 4, max_bytes=1 << 20)
    with pytest.raises(protocol.PayloadError, match="count"):
        protocol.decode_moments(_moments(torch.ones(4), torch.ones(4), 0), 4, max_bytes=1 << 20)
    with pytest.raises(protocol.PayloadError, match="NaN"):
        protocol.decode_moments(_moments(torch.tensor([1.0, float("nan"), 1, 1]), torch.ones(4), 2), 4,
                                max_bytes=1 << 20)
    with pytest.raises(protocol.PayloadError, match="shape"):
        protocol.decode_moments(ok, 8, max_bytes=1 << 20)
    smashed = RecordDict({protocol.CALIBRATION: protocol.encode_calibration(torch.zeros(5, 64, 4, 4).split(2))})
    decode = functools.partial(protocol.decode_calibration, smashed_shape=(64, 4, 4), max_bytes=1 << 20)
    assert decode(smashed, max_batch=2, max_samples=5).shape[0] == 5
    with pytest.raises(protocol.PayloadError, match="5 samples, expected 1..4"):
        decode(smashed, max_batch=2, max_samples=4)
    with pytest.raises(protocol.PayloadError, match="calibration.h.0': 2 samples, expected 1..1"):
        decode(smashed, max_batch=1, max_samples=5)
    with pytest.raises(protocol.PayloadError, match="exceeds the cap"):  # each batch is capped, not the sum
        decode(smashed, max_batch=2, max_samples=5, max_bytes=8_000)
    gap = RecordDict({protocol.CALIBRATION: ArrayRecord({"h.1": protocol.tensor_to_array(torch.zeros(1, 64, 4, 4))})})
    with pytest.raises(protocol.PayloadError, match="expected h.0"):
        decode(gap, max_batch=2, max_samples=5)


@pytest.mark.slow
def test_recalibration_rescues_eval_mode_accuracy(tmp_path):
    """10 clients x 40 MNIST images, batch 32: one local step per round, so the running statistics the
    clients average barely leave their initial values; re-estimating them fixes evaluation."""
    config = {"num-rounds": 2, "samples-per-client": 40, "batch-size": 32, "test-samples": 1000,
              "local-eval-samples": 0, "seed": 1}
    plain = simulate({**config, "bn-recalibration": "off"}, num_clients=10, run_dir=tmp_path / "plain")
    fixed = simulate({**config, "bn-recalibration": "on"}, num_clients=10, run_dir=tmp_path / "fixed")
    assert fixed["final_test_accuracy"] > plain["final_test_accuracy"] + 0.15, (plain, fixed)
    assert fixed["final_test_balanced_accuracy"] > 0.5  # chance is 0.1
    before = torch.load(tmp_path / "plain" / "final_model.pt", weights_only=True)["client"]
    after = torch.load(tmp_path / "fixed" / "final_model.pt", weights_only=True)["client"]
    # the aggregated running variance stays near its initial 1 without the remedy
    assert (after["features.1.running_var"] - 1).abs().mean() > 2 * (before["features.1.running_var"] - 1).abs().mean()
