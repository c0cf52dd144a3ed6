"""Laplacian noise on the smashed data (Titcombe et al. 2021, "Practical defences
against model inversion attacks for split neural networks").

Each released value is ``h + n`` with ``n ~ Laplace(0, b)`` i.i.d. (density
``exp(-|n| / b) / 2b``; mean 0, E|n| = b, variance 2b^2). The noise is added in
training and in inference alike, so the server part learns on what it will see.
"""

from __future__ import annotations

import math

import torch

from pgsl_flower.defenses.interface import SmashedDataDefense


def laplace_noise(shape: tuple[int, ...], scale: float, generator: torch.Generator) -> torch.Tensor:
    """i.i.d. Laplace(0, ``scale``) samples by inverse CDF: ``-b sign(u) log(1 - 2|u|)``, u ~ U(-1/2, 1/2)."""
    if not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
    u = torch.rand(shape, generator=generator, dtype=torch.float64) - 0.5
    u = u.clamp(-0.5 + 1e-12, 0.5 - 1e-12)  # log(0) at the edge of the open interval
    return (-scale * torch.sign(u) * torch.log1p(-2 * u.abs())).float()


class LaplaceNoise(SmashedDataDefense):
    """Send ``h + Laplace(0, scale)``; the gradient passes through unchanged (dh'/dh = I)."""

    name = "laplace"

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def release(self, smashed: torch.Tensor, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        noise = laplace_noise(tuple(smashed.shape), self.scale, generator)
        return smashed + noise.to(smashed.device)
