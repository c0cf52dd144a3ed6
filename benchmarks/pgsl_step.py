"""Where PGSL's server step spends its time, and PGSL vs SplitFed round time, side by side.

1. ``step`` (default): one server step on a batch of real MNIST smashed data at the
   ``make run`` shapes (batch 64 of 64 x 14 x 14, PGSL preset: 10 proximal iterations),
   median over repeats, on this process's torch threads:

   - the plain server step (one tower, SplitFed) and the PGSL server step, and their ratio;
     with two or more threads the PGSL step runs its towers in two lanes
     (``pgsl/lanes.py``), and the same step with the towers one after another
     (``two_lanes=False``) is timed beside it;
   - the PGSL step's parts, each timed alone on all threads: the proximal recovery
     (paper eqs. 2-6), the fusion (eq. 8), the three towers' forward + backward, the
     optimizer step; what they do not explain of the sequential step is Python and
     autograd overhead.

   ``--baseline REV`` also measures the package as of git revision REV (extracted with
   ``git archive`` into a temporary folder) and prints before / after: the two trees run
   in alternating subprocesses, ``--pairs`` times, so both see the same machine load.

2. ``--rounds R``: the done-when measurement of the round ratio. ``make run``'s settings
   (10 clients, MNIST, 2,000 samples per client, batch 64), with the PGSL preset
   (``strategies/pgsl.toml``) and without it (SplitFed, no defense), R rounds each, plus
   PGSL with its towers one after another instead of in two lanes
   (``PGSL_TWO_LANES=0``), the three simulations alternating ``--pairs``
   times; per-round seconds from metrics.csv
   (``round_seconds``: training, evaluation, BatchNorm recalibration). The first round
   of each run is dropped when R > 1 (start-up). Prints the medians and their ratio.

    python benchmarks/pgsl_step.py                          # step breakdown, current tree
    python benchmarks/pgsl_step.py --baseline bcb22f4       # before / after, one run
    python benchmarks/pgsl_step.py --rounds 2 --pairs 1     # PGSL / SplitFed round time
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

from timing import median_seconds  # benchmarks/timing.py, beside this script

ROOT = Path(__file__).resolve().parents[1]


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    return median_seconds(fn, repeats) * 1e3


def measure_step(repeats: int, parts: bool) -> dict[str, float]:
    """Median milliseconds of the plain and PGSL server steps (and, if ``parts``, of the PGSL
    step's parts) on whatever ``pgsl_flower`` is importable."""
    import torch
    from torch.nn import functional as F

    from pgsl_flower.config import RunConfig
    from pgsl_flower.local_data import local_data
    from pgsl_flower.model import ClientNet
    from pgsl_flower.pgsl.server_model import PGSLServerModel, recover
    from pgsl_flower.strategy import ServerModel

    cfg = RunConfig(defense="pgsl", pgsl_max_iter=10)
    data = local_data(cfg, 0, 10)
    indices = torch.arange(cfg.batch_size)
    torch.manual_seed(0)
    with torch.no_grad():
        smashed = ClientNet(1).train()(data.inputs(indices))
    labels = data.labels(indices)
    cpu = torch.device("cpu")
    plain = ServerModel(RunConfig(), data.num_classes, cpu)
    pgsl = PGSLServerModel(cfg, data.num_classes, cpu)
    result = {
        "plain_step_ms": _median_ms(lambda: plain.step(smashed, labels), repeats),
        "pgsl_step_ms": _median_ms(lambda: pgsl.step(smashed, labels), repeats),
    }
    result["ratio_pgsl_over_plain"] = result["pgsl_step_ms"] / result["plain_step_ms"]
    if "two_lanes" in inspect.signature(PGSLServerModel).parameters:  # an older tree has one way only
        sequential = PGSLServerModel(cfg, data.num_classes, cpu, two_lanes=False)
        result["pgsl_sequential_step_ms"] = _median_ms(lambda: sequential.step(smashed, labels), repeats)
        result["ratio_pgsl_sequential_over_plain"] = result["pgsl_sequential_step_ms"] / result["plain_step_ms"]
    if not parts:
        return result
    net = pgsl.model
    recovered = recover(smashed, pgsl.settings)
    fused = net.fusion(smashed, recovered).detach()

    def tower(name: str, x: torch.Tensor, needs_input_grad: bool) -> None:
        x = x.detach().requires_grad_(needs_input_grad)
        F.cross_entropy(net.towers[name](x), labels).backward()

    def fusion() -> None:
        h = smashed.detach().requires_grad_(True)
        net.fusion(h, recovered).sum().backward()

    net.train()
    result["recover_ms"] = _median_ms(lambda: recover(smashed, pgsl.settings), repeats)
    result["fusion_ms"] = _median_ms(fusion, repeats)
    result["tower_fused_ms"] = _median_ms(lambda: tower("fused", fused, True), repeats)
    result["tower_recovered_ms"] = _median_ms(lambda: tower("recovered", recovered, False), repeats)
    result["tower_attacked_ms"] = _median_ms(lambda: tower("attacked", smashed, False), repeats)
    result["optimizer_ms"] = _median_ms(pgsl.optimizer.step, repeats)
    named = [k for k in result if k.endswith("_ms") and not k.startswith(("plain_", "pgsl_"))]
    sequential_ms = result.get("pgsl_sequential_step_ms", result["pgsl_step_ms"])
    result["unexplained_ms"] = sequential_ms - sum(result[k] for k in named)
    return result


def _extract(rev: str, into: Path) -> Path:
    """The ``pgsl_flower`` package as of ``rev``, extracted under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "pgsl_flower"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def _measure_in_subprocess(package_root: Path, repeats: int, parts: bool) -> dict[str, float]:
    from pgsl_flower.data import resolve_data_root

    env = {**os.environ, "PYTHONPATH": str(package_root), "PGSL_DATA_DIR": str(resolve_data_root())}
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--repeats", str(repeats), *(["--parts"] if parts else [])],
        check=True, capture_output=True, text=True, env=env, cwd=package_root,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def compare_with(rev: str, repeats: int, pairs: int) -> dict[str, dict[str, float]]:
    """Median over ``pairs`` alternating subprocess runs of the baseline ``rev`` and this tree."""
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        before_root = _extract(rev, Path(tmp))
        for _ in range(pairs):
            runs["before"].append(_measure_in_subprocess(before_root, repeats, False))
            runs["after"].append(_measure_in_subprocess(ROOT, repeats, False))
    return {side: {key: statistics.median(r[key] for r in rows) for key in rows[0]} for side, rows in runs.items()}


def _round_seconds(run_dir: Path, drop_first: bool) -> list[float]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    seconds = [float(r["round_seconds"]) for r in rows]
    return seconds[1:] if drop_first and len(seconds) > 1 else seconds


def round_ratio(rounds: int, pairs: int, clients: int) -> dict[str, object]:
    """PGSL and SplitFed at ``make run``'s settings, alternating; seconds per round."""
    from pgsl_flower.config import parse_run_config
    from pgsl_flower.simulation import simulate

    from pgsl_flower.pgsl.server_model import LANES_ENV

    preset = _read_preset(ROOT / "strategies" / "pgsl.toml")
    configs = {  # name: (run-config, PGSL's towers in two lanes)
        "splitfed": (parse_run_config({"num-rounds": rounds}), True),
        "pgsl": (parse_run_config({**preset, "num-rounds": rounds}), True),
        "pgsl_sequential": (parse_run_config({**preset, "num-rounds": rounds}), False),
    }
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(pairs):
            for name, (cfg, two_lanes) in configs.items():
                run_dir = Path(tmp) / f"{name}-{pair}"
                default = os.environ.get(LANES_ENV)
                os.environ[LANES_ENV] = "1" if two_lanes else "0"  # read by the ServerApp, in this process
                try:
                    simulate(cfg, clients, run_dir=run_dir)
                finally:
                    if default is None:
                        os.environ.pop(LANES_ENV)
                    else:
                        os.environ[LANES_ENV] = default
                seconds[name] += _round_seconds(run_dir, drop_first=rounds > 1)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "clients": clients,
        "round_seconds": {name: [round(s, 1) for s in values] for name, values in seconds.items()},
        "median_round_seconds": {name: round(m, 1) for name, m in medians.items()},
        "ratio_pgsl_over_splitfed": round(medians["pgsl"] / medians["splitfed"], 3),
        "ratio_pgsl_sequential_over_splitfed": round(medians["pgsl_sequential"] / medians["splitfed"], 3),
    }


def _read_preset(path: Path) -> dict[str, object]:
    import tomllib

    with path.open("rb") as handle:
        return tomllib.load(handle)


def _print_step(result: dict[str, float]) -> None:
    for key, value in result.items():
        print(f"  {key:34s} {value:9.2f}" if key.endswith("_ms") else f"  {key:34s} {value:9.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per measurement")
    parser.add_argument("--parts", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", metavar="REV", help="also measure the package at this git revision")
    parser.add_argument("--pairs", type=int, default=3, help="alternating before/after (or PGSL/SplitFed) runs")
    parser.add_argument("--rounds", type=int, default=0, help="measure the round ratio with this many rounds")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.child:
        import pgsl_flower

        if not Path(pgsl_flower.__file__).resolve().is_relative_to(Path.cwd().resolve()):
            raise SystemExit(f"imported {pgsl_flower.__file__}, not the tree under {Path.cwd()}")
        print(json.dumps(measure_step(args.repeats, args.parts)))
        return 0
    import torch

    report: dict[str, object] = {"torch_threads": torch.get_num_threads()}
    if args.rounds:
        report["rounds"] = round_ratio(args.rounds, args.pairs, args.clients)
        print(json.dumps(report["rounds"], indent=2))
    else:
        report["step"] = measure_step(args.repeats, parts=True)
        print(f"PGSL server step, this tree ({report['torch_threads']} torch threads), median ms:")
        _print_step(report["step"])
        if args.baseline:
            compared = compare_with(args.baseline, args.repeats, args.pairs)
            report["baseline"] = {"rev": args.baseline, **compared}
            print(f"before ({args.baseline}) / after (this tree), median of {args.pairs} alternating runs:")
            for key in compared["before"]:
                before, after = compared["before"][key], compared["after"][key]
                print(f"  {key:34s} {before:9.2f} -> {after:9.2f}   after/before {after / before:.3f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
