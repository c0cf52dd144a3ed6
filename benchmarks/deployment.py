"""Deployment vs simulation: per-exchange latency and training samples/s, side by side.

Deployment: a real ``flower-superlink`` (TLS, SuperNode authentication) and one
``flower-supernode`` per site on 127.0.0.1 (:class:`pgsl_flower.pilot.local.LocalPilot`),
each site on its own folder of MNIST images. Simulation: the same run config in
Flower's Ray simulation with the same number of clients and training images
per client. One round per run, for each ``batches-per-message`` k.

Per-exchange latency = the round's training seconds / training messages per
client (clients exchange in parallel; each one's messages are sequential).
Samples/s = training samples of all clients / training seconds.

Deployment settings (``--deploy``, each ``APP:DTYPE:POLL[:THREADS][:inflight=D][:worker]``)
are compared side by side in one command: APP is ``head`` (this checkout) or a path to another
checkout of the project (e.g. the main branch: the "before" numbers); DTYPE the
run-config ``payload-dtype`` (``float32`` or ``float16``; an app without that key
can only run ``float32``); POLL the SuperExec task poll interval in seconds
(``LocalPilot(task_poll_interval=...)``) or ``flower`` for Flower's default (1.0 s);
THREADS the torch threads of every process (``LocalPilot(threads=...)``): a number,
``auto`` (the default: the cores shared among the ServerApp and the sites) or
``torch`` (torch's default, a thread per core in every process); ``inflight=D`` the
run-config ``messages-in-flight`` (default 1); ``worker`` a long-lived worker per site
(``LocalPilot(site_workers=True)``, APP ``head`` only). Settings with the same POLL,
THREADS and ``worker`` share one pilot (SuperLink + SuperNodes); all pilots are up
for the whole command and the settings take turns for each k.

    python benchmarks/deployment.py                 # 3 sites, k = 1 8, 320 images per site
    python benchmarks/deployment.py --chunks 1 8 32 --per-site 1088
    python benchmarks/deployment.py --chunks 1 8 32 --per-site 1088 --k1-batches 8
        --deploy /work/main:float32:flower head:float32:flower head:float32:0.1 head:float16:0.1
    python benchmarks/deployment.py --chunks 1 8 32 --per-site 1088 --k1-batches 4 --no-simulation
        --deploy head:float32:0.1:torch head:float32:0.1:auto
    python benchmarks/deployment.py --chunks 8 32 --per-site 1088 --no-simulation
        --deploy head:float32:0.1 head:float32:0.1:inflight=2 head:float32:0.1:worker head:float32:0.1:inflight=2:worker
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import statistics
import sys
from dataclasses import dataclass
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pgsl_flower.data import load_dataset, resolve_data_root  # noqa: E402
from pgsl_flower.data.site_folder import write_site_folder  # noqa: E402
from pgsl_flower.pilot.local import AUTO_THREADS, DEFAULT_TASK_POLL_INTERVAL, LocalPilot, copy_app  # noqa: E402
from pgsl_flower.simulation import simulate  # noqa: E402


@dataclass(frozen=True)
class Setting:
    """One deployment setting: which app, the payload dtype on the wire, the SuperExec poll, the
    threads, the training messages out to a site at once, and whether sites run a worker."""

    app: str  # "head" or a project checkout
    dtype: str  # run-config payload-dtype
    poll: float | None  # None: Flower's default
    threads: int | str | None = AUTO_THREADS  # LocalPilot(threads=...); None: torch's default
    in_flight: int = 1  # run-config messages-in-flight
    worker: bool = False  # LocalPilot(site_workers=...)

    @property
    def label(self) -> str:
        app = "head" if self.app == "head" else Path(self.app).name
        threads = "torch" if self.threads is None else self.threads
        extras = (f" in-flight={self.in_flight}" if self.in_flight != 1 else "") + (" worker" if self.worker else "")
        return f"{app} {self.dtype} poll={'flower' if self.poll is None else f'{self.poll:g}'} threads={threads}{extras}"

    @property
    def pilot_key(self) -> tuple[float | None, int | str | None, bool]:
        """Settings with the same key share one pilot."""
        return self.poll, self.threads, self.worker


#: THREADS words of ``--deploy``: ``LocalPilot(threads=...)`` values.
_THREAD_WORDS: dict[str, str | None] = {AUTO_THREADS: AUTO_THREADS, "torch": None}


def parse_setting(text: str) -> Setting:
    """``APP:DTYPE:POLL[:OPTION...]`` (see the module docstring)."""
    expected = "expected APP:float32|float16:SECONDS|flower[:N|auto|torch][:inflight=D][:worker]"
    dtypes = ("float32", "float16")
    dtype_at = -1
    parts = text.split(":")
    # APP may hold ':' (a path): DTYPE is the last field that names a dtype
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] in dtypes:
            dtype_at = index
            break
    if dtype_at < 1 or dtype_at + 1 >= len(parts):
        raise argparse.ArgumentTypeError(f"--deploy {text!r}: {expected}")
    app, dtype, poll, options = ":".join(parts[:dtype_at]), parts[dtype_at], parts[dtype_at + 1], parts[dtype_at + 2:]
    extra: dict = {}
    for option in options:
        if option in _THREAD_WORDS:
            extra["threads"] = _THREAD_WORDS[option]
        elif option.isdigit() and int(option) > 0:
            extra["threads"] = int(option)
        elif option.startswith("inflight=") and option[9:].isdigit() and int(option[9:]) > 0:
            extra["in_flight"] = int(option[9:])
        elif option == "worker":
            extra["worker"] = True
        else:
            raise argparse.ArgumentTypeError(f"--deploy {text!r}: option {option!r}: {expected}")
    if extra.get("worker") and app != "head":
        raise argparse.ArgumentTypeError(f"--deploy {text!r}: 'worker' runs this checkout's worker: APP must be head")
    if app != "head" and not (Path(app) / "pgsl_flower").is_dir():
        raise argparse.ArgumentTypeError(f"--deploy {text!r}: {app} is not a checkout of this project")
    try:
        return Setting(app, dtype, None if poll == "flower" else float(poll), **extra)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--deploy {text!r}: POLL must be seconds or 'flower'") from None


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
    parser.add_argument("--k1-batches", type=int, default=0,
                        help="k = 1 only: batches per client per round (run-config batches-per-round; 0: one pass), "
                             "to keep its many exchanges short; s per exchange does not depend on it")
    parser.add_argument("--deploy", type=parse_setting, nargs="+",
                        default=[Setting("head", "float32", DEFAULT_TASK_POLL_INTERVAL)], metavar="APP:DTYPE:POLL",
                        help=f"deployment settings (default: head:float32:{DEFAULT_TASK_POLL_INTERVAL:g})")
    parser.add_argument("--no-simulation", action="store_true", help="deployment runs only")
    args = parser.parse_args(argv)

    train, _ = load_dataset("mnist", None)
    # only the training exchange is measured: no held-out evaluation or BatchNorm recalibration messages
    base = {"num-rounds": 1, "batch-size": args.batch_size, "local-eval-samples": 0, "bn-recalibration": "off",
            "test-samples": 500, "min-available-clients": args.sites, "reply-timeout": 900.0, "seed": 1}

    def config(k: int, dtype: str, in_flight: int = 1) -> dict:
        cap = {"batches-per-round": args.k1_batches} if k == 1 and args.k1_batches else {}
        # an older app lacks these keys: set only when not their defaults
        wire = {"payload-dtype": dtype} if dtype != "float32" else {}
        flight = {"messages-in-flight": in_flight} if in_flight != 1 else {}
        return {**base, "batches-per-message": k, **cap, **wire, **flight}

    dtypes = list(dict.fromkeys(s.dtype for s in args.deploy))
    pilot_keys = list(dict.fromkeys(s.pilot_key for s in args.deploy))
    results: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="pgsl-deploy-bench-") as tmp:
        work = Path(tmp)
        sites = {
            f"site-{k}": write_site_folder(train, range(k * args.per_site, (k + 1) * args.per_site),
                                           work / "data" / f"site-{k}")
            for k in range(args.sites)
        }
        if not args.no_simulation:
            for k in args.chunks:
                for dtype in dtypes:
                    run_dir = work / f"sim-k{k}-{dtype}"
                    simulate({**config(k, dtype), "samples-per-client": args.per_site}, args.sites, run_dir=run_dir)
                    results[f"simulation head {dtype}", k] = _round(run_dir)
                    print(f"simulation k={k} {dtype}: {results[f'simulation head {dtype}', k]}", flush=True)
        apps = {app: ROOT if app == "head" else Path(app).resolve() for app in dict.fromkeys(s.app for s in args.deploy)}
        packaged = {app: copy_app(root, work / f"app-{index}") for index, (app, root) in enumerate(apps.items())}
        with contextlib.ExitStack() as stack:  # one pilot per (poll, threads) setting, all up at once
            pilots = {}
            for index, key in enumerate(pilot_keys):
                poll, threads, worker = key
                pilots[key] = stack.enter_context(LocalPilot(
                    work / f"pilot-{index}", sites, packaged["head"] if worker else next(iter(packaged.values())),
                    env={"PGSL_DATA_DIR": str(resolve_data_root())}, task_poll_interval=poll, threads=threads,
                    site_workers=worker))
                pilots[key].start()
            # k-major, settings in turn: every setting of one k runs close together in time, so a
            # change in the machine's load (a shared machine) hits them alike
            for k in args.chunks:
                for setting in args.deploy:
                    pilot = pilots[setting.pilot_key]
                    pilot.app_dir = packaged[setting.app]
                    output = work / f"deploy-{len(results)}"
                    result = pilot.run({**config(k, setting.dtype, setting.in_flight), "samples-per-client": 0,
                                        "output-dir": str(output)})
                    if result.status != "finished:completed":
                        print(result.log[-3000:], file=sys.stderr)
                        raise SystemExit(f"deployment run {setting.label} k={k}: {result.status} {result.details}")
                    (run_dir,) = output.iterdir()
                    results[f"deployment {setting.label}", k] = _round(run_dir)
                    print(f"deployment {setting.label} k={k}: {results[f'deployment {setting.label}', k]}", flush=True)

    modes = list(dict.fromkeys(mode for mode, _ in results))
    cap = f", k = 1 capped at {args.k1_batches} batches per client" if args.k1_batches else ""
    print(f"\n{args.sites} sites, {args.per_site} MNIST images each, batch {args.batch_size}, one round{cap}; "
          "exchange = training seconds / training messages per client\n")
    print("| k | mode | messages/client | s per exchange | samples/s | round s |")
    print("|---|---|---|---|---|---|")
    for k in args.chunks:
        for mode in modes:
            r = results[mode, k]
            print(f"| {k} | {mode} | {r['messages']} | {r['exchange_s']:.2f} | {r['samples_per_s']:.1f} "
                  f"| {r['round_s']:.1f} |")
    deployed = [mode for mode in modes if mode.startswith("deployment")]
    first = deployed[0]
    print(f"\nSide by side (ratios against the first deployment setting, {first.removeprefix('deployment ')}):\n")
    print("| k | " + " | ".join(m.removeprefix("deployment ") for m in deployed) + " |")
    print("|---|" + "---|" * len(deployed))
    for k in args.chunks:
        base_r = results[first, k]
        cells = [f"{results[m, k]['exchange_s']:.2f} s, {results[m, k]['samples_per_s']:.1f}/s"
                 + ("" if m == first else f" (x{results[m, k]['samples_per_s'] / base_r['samples_per_s']:.2f})")
                 for m in deployed]
        print(f"| {k} | " + " | ".join(cells) + " |")
    for mode in deployed:
        gains = [results[mode, k]["samples_per_s"] / results[first, k]["samples_per_s"] for k in args.chunks]
        print(f"{mode}: median samples/s ratio to the first setting over k = {args.chunks}: "
              f"x{statistics.median(gains):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
