"""Accuracy and speed of two training messages in flight per site (run-config ``messages-in-flight``).

With d = 2 the server sends a site its next request before it has the site's
previous reply, so the site computes a message's batches before it has applied
the gradients of the message before: dL/dh is stale by up to 2k - 1 of the
site's own steps instead of k - 1 (``SplitClient.apply_gradients``). The
simulation refuses d > 1, so every cell is a real deployment on 127.0.0.1
(:class:`pgsl_flower.pilot.local.LocalPilot`: SuperLink with TLS and SuperNode
authentication, one SuperNode and one site worker per site), one pilot for all
cells. Cells already in ``runs.csv`` are skipped; a failed cell is recorded and
retried next time.

    python -m pgsl_flower.experiments.in_flight                # writes results/in_flight/
    python -m pgsl_flower.experiments.in_flight --report-only  # re-renders in_flight.md
"""

from __future__ import annotations

import csv
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from pgsl_flower.experiments.cells import experiment_parser, failure_lines, is_done, load_runs, percent_mean_std, run_cell

DEPTHS = (1, 2)
SEEDS = (1, 2, 3)
SITES = 3
PER_SITE = 1088  # MNIST training images per site (10 % held out): 30 batches of 32 per round
SETTINGS: dict[str, Any] = {"num-rounds": 3, "batch-size": 32, "batches-per-message": 8, "samples-per-client": 0,
                            "test-samples": 2000, "min-available-clients": SITES, "reply-timeout": 900.0}
COLUMNS = (
    "messages_in_flight", "seed", "status", "final_test_accuracy", "final_test_balanced_accuracy",
    "messages_per_client", "median_train_seconds", "median_samples_per_s", "run_dir", "wall_seconds", "error",
)


def run_one(pilot: Any, depth: int, seed: int, runs_dir: Path) -> dict[str, Any]:
    """One cell: a deployment run with ``messages-in-flight = depth``; returns its row."""
    output = runs_dir / f"d{depth}-seed{seed}"
    result = pilot.run({**SETTINGS, "messages-in-flight": depth, "seed": seed, "output-dir": str(output)})
    if result.status != "finished:completed":
        raise RuntimeError(f"{result.status}: {result.details} {result.log[-1500:]}")
    run_dir = max(output.iterdir())  # this run's folder (a retried cell leaves older ones)
    with (run_dir / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        "final_test_accuracy": float(rows[-1]["test_accuracy"]),
        "final_test_balanced_accuracy": float(rows[-1]["test_balanced_accuracy"]),
        "messages_per_client": int(rows[-1]["messages_per_client"]),
        "median_train_seconds": statistics.median(float(r["train_seconds"]) for r in rows),
        "median_samples_per_s": statistics.median(int(r["samples"]) / float(r["train_seconds"]) for r in rows),
        "run_dir": str(run_dir),
    }


def report(runs: pd.DataFrame) -> str:
    """Markdown table: accuracy (mean ± std over seeds) and training speed per depth."""
    ok = runs[runs.status == "ok"]
    lines = [
        "| messages in flight d | test accuracy % (mean ± std) | balanced accuracy % (mean ± std) | seeds "
        "| messages per client per round | median training samples/s (per seed) |",
        "|---|---|---|---|---|---|",
    ]
    for depth, group in ok.groupby("messages_in_flight"):
        speeds = ", ".join(f"{v:.1f}" for v in group.median_samples_per_s)
        lines.append(
            f"| {depth} | {percent_mean_std(group.final_test_accuracy)} "
            f"| {percent_mean_std(group.final_test_balanced_accuracy)} | {len(group)} "
            f"| {group.messages_per_client.iloc[0]} | {speeds} |"
        )
    lines += failure_lines(runs, {"messages_in_flight": "d", "seed": "seed"})
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = experiment_parser("in_flight", __doc__, SEEDS)
    parser.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS))
    args = parser.parse_args(argv)
    path = args.out / "runs.csv"
    runs = load_runs(path, COLUMNS)
    todo = [(d, s) for s in args.seeds for d in args.depths
            if not is_done(runs, {"messages_in_flight": d, "seed": s})]
    if todo and not args.report_only:
        from pgsl_flower.data import load_dataset, resolve_data_root
        from pgsl_flower.data.site_folder import write_site_folder
        from pgsl_flower.pilot.local import LocalPilot, copy_app

        root = Path(__file__).resolve().parents[2]
        train, _ = load_dataset("mnist", None)
        runs_dir = args.runs_dir.resolve()
        with tempfile.TemporaryDirectory(prefix="pgsl-in-flight-") as tmp:
            work = Path(tmp)
            sites = {f"site-{i}": write_site_folder(train, range(i * PER_SITE, (i + 1) * PER_SITE),
                                                    work / "data" / f"site-{i}") for i in range(SITES)}
            with LocalPilot(work / "pilot", sites, copy_app(root, work / "app"),
                            env={"PGSL_DATA_DIR": str(resolve_data_root())}, site_workers=True) as pilot:
                pilot.start()
                for depth, seed in todo:  # seed-major: both depths of a seed run close together in time
                    key = {"messages_in_flight": depth, "seed": seed}
                    runs = run_cell(runs, key, lambda d=depth, s=seed: run_one(pilot, d, s, runs_dir), path, COLUMNS)
    text = report(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "in_flight.md").write_text(
        f"MNIST, SplitFed, a deployment of {SITES} sites x {PER_SITE} images on 127.0.0.1 with a site worker "
        f"each, settings {SETTINGS}; `python -m pgsl_flower.experiments.in_flight`. Test accuracy after the "
        "last round; samples/s is the median over the run's rounds of training samples / training seconds, "
        "which include the round's BatchNorm recalibration (3 of the 8 messages per client), on the 2-core "
        "machine that runs the SuperLink, the ServerApp and all sites.\n\n" + text
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
