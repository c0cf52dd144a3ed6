"""Centralized reference: the same network and recipe trained in one process, without federation.

It is the ceiling a federated figure is read against: the client part and the
server part of the run (``client-norm``, ``server-tower``, ``bn-momentum``) as one
network, one Adam over both (Adam is per parameter, so this equals the two
optimizers of a split run), the same batches (the whole training set as one
client: :func:`pgsl_flower.local_data.client_batch_indices`), augmentation,
class balance, learning-rate decay and test inputs. One epoch is one pass over
the training set, as one federated round is (``num-rounds`` epochs). Only
``defense = "none"``.

    python -m pgsl_flower.experiments.centralized -c "dataset='mias' num-rounds=30" --folds all --seeds 1
    python -m pgsl_flower.experiments.centralized -c "dataset='breastmnist' num-rounds=20" --seeds 1 2 3

writes ``<out>/runs.csv`` (one row per fold and seed), ``curves.csv`` (every
epoch), ``predictions.csv`` (every test prediction, so cross-validation
figures pool all folds), ``config.json`` and ``report.md`` with ``curves.png``.

    python -m pgsl_flower.experiments.centralized --summarize results/centralized

writes ``results/centralized/recipes.md``: one line per recipe folder below it, its
scores pooled over folds, so recipes can be compared side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.nn import functional as F

from pgsl_flower.classification_metrics import SCALAR_METRICS, classification_report
from pgsl_flower.config import ConfigError, RunConfig, parse_run_config
from pgsl_flower.local_data import (
    augment_seed,
    batches_per_epoch,
    client_batch_indices,
    load_datasets,
    local_data,
)
from pgsl_flower.model import SplitNet, build_client_net, build_server_net, decayed_step, make_optimizer
from pgsl_flower.strategy import balanced_class_weights

EVAL_BATCH = 256


@torch.no_grad()
def predict(model: SplitNet, inputs: torch.Tensor) -> torch.Tensor:
    """Softmax scores in eval mode (BatchNorm running statistics)."""
    model.eval()
    return torch.cat([model(inputs[i : i + EVAL_BATCH]).softmax(1) for i in range(0, len(inputs), EVAL_BATCH)])


def train_centralized(cfg: RunConfig, log: Any = print) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Train and evaluate after every epoch; returns (one curve row per epoch, final test predictions)."""
    if cfg.defense != "none":
        raise ConfigError(f"the centralized reference trains without a defense; got defense {cfg.defense!r}")
    from pgsl_flower.server_app import harness_inputs

    whole = dataclasses.replace(cfg, samples_per_client=0, holdout_fraction=0.0)
    train_set, test_set = load_datasets(whole)
    data = local_data(whole, 0, 1)  # the whole training set as one client: the same batches and inputs
    torch.manual_seed(cfg.seed)
    channels, classes = train_set.images.shape[1], train_set.classes
    model = SplitNet(channels, len(classes), build_client_net(cfg, channels), build_server_net(cfg, len(classes)))
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    counts = torch.bincount(data.train_labels, minlength=len(classes))
    weight = balanced_class_weights(counts.tolist()) if cfg.resolved_class_balance == "loss" else None
    test_inputs = harness_inputs(cfg, train_set, test_set.images)
    steps = batches_per_epoch(int(data.train_labels.shape[0]), cfg.batch_size)
    curves, counter, started = [], 0, time.perf_counter()
    for epoch in range(1, cfg.num_rounds + 1):
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for _ in range(steps):
            index = client_batch_indices(whole, data, 0, counter)
            inputs = data.inputs(index, augment_seed=augment_seed(whole, 0, counter))
            labels = data.labels(index)
            logits = model(inputs)
            loss = F.cross_entropy(logits, labels, weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            decayed_step(optimizer, cfg.lr, cfg.lr_decay, counter)
            counter += 1
            loss_sum += float(loss) * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
        scores = predict(model, test_inputs)
        report = classification_report(scores, test_set.labels, classes)
        curves.append({"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                       **{f"test_{k}": v for k, v in report.scalars().items()},
                       "seconds": round(time.perf_counter() - started, 2)})
        log(f"  epoch {epoch}/{cfg.num_rounds}: train loss {loss_sum / seen:.4f} acc {correct / seen:.3f} | "
            f"test acc {report.accuracy:.3f} balanced {report.balanced_accuracy:.3f} AUROC {report.auroc:.3f}")
    predictions = pd.DataFrame({"label": test_set.labels.numpy(), "predicted": scores.argmax(1).numpy(),
                                **{f"p_{name}": scores[:, k].numpy() for k, name in enumerate(classes)}})
    return curves, predictions


def pooled_report(predictions: pd.DataFrame, classes: tuple[str, ...]):  # noqa: ANN201
    """The classification report of predictions pooled over folds (one score per image)."""
    scores = torch.tensor(predictions[[f"p_{name}" for name in classes]].to_numpy())
    return classification_report(scores, torch.tensor(predictions.label.to_numpy()), classes)


def run(config: dict[str, Any], folds: list[int], seeds: list[int], out: Path) -> pd.DataFrame:
    """Every (seed, fold); writes runs.csv, curves.csv, predictions.csv and report.md under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    runs, curves, predictions = [], [], []
    for seed in seeds:
        for fold in folds:
            cfg = parse_run_config({**config, "seed": seed, "fold": fold})
            print(f"{cfg.dataset} seed {seed} fold {fold}:", flush=True)
            rows, preds = train_centralized(cfg)
            curves += [{"seed": seed, "fold": fold, **row} for row in rows]
            predictions.append(preds.assign(seed=seed, fold=fold))
            runs.append({"seed": seed, "fold": fold, **{k: v for k, v in rows[-1].items() if k != "epoch"}})
    runs_frame = pd.DataFrame(runs)
    runs_frame.to_csv(out / "runs.csv", index=False)
    (out / "config.json").write_text(json.dumps({"run-config": config, "folds": folds, "seeds": seeds}, indent=2) + "\n")
    pd.DataFrame(curves).to_csv(out / "curves.csv", index=False)
    pd.concat(predictions).to_csv(out / "predictions.csv", index=False)
    write_report(out, config)
    return runs_frame


def write_report(out: Path, config: dict[str, Any]) -> str:
    """``report.md`` and ``curves.png`` from the CSVs in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = pd.read_csv(out / "runs.csv")
    curves = pd.read_csv(out / "curves.csv")
    predictions = pd.read_csv(out / "predictions.csv")
    classes = tuple(c[2:] for c in predictions.columns if c.startswith("p_"))
    lines = [f"# Centralized reference: `{config}`", "",
             "Mean ± std over the runs (folds x seeds) of the final epoch's test scores.", "",
             "| metric | mean ± std | runs |", "|---|---|---|"]
    for name in SCALAR_METRICS:
        values = runs[f"test_{name}"]
        lines.append(f"| {name} | {values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f} | {len(values)} |")
    lines += ["", "Pooled over folds, per seed (every test image predicted once per seed):", "",
              "| seed | images | accuracy | balanced accuracy | macro-F1 | AUROC | recall per class |", "|---|---|---|---|---|---|---|"]
    for seed, group in predictions.groupby("seed"):
        report = pooled_report(group, classes)
        recall = ", ".join(f"{c} {float(r):.2f}" for c, r in zip(classes, report.recall, strict=True))
        lines.append(f"| {seed} | {report.total} | {report.accuracy:.4f} | {report.balanced_accuracy:.4f} | "
                     f"{report.macro_f1:.4f} | {report.auroc:.4f} | {recall} |")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for (seed, fold), group in curves.groupby(["seed", "fold"]):
        axes[0].plot(group.epoch, group.train_loss, alpha=0.6, label=f"s{seed} f{fold}")
        axes[1].plot(group.epoch, group.test_balanced_accuracy, alpha=0.6)
    axes[0].set(xlabel="epoch", ylabel="train loss", title="training loss")
    axes[1].set(xlabel="epoch", ylabel="test balanced accuracy", title="test balanced accuracy")
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)
    lines += ["", "![learning curves](curves.png)", ""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    return text


def summarize(root: Path) -> str:
    """``root/recipes.md``: every recipe folder's configuration and pooled scores, best balanced accuracy first."""
    rows = []
    for folder in sorted(p.parent for p in root.glob("*/predictions.csv")):
        config = json.loads((folder / "config.json").read_text())
        predictions = pd.read_csv(folder / "predictions.csv")
        runs = pd.read_csv(folder / "runs.csv")
        classes = tuple(c[2:] for c in predictions.columns if c.startswith("p_"))
        reports = [pooled_report(group, classes) for _, group in predictions.groupby("seed")]
        rows.append((
            sum(r.balanced_accuracy for r in reports) / len(reports), folder.name, config, reports[0].total,
            sum(r.accuracy for r in reports) / len(reports), sum(r.auroc for r in reports) / len(reports),
            ", ".join(f"{c} {float(v):.2f}" for c, v in zip(classes, reports[0].recall, strict=True)),
            runs.seconds.median(),
        ))
    lines = ["# Centralized recipes (`python -m pgsl_flower.experiments.centralized --summarize "
             f"{root}`)", "",
             "Scores pooled over each recipe's folds (every test image predicted once per seed), mean over seeds; "
             "recall per class of the first seed. Best balanced accuracy first.", "",
             "| recipe | run-config | folds | images | balanced accuracy | accuracy | AUROC | recall per class | "
             "s per run |", "|---|---|---|---|---|---|---|---|---|"]
    for balanced, name, config, total, accuracy, area, recall, seconds in sorted(rows, key=lambda r: -r[0]):
        settings = " ".join(f"{k}={v!r}" for k, v in config["run-config"].items())
        lines.append(f"| [{name}]({name}/report.md) | `{settings}` | {config['folds']} | {total} | {balanced:.3f} | "
                     f"{accuracy:.3f} | {area:.3f} | {recall} | {seconds:.0f} |")
    text = "\n".join(lines) + "\n"
    (root / "recipes.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgsl_flower.experiments.centralized", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-config", "-c", action="append", default=[], help="preset .toml and/or 'key=value ...'")
    parser.add_argument("--folds", nargs="+", default=["-1"], help="fold ids, or 'all' (0..cv-folds-1); -1: fixed split")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--out", type=Path, default=Path("outputs/centralized"))
    parser.add_argument("--summarize", type=Path, default=None, help="write <dir>/recipes.md from its recipe folders")
    args = parser.parse_args(argv)
    if args.summarize is not None:
        print(summarize(args.summarize))
        return 0
    from flwr.common.config import parse_config_args

    config: dict[str, Any] = {}
    for item in args.run_config:
        config.update(parse_config_args([item]))
    try:
        base = parse_run_config(config)
        folds = list(range(base.cv_folds)) if args.folds == ["all"] else [int(f) for f in args.folds]
        for fold in folds:
            parse_run_config({**config, "fold": fold})
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run(config, folds, args.seeds, args.out)
    print((args.out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
