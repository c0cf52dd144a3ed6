"""The one interface of reconstruction attacks: what the attacker observes in, images out.

Two kinds of observation:

- :class:`SmashedDataObservation`: an honest-but-curious participant (paper
  Section III) with its own images, the same client-side pipeline as every
  client (for PGSL: its own pixel attack and saliency map) and the client part
  it was sent, plus the smashed data ``h`` the network carried for other
  clients. It never sees a victim's images, labels or saliency maps.
  Attacks: decoder inversion, GAN-prior inversion.
- :class:`GradientObservation`: one example's parameter gradients and the model
  (loss) they came from. Attacks: DLG, iDLG.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    #: The configured smashed-data defense as the adversary's own client applies it
    #: (e.g. adds Laplace noise): a defense is public, only its randomness is not.
    release: Callable[[torch.Tensor], torch.Tensor] | None = None

    def sent(self, inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
        """What its own client would send for ``inputs``: the client part in train mode
        (:func:`smashed_in_batches`), then the defense's ``release`` with its own randomness."""
        smashed = smashed_in_batches(self.client, inputs, batch_size)
        return smashed if self.release is None else self.release(smashed)


@dataclass(frozen=True)
class SmashedDataObservation:
    """The adversary's own material and intercepted smashed data (M, 64, H/2, W/2)."""

    knowledge: AdversaryKnowledge
    smashed: torch.Tensor


@dataclass(frozen=True)
class GradientObservation:
    """Gradients of one example's loss w.r.t. ``params``, and what produced them.

    ``loss_fn(inputs, target)`` is the training loss (target: class indices or
    probabilities); ``input_shape`` the shape of one input; ``to_images`` maps a
    reconstructed input to images in [0, 1] (identity for image classifiers,
    :func:`images_from_inputs` for the split network's client input);
    ``last_weight_index`` points at the final linear layer's weight in ``params``.
    """

    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    params: Sequence[torch.Tensor]
    gradients: Sequence[torch.Tensor]
    input_shape: tuple[int, ...]
    num_classes: int
    last_weight_index: int
    to_images: Callable[[torch.Tensor], torch.Tensor] = lambda inputs: inputs


Observation = SmashedDataObservation | GradientObservation


class ReconstructionAttack(Protocol):
    """Every reconstruction attack: an observation in, images (M, C, H, W) in [0, 1] out."""

    name: str

    def reconstruct(self, observation: Observation) -> torch.Tensor: ...


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
