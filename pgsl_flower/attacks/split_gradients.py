"""DLG / iDLG against the split network: the observation and the attacker's model.

Observation (stated in every table that uses it): the gradient of one victim
example's training loss with respect to *all* parameters, client part and
server part, i.e. what a SplitFed-V1 aggregator sees when both halves are
averaged after a one-example step (FedSGD). The attacker is that aggregator: it
knows both halves. Both halves run in eval mode (running BN statistics, no
dropout), so the observation is a deterministic function of the input: the
most favourable setting for the attacker.

Under PGSL the server half is the three-tower :class:`PGSLNet` and the loss is
the sum of the three streams' losses (as in the real step); the proximal
recovery is recomputed from the dummy's smashed data at every evaluation and,
as on the server, no gradient flows through it. The dummy is the whole client
input (image planes and saliency channel), so the attacker needs no knowledge
of the victim's map; its image planes are the reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from pgsl_flower.attacks.gradient_matching import LossFn, observe_gradients
from pgsl_flower.attacks.interface import GradientObservation, images_from_inputs
from pgsl_flower.model import ClientNet, ServerNet
from pgsl_flower.pgsl.server_model import PGSLNet, ProximalSettings, recover


@dataclass
class SplitModel:
    """Both halves of a trained split network (from a run's ``final_model.pt``)."""

    client: ClientNet
    server: ServerNet | PGSLNet
    proximal: ProximalSettings | None = None  # set for PGSL

    def loss_fn(self) -> LossFn:
        """The training loss of client inputs, as the server computes it."""

        def loss(inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            smashed = self.client(inputs)
            if isinstance(self.server, PGSLNet):
                logits = self.server(smashed, recover(smashed.detach(), self.proximal or ProximalSettings()))
                return sum(F.cross_entropy(out, target) for out in logits.values())
            return F.cross_entropy(self.server(smashed), target)

        return loss

    def parameters(self) -> list[nn.Parameter]:
        return [*self.client.parameters(), *self.server.parameters()]

    def last_weight_index(self) -> int:
        """Index in :meth:`parameters` of the final linear layer's weight (iDLG's label rule)."""
        last = self.server.towers["fused"].head[-1] if isinstance(self.server, PGSLNet) else self.server.head[-1]
        return next(i for i, p in enumerate(self.parameters()) if p is last.weight)

    def observe(self, inputs: torch.Tensor, label: int, num_classes: int) -> GradientObservation:
        """The observation: one example's gradient w.r.t. both halves, in eval mode."""
        self.client.eval()
        self.server.eval()
        return observe_gradients(self.loss_fn(), self.parameters(), inputs, label, num_classes,
                                 self.last_weight_index(), to_images=images_from_inputs)
