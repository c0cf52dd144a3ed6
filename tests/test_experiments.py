import math

import torch

from pgsl_flower.config import RunConfig
from pgsl_flower.experiments.mu_sweep import MUS, attacked_test_images, sweep


def test_mu_sweep_on_a_few_real_attacked_images(tmp_path, monkeypatch):
    monkeypatch.setenv("PGSL_CACHE_DIR", str(tmp_path))
    cfg = RunConfig(defense="pgsl", attack_pixels=10, attack_theta=0.5)
    clean, attacked = attacked_test_images(cfg, 16)
    assert clean.shape == attacked.shape == (16, 28, 28)
    changed = (attacked - clean).abs().gt(1e-3).flatten(1).sum(1)
    assert (changed <= 10).all() and changed.sum() > 0  # the few-pixel attack, as the harness runs it
    rows = sweep(clean, attacked, max_iter=20)
    assert [r["mu"] for r in rows] == list(MUS)
    assert all(math.isfinite(r["mse_mean"]) and r["mse_mean"] >= 0 for r in rows)
    assert rows[0]["attacked_mse_mean"] == float(((attacked - clean) ** 2).mean(dim=(1, 2)).mean())
    assert torch.all(attacked >= 0) and torch.all(attacked <= 1)
