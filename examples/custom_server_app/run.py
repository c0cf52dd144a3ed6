"""Run the example ServerApp with pgsl-flower's ClientApp in Flower's simulation.

    python examples/custom_server_app/run.py [--num-clients 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pgsl_flower import SplitResult
from pgsl_flower.client_app import build_client_app
from pgsl_flower.config import parse_run_config
from pgsl_flower.simulation import preflight  # also keeps Flower and Hugging Face offline

sys.path.insert(0, str(Path(__file__).resolve().parent))  # server_app.py beside this file
from server_app import RUN_CONFIG, app, results  # noqa: E402


def run(num_clients: int = 2) -> SplitResult:
    """Simulate ``num_clients`` hospitals; returns what the ServerApp's ``start`` returned."""
    from flwr.simulation import run_simulation  # after pgsl_flower.simulation set the offline switches

    # run_simulation gives the apps no run config: the ClientApp closes over the same one.
    config = parse_run_config(RUN_CONFIG)
    preflight(config, num_clients)  # bad settings or missing data fail here, before Ray starts
    results.clear()
    run_simulation(
        server_app=app,
        client_app=build_client_app(config),
        num_supernodes=num_clients,
        # "address": "local": a private Ray instance, even if `ray start` left a cluster on this machine
        backend_config={"client_resources": {"num_cpus": 1.0},
                        "init_args": {"include_dashboard": False, "address": "local"}},
    )
    if not results:
        raise RuntimeError("the ServerApp returned no result; see the log above")
    return results[-1]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-clients", type=int, default=2)
    print(run(parser.parse_args().num_clients))
