"""Command line: ``python -m pgsl_flower [--num-clients N] [--run-config ...]``.

``--run-config`` takes what ``flwr run --run-config`` takes: a preset TOML file
(``strategies/*.toml``) and/or ``"key=value key=value"`` strings (later win).
"""

from __future__ import annotations

import argparse
import json
import sys

from pgsl_flower.checkpoint import CheckpointError
from pgsl_flower.config import ConfigError
from pgsl_flower.cpu_scheduling import CLIENT_PRIORITIES
from pgsl_flower.data import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgsl_flower", description=__doc__)
    parser.add_argument("--num-clients", type=int, default=10, help="virtual SuperNodes (default 10)")
    parser.add_argument(
        "--run-config", "-c", action="append", default=[], help="preset .toml and/or 'key=value ...'"
    )
    parser.add_argument("--run-dir", default=None, help="output folder (default: <output-dir>/<timestamp>-...)")
    parser.add_argument("--client-cpus", type=float, default=1.0)
    parser.add_argument("--client-gpus", type=float, default=0.0)
    parser.add_argument(
        "--client-priority",
        choices=CLIENT_PRIORITIES,
        default="normal",
        help="'idle': the ClientApps compute only when the server waits (Linux SCHED_IDLE); "
        "for a machine the simulation has to itself",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="run the ClientApps on an existing Ray cluster: 'auto' or the head's HOST:PORT "
        "(default: a private local Ray instance)",
    )
    args = parser.parse_args(argv)

    from flwr.common.config import parse_config_args

    from pgsl_flower.simulation import simulate

    values: dict = {}
    for item in args.run_config:
        values.update(parse_config_args([item]))
    try:
        summary = simulate(
            values,
            args.num_clients,
            run_dir=args.run_dir,
            client_cpus=args.client_cpus,
            client_gpus=args.client_gpus,
            ray_address=args.ray_address,
            client_priority=args.client_priority,
        )
    except (ConfigError, DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
