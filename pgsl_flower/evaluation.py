"""Evaluation of the split network: scores per stream, decision, and the classification report."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import torch

from pgsl_flower.classification_metrics import classification_report
from pgsl_flower.model import ClientNet


class ScoringServer(Protocol):
    """What evaluation needs from a server model (plain or PGSL)."""

    def stream_scores(self, smashed: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def decide(self, scores: dict[str, torch.Tensor]) -> torch.Tensor: ...


def score_smashed(
    server: ScoringServer, smashed_batches: Iterable[torch.Tensor], labels: torch.Tensor,
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """NLL and the classification report of the server's decision (``report``: accuracy,
    balanced accuracy, macro-F1, AUROC, per-class recall, confusion matrix), plus each
    stream's accuracy and balanced accuracy where there are streams (PGSL).

    Scores of all batches are gathered before the decision, so PGSL's
    adaptive weights (eqs. 10-11) use the statistics of the whole set.
    ``classes`` names the classes (default: their indices).
    """
    gathered: dict[str, list[torch.Tensor]] = {}
    for smashed in smashed_batches:
        for name, value in server.stream_scores(smashed).items():
            gathered.setdefault(name, []).append(value.cpu())
    scores = {name: torch.cat(values) for name, values in gathered.items()}
    decision = server.decide(scores)
    names = tuple(classes) if classes is not None else tuple(str(k) for k in range(decision.shape[1]))
    picked = decision.gather(1, labels.view(-1, 1)).clamp_min(1e-12)
    report = classification_report(decision, labels, names)
    out: dict[str, Any] = {"loss": float(-picked.log().mean()), "accuracy": report.accuracy, "report": report}
    for name, value in scores.items():
        if name != "output":
            stream = classification_report(value, labels, names)
            out[f"acc_{name}"] = stream.accuracy
            out[f"bacc_{name}"] = stream.balanced_accuracy
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
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
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
    return score_smashed(server, batches, labels, classes)
