"""Client-side data augmentation in torch, seeded per batch.

A client computes each training batch twice (the forward it sends, and the
recomputation that applies dL/dh), so a batch's augmentation must be a function
of its seed alone: :meth:`Augmentation.apply` draws every random number from a
``torch.Generator`` seeded by the caller (run seed, partition, batch counter).

``standard``: random flips (per dataset: which flips keep the label and the
anatomy's convention), a random shift of up to 6 % of the side, a rotation of up
to 10 degrees (one affine warp, bilinear, zero padding), and intensity jitter
(contrast x [0.9, 1.1], brightness +-0.1, clipped to [0, 1]). ``flip``: flips only.
With PGSL, the saliency map gets the same geometric warp as its image, and no
intensity jitter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from pgsl_flower.config import RunConfig

__all__ = ["Augmentation", "augmentation_for"]


@dataclass(frozen=True)
class Augmentation:
    """Label-preserving random transforms of float images (N, C, H, W) in [0, 1]."""

    hflip: bool = False
    vflip: bool = False
    max_shift: float = 0.0  # fraction of the side
    max_rotation: float = 0.0  # degrees
    contrast: float = 0.0  # contrast factor drawn from [1 - c, 1 + c]
    brightness: float = 0.0  # offset drawn from [-b, b]

    @property
    def warps(self) -> bool:
        return self.max_shift > 0 or self.max_rotation > 0

    def apply(
        self, images: torch.Tensor, seed: int, maps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augmented copies of ``images`` (and of ``maps``, warped alike); deterministic in ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        n = images.shape[0]

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, generator=generator)

        planes = images if maps is None else torch.cat([images, maps], 1)
        flips_h = torch.rand(n, generator=generator) < 0.5 if self.hflip else torch.zeros(n, dtype=torch.bool)
        flips_v = torch.rand(n, generator=generator) < 0.5 if self.vflip else torch.zeros(n, dtype=torch.bool)
        planes = torch.where(flips_h.view(-1, 1, 1, 1), planes.flip(-1), planes)
        planes = torch.where(flips_v.view(-1, 1, 1, 1), planes.flip(-2), planes)
        if self.warps:
            angle = uniform(-self.max_rotation, self.max_rotation) * (math.pi / 180)
            shift = torch.stack([uniform(-self.max_shift, self.max_shift) * 2 for _ in range(2)], 1)  # grid units
            cos, sin = angle.cos(), angle.sin()
            theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
            grid = F.affine_grid(theta, list(planes.shape), align_corners=False)
            planes = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = planes[:, : images.shape[1]]
        if self.contrast or self.brightness:
            scale = uniform(1 - self.contrast, 1 + self.contrast).view(-1, 1, 1, 1)
            offset = uniform(-self.brightness, self.brightness).view(-1, 1, 1, 1)
            out = (out * scale + offset).clamp(0.0, 1.0)
        return out, (None if maps is None else planes[:, images.shape[1] :])


def _flips(cfg: RunConfig) -> tuple[bool, bool]:
    """(horizontal, vertical) flips that keep each dataset's label and convention.

    Mammograms with laterality normalised keep the chest wall on the left: vertical flips only.
    Ultrasound (BreastMNIST) keeps the skin at the top: horizontal flips only. MNIST: none.
    """
    if cfg.dataset == "mias":
        return (not cfg.normalises_laterality, True)
    if cfg.dataset == "mias-roi":
        return (True, True)
    if cfg.dataset == "breastmnist":
        return (True, False)
    return (False, False)


def augmentation_for(cfg: RunConfig) -> Augmentation | None:
    """The run's augmentation (run-config 'augment', resolved), or None."""
    mode = cfg.resolved_augment
    if mode == "none":
        return None
    hflip, vflip = _flips(cfg)
    if mode == "flip":
        return Augmentation(hflip, vflip) if hflip or vflip else None
    return Augmentation(hflip, vflip, max_shift=0.06, max_rotation=10.0, contrast=0.1, brightness=0.1)
