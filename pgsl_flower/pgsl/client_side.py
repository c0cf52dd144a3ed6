"""PGSL on the client: a local surrogate, the intentional pixel attack, cached per partition.

The surrogate is a small CNN trained on the client's own training split; its
saliency drives the few-pixel attack (:mod:`.pixel_attack`). The attacked
images and the saliency ``Map`` are computed once per partition and cached in
memory and on disk under a content address (the images, labels and every
parameter that affects the result), so a changed partition or parameter
recomputes. Cache folder: ``PGSL_CACHE_DIR``, else ``~/.cache/pgsl-flower``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from pgsl_flower.pgsl.pixel_attack import attack

_CACHE_VERSION = "2"  # 2: saliency from the surrogate's prediction, not the label
_BATCH = 256


@dataclass(frozen=True)
class AttackSettings:
    """Pixel-attack and surrogate parameters (run-config ``attack-*``, ``surrogate-epochs``)."""

    pixels: int = 10
    theta: float = 0.5
    surrogate_epochs: int = 1
    seed: int = 0


class Surrogate(nn.Module):
    """Client-local classifier used only for saliency: 2 conv + pool, 1 FC."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(7),
            nn.Flatten(), nn.Linear(32 * 49, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_surrogate(images: torch.Tensor, labels: torch.Tensor, num_classes: int, settings: AttackSettings) -> Surrogate:
    """Train on uint8 images (N, C, H, W) for ``surrogate_epochs`` passes (Adam, batch 64, seeded)."""
    generator = torch.Generator().manual_seed(settings.seed)
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        model = Surrogate(images.shape[1], num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(settings.surrogate_epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), 64):
            idx = order[start : start + 64]
            loss = F.cross_entropy(model(images[idx].float() / 255), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def attack_images(model: Surrogate, images: torch.Tensor, settings: AttackSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Attacked images in [0, 1] and their saliency maps (N, 1, H, W), in batches.

    The class of eq. 1 is the surrogate's prediction, never the true label: the
    map is an input channel, and a map built from the true label carries it.
    """
    attacked, maps = [], []
    for start in range(0, len(images), _BATCH):
        x = images[start : start + _BATCH].float() / 255
        a, m = attack(model, x, None, settings.pixels, settings.theta)
        attacked.append(a)
        maps.append(m)
    empty = images.new_zeros((0, *images.shape[1:]), dtype=torch.float32)
    return (torch.cat(attacked) if attacked else empty), (torch.cat(maps) if maps else empty[:, :1])


def _cache_dir() -> Path:
    return Path(os.environ.get("PGSL_CACHE_DIR", Path.home() / ".cache" / "pgsl-flower")) / "attacks"


def _content_key(*tensors: torch.Tensor, settings: AttackSettings, num_classes: int) -> str:
    digest = hashlib.sha256(f"v{_CACHE_VERSION}|{settings}|{num_classes}".encode())
    for tensor in tensors:
        digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


_memory: dict[str, dict[str, torch.Tensor]] = {}


def attacked_split(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    other_images: torch.Tensor,
    num_classes: int,
    settings: AttackSettings,
) -> dict[str, torch.Tensor]:
    """Surrogate trained on the training split (its labels); attack of both splits
    (no labels used). Cached by content.

    Returns float16 tensors ``train``, ``train-map``, ``other``, ``other-map``.
    """
    key = _content_key(train_images, train_labels, other_images, settings=settings, num_classes=num_classes)
    if key in _memory:
        return _memory[key]
    path = _cache_dir() / f"{key}.pt"
    result: dict[str, torch.Tensor] | None = None
    if path.exists():
        try:
            result = torch.load(path, weights_only=True)
        except Exception:  # a corrupt cache file is recomputed, not trusted
            result = None
    if result is None:
        model = train_surrogate(train_images, train_labels, num_classes, settings)
        train, train_map = attack_images(model, train_images, settings)
        other, other_map = attack_images(model, other_images, settings)
        result = {"train": train, "train-map": train_map, "other": other, "other-map": other_map}
        result = {k: v.half() for k, v in result.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(result, tmp)
        os.replace(tmp, path)
    _memory[key] = result
    return result
