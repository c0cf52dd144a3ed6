"""GAN-prior inversion (the paper's DCGAN row; Hitaj et al. 2017 style prior).

1. A DCGAN (Radford et al. 2016) is trained on the adversary's own clean images.
2. For each intercepted batch, latent codes ``z`` are optimised so that the
   client part's output on ``G(z)`` matches the intercepted ``h``
   (mean squared error, Adam). The client part runs in train mode on the whole
   batch, as the victim's did, so a perfect ``G(z)`` matches exactly.

Under a pixel-attacked defense the victim's input carries a saliency channel
the adversary cannot know: that channel is optimised as a free variable
alongside ``z`` (with no defense it is known to be zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from pgsl_flower.attacks.interface import AdversaryKnowledge, SmashedDataObservation
from pgsl_flower.model import prepare_input

LATENT = 64


class Generator(nn.Module):
    """z -> (C, S, S) in [0, 1]: FC to S/4 x S/4 x 128, two stride-2 transposed convs."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        if size % 4:
            raise ValueError(f"the DCGAN prior needs an image size divisible by 4, got {size}")
        self.base = size // 4
        self.fc = nn.Sequential(nn.Linear(LATENT, 128 * self.base * self.base), nn.BatchNorm1d(128 * self.base * self.base), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.ConvTranspose2d(64, channels, 4, 2, 1), nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(len(z), 128, self.base, self.base))


class Discriminator(nn.Module):
    """Two stride-2 convs with LeakyReLU, then a linear logit."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 64, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(128 * (size // 4) ** 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def train_dcgan(images: torch.Tensor, steps: int, seed: int, batch_size: int = 64) -> Generator:
    """Standard DCGAN training (Adam 2e-4, beta1 0.5, non-saturating loss) for ``steps``
    generator updates on float images (passes over the data repeat as needed)."""
    torch.manual_seed(seed)
    channels, size = images.shape[1], images.shape[-1]
    gen, disc = Generator(channels, size), Discriminator(channels, size)
    opt_g = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
    generator = torch.Generator().manual_seed(seed)
    done = 0
    while done < steps:
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order) - 1, batch_size):
            real = images[order[start : start + batch_size]]
            if len(real) < 2 or done >= steps:
                continue
            done += 1
            fake = gen(torch.randn(len(real), LATENT))
            ones, zeros = torch.ones(len(real)), torch.zeros(len(real))
            d_loss = F.binary_cross_entropy_with_logits(disc(real), ones) + F.binary_cross_entropy_with_logits(
                disc(fake.detach()), zeros
            )
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            g_loss = F.binary_cross_entropy_with_logits(disc(fake), ones)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
    return gen.eval()


@dataclass(frozen=True)
class GANPriorInversion:
    """DCGAN trained ``train_steps`` updates, then ``steps`` Adam steps on ``z`` per intercepted batch."""

    train_steps: int = 1500
    steps: int = 200
    lr: float = 0.05
    batch_size: int = 64
    name: str = "gan"

    def reconstruct(self, observation: SmashedDataObservation) -> torch.Tensor:
        knowledge, smashed = observation.knowledge, observation.smashed
        gen = train_dcgan(knowledge.own_images, self.train_steps, knowledge.seed)
        for p in gen.parameters():
            p.requires_grad_(False)
        client = knowledge.client
        saved = {k: v.clone() for k, v in client.state_dict().items()}
        for p in client.parameters():
            p.requires_grad_(False)
        out = [self._invert(gen, knowledge, smashed[i : i + self.batch_size]) for i in range(0, len(smashed), self.batch_size)]
        client.load_state_dict(saved)
        for p in client.parameters():
            p.requires_grad_(True)
        return torch.cat(out)

    def _invert(self, gen: Generator, knowledge: AdversaryKnowledge, target: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(knowledge.seed)
        z = torch.randn(len(target), LATENT, requires_grad=True)
        free_map = None
        if not knowledge.map_channel_is_zero:
            free_map = torch.zeros(len(target), 1, *target.shape[2:], requires_grad=True)
        params = [z] + ([free_map] if free_map is not None else [])
        optimizer = torch.optim.Adam(params, lr=self.lr)
        knowledge.client.train()  # batch statistics, like the victim's forward
        for _ in range(self.steps):
            loss = F.mse_loss(knowledge.client(prepare_input(gen(z), free_map)), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return gen(z)
