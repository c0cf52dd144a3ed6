"""Resumable experiment cells: one row per cell in a ``runs.csv``.

A cell is identified by its key columns (e.g. dataset, defense, seed). A cell
whose row has ``status == "ok"`` is skipped on the next run; a failed cell is
recorded with its error (and retried next time) without stopping the others.
The CSV is rewritten after every cell, atomically (temporary file, then
rename), so an interruption, even mid-write, loses at most the cell in progress.
"""

from __future__ import annotations

import argparse
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pgsl_flower.metrics import write_text_atomically


def load_runs(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """``runs.csv`` if present, else an empty frame with ``columns``."""
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=list(columns))


def _selector(runs: pd.DataFrame, key: Mapping[str, Any]) -> pd.Series:
    mask = pd.Series(True, index=runs.index)
    for column, value in key.items():
        mask &= runs[column] == value
    return mask


def is_done(runs: pd.DataFrame, key: Mapping[str, Any]) -> bool:
    """Whether the cell has a finished (``ok``) row."""
    return bool((runs[_selector(runs, key)].status == "ok").any())


def run_cell(
    runs: pd.DataFrame, key: Mapping[str, Any], body: Callable[[], Mapping[str, Any]], path: Path,
    columns: Sequence[str],
) -> pd.DataFrame:
    """Run ``body`` for one cell, record its row (results, or the error) and rewrite ``path``."""
    row: dict[str, Any] = dict(key)
    started = time.perf_counter()
    try:
        row.update(body())
        row["status"] = "ok"
    except Exception as err:  # noqa: BLE001 - recorded; the next cell still runs
        traceback.print_exc()
        row.update(status="failed", error=f"{type(err).__name__}: {err}")
    row["wall_seconds"] = round(time.perf_counter() - started, 1)
    runs = pd.concat([runs[~_selector(runs, key)], pd.DataFrame([row])], ignore_index=True)
    runs = runs.reindex(columns=list(columns))
    write_text_atomically(path, runs.to_csv(index=False))  # rendered first: a failure touches no file
    return runs


def failure_lines(runs: pd.DataFrame, labels: Mapping[str, str]) -> list[str]:
    """Markdown lines naming each failed cell by ``labels`` (column -> label) and its error;
    preceded by a blank line, or none when every cell succeeded."""
    failed = runs[runs.status != "ok"]
    if not len(failed):
        return []
    return [""] + [
        "- failed: " + " ".join(f"{label}={row[column]}" for column, label in labels.items()) + f": {row['error']}"
        for _, row in failed.iterrows()
    ]


def percent_mean_std(values: pd.Series) -> str:
    """``mean ± std`` of fractions, in percent (std 0 for one value)."""
    percent = values * 100
    return f"{percent.mean():.2f} ± {percent.std() if len(percent) > 1 else 0.0:.2f}"


def experiment_parser(name: str, doc: str | None, seeds: Sequence[int]) -> argparse.ArgumentParser:
    """The options every cell experiment takes: ``--out`` (default ``results/<name>``), ``--runs-dir``
    (``outputs/<name>``), ``--seeds`` and ``--report-only``."""
    parser = argparse.ArgumentParser(prog=f"python -m pgsl_flower.experiments.{name}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results") / name)
    parser.add_argument("--runs-dir", type=Path, default=Path("outputs") / name)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    parser.add_argument("--report-only", action="store_true")
    return parser
