"""mu sweep of the proximal step on attacked images (the paper's Fig. 3 analog).

For each dataset, test images are attacked exactly as the evaluation harness
attacks them (surrogate trained on the first 6000 training images, the run's
pixel-attack settings); each attacked image (H x W) is split by robust PCA
(:func:`robust_pca`, lambda = 1/sqrt(max(H, W))) for mu = 0.05 ... 0.95; the
recovered low-rank part, clipped to [0, 1], is compared with the clean image.
MSE is on [0, 1] pixels (mean over images, with the standard deviation). The
MSE of the attacked image itself is the reference line.

    python -m pgsl_flower.experiments.mu_sweep            # writes results/mu_sweep/
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch

from pgsl_flower.config import RunConfig
from pgsl_flower.local_data import harness_attacked, load_datasets
from pgsl_flower.pgsl.proximal import robust_pca

MUS = tuple(round(0.05 + 0.1 * i, 2) for i in range(10))


def attacked_test_images(cfg: RunConfig, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, attacked) test images in [0, 1], (N, H, W)."""
    train, test = load_datasets(cfg)
    images = test.images[:count]
    attacked = harness_attacked(cfg, train, images)["other"].float()
    return images[:, 0].float() / 255, attacked[:, 0]


def sweep(clean: torch.Tensor, attacked: torch.Tensor, max_iter: int) -> list[dict[str, float]]:
    rows = []
    attacked_mse = ((attacked - clean) ** 2).mean(dim=(1, 2))
    for mu in MUS:
        result = robust_pca(attacked.double(), mu=mu, max_iter=max_iter, tol=1e-6)
        mse = ((result.low_rank.float().clamp(0, 1) - clean) ** 2).mean(dim=(1, 2))
        rows.append({
            "mu": mu,
            "mse_mean": float(mse.mean()), "mse_std": float(mse.std()),
            "attacked_mse_mean": float(attacked_mse.mean()),
            "iterations": result.iterations,
        })
    return rows


def plot(results: dict[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6))
    for ax, (name, rows) in zip(np.atleast_1d(axes), results.items(), strict=True):
        mus = [r["mu"] for r in rows]
        ax.errorbar(mus, [r["mse_mean"] for r in rows], yerr=[r["mse_std"] for r in rows], marker="o", capsize=3,
                    label="recovered (low-rank part)")
        ax.axhline(rows[0]["attacked_mse_mean"], color="gray", linestyle="--", label="attacked image")
        ax.set_title(name)
        ax.set_xlabel("mu")
        ax.set_ylabel("MSE vs clean image ([0, 1] pixels)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/mu_sweep"))
    parser.add_argument("--mnist-images", type=int, default=1000)
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    results: dict[str, list[dict[str, float]]] = {}
    for dataset, count, size in (("mnist", args.mnist_images, 0), ("mias", 50, 128)):
        # the plain MIAS images, as committed (before the breast crop existed)
        cfg = RunConfig(dataset=dataset, image_size=size, defense="pgsl", seed=args.seed,
                        breast_crop="off" if dataset == "mias" else "auto", laterality="off" if dataset == "mias" else "auto")
        clean, attacked = attacked_test_images(cfg, count)
        results[f"{dataset} ({len(clean)} test images, {clean.shape[-1]}x{clean.shape[-1]})"] = sweep(
            clean, attacked, args.max_iter)
    with (args.out / "mu_sweep.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dataset", "mu", "mse_mean", "mse_std", "attacked_mse_mean", "iterations"])
        for name, rows in results.items():
            for r in rows:
                writer.writerow([name.split()[0], r["mu"], f"{r['mse_mean']:.6f}", f"{r['mse_std']:.6f}",
                                 f"{r['attacked_mse_mean']:.6f}", r["iterations"]])
    plot(results, args.out / "mu_sweep.png")
    for name, rows in results.items():
        best = min(rows, key=lambda r: r["mse_mean"])
        print(f"{name}: best mu {best['mu']} MSE {best['mse_mean']:.5f} ± {best['mse_std']:.5f} "
              f"(attacked image: {rows[0]['attacked_mse_mean']:.5f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
