"""Table II analog: PGSL's streams and fusion beside training on the attacked images.

Every cell is a real Flower simulation (Ray backend) of SplitFed with the
dataset's settings below, one per (dataset, defense, seed):

- ``none``: no defense, clean images (reference; not a row of the paper's table);
- ``pixel-attack``: no defense, trained and tested on the JSMA-style
  pixel-attacked images (PGSL's client side alone; the paper's "JSMA" row);
- ``pgsl``: the full defense; its run gives the accuracies of the recovered,
  fused and attacked streams and of the decision fusion.

Test images are attacked by the evaluation harness exactly as the clients
attack theirs. Cells already in ``runs.csv`` are skipped, so an interrupted
run resumes; a failed cell is recorded with its error and retried next time.

    python -m pgsl_flower.experiments.table2                 # writes results/table2/
    python -m pgsl_flower.experiments.table2 --report-only   # re-renders table + plot from runs.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from pgsl_flower.config import RunConfig
from pgsl_flower.experiments.cells import is_done, load_runs, run_cell

DEFENSES = ("none", "pixel-attack", "pgsl")

#: Per-dataset settings: clients and run-config (full MNIST; MIAS at 128x128).
SETTINGS: dict[str, tuple[int, dict[str, Any]]] = {
    "mnist": (10, {"samples-per-client": 0, "num-rounds": 2, "lr-decay": 0.0003}),
    "mias": (3, {"image-size": 128, "batch-size": 16, "num-rounds": 10, "lr-decay": 0.0003,
                 "samples-per-client": 0}),
}

#: (row label, defense, summary column) of the table, top to bottom.
ROWS = (
    ("no defense, clean images", "none", "final_test_accuracy"),
    ("no defense, pixel-attacked images (JSMA)", "pixel-attack", "final_test_accuracy"),
    ("PGSL stream r (recovered)", "pgsl", "final_test_acc_recovered"),
    ("PGSL stream f (fused)", "pgsl", "final_test_acc_fused"),
    ("PGSL stream a (attacked)", "pgsl", "final_test_acc_attacked"),
    ("PGSL decision fusion", "pgsl", "final_test_accuracy"),
)

#: The paper's Table II (%), MIAS / MNIST; None where it has no such row.
PAPER = {
    "no defense, clean images": (None, None),
    "no defense, pixel-attacked images (JSMA)": (46.3, 65.4),
    "PGSL stream r (recovered)": (78.5, 99.2),
    "PGSL stream f (fused)": (67.3, 86.6),
    "PGSL stream a (attacked)": (46.3, 65.4),
    "PGSL decision fusion": (83.2, 99.8),
}

RUN_COLUMNS = (
    "dataset", "defense", "seed", "status", "num_clients", "final_test_accuracy",
    "final_test_acc_recovered", "final_test_acc_fused", "final_test_acc_attacked",
    "wall_seconds", "config", "error",
)


def cell_config(dataset: str, defense: str, seed: int) -> tuple[int, RunConfig]:
    """(client count, run config) of one cell."""
    clients, overrides = SETTINGS[dataset]
    values = {**overrides, "dataset": dataset, "defense": defense, "seed": seed}
    return clients, RunConfig(**{key.replace("-", "_"): value for key, value in values.items()})


def _load_runs(path: Path) -> pd.DataFrame:
    return load_runs(path, RUN_COLUMNS)


def run_cells(
    datasets: list[str], defenses: list[str], seeds: list[int], out: Path, runs_dir: Path
) -> pd.DataFrame:
    """Run every missing cell; ``out/runs.csv`` is rewritten as each finishes.

    Each run's own outputs (metrics.csv per round, model) go to ``runs_dir``.
    """
    from pgsl_flower.simulation import simulate

    path = out / "runs.csv"
    runs = _load_runs(path)
    for dataset in datasets:
        for seed in seeds:
            for defense in defenses:
                key = {"dataset": dataset, "defense": defense, "seed": seed}
                if is_done(runs, key):
                    continue
                clients = SETTINGS[dataset][0]
                print(f"table2: {dataset} {defense} seed {seed} ({clients} clients)", flush=True)

                def body(dataset: str = dataset, defense: str = defense, seed: int = seed) -> dict[str, Any]:
                    row = {"num_clients": SETTINGS[dataset][0], "config": str(SETTINGS[dataset][1])}
                    clients, cfg = cell_config(dataset, defense, seed)
                    summary = simulate(cfg, clients, run_dir=runs_dir / f"{dataset}-{defense}-s{seed}")
                    return {**row, **{k: summary[k] for k in RUN_COLUMNS if k in summary}}

                runs = run_cell(runs, key, body, path, RUN_COLUMNS)
    return runs


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, table row): accuracy mean and std over seeds (%), and the paper's figure."""
    ok = runs[runs.status == "ok"]
    records = []
    for dataset in sorted(ok.dataset.unique(), reverse=True):  # mnist, mias
        for label, defense, column in ROWS:
            values = pd.to_numeric(ok[(ok.dataset == dataset) & (ok.defense == defense)][column], errors="coerce")
            values = values.dropna() * 100
            if values.empty:
                continue
            paper = PAPER[label][0 if dataset == "mias" else 1]
            records.append({
                "dataset": dataset, "row": label, "accuracy_mean": round(values.mean(), 2),
                "accuracy_std": round(values.std(ddof=1), 2) if len(values) > 1 else float("nan"),
                "seeds": len(values), "paper": paper,
            })
    return pd.DataFrame(records)


def markdown(table: pd.DataFrame) -> str:
    lines = ["| dataset | row | accuracy % (mean ± std) | seeds | paper % |", "|---|---|---|---|---|"]
    for r in table.itertuples():
        paper = "—" if pd.isna(r.paper) else f"{r.paper:.1f}"
        spread = "" if pd.isna(r.accuracy_std) else f" ± {r.accuracy_std:.2f}"
        lines.append(f"| {r.dataset} | {r.row} | {r.accuracy_mean:.2f}{spread} | {r.seeds} | {paper} |")
    return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(table.dataset.unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        part = table[table.dataset == dataset]
        y = range(len(part))
        ax.barh(list(y), part.accuracy_mean, xerr=part.accuracy_std.fillna(0), capsize=3, label="measured")
        ax.scatter(part.paper, list(y), color="black", marker="x", zorder=3, label="paper")
        ax.set_yticks(list(y), part.row, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("test accuracy % (mean ± std over seeds)")
        ax.set_title(dataset)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/table2"))
    parser.add_argument("--datasets", nargs="+", default=["mias", "mnist"], choices=sorted(SETTINGS))
    parser.add_argument("--defenses", nargs="+", default=list(DEFENSES), choices=DEFENSES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--runs-dir", type=Path, default=Path("outputs/table2"), help="per-run outputs")
    parser.add_argument("--report-only", action="store_true", help="render from runs.csv, run nothing")
    args = parser.parse_args(argv)

    if args.report_only:
        runs = _load_runs(args.out / "runs.csv")
    else:
        runs = run_cells(args.datasets, args.defenses, args.seeds, args.out, args.runs_dir)
    table = summarize(runs)
    if table.empty:
        print("table2: no finished cells", file=sys.stderr)
        return 1
    table.to_csv(args.out / "table2.csv", index=False)
    (args.out / "table2.md").write_text(markdown(table))
    plot(table, args.out / "table2.png")
    print(markdown(table))
    failed = runs[runs.status != "ok"]
    if len(failed):
        print(f"table2: {len(failed)} failed cell(s), see runs.csv", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
