"""Defense-aware white-box inversion: clean-ups of the inversion the adversary learns on its own images.

White-box inversion recovers what the client part was fed. Under PGSL that is the
*attacked* image (paper Section IV-A, eq. 1: the k most salient pixels of ``Map'``
raised by theta), not the clean one, and the reconstruction is scored against the
clean image: the pixel attack alone costs it 25.6 dB at k = 10 on MNIST although the
inversion itself is near exact. A defense is public (Kerckhoffs): the adversary runs
the clients' own pipeline, pixel attack included (its own surrogate, trained on its
own images), on its auxiliary images, and learns the inverse map from attacked to
clean images with a small residual CNN (``clean = x - net(x)``, a denoiser of the
kind of Zhang et al. 2017, DnCNN). Applied to the white-box reconstruction, it
removes what it learnt of the pixel attack.

Without an input perturbation (every defense but the pixel-attacked ones) the
adversary's pairs are identical and there is nothing to undo: the reconstruction is
returned as it is.

:class:`InversionRefinement` (``white-box-refined``) is the same idea for any defense:
the adversary runs its own images through the whole pipeline it can simulate (input
perturbation, client part in train mode with its dropout, the smashed-data defense with
fresh randomness, e.g. Laplace noise) *and through the same inversion*, and learns
``inverted -> clean``. It learns the inversion's own errors under that defense, not
just the pixel attack, at the cost of inverting as many of its own images again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from pgsl_flower.attacks.interface import AdversaryKnowledge, SmashedDataObservation, images_from_inputs
from pgsl_flower.attacks.white_box import WhiteBoxInversion


class ResidualDenoiser(nn.Module):
    """Four 3x3 convs at full resolution (ReLU between) predicting the perturbation to subtract."""

    def __init__(self, image_channels: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(image_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, image_channels, 3, padding=1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images - self.net(images)


def train_denoiser(
    noisy: torch.Tensor, clean: torch.Tensor, seed: int, steps: int, lr: float, batch_size: int,
) -> ResidualDenoiser:
    """A :class:`ResidualDenoiser` fitted to ``noisy -> clean`` (MSE): ``steps`` Adam steps on
    seeded batches of ``batch_size`` drawn with replacement (a fixed budget, whatever the pair count)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        denoiser = ResidualDenoiser(clean.shape[1])
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=lr)
    denoiser.train()
    for _ in range(steps):
        batch = torch.randint(len(clean), (min(batch_size, len(clean)),), generator=generator)
        loss = F.mse_loss(denoiser(noisy[batch]), clean[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return denoiser.eval()


def denoise(denoiser: ResidualDenoiser | None, images: torch.Tensor) -> torch.Tensor:
    """``images`` through ``denoiser`` in chunks, clamped to [0, 1]; unchanged when it is None."""
    if denoiser is None:
        return images
    with torch.no_grad():
        return torch.cat([denoiser(images[i : i + 256]) for i in range(0, len(images), 256)]).clamp(0, 1)


@dataclass(frozen=True)
class PerturbationRemoval:
    """Learn ``attacked -> clean`` on the adversary's own pairs: ``steps`` Adam steps on
    batches of ``batch_size`` drawn from its images (a fixed budget, whatever the pool's size)."""

    steps: int = 500
    lr: float = 1e-3
    batch_size: int = 64

    def fit(self, knowledge: AdversaryKnowledge) -> ResidualDenoiser | None:
        """The denoiser, or None when there is nothing to learn (no input perturbation, no images)."""
        clean = knowledge.own_images
        if knowledge.map_channel_is_zero or len(clean) == 0:
            return None
        attacked = images_from_inputs(knowledge.own_inputs).clamp(0, 1)
        return train_denoiser(attacked, clean, knowledge.seed, self.steps, self.lr, self.batch_size)

    def apply(self, knowledge: AdversaryKnowledge, images: torch.Tensor) -> torch.Tensor:
        """``images`` (reconstructed client inputs in [0, 1]) with the learnt perturbation removed."""
        return denoise(self.fit(knowledge), images)


@dataclass(frozen=True)
class InversionRefinement:
    """Learn ``inverted -> clean`` on ``pairs`` of the adversary's own images (seeded choice), each
    pushed through its own pipeline (client part in train mode, ``knowledge.release``) and
    inverted by ``inversion``; then ``steps`` Adam steps as in :class:`PerturbationRemoval`."""

    inversion: WhiteBoxInversion
    pairs: int = 64
    steps: int = 500
    lr: float = 1e-3
    batch_size: int = 64

    def fit(self, knowledge: AdversaryKnowledge) -> ResidualDenoiser | None:
        """The refiner, or None when the adversary has no images."""
        if len(knowledge.own_images) == 0:
            return None
        generator = torch.Generator().manual_seed(knowledge.seed)
        chosen = torch.randperm(len(knowledge.own_images), generator=generator)[: self.pairs]
        smashed = knowledge.sent(knowledge.own_inputs[chosen], self.inversion.batch_size)  # fresh defense noise
        inverted = self.inversion.reconstruct(SmashedDataObservation(knowledge, smashed)).clamp(0, 1)
        clean = knowledge.own_images[chosen]
        return train_denoiser(inverted, clean, knowledge.seed, self.steps, self.lr, self.batch_size)

    def apply(self, knowledge: AdversaryKnowledge, images: torch.Tensor) -> torch.Tensor:
        """``images`` (the same inversion's reconstructions) refined."""
        return denoise(self.fit(knowledge), images)


@dataclass(frozen=True)
class DefenseAwareInversion:
    """``base`` (white-box inversion) followed by a learnt clean-up: :class:`PerturbationRemoval`
    (``white-box-denoised``) or :class:`InversionRefinement` (``white-box-refined``)."""

    base: WhiteBoxInversion
    removal: PerturbationRemoval | InversionRefinement
    name: str = "white-box-denoised"

    def reconstruct(self, observation: SmashedDataObservation) -> torch.Tensor:
        return self.reconstruct_from(observation, self.base.reconstruct(observation))

    def reconstruct_from(self, observation: SmashedDataObservation, inverted: torch.Tensor) -> torch.Tensor:
        """The same, from ``base``'s reconstruction of the same observation (computed once)."""
        return self.removal.apply(observation.knowledge, inverted.clamp(0, 1))
