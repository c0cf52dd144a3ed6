"""Learnable latent perturbation with minimax training (after Jiang et al. 2025,
"Defending Against Gradient Inversion Attacks for Biomedical Images via Learnable
Data Perturbation"; only the abstract is available to us, so the details below
are our reading, adapted to split learning).

- The client part ends in a learnable perturbation
  (:class:`pgsl_flower.model.LatentPerturbation`): it sends
  ``h' = h + bound * tanh(P(h))``, with P a 3x3 conv (part of the client part, so
  it is averaged with it and the server's evaluation harness applies it too).
- Each client also trains a **simulated adversary** D (the decoder architecture
  of :mod:`pgsl_flower.attacks.decoder`) to reconstruct its images from ``h'``.
- Minimax, per batch: (1) D takes one step to minimise ``MSE(D(h'), x)``;
  (2) the client part and P take their step on the task gradient from the
  server **minus** ``weight * MSE(D(h'), x)``: keep utility, hurt the adversary.

D stays at the client (its weights and optimizer state are kept between
messages and in the site's checkpoint); it is never sent.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from pgsl_flower.attacks.decoder import Decoder
from pgsl_flower.defenses.interface import SmashedDataDefense


def images_from_inputs(inputs: torch.Tensor) -> torch.Tensor:
    """The clean image behind a client input (pixel-unshuffled planes + map channel)."""
    return F.pixel_shuffle(inputs[:, :-1], 2)


class MinimaxPerturbation(SmashedDataDefense):
    """The client-side minimax: a simulated adversary D, stepped before each client step."""

    name = "latent-perturbation"

    def __init__(self, weight: float, image_channels: int = 1, lr: float = 1e-3, seed: int = 0) -> None:
        self.weight = weight
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.adversary = Decoder(image_channels)
        self.optimizer = torch.optim.Adam(self.adversary.parameters(), lr=lr)

    def adversary_step(self, inputs: torch.Tensor, smashed: torch.Tensor) -> float:
        """One step of D on (released h', clean images); returns its loss before the step."""
        self.adversary.train()
        loss = F.mse_loss(self.adversary(smashed.detach()), images_from_inputs(inputs))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss)

    def local_loss(self, inputs: torch.Tensor, smashed: torch.Tensor) -> torch.Tensor | None:
        """Minimax: step D first, then ``-weight * MSE(D(h'), x)`` for the client's step."""
        self.adversary_step(inputs, smashed)
        if self.weight == 0:
            return None
        for param in self.adversary.parameters():
            param.requires_grad_(False)  # this term trains the client part, not D
        try:
            return -self.weight * F.mse_loss(self.adversary(smashed), images_from_inputs(inputs))
        finally:
            for param in self.adversary.parameters():
                param.requires_grad_(True)

    def state_dict(self) -> dict[str, dict]:
        return {"adversary": self.adversary.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        self.adversary.load_state_dict(state["adversary"])
        self.optimizer.load_state_dict(state["optimizer"])
