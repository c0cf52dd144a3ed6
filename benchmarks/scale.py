"""Scale benchmark: wall time per round, samples/s and peak memory against the client count.

Each client count runs as its own ``python -m pgsl_flower`` process (a fresh Ray
instance): MNIST, Dirichlet(alpha) partitions of the full training set over N
virtual clients, ``--batches-per-round`` batches per sampled client per round.
Peak memory is the largest sum, over the run's whole process tree (driver,
Ray's GCS, raylet, workers), of each process's proportional set size (PSS,
from ``/proc/<pid>/smaps_rollup``: shared pages are split between the
processes that share them, so nothing is counted twice), sampled every 0.25 s.

    python benchmarks/scale.py                         # N = 10 50 100 200, CPU
    python benchmarks/scale.py --device cuda           # server step on the GPU
    python benchmarks/scale.py --clients 200 --run-config "defense='pgsl'"
    python benchmarks/scale.py --baseline "max-in-flight=0"   # before/after the in-flight cap
    python benchmarks/scale.py --clients 10 100 500 1000 --clients-per-round 10   # bounded rounds

Round time is the median over rounds 2.. (round 1 pays Ray's and the data's
warm-up); samples/s is training samples over training seconds in those rounds.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pgsl_flower.experiments.memory import run_with_peak_memory  # noqa: E402


def run_once(num_clients: int, args: argparse.Namespace, workdir: Path, extra: str = "", tag: str = "") -> dict[str, float]:
    run_dir = workdir / f"n{num_clients}{tag}"
    sampling = f"fraction-train={args.fraction_train}"
    if args.clients_per_round:  # a bounded round: the same K sampled clients' work at every N
        per_round = min(args.clients_per_round, num_clients)
        sampling = f"fraction-train={per_round / num_clients!r} min-train-clients={per_round}"
    config = (
        f"partitioner='dirichlet' alpha={args.alpha} samples-per-client=0 num-rounds={args.rounds} "
        f"batches-per-round={args.batches_per_round} {sampling} "
        f"test-samples={args.test_samples} local-eval-samples=32 device='{args.device}' "
        f"min-available-clients=1 bn-recalibration='off' {args.run_config} {extra}"
    )
    command = [sys.executable, "-m", "pgsl_flower", "--num-clients", str(num_clients),
               "--run-dir", str(run_dir), "--run-config", config]
    if args.client_gpus:
        command += ["--client-gpus", str(args.client_gpus)]
    log = workdir / f"n{num_clients}{tag}.log"
    started = time.perf_counter()
    code, peak = run_with_peak_memory(command, log, ROOT)
    wall = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"N={num_clients} failed (exit {code}); log: {log}")
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    steady = rows[1:] or rows
    return {
        "clients": num_clients,
        "sampled": int(steady[-1]["clients"]),
        "round_s": statistics.median(float(r["round_seconds"]) for r in steady),
        "samples_per_s": sum(int(r["samples"]) for r in steady) / sum(float(r["train_seconds"]) for r in steady),
        "peak_gib": peak / 2**30,
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50, 100, 200])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches-per-round", type=int, default=1)
    parser.add_argument("--fraction-train", type=float, default=1.0)
    parser.add_argument("--clients-per-round", type=int, default=0,
                        help="sample this many clients per round at every N (overrides --fraction-train)")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--client-gpus", type=float, default=0.0)
    parser.add_argument("--run-config", default="", help="extra 'key=value ...' for every run")
    parser.add_argument("--baseline", default="", help="also run with these 'key=value' overrides, side by side")
    parser.add_argument("--baseline-clients", type=int, nargs="+", default=[10, 200],
                        help="client counts that get the --baseline run too")
    parser.add_argument("--keep", type=Path, default=None, help="keep run folders and logs here")
    args = parser.parse_args(argv)

    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="pgsl-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results, baselines = [], {}
    for num_clients in args.clients:
        if args.baseline and num_clients in args.baseline_clients:
            baselines[num_clients] = run_once(num_clients, args, workdir, args.baseline, tag="-baseline")
            print(f"N={num_clients} baseline ({args.baseline}): {baselines[num_clients]}", flush=True)
        result = run_once(num_clients, args, workdir)
        results.append(result)
        print(f"N={num_clients}: {result}", flush=True)

    base = results[0]
    sampled = f"{args.clients_per_round} clients/round" if args.clients_per_round else f"fraction-train {args.fraction_train}"
    print(f"\nscale benchmark ({args.device}, {args.batches_per_round} batches/client/round, "
          f"{sampled}, median of rounds 2..{args.rounds}):")
    print(f"{'N':>5} {'sampled':>7} {'round s':>8} {'x':>6} {'samples/s':>10} {'x':>6} {'peak GiB':>9} {'x':>6}")
    for r in results:
        print(f"{r['clients']:>5} {r['sampled']:>7} {r['round_s']:>8.1f} {r['round_s'] / base['round_s']:>6.2f} "
              f"{r['samples_per_s']:>10.1f} {r['samples_per_s'] / base['samples_per_s']:>6.2f} "
              f"{r['peak_gib']:>9.2f} {r['peak_gib'] / base['peak_gib']:>6.2f}")
    print(f"(x: ratio to N={base['clients']}; outputs in {workdir})")
    for num_clients, before in baselines.items():
        after = next(r for r in results if r["clients"] == num_clients)
        print(f"N={num_clients}: round s {before['round_s']:.1f} with '{args.baseline}' -> {after['round_s']:.1f} "
              f"(speed-up x{before['round_s'] / after['round_s']:.2f}); peak GiB {before['peak_gib']:.2f} -> "
              f"{after['peak_gib']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
