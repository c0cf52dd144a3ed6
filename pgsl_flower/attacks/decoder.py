"""Decoder inversion (He et al. 2019; Titcombe et al. 2021): learn ``h -> x``.

The adversary passes its own images through its own client-side pipeline and
the client part it holds, and trains a decoder to map the resulting smashed
data back to its *clean* images (an adaptive attacker: under PGSL it learns to
undo the pixel attack too). The decoder is then applied to intercepted
smashed data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from pgsl_flower.attacks.interface import AdversaryKnowledge, SmashedDataObservation
from pgsl_flower.model import CONV_CHANNELS


class Decoder(nn.Module):
    """Three 3x3 convs (BN + ReLU between) at the split's resolution, then pixel-shuffle
    to full size. Linear output, clamped to [0, 1] only when reconstructing: a sigmoid
    output sat for many epochs on the all-background plateau (measured under PGSL)."""

    def __init__(self, image_channels: int, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(CONV_CHANNELS, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 4 * image_channels, 3, padding=1),
        )

    def forward(self, smashed: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.net(smashed), 2)


@dataclass(frozen=True)
class DecoderInversion:
    """Train a :class:`Decoder` on the adversary's pairs for ``epochs`` passes (Adam, batch 64)."""

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    name: str = "decoder"

    def fit(self, knowledge: AdversaryKnowledge) -> Decoder:
        torch.manual_seed(knowledge.seed)
        images = knowledge.own_images
        smashed = knowledge.sent(knowledge.own_inputs, self.batch_size)  # what the defense lets through
        decoder = Decoder(images.shape[1])
        optimizer = torch.optim.Adam(decoder.parameters(), lr=self.lr)
        generator = torch.Generator().manual_seed(knowledge.seed)
        decoder.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(images), generator=generator)
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                loss = F.mse_loss(decoder(smashed[batch]), images[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return decoder.eval()

    def reconstruct(self, observation: SmashedDataObservation) -> torch.Tensor:
        knowledge, smashed = observation.knowledge, observation.smashed
        decoder = self.fit(knowledge)
        with torch.no_grad():
            return torch.cat([decoder(smashed[i : i + 256]) for i in range(0, len(smashed), 256)]).clamp(0, 1)
