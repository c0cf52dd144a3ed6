"""Cost and quality of PGSL's proximal step, measured side by side in one run.

1. Share of the server step: on a 64-batch of real MNIST smashed data (PGSL
   client inputs through a client part), the median time of the proximal
   recovery alone and of the whole PGSL server step (three towers, fusion).
2. Against a reference RPCA solver from PyPI (pyrpca's inexact ALM for
   principal component pursuit) on the same planted low-rank + sparse matrices
   shaped like ours (16 channels x 784 pixels): time for the batch and relative
   recovery error of the low-rank part, ||L - L*||_F / ||L*||_F.

    python benchmarks/proximal.py                 # needs `pip install -e .[bench]` (make bench)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from pyrpca import rpca_pcp_ialm

from pgsl_flower.config import RunConfig
from pgsl_flower.local_data import local_data
from pgsl_flower.model import ClientNet
from pgsl_flower.pgsl.proximal import default_lambda, robust_pca
from pgsl_flower.pgsl.server_model import PGSLServerModel, recover
from timing import median_seconds  # benchmarks/timing.py, beside this script


def share_of_server_step(cfg: RunConfig, repeats: int) -> dict[str, float]:
    data = local_data(cfg, 0, 10)
    indices = torch.arange(cfg.batch_size)
    torch.manual_seed(cfg.seed)
    with torch.no_grad():
        smashed = ClientNet(1).train()(data.inputs(indices))
    labels = data.labels(indices)
    server = PGSLServerModel(cfg, data.num_classes, torch.device("cpu"))
    proximal = median_seconds(lambda: recover(smashed, server.settings), repeats)
    step = median_seconds(lambda: server.step(smashed, labels), repeats)
    return {"proximal_ms": proximal * 1e3, "server_step_ms": step * 1e3, "share": proximal / step}


def planted(batch: int, m: int, n: int, rank: int, density: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    low = rng.standard_normal((batch, m, rank)) @ rng.standard_normal((batch, rank, n))
    sparse = np.where(rng.random((batch, m, n)) < density, 5.0 * np.sign(rng.standard_normal((batch, m, n))), 0.0)
    return low.astype(np.float32), sparse.astype(np.float32)


def _error(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(np.median(np.linalg.norm(estimate - truth, axis=(1, 2)) / np.linalg.norm(truth, axis=(1, 2))))


def against_reference(batch: int, iterations: list[int], seed: int) -> list[dict[str, float | str]]:
    low, sparse = planted(batch, 16, 784, rank=2, density=0.02, seed=seed)
    data = low + sparse
    lam = default_lambda(16, 784)
    rows: list[dict[str, float | str]] = []
    start = time.perf_counter()
    reference = np.stack([rpca_pcp_ialm(d, lam, verbose=False)[0] for d in data])
    rows.append({"solver": "pyrpca IALM (exact PCP, tol 1e-7)", "seconds": time.perf_counter() - start,
                 "low_rank_error": _error(reference, low)})
    tensor = torch.from_numpy(data)
    robust_pca(tensor, mu=0.55, lam=lam, max_iter=2)  # warm-up (allocator, kernels)
    for max_iter in iterations:
        for mu in (0.55, 0.01):
            start = time.perf_counter()
            result = robust_pca(tensor, mu=mu, lam=lam, max_iter=max_iter, tol=1e-6)
            rows.append({"solver": f"pgsl APG mu={mu} max_iter={max_iter} (ran {result.iterations})",
                         "seconds": time.perf_counter() - start,
                         "low_rank_error": _error(result.low_rank.numpy(), low)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="matrices per batch (one per sample)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    cfg = RunConfig(defense="pgsl", samples_per_client=600, seed=args.seed)
    share = share_of_server_step(cfg, args.repeats)
    print(f"PGSL server step (MNIST, batch {cfg.batch_size}, {torch.get_num_threads()} threads, "
          f"pgsl-max-iter {cfg.pgsl_max_iter}): median {share['server_step_ms']:.0f} ms, "
          f"proximal step {share['proximal_ms']:.0f} ms = {share['share']:.0%} of it")
    rows = against_reference(args.batch, [cfg.pgsl_max_iter, 100], args.seed)
    reference = rows[0]
    print(f"\nplanted 16x784 rank-2 + 2% spikes of 5, {args.batch} matrices:")
    for row in rows:
        speed = reference["seconds"] / row["seconds"]
        print(f"  {row['solver']:48s} {row['seconds']*1e3:8.0f} ms  ({speed:5.1f}x reference)  "
              f"low-rank error {row['low_rank_error']:.4f}")
    if args.json:
        args.json.write_text(json.dumps({"server_step": share, "solvers": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
