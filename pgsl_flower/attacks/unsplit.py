"""UnSplit (Erdoğan, Küpçü and Çiçek 2022, "UnSplit: data-oblivious model inversion, model
stealing, and label inference attacks against split learning", WPES '22, Section 4).

The adversary knows the client part's *architecture* but not its weights (e.g. a server
in sequential split learning, or any party in a protocol that keeps the client part
private). It starts a clone of the client part from a fresh initialisation and
alternates two minimisations of the same objective::

    min_{x, θ'}  MSE(client_θ'(prepare_input(x, m)), h) + tv_weight * TV(x)

``input_steps`` Adam steps on the input ``x = sigmoid(z)`` (and, when the saliency
channel is not public, the map ``m``) with the clone fixed, then ``model_steps`` Adam
steps on the clone's weights ``θ'`` with the input fixed; ``iterations`` rounds of both.
No auxiliary data is used. The clone is shared across the intercepted batches (the
victims of one round use one client part), so later batches start from a better clone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from pgsl_flower.attacks.interface import SmashedDataObservation
from pgsl_flower.attacks.white_box import CandidateInput, PixelSpaceInversion, matching_loss

#: The clone's initialisation seed is ``seed + CLONE_SEED_OFFSET``: the victims' client part is
#: initialised from the run's seed, and a clone drawn from that same seed would start at the
#: victims' initial weights, which this adversary does not know.
CLONE_SEED_OFFSET = 7919


def fresh_clone(client: nn.Module, seed: int) -> nn.Module:
    """A copy of ``client``'s architecture with every layer re-initialised from ``seed``
    (BatchNorm statistics reset too): nothing of the victim's weights is kept."""
    clone = copy.deepcopy(client)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # the CPU generator only: fork_rng restores no other
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    for p in clone.parameters():
        p.requires_grad_(True)
    return clone


@dataclass(frozen=True)
class UnSplit(PixelSpaceInversion):
    """``iterations`` alternations of ``input_steps`` input steps (learning rate ``lr``) and
    ``model_steps`` clone steps (``model_lr``) per intercepted batch of ``batch_size``; the
    other settings (``client_mode``: ``"train"`` matches the batch-statistics ``h`` the
    protocol carries) as in :class:`~pgsl_flower.attacks.white_box.PixelSpaceInversion`.
    """

    iterations: int = 100
    input_steps: int = 10
    model_steps: int = 2
    model_lr: float = 1e-3
    name: str = "unsplit"

    def __post_init__(self) -> None:
        super().__post_init__()
        for field, value in (("iterations", self.iterations), ("input_steps", self.input_steps),
                             ("model_steps", self.model_steps)):
            if value < 1:
                raise ValueError(f"UnSplit {field} must be >= 1, got {value}")

    def reconstruct(self, observation: SmashedDataObservation) -> torch.Tensor:
        return self.reconstruct_with_losses(observation)[0]

    def reconstruct_with_losses(self, observation: SmashedDataObservation) -> tuple[torch.Tensor, list[list[float]]]:
        """Reconstructions and, per batch, the matching loss after each iteration."""
        knowledge, smashed = observation.knowledge, observation.smashed.detach()
        clone = fresh_clone(knowledge.client, self.seed + CLONE_SEED_OFFSET)
        clone.train(self.client_mode == "train")
        model_optimizer = torch.optim.Adam(clone.parameters(), lr=self.model_lr)
        channels = knowledge.own_images.shape[1]
        generator = torch.Generator().manual_seed(self.seed)
        images, losses = [], []
        for i in range(0, len(smashed), self.batch_size):
            target = smashed[i : i + self.batch_size]
            candidate = CandidateInput.start(target, channels, knowledge.map_channel_is_zero, self.init_std, generator)
            input_optimizer = torch.optim.Adam(candidate.parameters(), lr=self.lr)
            history = []
            for _ in range(self.iterations):
                loss = self._steps(clone, candidate, target, input_optimizer, self.input_steps, optimise_input=True)
                loss = self._steps(clone, candidate, target, model_optimizer, self.model_steps, optimise_input=False)
                history.append(loss)
            images.append(candidate.images().detach())
            losses.append(history)
        return torch.cat(images), losses

    def _steps(
        self, clone: nn.Module, candidate: CandidateInput, target: torch.Tensor, optimizer: torch.optim.Optimizer,
        steps: int, optimise_input: bool,
    ) -> float:
        """``steps`` Adam steps on the input (clone frozen) or on the clone (input frozen);
        the last step's loss."""
        for p in clone.parameters():
            p.requires_grad_(not optimise_input)
        for p in candidate.parameters():
            p.requires_grad_(optimise_input)
        loss = torch.zeros(())
        for _ in range(steps):
            loss = matching_loss(clone, candidate, target, self.tv_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return float(loss.detach())
