"""Throughput of federated split learning vs centralized training of the same network.

Measured side by side in one run, on the same data (the union of the clients'
training splits), the same batch size and optimizer:

- federated: a real Flower simulation (Ray backend), SplitFed, N clients; the
  training phase of each round (``train_seconds`` in metrics.csv, evaluation
  excluded) gives samples/s per round;
- centralized: one process, the unsplit network (client part + server part),
  timed in windows of the same number of samples, half before and half after
  the federated run (the machine is shared and noisy).

Prints the medians and their ratio (federated / centralized). ``--server-threads``
runs the federated side once per value, with the server (the simulation's driver
process) at that many torch threads; the centralized side keeps torch's default.

    python benchmarks/throughput.py                 # N=10, MNIST, 3 rounds
    python benchmarks/throughput.py --clients 10 --samples-per-client 2000
    python benchmarks/throughput.py --server-threads 0 1    # server at torch's default, then at 1 thread
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from pgsl_flower.config import RunConfig
from pgsl_flower.local_data import local_data
from pgsl_flower.model import SplitNet, make_optimizer, prepare_input
from pgsl_flower.simulation import simulate


def centralized_windows(cfg: RunConfig, num_clients: int, windows: int) -> list[float]:
    """samples/s of single-process training, one value per window (one epoch of the union)."""
    parts = [local_data(cfg, i, num_clients) for i in range(num_clients)]
    images = torch.cat([p.train_images for p in parts])
    labels = torch.cat([p.train_labels for p in parts])
    torch.manual_seed(cfg.seed)
    net = SplitNet(images.shape[1], parts[0].num_classes)
    optimizer = make_optimizer(net, cfg.lr, cfg.weight_decay)
    net.train()
    rates = []
    for window in range(windows):
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(window))
        start = time.perf_counter()
        for begin in range(0, len(labels), cfg.batch_size):
            idx = order[begin : begin + cfg.batch_size]
            x = prepare_input(images[idx].float().div_(255.0))
            loss = F.cross_entropy(net(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        rates.append(len(labels) / (time.perf_counter() - start))
    return rates


def federated_rounds(cfg: RunConfig, num_clients: int, run_dir: Path) -> list[float]:
    """samples/s of the training phase of each round of a real simulation."""
    simulate(cfg, num_clients, run_dir=run_dir)
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return [int(r["samples"]) / float(r["train_seconds"]) for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--samples-per-client", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--schedule", default="splitfed", choices=["splitfed", "sequential"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--server-threads", type=int, nargs="+", default=[0], metavar="N",
                        help="torch threads of the federated run's server (the simulation's driver process; "
                             "0: torch's default); several values run one federated run each, side by side")
    args = parser.parse_args(argv)
    if any(n < 0 for n in args.server_threads):
        parser.error(f"--server-threads {args.server_threads}: 0 (torch's default) or a positive count")

    cfg = RunConfig(
        num_rounds=args.rounds,
        samples_per_client=args.samples_per_client,
        schedule=args.schedule,
        local_eval_samples=0,
        test_samples=500,
        seed=args.seed,
        bn_recalibration="off",  # training throughput only, as centralized training has no such step
    )
    default_threads = torch.get_num_threads()
    half = max(args.rounds // 2, 1)
    central = centralized_windows(cfg, args.clients, half)
    federated: dict[int, list[float]] = {}
    for threads in args.server_threads:
        torch.set_num_threads(threads or default_threads)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                federated[threads] = federated_rounds(cfg, args.clients, Path(tmp) / "run")
        finally:
            torch.set_num_threads(default_threads)
    central += centralized_windows(cfg, args.clients, args.rounds - half)

    central_median = statistics.median(central)
    result = {
        "clients": args.clients,
        "schedule": args.schedule,
        "samples_per_round": int(round(cfg.samples_per_client * (1 - cfg.holdout_fraction))) * args.clients,
        "batch_size": cfg.batch_size,
        "torch_threads": default_threads,
        "centralized_samples_per_s": [round(r, 1) for r in central],
        "centralized_median": round(central_median, 1),
        "federated": [],
    }
    for threads, rates in federated.items():
        fed_median = statistics.median(rates)
        result["federated"].append({
            "server_threads": threads or default_threads,
            "samples_per_s": [round(r, 1) for r in rates],
            "median": round(fed_median, 1),
            "ratio_federated_over_centralized": round(fed_median / central_median, 3),
        })
        print(f"federated   ({args.schedule}, N={args.clients}, server threads {threads or default_threads}): "
              f"median {fed_median:8.1f} samples/s  {[round(r, 1) for r in rates]}")
    print(f"centralized (1 process, {default_threads} threads):  median {central_median:8.1f} samples/s  "
          f"{result['centralized_samples_per_s']}")
    for entry in result["federated"]:
        print(f"ratio federated (server threads {entry['server_threads']}) / centralized: "
              f"{entry['ratio_federated_over_centralized']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
