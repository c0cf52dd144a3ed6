"""The paper's CNN (Section IV-F), split after conv2 (run-config ``cut-layer``).

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

A documented variant of the server tower (run-config ``server-tower =
"pooled"``): a 2x2 max-pool after conv3, conv5 and conv7 and a global average
pool before the FC layers. Without pooling, seven 3x3 convs see 15x15 pixels of
the 64x64 smashed data of a 128-pixel mammogram; the pooled tower sees the whole
image, at about a third of the compute. The paper's tower stays the default.

Run-config ``cut-layer`` = k (1..6, default 2: the paper's split) moves the cut:
the client holds conv1..convk, the server conv(k+1)..conv7 and the FC head. The
seven conv blocks, with their dropouts and pools, are one ordered stack
(:func:`conv_stack`) sliced at k, so every k is the same network; what follows
conv k (a dropout at k = 3 or 6, the pooled tower's max-pool at k = 3) opens the
server part, and the smashed data is always conv k's (N, 64, H/2, W/2) output.
Client-side pooling (pooled tower, k >= 4) would shrink the smashed data, which
the attacks and PGSL's recovery assume at H/2: that combination is refused
(``RunConfig``). Client-side dropout (k >= 4: the one after conv3) draws its mask
under a per-batch seed (:func:`seeded_dropout`), so the client's recomputed
forward reproduces the smashed data it sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from pgsl_flower.config import RunConfig

CONV_CHANNELS = 64
FC_HIDDEN = 128
POOL_SIZE = 7
DROPOUT = 0.25
#: Conv layers of the network; run-config 'cut-layer' = k puts conv1..convk on the client.
NUM_CONVS = 7
CUT_LAYERS = tuple(range(1, NUM_CONVS))
#: Dropout follows conv3 and conv6; the pooled tower's max-pool follows conv3, conv5 and conv7.
DROPOUT_AFTER = (3, 6)
POOL_AFTER = (3, 5, 7)


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


def _conv_block(in_channels: int, norm: str = "batch", bn_momentum: float = 0.1) -> list[nn.Module]:
    """conv 3x3 -> norm -> ReLU; ``bn_momentum`` 0 makes BatchNorm's running statistics a
    cumulative average (PyTorch's ``momentum=None``)."""
    if norm not in CLIENT_NORMS:
        raise ValueError(f"norm must be one of {CLIENT_NORMS}, got {norm!r}")
    return [
        nn.Conv2d(in_channels, CONV_CHANNELS, 3, padding=1),
        nn.BatchNorm2d(CONV_CHANNELS, momentum=bn_momentum or None) if norm == "batch"
        else nn.GroupNorm(GROUPS, CONV_CHANNELS),
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


def _after(conv: int, pooled: bool) -> list[nn.Module]:
    """What follows conv ``conv`` (1-based): the pooled tower's max-pool, then dropout."""
    return [
        *([nn.MaxPool2d(2)] if pooled and conv in POOL_AFTER else []),
        *([nn.Dropout(DROPOUT)] if conv in DROPOUT_AFTER else []),
    ]


def conv_stack(
    first: int, last: int, *, image_channels: int = 1, norm: str = "batch", bn_momentum: float = 0.1,
    pooled: bool = False, lead: bool = False, trail: bool = True,
) -> list[nn.Module]:
    """conv``first``..conv``last`` of the seven, in order, each followed by its pool and dropout
    (:func:`_after`); ``lead`` also opens with what follows conv``first - 1``, ``trail`` False
    leaves out what follows conv``last``. Only these layers are built (the random
    initialisation draws exactly their weights, as the unsliced network would in this order)."""
    layers: list[nn.Module] = _after(first - 1, pooled) if lead else []
    for conv in range(first, last + 1):
        in_channels = input_channels(image_channels) if conv == 1 else CONV_CHANNELS
        layers += _conv_block(in_channels, norm, bn_momentum)
        if trail or conv < last:
            layers += _after(conv, pooled)
    return layers


def _check_cut_layer(cut_layer: int) -> None:
    if cut_layer not in CUT_LAYERS:
        raise ValueError(f"cut_layer must be one of {list(CUT_LAYERS)}, got {cut_layer!r}")


@contextmanager
def seeded_dropout(module: nn.Module, seed: int) -> Iterator[None]:
    """Run ``module``'s forward passes with dropout masks fixed by ``seed`` (the global RNG is
    restored afterwards). A client part with dropout (cut-layer >= 4) sends h computed under the
    batch's seed and recomputes it under the same seed when dL/dh arrives; without dropout this
    does nothing."""
    if not any(isinstance(m, nn.Dropout) and m.p > 0 for m in module.modules()):
        yield
        return
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)  # only the generators fork_rng restores
        for device in devices:
            torch.cuda.default_generators[device].manual_seed(seed)
        yield


class ClientNet(nn.Module):
    """Pre-cut layers conv1..conv``cut_layer`` (default conv1-conv2); output ``h`` is the smashed data.

    ``perturbation_bound`` > 0 appends a :class:`LatentPerturbation` of that bound.
    """

    def __init__(
        self, image_channels: int = 1, norm: str = "batch", perturbation_bound: float = 0.0, bn_momentum: float = 0.1,
        cut_layer: int = 2,
    ) -> None:
        super().__init__()
        _check_cut_layer(cut_layer)
        self.image_channels = image_channels
        self.cut_layer = cut_layer
        self.features = nn.Sequential(*conv_stack(
            1, cut_layer, image_channels=image_channels, norm=norm, bn_momentum=bn_momentum, trail=False))
        self.perturbation = LatentPerturbation(perturbation_bound) if perturbation_bound > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return h if self.perturbation is None else self.perturbation(h)


def build_client_net(cfg: RunConfig, image_channels: int) -> ClientNet:
    """The run's client part: its normalisation and, for ``latent-perturbation``, the perturbation."""
    bound = cfg.ldp_bound if cfg.defense == "latent-perturbation" else 0.0
    return ClientNet(image_channels, cfg.client_norm, bound, cfg.bn_momentum, cfg.cut_layer)


SERVER_TOWERS = ("paper", "pooled")


def smashed_shape(cfg: RunConfig, image_shape: tuple[int, ...] | torch.Size) -> tuple[int, int, int]:
    """(C, H, W) of one sample's smashed data for (..., H, W) images: conv k's output at the
    unshuffled input's resolution, (64, H/2, W/2) at every allowed 'cut-layer' (no pool can fall
    on the client side; ``RunConfig`` refuses the pooled tower with cut-layer > 3)."""
    height, width = image_shape[-2:]
    return CONV_CHANNELS, height // 2, width // 2


class ServerNet(nn.Module):
    """Server tower conv(``cut_layer`` + 1)..conv7 + 2 FC (default conv3-conv7), taking the
    (N, 64, H/2, W/2) smashed data.

    ``tower = "pooled"`` is the documented variant with max-pooling (module docstring).
    """

    def __init__(self, num_classes: int, tower: str = "paper", bn_momentum: float = 0.1, cut_layer: int = 2) -> None:
        super().__init__()
        if tower not in SERVER_TOWERS:
            raise ValueError(f"tower must be one of {SERVER_TOWERS}, got {tower!r}")
        _check_cut_layer(cut_layer)
        pooled = tower == "pooled"
        if pooled and any(conv < cut_layer for conv in POOL_AFTER):
            raise ValueError(f"the pooled tower pools after conv3: cut_layer must be <= 3, got {cut_layer}")
        side = 1 if pooled else POOL_SIZE
        self.features = nn.Sequential(
            *conv_stack(cut_layer + 1, NUM_CONVS, bn_momentum=bn_momentum, pooled=pooled, lead=True),
            nn.AdaptiveAvgPool2d(side),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(CONV_CHANNELS * side * side, FC_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Linear(FC_HIDDEN, num_classes),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(h))


def build_server_net(cfg: RunConfig, num_classes: int) -> ServerNet:
    """The run's server tower ('server-tower', 'bn-momentum', 'cut-layer')."""
    return ServerNet(num_classes, cfg.server_tower, cfg.bn_momentum, cfg.cut_layer)


class SplitNet(nn.Module):
    """Client part followed by server part: the unsplit network, for centralized runs."""

    def __init__(self, image_channels: int, num_classes: int, client: ClientNet | None = None,
                 server: ServerNet | None = None) -> None:
        super().__init__()
        self.client = client if client is not None else ClientNet(image_channels)
        self.server = server if server is not None else ServerNet(num_classes)

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
