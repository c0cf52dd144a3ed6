"""DP-SGD on the client part (Abadi et al. 2016), with Opacus.

Each client step clips every sample's gradient of the client part to
``max_grad_norm`` (C), sums them, adds N(0, (sigma C)^2) noise and averages over
the batch; the server's dL/dh of the batch supplies the per-sample chain rule,
so the gradient w.r.t. the client part of sample i is computed from row i only.
Per-sample gradients need GroupNorm in the client part (run-config
``client-norm = "group"``): BatchNorm mixes the samples of a batch.

Privacy accounting (RDP, Mironov 2017; Opacus' accountant) with sampling rate
``batch size / training samples`` and one step per batch. Caveat: batches here
are shuffled fixed-size slices of an epoch, not the Poisson subsampling the
accountant assumes, so epsilon is the usual approximation DP-SGD papers report.
What DP-SGD protects is the client part's *weights* (what the server receives at
round end); the smashed data of each batch is sent as computed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from pgsl_flower.defenses.interface import SmashedDataDefense

if TYPE_CHECKING:  # opacus takes ~1 s to import: only DP-SGD runs pay it (a deployment
    from opacus import GradSampleModule  # starts a ClientApp process per message)
    from opacus.optimizers import DPOptimizer


class DPSGD(SmashedDataDefense):
    """DP-SGD settings; the client applies them through :meth:`optimizer` and :func:`per_sample_gradients`."""

    name = "dp-sgd"

    def __init__(self, noise_multiplier: float, max_grad_norm: float, delta: float) -> None:
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.delta = delta

    def optimizer(self, optimizer: torch.optim.Optimizer, batch_size: int, seed: int) -> DPOptimizer:
        """``optimizer`` behind clipping and noise (its state stays in ``optimizer``)."""
        from opacus.optimizers import DPOptimizer

        return DPOptimizer(
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=batch_size,
            loss_reduction="mean",
            generator=torch.Generator().manual_seed(seed),
        )

    def epsilon(self, steps: int, sample_rate: float) -> float:
        """epsilon at ``delta`` after ``steps`` noisy steps at ``sample_rate``."""
        return dp_epsilon(self.noise_multiplier, sample_rate, steps, self.delta)


def dp_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """RDP accountant's epsilon at ``delta``; inf without noise, 0 before any step."""
    if steps <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return float("inf")
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, min(sample_rate, 1.0), steps)]
    return float(accountant.get_epsilon(delta))


@contextmanager
def per_sample_gradients(model: torch.nn.Module) -> Iterator[GradSampleModule]:
    """``model`` wrapped so backward also fills each parameter's ``grad_sample``
    (loss reduction: mean); the hooks are removed on exit."""
    from opacus import GradSampleModule

    wrapped = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    try:
        yield wrapped
    finally:
        wrapped.remove_hooks()
        for param in model.parameters():
            param.grad_sample = None
