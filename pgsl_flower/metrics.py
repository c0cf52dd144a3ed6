"""Per-run outputs: ``metrics.csv`` (one row per round), ``per_class.csv`` (one row per round
and class), ``confusion_matrix.csv`` (final round), ``config.json``, ``summary.json``."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pgsl_flower.classification_metrics import ClassificationReport

METRIC_COLUMNS = (
    "round",
    "clients",
    "failed_clients",
    "test_accuracy",
    "test_balanced_accuracy",
    "test_macro_f1",
    "test_auroc",
    "test_loss",
    "test_acc_recovered",
    "test_acc_fused",
    "test_acc_attacked",
    "test_bacc_recovered",
    "test_bacc_fused",
    "test_bacc_attacked",
    "train_accuracy",
    "train_balanced_accuracy",
    "train_loss",
    "local_accuracy_mean",
    "local_balanced_accuracy",
    "samples",
    "messages_per_client",
    "train_seconds",
    "round_seconds",
    "wall_seconds",
    "bytes_up_per_client",
    "bytes_down_per_client",
    "epsilon",
)
PER_CLASS_COLUMNS = ("round", "class", "support", "recall", "precision", "f1")


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` through a temporary file in the same folder and a rename: a reader (or a
    kill) in the middle sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # created like path itself (the umask's mode)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON atomically (:func:`write_text_atomically`)."""
    write_text_atomically(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_confusion_matrix(path: Path, report: ClassificationReport) -> None:
    """``confusion_matrix.csv``: one row per true class, one column per predicted class."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *report.classes])
        writer.writerows([name, *row] for name, row in zip(report.classes, report.confusion.tolist(), strict=True))


class _RoundTable:
    """A CSV with a ``round`` column, appended to and flushed at once; on resume, the rows of
    rounds 1..keep_rounds are kept and those of the interrupted round dropped."""

    def __init__(self, path: Path, columns: Sequence[str], keep_rounds: int) -> None:
        self.path, self.columns = path, tuple(columns)
        kept: list[dict[str, str]] = []
        if keep_rounds and path.exists():
            with path.open(newline="") as handle:
                kept = [row for row in csv.DictReader(handle) if int(row["round"]) <= keep_rounds]
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(self.columns)
            writer.writerows([row.get(c, "") for c in self.columns] for row in kept)

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for row in rows:
            missing = [c for c in self.columns if c not in row]
            if missing:
                raise KeyError(f"{self.path.name} row lacks columns {missing}")
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerows([row[c] for c in self.columns] for row in rows)


class MetricsWriter:
    """Appends one row per round to ``metrics.csv`` and one per round and class to
    ``per_class.csv``, flushed at once.

    ``keep_rounds`` > 0 (a resumed run) keeps the existing rows of rounds
    1..keep_rounds and drops those of the interrupted round.
    """

    def __init__(self, run_dir: Path, keep_rounds: int = 0) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "metrics.csv"
        self._rounds = _RoundTable(self.path, METRIC_COLUMNS, keep_rounds)
        self._classes = _RoundTable(run_dir / "per_class.csv", PER_CLASS_COLUMNS, keep_rounds)

    def append(self, row: Mapping[str, Any], report: ClassificationReport | None = None) -> None:
        self._rounds.append([row])
        if report is not None:
            self._classes.append([
                {"round": row["round"], **{k: round(v, 6) if isinstance(v, float) else v for k, v in item.items()}}
                for item in report.per_class()
            ])
