"""Accuracy and cost of sending k batches per message (run-config ``batches-per-message``).

A deployment exchange costs seconds, so a pilot sends k batches per message.
The client then computes k forwards with the same weights and applies k
gradients that are stale by up to k - 1 of its own steps (see
``SplitClient.apply_gradients``). Each cell is a real Flower simulation
(Ray backend) of SplitFed on MNIST, one per (k, seed); cells already in
``runs.csv`` are skipped, a failed cell is recorded and retried next time.

    python -m pgsl_flower.experiments.chunking                # writes results/chunking/
    python -m pgsl_flower.experiments.chunking --report-only  # re-renders chunking.md
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from pgsl_flower.experiments.cells import experiment_parser, failure_lines, is_done, load_runs, percent_mean_std, run_cell

CHUNKS = (1, 8, 32)
SEEDS = (1, 2, 3)
NUM_CLIENTS = 5
#: 1800 training images per client: 28 batches of 64 per round, so k = 32 sends a whole round at once.
SETTINGS: dict[str, Any] = {"dataset": "mnist", "samples-per-client": 2000, "num-rounds": 3,
                            "bn-recalibration": "off"}  # as committed: before the BatchNorm remedy existed
COLUMNS = (
    "batches_per_message", "seed", "status", "final_test_accuracy", "messages_per_client",
    "median_round_seconds", "bytes_up_per_client", "bytes_down_per_client", "run_dir", "wall_seconds", "error",
)


def run_one(k: int, seed: int, runs_dir: Path, settings: dict[str, Any] = SETTINGS,
            num_clients: int = NUM_CLIENTS) -> dict[str, Any]:
    """One cell: a simulation with ``batches-per-message = k``; returns its row."""
    from pgsl_flower.simulation import simulate

    run_dir = runs_dir / f"k{k}-seed{seed}"
    summary = simulate({**settings, "batches-per-message": k, "seed": seed}, num_clients, run_dir=run_dir)
    with (run_dir / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        "final_test_accuracy": summary["final_test_accuracy"],
        "messages_per_client": int(rows[-1]["messages_per_client"]),
        "median_round_seconds": statistics.median(float(r["round_seconds"]) for r in rows),
        "bytes_up_per_client": int(rows[-1]["bytes_up_per_client"]),
        "bytes_down_per_client": int(rows[-1]["bytes_down_per_client"]),
        "run_dir": str(run_dir),
    }


def report(runs: pd.DataFrame) -> str:
    """Markdown table: accuracy (mean ± std over seeds) and cost per k."""
    ok = runs[runs.status == "ok"]
    lines = [
        "| batches per message k | test accuracy % (mean ± std) | seeds | messages per client per round "
        "| median round s | MB up per client per round |",
        "|---|---|---|---|---|---|",
    ]
    for k, group in ok.groupby("batches_per_message"):
        lines.append(
            f"| {k} | {percent_mean_std(group.final_test_accuracy)} | {len(group)} "
            f"| {group.messages_per_client.iloc[0]} | {group.median_round_seconds.median():.1f} "
            f"| {group.bytes_up_per_client.mean() / 1e6:.1f} |"
        )
    lines += failure_lines(runs, {"batches_per_message": "k", "seed": "seed"})
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = experiment_parser("chunking", __doc__, SEEDS)
    parser.add_argument("--chunks", type=int, nargs="+", default=list(CHUNKS))
    args = parser.parse_args(argv)
    path = args.out / "runs.csv"
    runs = load_runs(path, COLUMNS)
    if not args.report_only:
        for k in args.chunks:
            for seed in args.seeds:
                key = {"batches_per_message": k, "seed": seed}
                if not is_done(runs, key):
                    runs = run_cell(runs, key, lambda k=k, seed=seed: run_one(k, seed, args.runs_dir), path, COLUMNS)
    text = report(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chunking.md").write_text(
        f"MNIST, SplitFed, {NUM_CLIENTS} IID clients, settings {SETTINGS}; "
        "`python -m pgsl_flower.experiments.chunking`. Test accuracy after the last round; round "
        "seconds are wall time in simulation on the shared 2-core machine (other jobs ran beside "
        "these cells): a cost indication, not a benchmark.\n\n" + text
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
