"""Reversible down-sampling (client) and up-sampling (server), paper Section IV-B (ref. [29]).

The client sends ``pixel_unshuffle(x_hat, 2)`` (4*ch planes of H/2 x W/2) plus the
normalised, 2x2-pooled saliency ``Map`` as one more channel; the server inverts
the pixel planes with ``pixel_shuffle``. The image part is exactly invertible.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from pgsl_flower.model import prepare_input


def normalise_map(saliency: torch.Tensor) -> torch.Tensor:
    """Scale each sample's (N, 1, H, W) map to [0, 1] by its maximum (all-zero stays zero)."""
    peak = saliency.flatten(1).amax(dim=1).clamp_min(torch.finfo(saliency.dtype).tiny)
    return saliency.clamp_min(0) / peak.view(-1, 1, 1, 1)


def downsample(images: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images + (N, 1, H, W) map -> (N, 4C + 1, H/2, W/2)."""
    pooled = F.avg_pool2d(normalise_map(saliency), 2)
    return prepare_input(images, pooled)


def upsample(planes: torch.Tensor, image_channels: int) -> torch.Tensor:
    """Inverse of :func:`downsample` for the image planes: (N, 4C[+1], H/2, W/2) -> (N, C, H, W)."""
    return F.pixel_shuffle(planes[:, : 4 * image_channels], 2)
