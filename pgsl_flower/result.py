"""What a federated split-learning run returns (cf. ``flwr.serverapp.strategy.Result``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord

#: One round's metrics: the ``metrics.csv`` row, with ``None`` where a value is undefined.
RoundMetrics = dict[str, float | int | None]


@dataclass
class SplitResult:
    """The outcome of :meth:`pgsl_flower.api.SplitStrategy.start` (and of the built-in ServerApp).

    Attributes
    ----------
    metrics : dict[int, RoundMetrics]
        Round number -> that round's metrics (the columns of ``metrics.csv``:
        ``test_accuracy``, ``test_balanced_accuracy``, ``train_loss``, ...), for the
        rounds this run trained (a resumed run: those after its checkpoint).
    arrays : ArrayRecord
        The final global client part (conv1..conv<cut-layer>): the state dict every client loads.
    server_arrays : ArrayRecord
        The final server part (conv3 onwards and the head; PGSL: its three-stream model).
    run_dir : Path
        The run's output folder (``metrics.csv``, ``summary.json``, ``final_model.pt``, ...).
    summary : dict
        The content of ``summary.json``.
    """

    metrics: dict[int, RoundMetrics] = field(default_factory=dict)
    arrays: ArrayRecord = field(default_factory=ArrayRecord)
    server_arrays: ArrayRecord = field(default_factory=ArrayRecord)
    run_dir: Path = Path()
    summary: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        """Short: rounds, final test accuracy, array counts, output folder."""
        last = self.metrics[max(self.metrics)] if self.metrics else {}
        return (
            f"SplitResult(rounds={sorted(self.metrics)}, final test_accuracy={last.get('test_accuracy')}, "
            f"arrays={len(self.arrays)} client + {len(self.server_arrays)} server, run_dir={str(self.run_dir)!r})"
        )


def round_metrics(row: dict[str, Any]) -> RoundMetrics:
    """A ``metrics.csv`` row as :data:`RoundMetrics` (its empty cells become ``None``)."""
    return {key: None if value == "" else value for key, value in row.items()}
