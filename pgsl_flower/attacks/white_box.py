"""White-box inversion (rMLE; He, Zhang and Lee 2019, "Model inversion attacks against
collaborative inference", ACSAC '19, Section 4.1: regularised maximum likelihood estimation).

In SplitFed every client and the server hold the aggregated client part, so the
adversary knows its weights. Given intercepted smashed data ``h`` it optimises the
input itself, with no auxiliary data and no prior beyond total variation::

    x* = argmin_x  MSE(client(prepare_input(x, m)), h) + tv_weight * TV(x)

The image is parametrised as ``x = sigmoid(z)`` (so it stays in [0, 1]) and goes
through the clients' own pipeline (:func:`pgsl_flower.model.prepare_input`: the
pixel-unshuffle is exact). The saliency-map channel ``m`` is fixed to zero when the
protocol leaves it empty (``map_channel_is_zero``); under a pixel-attacked defense
(PGSL) the adversary does not know the victim's map, so ``m = sigmoid(w)`` is
optimised as well. A smashed-data release defense (``knowledge.release``, e.g.
Laplace noise) is *not* applied inside the loop: its noise is random, so the
attack matches the ``h`` it observed. The noise-aware variant (``white-box-l1``)
matches it in L1, the maximum-likelihood data term when ``h`` carries Laplace noise.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from pgsl_flower.attacks.interface import SmashedDataObservation
from pgsl_flower.model import ClientNet, prepare_input

CLIENT_MODES = ("eval", "train")


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels (anisotropic TV), per element."""
    return (images[..., 1:, :] - images[..., :-1, :]).abs().mean() + (images[..., :, 1:] - images[..., :, :-1]).abs().mean()


@dataclass
class CandidateInput:
    """The adversary's free variables for one batch of smashed data: the image logits ``z``
    (``x = sigmoid(z)``) and, when the saliency channel is not public, its logits ``w``."""

    z: torch.Tensor
    w: torch.Tensor | None

    @classmethod
    def start(
        cls, target: torch.Tensor, channels: int, map_is_zero: bool, init_std: float, generator: torch.Generator
    ) -> "CandidateInput":
        """A grey image (``z`` = 0 plus seeded noise of std ``init_std``) for each of ``target``'s
        smashed maps (N, 64, H/2, W/2); an uninformed map (sigmoid(0) = 0.5) when it is unknown."""
        m, _, height, width = target.shape
        z = (init_std * torch.randn(m, channels, 2 * height, 2 * width, generator=generator)).requires_grad_(True)
        w = None if map_is_zero else torch.zeros(m, 1, height, width).requires_grad_(True)
        return cls(z, w)

    def parameters(self) -> list[torch.Tensor]:
        return [self.z] if self.w is None else [self.z, self.w]

    def images(self) -> torch.Tensor:
        return torch.sigmoid(self.z)

    def client_input(self) -> torch.Tensor:
        """What the candidate feeds the client part (:func:`prepare_input`)."""
        return prepare_input(self.images(), None if self.w is None else torch.sigmoid(self.w))


#: Data terms of the matching loss: squared error (the MLE under Gaussian noise on ``h``, and
#: rMLE's choice) or absolute error (the MLE under Laplace noise on ``h``).
MATCHING_NORMS = ("l2", "l1")


def matching_loss(
    client: torch.nn.Module, candidate: CandidateInput, target: torch.Tensor, tv_weight: float, norm: str = "l2",
) -> torch.Tensor:
    """rMLE objective: ``MSE(client(prepare_input(x, m)), h) + tv_weight * TV(x)``; with
    ``norm = "l1"`` the mean absolute error replaces the MSE."""
    output = client(candidate.client_input())
    data_term = F.l1_loss(output, target) if norm == "l1" else F.mse_loss(output, target)
    return data_term + tv_weight * total_variation(candidate.images())


@dataclass(frozen=True)
class PixelSpaceInversion:
    """Settings shared by the attacks that optimise the input itself (white-box, UnSplit).

    ``lr``: Adam's learning rate on the input; ``tv_weight``: the TV prior's weight.
    ``client_mode``: the client part's mode during the attack. ``"train"`` uses batch
    statistics, which is how clients compute the smashed data they send during
    training (the protocol's ``h``), so each batch of ``batch_size`` is inverted
    jointly; ``"eval"`` uses the running statistics (per-sample, e.g. inference-time ``h``).
    ``seed``: ``z`` starts at zero (a grey image) plus seeded noise of std ``init_std``.
    """

    lr: float = 0.1
    tv_weight: float = 1e-3
    seed: int = 0
    client_mode: str = "eval"
    batch_size: int = 64
    init_std: float = 0.01

    def __post_init__(self) -> None:
        if self.client_mode not in CLIENT_MODES:
            raise ValueError(f"client_mode must be one of {CLIENT_MODES}, got {self.client_mode!r}")


@dataclass(frozen=True)
class WhiteBoxInversion(PixelSpaceInversion):
    """``steps`` Adam steps on each intercepted batch of ``batch_size`` (settings:
    :class:`PixelSpaceInversion`)."""

    steps: int = 1000
    name: str = "white-box"
    norm: str = "l2"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.norm not in MATCHING_NORMS:
            raise ValueError(f"norm must be one of {MATCHING_NORMS}, got {self.norm!r}")

    def reconstruct(self, observation: SmashedDataObservation) -> torch.Tensor:
        knowledge, smashed = observation.knowledge, observation.smashed.detach()
        client = copy.deepcopy(knowledge.client)  # the caller's model (weights, BN statistics) stays untouched
        for p in client.parameters():
            p.requires_grad_(False)
        client.train(self.client_mode == "train")
        channels = knowledge.own_images.shape[1]
        generator = torch.Generator().manual_seed(self.seed)
        out = [
            self._invert(client, smashed[i : i + self.batch_size], channels, knowledge.map_channel_is_zero, generator)
            for i in range(0, len(smashed), self.batch_size)
        ]
        return torch.cat(out)

    def _invert(
        self, client: ClientNet, target: torch.Tensor, channels: int, map_is_zero: bool, generator: torch.Generator
    ) -> torch.Tensor:
        candidate = CandidateInput.start(target, channels, map_is_zero, self.init_std, generator)
        optimizer = torch.optim.Adam(candidate.parameters(), lr=self.lr)
        for _ in range(self.steps):
            loss = matching_loss(client, candidate, target, self.tv_weight, self.norm)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return candidate.images().detach()
