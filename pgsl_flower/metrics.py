"""Per-run outputs: ``metrics.csv`` (one row per round), ``config.json``, ``summary.json``."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

METRIC_COLUMNS = (
    "round",
    "clients",
    "failed_clients",
    "test_accuracy",
    "test_loss",
    "test_acc_recovered",
    "test_acc_fused",
    "test_acc_attacked",
    "train_accuracy",
    "train_loss",
    "local_accuracy_mean",
    "samples",
    "messages_per_client",
    "train_seconds",
    "round_seconds",
    "wall_seconds",
    "bytes_up_per_client",
    "bytes_down_per_client",
    "epsilon",
)


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON atomically (temp file + rename), so readers never see half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


class MetricsWriter:
    """Appends one row per round to ``metrics.csv``, flushed at once.

    ``keep_rounds`` > 0 (a resumed run) keeps the existing rows of rounds
    1..keep_rounds and drops those of the interrupted round.
    """

    def __init__(self, run_dir: Path, keep_rounds: int = 0) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "metrics.csv"
        kept: list[dict[str, str]] = []
        if keep_rounds and self.path.exists():
            with self.path.open(newline="") as handle:
                kept = [row for row in csv.DictReader(handle) if int(row["round"]) <= keep_rounds]
        with self.path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(METRIC_COLUMNS)
            writer.writerows([row.get(c, "") for c in METRIC_COLUMNS] for row in kept)

    def append(self, row: Mapping[str, Any]) -> None:
        missing = [c for c in METRIC_COLUMNS if c not in row]
        if missing:
            raise KeyError(f"metrics row lacks columns {missing}")
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([row[c] for c in METRIC_COLUMNS])
