"""Centralised evaluation of the split network on a labelled image set."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from pgsl_flower.model import ClientNet, ServerNet, prepare_input


@torch.no_grad()
def evaluate_split(
    client: ClientNet,
    server: ServerNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of client part + server part (eval mode).

    ``images`` are uint8 (N, C, H, W); this is the evaluation harness, run by the
    server on the global test set, not part of the protocol.
    """
    client.eval()
    server.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(labels), batch_size):
        x = images[start : start + batch_size].to(device).float().div_(255.0)
        y = labels[start : start + batch_size].to(device)
        logits = server(client(prepare_input(x)))
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    n = max(len(labels), 1)
    return loss_sum / n, correct / n
