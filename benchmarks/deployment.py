"""Deployment vs simulation: per-exchange latency and training samples/s, side by side.

Deployment: a real ``flower-superlink`` (TLS, SuperNode authentication) and one
``flower-supernode`` per site on 127.0.0.1 (:class:`pgsl_flower.pilot.local.LocalPilot`),
each site on its own folder of MNIST images. Simulation: the same run config in
Flower's Ray simulation with the same number of clients and training images
per client. One round per run, for each ``batches-per-message`` k.

Per-exchange latency = the round's training seconds / training messages per
client (clients exchange in parallel; each one's messages are sequential).
Samples/s = training samples of all clients / training seconds.

    python benchmarks/deployment.py                 # 3 sites, k = 1 8, 320 images per site
    python benchmarks/deployment.py --chunks 1 8 32 --per-site 1088
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pgsl_flower.data import load_dataset, resolve_data_root  # noqa: E402
from pgsl_flower.data.site_folder import write_site_folder  # noqa: E402
from pgsl_flower.pilot.local import LocalPilot, copy_app  # noqa: E402
from pgsl_flower.simulation import simulate  # noqa: E402


def _round(run_dir: Path) -> dict[str, float]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        row = list(csv.DictReader(handle))[-1]
    seconds, messages = float(row["train_seconds"]), int(row["messages_per_client"])
    return {
        "exchange_s": seconds / messages,
        "samples_per_s": int(row["samples"]) / seconds,
        "messages": messages,
        "round_s": float(row["round_seconds"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--per-site", type=int, default=320, help="images per site (10%% held out)")
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    train, _ = load_dataset("mnist", None)
    base = {"num-rounds": 1, "batch-size": args.batch_size, "local-eval-samples": 16, "test-samples": 500,
            "min-available-clients": args.sites, "reply-timeout": 600.0, "seed": 1}
    results: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="pgsl-deploy-bench-") as tmp:
        work = Path(tmp)
        sites = {
            f"site-{k}": write_site_folder(train, range(k * args.per_site, (k + 1) * args.per_site),
                                           work / "data" / f"site-{k}")
            for k in range(args.sites)
        }
        for k in args.chunks:
            run_dir = work / f"sim-k{k}"
            simulate({**base, "samples-per-client": args.per_site, "batches-per-message": k}, args.sites,
                     run_dir=run_dir)
            results["simulation", k] = _round(run_dir)
        pilot = LocalPilot(work / "pilot", sites, copy_app(ROOT, work / "app"),
                           env={"PGSL_DATA_DIR": str(resolve_data_root())})
        with pilot:
            pilot.start()
            for k in args.chunks:
                output = work / f"deploy-k{k}"
                result = pilot.run({**base, "samples-per-client": 0, "batches-per-message": k,
                                    "output-dir": str(output)})
                if result.status != "finished:completed":
                    print(result.log[-3000:], file=sys.stderr)
                    raise SystemExit(f"deployment run k={k}: {result.status} {result.details}")
                (run_dir,) = output.iterdir()
                results["deployment", k] = _round(run_dir)

    print(f"\n{args.sites} sites, {args.per_site} MNIST images each, batch {args.batch_size}, one round; "
          "exchange = training seconds / training messages per client\n")
    print("| k | mode | messages/client | s per exchange | samples/s | round s |")
    print("|---|---|---|---|---|---|")
    for k in args.chunks:
        for mode in ("simulation", "deployment"):
            r = results[mode, k]
            print(f"| {k} | {mode} | {r['messages']} | {r['exchange_s']:.2f} | {r['samples_per_s']:.1f} "
                  f"| {r['round_s']:.1f} |")
    print("\n| k | deployment / simulation, s per exchange | deployment / simulation, samples/s |")
    print("|---|---|---|")
    for k in args.chunks:
        sim, dep = results["simulation", k], results["deployment", k]
        print(f"| {k} | x{dep['exchange_s'] / sim['exchange_s']:.1f} | x{dep['samples_per_s'] / sim['samples_per_s']:.2f} |")
    first, last = args.chunks[0], args.chunks[-1]
    gain = results["deployment", last]["samples_per_s"] / results["deployment", first]["samples_per_s"]
    print(f"\ndeployment samples/s, k={last} vs k={first}: x{gain:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
