"""NoPeek (Vepakomma et al. 2020, "NoPeek: Information leakage reduction to
share activations in distributed deep learning"): the client also minimises
the distance correlation between its raw inputs and the smashed data it sends,
``loss = task loss + alpha * DCor(x, h)``, so ``h`` carries less of ``x``.
"""

from __future__ import annotations

import torch

from pgsl_flower.defenses.interface import SmashedDataDefense


def _centred_distances(x: torch.Tensor) -> torch.Tensor:
    """Double-centred pairwise Euclidean distance matrix of the rows of ``x`` (n, d)."""
    d = torch.cdist(x, x)
    return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()


def distance_correlation(x: torch.Tensor, z: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Sample distance correlation (Székely et al. 2007) between the rows of ``x`` and ``z``.

    dCor^2 = dCov^2(x, z) / sqrt(dVar^2(x) dVar^2(z)), with dCov^2 the mean of the
    product of the double-centred distance matrices. Returns dCor in [0, 1]
    (0 only if x and z are independent, in the population limit); differentiable.
    Both inputs are flattened per sample.
    """
    if x.shape[0] != z.shape[0] or x.shape[0] < 2:
        raise ValueError(f"need the same number (>= 2) of samples, got {x.shape[0]} and {z.shape[0]}")
    a, b = _centred_distances(x.flatten(1).double()), _centred_distances(z.flatten(1).double())
    dcov2 = (a * b).mean()
    dvar = ((a * a).mean() * (b * b).mean()).sqrt()
    return (dcov2.clamp_min(0) / (dvar + eps)).sqrt().to(z.dtype)


class NoPeek(SmashedDataDefense):
    """Add ``weight * DCor(inputs, smashed)`` to the client's loss."""

    name = "nopeek"

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def local_loss(self, inputs: torch.Tensor, smashed: torch.Tensor) -> torch.Tensor | None:
        if self.weight == 0:
            return None
        return self.weight * distance_correlation(inputs, smashed)
