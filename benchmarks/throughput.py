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
    python benchmarks/throughput.py --client-priority normal idle   # ClientApps at normal, then idle priority
    python benchmarks/throughput.py --probe         # also: where the server's time goes in the federated run
    python benchmarks/throughput.py --ceilings      # also: the ratios the parts' own speeds allow

``--probe`` times every server step of the federated run (wall clock, the calling
thread's CPU, and its context switches from ``/proc/thread-self/schedstat``) and
the time the server spends waiting for clients' replies, and prints their medians
and sums over the rounds after the first.

``--ceilings`` times, in this process and alone on the machine, one training step of
the unsplit network (centralized), the server part's step and the client part's
step (forward, then backward of the server's dL/dh), each at 1 thread and at torch's
default, on one batch of the same data, and prints two ceilings of the ratio that
follow from them: the server at 1 thread with the clients on the other cores
(centralized step / server step at 1 thread), and every part at the default threads
one after another with no overhead at all (centralized step / (server + client step)).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.nn import functional as F

from pgsl_flower import strategy, transport
from pgsl_flower.config import RunConfig
from pgsl_flower.cpu_scheduling import CLIENT_PRIORITIES
from pgsl_flower.local_data import local_data
from pgsl_flower.model import SplitNet, make_optimizer, prepare_input
from pgsl_flower.simulation import simulate
from timing import median_seconds  # benchmarks/timing.py, beside this script


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


def _context_switches() -> int | None:
    """The calling thread's context switches so far (Linux schedstat), or None."""
    try:
        return int(Path("/proc/thread-self/schedstat").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return None


class ServerProbe:
    """Times :meth:`ServerModel.step` and :meth:`Courier.wait` while active (``--probe``)."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, float, int | None]] = []  # wall s, thread CPU s, context switches
        self.waits: list[float] = []

    def _timed_step(self, step: Callable) -> Callable:
        def timed(model: strategy.ServerModel, *args: object):
            wall, cpu, switches = time.perf_counter(), time.thread_time(), _context_switches()
            result = step(model, *args)
            after = _context_switches()
            self.steps.append((time.perf_counter() - wall, time.thread_time() - cpu,
                               None if after is None or switches is None else after - switches))
            return result
        return timed

    def _timed_wait(self, wait: Callable) -> Callable:
        def timed(courier: transport.Courier, *args: object):
            start = time.perf_counter()
            try:
                return wait(courier, *args)
            finally:
                self.waits.append(time.perf_counter() - start)
        return timed

    @contextlib.contextmanager
    def active(self) -> Iterator["ServerProbe"]:
        step, wait = strategy.ServerModel.step, transport.Courier.wait
        strategy.ServerModel.step = self._timed_step(step)
        transport.Courier.wait = self._timed_wait(wait)
        try:
            yield self
        finally:
            strategy.ServerModel.step, transport.Courier.wait = step, wait

    def summary(self, rounds: int) -> dict[str, float | int | None]:
        """Medians over the steps after the first round's (the first is warm-up), waits summed per round."""
        later = self.steps[len(self.steps) // rounds:]  # rounds >= 2 (checked by main)
        waits = self.waits[len(self.waits) // rounds:]
        switches = [s for _, _, s in later if s is not None]
        return {
            "step_wall_ms_median": round(1000 * statistics.median(w for w, _, _ in later), 1),
            "step_wall_ms_mean": round(1000 * statistics.fmean(w for w, _, _ in later), 1),
            "step_thread_cpu_ms_median": round(1000 * statistics.median(c for _, c, _ in later), 1),
            "step_context_switches_median": statistics.median(switches) if switches else None,
            "steps_s_per_round": round(sum(w for w, _, _ in later) / (rounds - 1), 2),
            "reply_wait_s_per_round": round(sum(waits) / (rounds - 1), 2),
        }


def step_ceilings(cfg: RunConfig, num_clients: int, default_threads: int) -> dict[str, object]:
    """ms per training step of the whole network, the server part and the client part
    (``--ceilings``), at 1 thread and at ``default_threads``, and the ratio ceilings."""
    data = local_data(cfg, 0, num_clients)
    x = prepare_input(data.train_images[: cfg.batch_size].float().div_(255.0))
    y = data.train_labels[: cfg.batch_size]
    torch.manual_seed(cfg.seed)
    net = SplitNet(data.train_images.shape[1], data.num_classes)
    net.train()
    full_opt, server_opt, client_opt = (make_optimizer(m, cfg.lr, cfg.weight_decay) for m in (net, net.server, net.client))
    smashed = net.client(x).detach()
    probe = smashed.clone().requires_grad_(True)
    F.cross_entropy(net.server(probe), y).backward()
    grad = probe.grad.detach()

    def full() -> None:
        full_opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        full_opt.step()

    def server() -> None:
        h = smashed.clone().requires_grad_(True)
        server_opt.zero_grad(set_to_none=True)
        F.cross_entropy(net.server(h), y).backward()
        server_opt.step()

    def client() -> None:
        client_opt.zero_grad(set_to_none=True)
        net.client(x).backward(grad)
        client_opt.step()

    steps_ms: dict[int, dict[str, float]] = {}  # torch threads -> part -> ms
    try:
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            steps_ms[threads] = {name: round(1000 * median_seconds(fn, repeats=30, warmup=5), 1)
                                 for name, fn in (("centralized", full), ("server", server), ("client", client))}
    finally:
        torch.set_num_threads(default_threads)
    alone = steps_ms[default_threads]
    return {
        "steps_ms": steps_ms,
        "ceiling_server_1_thread": round(alone["centralized"] / steps_ms[1]["server"], 3),
        "ceiling_serial_no_overhead": round(alone["centralized"] / (alone["server"] + alone["client"]), 3),
    }


def federated_rounds(cfg: RunConfig, num_clients: int, run_dir: Path, client_priority: str = "normal") -> list[float]:
    """samples/s of the training phase of each round of a real simulation."""
    simulate(cfg, num_clients, run_dir=run_dir, client_priority=client_priority)
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
    parser.add_argument("--client-priority", nargs="+", default=["normal"], choices=CLIENT_PRIORITIES,
                        help="simulate(client_priority=...) of the federated run; several values run one "
                             "federated run each (for each --server-threads value)")
    parser.add_argument("--ceilings", action="store_true",
                        help="also time the parts' steps alone and print the ratios they allow")
    parser.add_argument("--probe", action="store_true",
                        help="also time the server's steps and its waits for replies in each federated run")
    args = parser.parse_args(argv)
    if args.probe and args.rounds < 2:
        parser.error("--probe needs --rounds >= 2 (the first round is left out as warm-up)")
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
    federated: dict[tuple[int, str], list[float]] = {}
    probes: dict[tuple[int, str], ServerProbe] = {}
    for setting in [(t, p) for t in args.server_threads for p in args.client_priority]:
        threads, priority = setting
        torch.set_num_threads(threads or default_threads)
        probe = probes[setting] = ServerProbe()
        try:
            with tempfile.TemporaryDirectory() as tmp, (probe.active() if args.probe else contextlib.nullcontext()):
                federated[setting] = federated_rounds(cfg, args.clients, Path(tmp) / "run", priority)
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
    for (threads, priority), rates in federated.items():
        fed_median = statistics.median(rates)
        entry = {
            "server_threads": threads or default_threads,
            "client_priority": priority,
            "samples_per_s": [round(r, 1) for r in rates],
            "median": round(fed_median, 1),
            "ratio_federated_over_centralized": round(fed_median / central_median, 3),
        }
        if args.probe:
            entry["probe"] = probes[threads, priority].summary(args.rounds)
        result["federated"].append(entry)
        print(f"federated   ({args.schedule}, N={args.clients}, server threads {threads or default_threads}, "
              f"client priority {priority}): "
              f"median {fed_median:8.1f} samples/s  {[round(r, 1) for r in rates]}")
        if args.probe:
            print(f"  server probe (rounds 2-{args.rounds}): {entry['probe']}")
    print(f"centralized (1 process, {default_threads} threads):  median {central_median:8.1f} samples/s  "
          f"{result['centralized_samples_per_s']}")
    for entry in result["federated"]:
        print(f"ratio federated (server threads {entry['server_threads']}, client priority "
              f"{entry['client_priority']}) / centralized: "
              f"{entry['ratio_federated_over_centralized']:.3f}")
    if args.ceilings:
        ceilings = result["ceilings"] = step_ceilings(cfg, args.clients, default_threads)
        for threads, parts in ceilings["steps_ms"].items():
            print(f"steps alone at {threads} thread(s), ms per batch of {cfg.batch_size}: {parts}")
        print(f"ceiling, server at 1 thread beside the clients: {ceilings['ceiling_server_1_thread']:.3f}; "
              f"ceiling, all parts one after another, no overhead: {ceilings['ceiling_serial_no_overhead']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
