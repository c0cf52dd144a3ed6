"""What a reconstruction adversary holds, and the interface of smashed-data attacks.

The adversary is an honest-but-curious participant (paper Section III): it has
its own images, runs the same client-side pipeline as every client (for PGSL:
its own pixel attack and saliency map), holds the client part it was sent,
and receives the smashed data ``h`` the network carried for other clients.
It never sees a victim's images, labels or saliency maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch.nn import functional as F

from pgsl_flower.model import ClientNet


@dataclass(frozen=True)
class AdversaryKnowledge:
    """The adversary's own material.

    ``own_images``: float (N, C, H, W) in [0, 1], its clean images.
    ``own_inputs``: (N, 4C + 1, H/2, W/2), the client-part inputs its own pipeline
    builds from them (for a pixel-attacked defense: attacked image + saliency map).
    ``client``: the client part the victims used (same weights, any mode).
    ``map_channel_is_zero``: whether the protocol leaves the saliency channel empty
    (no pixel-attack defense); public knowledge, since the defense is configured.
    """

    own_images: torch.Tensor
    own_inputs: torch.Tensor
    client: ClientNet
    map_channel_is_zero: bool
    seed: int = 0


class SmashedDataAttack(Protocol):
    """Reconstructs victims' images from intercepted smashed data."""

    name: str

    def reconstruct(self, knowledge: AdversaryKnowledge, smashed: torch.Tensor) -> torch.Tensor:
        """Images (M, C, H, W) in [0, 1] for smashed data (M, 64, H/2, W/2)."""
        ...


def images_from_inputs(inputs: torch.Tensor) -> torch.Tensor:
    """The image planes of client-part inputs, put back at full size (inverse of unshuffle)."""
    planes = inputs.shape[1] - 1
    return F.pixel_shuffle(inputs[:, :planes], 2)


def smashed_in_batches(client: ClientNet, inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``client(inputs)`` in train mode (batch statistics, as clients send during
    training), batch by batch, without touching the running statistics."""
    saved = {k: v.clone() for k, v in client.state_dict().items()}
    client.train()
    with torch.no_grad():
        out = torch.cat([client(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)])
    client.load_state_dict(saved)
    return out
