"""Defense-aware white-box inversion: undo the client's input perturbation (PGSL's pixel attack).

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
        generator = torch.Generator().manual_seed(knowledge.seed)
        with torch.random.fork_rng():
            torch.manual_seed(knowledge.seed)
            denoiser = ResidualDenoiser(clean.shape[1])
        optimizer = torch.optim.Adam(denoiser.parameters(), lr=self.lr)
        denoiser.train()
        for _ in range(self.steps):
            batch = torch.randint(len(clean), (min(self.batch_size, len(clean)),), generator=generator)
            loss = F.mse_loss(denoiser(attacked[batch]), clean[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return denoiser.eval()

    def apply(self, knowledge: AdversaryKnowledge, images: torch.Tensor) -> torch.Tensor:
        """``images`` (reconstructed client inputs in [0, 1]) with the learnt perturbation removed."""
        denoiser = self.fit(knowledge)
        if denoiser is None:
            return images
        with torch.no_grad():
            return torch.cat([denoiser(images[i : i + 256]) for i in range(0, len(images), 256)]).clamp(0, 1)


@dataclass(frozen=True)
class DefenseAwareInversion:
    """``base`` (white-box inversion) followed by :class:`PerturbationRemoval`."""

    base: WhiteBoxInversion
    removal: PerturbationRemoval
    name: str = "white-box-denoised"

    def reconstruct(self, observation: SmashedDataObservation) -> torch.Tensor:
        return self.reconstruct_from(observation, self.base.reconstruct(observation))

    def reconstruct_from(self, observation: SmashedDataObservation, inverted: torch.Tensor) -> torch.Tensor:
        """The same, from ``base``'s reconstruction of the same observation (computed once)."""
        return self.removal.apply(observation.knowledge, inverted.clamp(0, 1))
