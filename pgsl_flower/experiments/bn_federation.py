"""Why the paper's BatchNorm network collapses in SplitFed as clients are added, and the remedy.

A controlled experiment on ``results/client_scaling``'s settings (MNIST, the same
2000 training images split over N clients, batch 32, 2 rounds, 1000 test images,
SplitFed, no defense), one real Flower simulation per cell:

- **partitioner**: IID, or Dirichlet(0.5) label skew;
- **clients**: 2, 10, 50 (28, 5 and 1 local steps per client per round);
- **variant** of the client part's normalisation:
  ``groupnorm`` (GroupNorm client part, the reference), ``batchnorm`` (the paper's,
  BN momentum 0.1), ``batchnorm-cumulative`` (BN running statistics as a cumulative
  average, momentum 0: one step is enough to replace the initial values),
  ``batchnorm-recalibrated`` (the remedy, run-config ``bn-recalibration = "on"``,
  :mod:`pgsl_flower.batchnorm`); the server tower is BatchNorm in every variant;
- seeds 1-3.

For the BatchNorm variants the harness also evaluates each final model with the
BN layers of the client part and/or of the server part switched to batch
statistics (test batches of 500 images, IID), and measures how far each BN layer's
running statistics are from the population statistics of its input on the
clients' training images (mean over channels of |running mean - mean| / std; for
the server, its input is the smashed data it trained on: the client part with
batch statistics): which side's statistics fail is then read off, not guessed.

    python -m pgsl_flower.experiments.bn_federation                 # writes results/bn_federation/
    python -m pgsl_flower.experiments.bn_federation --report-only   # re-renders report.md + plot
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from pgsl_flower.batchnorm import batchnorm_layers, input_moments, pool_moments
from pgsl_flower.config import parse_run_config
from pgsl_flower.experiments.cells import is_done, load_runs, run_cell

PARTITIONERS = ("iid", "dirichlet")
CLIENTS = (2, 10, 50)
SEEDS = (1, 2, 3)
TOTAL_SAMPLES = 2000
VARIANTS: dict[str, dict[str, Any]] = {
    "groupnorm": {"client-norm": "group", "bn-recalibration": "off"},
    "batchnorm": {"bn-recalibration": "off"},
    "batchnorm-cumulative": {"bn-momentum": 0.0, "bn-recalibration": "off"},
    "batchnorm-recalibrated": {"bn-recalibration": "on"},
}
BASE = {"dataset": "mnist", "num-rounds": 2, "batch-size": 32, "test-samples": 1000, "local-eval-samples": 32,
        "alpha": 0.5}
EVAL_MODES = ("running", "client-batch", "server-batch", "both-batch")
KEY = ("partitioner", "clients", "variant", "seed")
COLUMNS = (*KEY, "status", "final_test_accuracy", "final_train_accuracy",
           *(f"acc_{mode}" for mode in EVAL_MODES), "client_stat_error", "server_stat_error",
           "round_seconds", "run_dir", "wall_seconds", "error")


def cell_config(partitioner: str, clients: int, variant: str, seed: int) -> dict[str, Any]:
    return {**BASE, **VARIANTS[variant], "partitioner": partitioner, "seed": seed,
            "samples-per-client": TOTAL_SAMPLES // clients}


def _with_batch_stats(module: nn.Module) -> nn.Module:
    """A copy whose BN layers normalise with the batch's statistics (train mode) and leave
    their running statistics alone; everything else (dropout) in eval mode."""
    module = copy.deepcopy(module).eval()
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.train()
            layer.track_running_stats = False
    return module


def _stat_error(module: nn.Module, batches: list[torch.Tensor]) -> float:
    """Mean over BN layers and channels of |running mean - population mean| / population std."""
    errors = []
    modules = dict(module.named_modules())
    for layer in batchnorm_layers(module):
        mean, variance = pool_moments([input_moments(module, layer, batches)])
        bn = modules[layer]
        errors.append(((bn.running_mean - mean).abs() / variance.add(bn.eps).sqrt()).mean())
    return float(torch.stack(errors).mean()) if errors else float("nan")


@torch.no_grad()
def diagnose(run_dir: Path, num_clients: int) -> dict[str, float]:
    """Test accuracy of the run's final model under each BN evaluation mode, and the distance of
    its running statistics from the population statistics of the clients' training images."""
    from pgsl_flower.local_data import load_datasets, local_data
    from pgsl_flower.model import build_client_net, build_server_net
    from pgsl_flower.server_app import harness_inputs

    cfg = parse_run_config({k: v for k, v in json.loads((run_dir / "config.json").read_text()).items()
                            if k not in ("num-clients", "partition-order", "site-names")})
    train_set, test_set = load_datasets(cfg)
    weights = torch.load(run_dir / "final_model.pt", weights_only=True)
    client = build_client_net(cfg, 1)
    client.load_state_dict(weights["client"])
    server = build_server_net(cfg, len(train_set.classes))
    server.load_state_dict(weights["server"])
    client.eval(), server.eval()
    inputs = harness_inputs(cfg, train_set, test_set.images[: cfg.test_samples]).split(500)
    labels = test_set.labels[: cfg.test_samples]
    out = {}
    for mode in EVAL_MODES:
        c = _with_batch_stats(client) if mode in ("client-batch", "both-batch") else client
        s = _with_batch_stats(server) if mode in ("server-batch", "both-batch") else server
        predictions = torch.cat([s(c(x)).argmax(1) for x in inputs])
        out[f"acc_{mode}"] = float((predictions == labels).float().mean())
    parts = [local_data(cfg, p, num_clients) for p in range(num_clients)]
    train_inputs = torch.cat([data.inputs(torch.arange(len(data.train_labels))) for data in parts]).split(256)
    out["client_stat_error"] = _stat_error(client, list(train_inputs))
    trained_on = _with_batch_stats(client)  # the smashed data the server trained on (client BN in train mode)
    out["server_stat_error"] = _stat_error(server, [trained_on(x) for x in train_inputs])
    return out


def run_cells(out: Path, runs_dir: Path, seeds: tuple[int, ...] = SEEDS) -> pd.DataFrame:
    from pgsl_flower.simulation import simulate

    path = out / "runs.csv"
    runs = load_runs(path, COLUMNS)
    for seed, partitioner, clients, variant in itertools.product(seeds, PARTITIONERS, CLIENTS, VARIANTS):
        key = {"partitioner": partitioner, "clients": clients, "variant": variant, "seed": seed}
        if is_done(runs, key):
            continue
        print(f"bn_federation: {key}", flush=True)

        def body(key: dict[str, Any] = key) -> dict[str, Any]:
            run_dir = runs_dir / "-".join(str(key[k]) for k in KEY)
            summary = simulate(cell_config(**key), key["clients"], run_dir=run_dir)
            metrics = pd.read_csv(run_dir / "metrics.csv")
            return {"final_test_accuracy": summary["final_test_accuracy"],
                    "final_train_accuracy": float(metrics.train_accuracy.iloc[-1]),
                    "round_seconds": float(metrics.round_seconds.median()), "run_dir": str(run_dir),
                    **diagnose(run_dir, key["clients"])}

        runs = run_cell(runs, key, body, path, COLUMNS)
    return runs


def _mean_std(values: pd.Series, scale: float = 100.0, digits: int = 1) -> str:
    values = values.dropna() * scale
    if values.empty:
        return ""
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {std:.{digits}f}"


def write_report(out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = pd.read_csv(out / "runs.csv")
    ok = runs[runs.status == "ok"]
    lines = ["# BatchNorm under federation (`python -m pgsl_flower.experiments.bn_federation`)", "",
             f"MNIST, {TOTAL_SAMPLES} training images split over N clients, batch 32, 2 rounds, 1000 test images, "
             "SplitFed, no defense; mean ± std over seeds. Local steps per client per round: 28 (N=2), 5 (N=10), "
             "1 (N=50).", "",
             "## Test accuracy % by variant", "",
             "| partitioner | clients | " + " | ".join(VARIANTS) + " | seeds |",
             "|---|---|" + "---|" * (len(VARIANTS) + 1)]
    for (partitioner, clients), group in ok.groupby(["partitioner", "clients"]):
        cells = [_mean_std(group[group.variant == v].final_test_accuracy) for v in VARIANTS]
        lines.append(f"| {partitioner} | {clients} | " + " | ".join(cells) + f" | {group.seed.nunique()} |")
    lines += ["", "## Where the paper's BatchNorm fails (variant `batchnorm`)", "",
              "Test accuracy % of the final model with the BN layers of each side normalising with running "
              "statistics (as evaluated) or with the test batch's statistics; and the distance of each side's "
              "running statistics from the population statistics of its input on the clients' training images "
              "(mean over layers and channels of |running mean - mean| / std).", "",
              "| partitioner | clients | train acc | running (eval) | client batch stats | server batch stats | "
              "both batch stats | client stat error | server stat error |", "|---|---|---|---|---|---|---|---|---|"]
    for variant in ("batchnorm", "batchnorm-cumulative", "batchnorm-recalibrated"):
        part = ok[ok.variant == variant]
        if variant != "batchnorm":
            lines.append(f"| *{variant}* | | | | | | | | |")
        for (partitioner, clients), group in part.groupby(["partitioner", "clients"]):
            lines.append(
                f"| {partitioner} | {clients} | {_mean_std(group.final_train_accuracy)} | "
                + " | ".join(_mean_std(group[f"acc_{m}"]) for m in EVAL_MODES)
                + f" | {_mean_std(group.client_stat_error, 1.0, 2)} | {_mean_std(group.server_stat_error, 1.0, 2)} |")
    lines += ["", "## Cost: median seconds per round (training, and the recalibration's three extra exchanges)", "",
              "| clients | " + " | ".join(VARIANTS) + " |", "|---|" + "---|" * len(VARIANTS)]
    for clients, group in ok.groupby("clients"):
        lines.append(f"| {clients} | " + " | ".join(
            f"{group[group.variant == v].round_seconds.median():.1f}" for v in VARIANTS) + " |")
    fig, axes = plt.subplots(1, len(PARTITIONERS), figsize=(11, 4), squeeze=False)
    for ax, partitioner in zip(axes[0], PARTITIONERS, strict=True):
        for variant in VARIANTS:
            stats = ok[(ok.partitioner == partitioner) & (ok.variant == variant)].groupby("clients").final_test_accuracy
            if stats.size().empty:
                continue
            ax.errorbar(stats.mean().index, stats.mean() * 100, yerr=stats.std().fillna(0) * 100, marker="o",
                        capsize=3, label=variant)
        ax.set(xscale="log", xlabel="clients", ylabel="test accuracy %", title=partitioner)
        ax.set_xticks(list(CLIENTS), [str(n) for n in CLIENTS])
        ax.minorticks_off()
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_clients.png", dpi=120)
    plt.close(fig)
    lines += ["", "![accuracy vs clients](accuracy_vs_clients.png)", ""]
    failed = runs[runs.status != "ok"]
    if len(failed):
        lines += ["## Failed cells", ""] + [f"- {dict(r[list(KEY)])}: {r.error}" for _, r in failed.iterrows()]
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/bn_federation"))
    parser.add_argument("--runs-dir", type=Path, default=Path("outputs/bn_federation"))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.report_only:
        run_cells(args.out, args.runs_dir.resolve(), tuple(args.seeds))
    print(write_report(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
