"""The paper's CNN (Section IV-F), split after conv2.

Seven 3x3 conv layers with 64 channels, each conv -> BN -> ReLU (the order the
paper lists: "conv, ReLU, and batch normalization" is read as the usual
conv-BN-ReLU), dropout 0.25 after every third conv (after conv3 and conv6), and
two fully connected layers. The client holds conv1-conv2 (the "pre-cut"
layers); the server holds conv3-conv7 and the FC head.

Decisions not fixed by the paper:
- No pooling between convs (none is described). Before the FC layers an
  adaptive average pool to 7x7 keeps the FC size independent of the image
  size (MNIST 28 -> 14x14 after unshuffle; MIAS 128 -> 64x64).
- FC hidden width 128.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pgsl_flower.config import RunConfig

CONV_CHANNELS = 64
FC_HIDDEN = 128
POOL_SIZE = 7
DROPOUT = 0.25


def input_channels(image_channels: int) -> int:
    """Channels after reversible down-sampling: 4*ch image planes + 1 map channel."""
    return 4 * image_channels + 1


def prepare_input(images: torch.Tensor, saliency: torch.Tensor | None = None) -> torch.Tensor:
    """Client-side input: ``pixel_unshuffle(x, 2)`` plus one saliency-map channel.

    ``images`` is float (N, C, H, W) in [0, 1]. ``saliency`` is the (N, 1, H/2, W/2)
    map channel; zeros when no defense fills it (the PGSL issue does).
    """
    planes = F.pixel_unshuffle(images, 2)
    if saliency is None:
        saliency = planes.new_zeros((planes.shape[0], 1, *planes.shape[2:]))
    return torch.cat([planes, saliency], dim=1)


#: Normalisation of the client part: BatchNorm (the paper's), or GroupNorm (DP-SGD needs
#: per-sample gradients, which BatchNorm's batch statistics do not have).
CLIENT_NORMS = ("batch", "group")
GROUPS = 8


def _conv_block(in_channels: int, norm: str = "batch") -> list[nn.Module]:
    if norm not in CLIENT_NORMS:
        raise ValueError(f"norm must be one of {CLIENT_NORMS}, got {norm!r}")
    return [
        nn.Conv2d(in_channels, CONV_CHANNELS, 3, padding=1),
        nn.BatchNorm2d(CONV_CHANNELS) if norm == "batch" else nn.GroupNorm(GROUPS, CONV_CHANNELS),
        nn.ReLU(inplace=norm == "batch"),  # Opacus' backward hooks (DP-SGD, GroupNorm) forbid in-place
    ]


class LatentPerturbation(nn.Module):
    """``h + bound * tanh(conv(h))``: a bounded, learnable perturbation of the smashed data
    (defense ``latent-perturbation``, :mod:`pgsl_flower.defenses.latent_perturbation`)."""

    def __init__(self, bound: float) -> None:
        super().__init__()
        self.bound = bound
        self.conv = nn.Conv2d(CONV_CHANNELS, CONV_CHANNELS, 3, padding=1)
        nn.init.zeros_(self.conv.weight)  # starts as the identity: no perturbation
        nn.init.zeros_(self.conv.bias)

    def forward(self, smashed: torch.Tensor) -> torch.Tensor:
        return smashed + self.bound * torch.tanh(self.conv(smashed))


class ClientNet(nn.Module):
    """Pre-cut layers conv1-conv2; output ``h`` is the smashed data.

    ``perturbation_bound`` > 0 appends a :class:`LatentPerturbation` of that bound.
    """

    def __init__(self, image_channels: int = 1, norm: str = "batch", perturbation_bound: float = 0.0) -> None:
        super().__init__()
        self.image_channels = image_channels
        self.features = nn.Sequential(
            *_conv_block(input_channels(image_channels), norm), *_conv_block(CONV_CHANNELS, norm)
        )
        self.perturbation = LatentPerturbation(perturbation_bound) if perturbation_bound > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return h if self.perturbation is None else self.perturbation(h)


def build_client_net(cfg: RunConfig, image_channels: int) -> ClientNet:
    """The run's client part: its normalisation and, for ``latent-perturbation``, the perturbation."""
    bound = cfg.ldp_bound if cfg.defense == "latent-perturbation" else 0.0
    return ClientNet(image_channels, cfg.client_norm, bound)


class ServerNet(nn.Module):
    """Server tower conv3-conv7 + 2 FC, taking the (N, 64, H/2, W/2) smashed data."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_block(CONV_CHANNELS),  # conv3
            nn.Dropout(DROPOUT),
            *_conv_block(CONV_CHANNELS),  # conv4
            *_conv_block(CONV_CHANNELS),  # conv5
            *_conv_block(CONV_CHANNELS),  # conv6
            nn.Dropout(DROPOUT),
            *_conv_block(CONV_CHANNELS),  # conv7
            nn.AdaptiveAvgPool2d(POOL_SIZE),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(CONV_CHANNELS * POOL_SIZE * POOL_SIZE, FC_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Linear(FC_HIDDEN, num_classes),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(h))


class SplitNet(nn.Module):
    """Client part followed by server part: the unsplit network, for centralized runs."""

    def __init__(self, image_channels: int, num_classes: int) -> None:
        super().__init__()
        self.client = ClientNet(image_channels)
        self.server = ServerNet(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.server(self.client(x))


def make_optimizer(
    module: nn.Module, lr: float = 1e-3, weight_decay: float = 3e-4
) -> torch.optim.Adam:
    """Adam with the paper's lr 0.001 and decay 0.0003 (Section V-A)."""
    return torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)


def decayed_lr(lr: float, decay: float, steps_taken: int) -> float:
    """Time-based decay ``lr / (1 + decay * t)`` (Keras' ``decay`` argument).

    One reading of the paper's "learning rate of 0.001 with a decay rate of
    0.0003" (Section V-A); ``t`` counts the optimizer's own steps.
    """
    return lr / (1.0 + decay * steps_taken)


def decayed_step(optimizer: torch.optim.Optimizer, lr: float, decay: float, steps_taken: int) -> None:
    """``optimizer.step()`` at the learning rate :func:`decayed_lr` gives for ``steps_taken``."""
    for group in optimizer.param_groups:
        group["lr"] = decayed_lr(lr, decay, steps_taken)
    optimizer.step()


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run-config 'device' is 'cuda' but torch sees no CUDA device")
    return torch.device(name)
