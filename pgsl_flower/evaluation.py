"""Evaluation of the split network: scores per stream, decision, accuracy, loss."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import torch

from pgsl_flower.model import ClientNet


class ScoringServer(Protocol):
    """What evaluation needs from a server model (plain or PGSL)."""

    def stream_scores(self, smashed: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def decide(self, scores: dict[str, torch.Tensor]) -> torch.Tensor: ...


def score_smashed(
    server: ScoringServer, smashed_batches: Iterable[torch.Tensor], labels: torch.Tensor
) -> dict[str, float]:
    """Accuracy and NLL of the server's decision, plus per-stream accuracy where there are streams.

    Scores of all batches are gathered before the decision, so PGSL's
    adaptive weights (eqs. 10-11) use the statistics of the whole set.
    """
    gathered: dict[str, list[torch.Tensor]] = {}
    for smashed in smashed_batches:
        for name, value in server.stream_scores(smashed).items():
            gathered.setdefault(name, []).append(value.cpu())
    scores = {name: torch.cat(values) for name, values in gathered.items()}
    decision = server.decide(scores)
    picked = decision.gather(1, labels.view(-1, 1)).clamp_min(1e-12)
    out = {
        "loss": float(-picked.log().mean()),
        "accuracy": float((decision.argmax(1) == labels).float().mean()),
    }
    for name, value in scores.items():
        if name != "output":
            out[f"acc_{name}"] = float((value.argmax(1) == labels).float().mean())
    return out


@torch.no_grad()
def evaluate_split(
    client: ClientNet,
    server: ScoringServer,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    release: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Run prepared client inputs (N, 4C + 1, H/2, W/2) through client + server (eval mode).

    This is the evaluation harness, run by the server on the global test set; it
    is not part of the protocol.
    With a smashed-data defense, ``release(h, start)`` is what the clients would
    send for the batch starting at ``start`` (e.g. h plus noise).
    """
    client.eval()
    release = release or (lambda smashed, _start: smashed)
    batches = (
        release(client(inputs[start : start + batch_size].to(device)), start)
        for start in range(0, len(labels), batch_size)
    )
    return score_smashed(server, batches, labels)
