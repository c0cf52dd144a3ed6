"""One interface for defenses that act on a client's smashed data.

A defense changes what a client *sends* (:meth:`SmashedDataDefense.release`,
e.g. noise added to the smashed data) and/or how the client *trains*
(:meth:`SmashedDataDefense.local_loss`, a term the client adds to the loss it
backpropagates through its part, e.g. NoPeek's distance correlation or the
latent perturbation's minimax term). DP-SGD also changes how the client
*steps* (``DPSGD.optimizer``). The server never sees the undefended smashed data.

``release`` is deterministic given its ``seed`` (one per client batch), so the
evaluation harness can reproduce what a client sent when it scores an attack.
"""

from __future__ import annotations

import torch


class SmashedDataDefense:
    """No defense: send the smashed data as computed, no extra loss."""

    name = "none"

    def release(self, smashed: torch.Tensor, seed: int) -> torch.Tensor:
        """What leaves the client for this batch (``smashed`` is not modified)."""
        return smashed

    def local_loss(self, inputs: torch.Tensor, smashed: torch.Tensor) -> torch.Tensor | None:
        """An extra client-side loss on (client inputs, smashed data); None: none."""
        return None
