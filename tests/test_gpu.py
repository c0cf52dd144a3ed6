"""GPU smoke tests: the server step (three towers, proximal step) on CUDA. Skipped without a GPU."""

from __future__ import annotations

import csv

import pytest
import torch

from pgsl_flower.config import RunConfig
from pgsl_flower.pgsl.server_model import PGSLServerModel, ProximalSettings, recover
from pgsl_flower.simulation import simulate

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device visible to torch: GPU smoke tests skipped"
)


def test_proximal_recovery_on_gpu_matches_cpu():
    smashed = torch.randn(8, 64, 14, 14)
    settings = ProximalSettings(max_iter=10)
    cpu = recover(smashed, settings)
    gpu = recover(smashed.cuda(), settings)
    assert gpu.is_cuda
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-3, rtol=1e-3)


def test_pgsl_server_step_runs_on_gpu_and_returns_a_cpu_gradient():
    server = PGSLServerModel(RunConfig(defense="pgsl"), 10, torch.device("cuda"))
    assert all(p.is_cuda for p in server.model.parameters())
    grad, loss_sum, correct = server.step(torch.randn(16, 64, 14, 14), torch.randint(0, 10, (16,)))
    assert grad.device.type == "cpu" and grad.shape == (16, 64, 14, 14) and torch.isfinite(grad).all()
    assert loss_sum > 0 and 0 <= correct <= 16


@pytest.mark.slow
def test_pgsl_simulation_with_server_on_gpu_and_fractional_client_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("PGSL_CACHE_DIR", str(tmp_path / "cache"))
    cfg = {"defense": "pgsl", "device": "cuda", "num-rounds": 2, "samples-per-client": 600,
           "batch-size": 32, "test-samples": 1000, "local-eval-samples": 32, "seed": 4}
    simulate(cfg, num_clients=3, run_dir=tmp_path / "run", client_gpus=0.25)
    with (tmp_path / "run" / "metrics.csv").open() as handle:
        final = list(csv.DictReader(handle))[-1]
    assert float(final["test_acc_fused"]) > 0.5  # chance is 0.1
