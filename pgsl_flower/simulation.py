"""Programmatic runs: :func:`simulate` runs the Flower app in Ray-backed simulation.

``flwr.simulation.run_simulation`` passes no run-config to the apps, so the
validated :class:`RunConfig` is closed over by the ServerApp and ClientApp
built here. Everything that can be checked is checked before Ray starts: the
config values, the client count, and the data files (loaded once, which also
warms the ServerApp's cache in this process).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgsl_flower.config import ConfigError, RunConfig, parse_run_config
from pgsl_flower.cpu_scheduling import check_client_priority, idle_priority_mod
from pgsl_flower.local_data import local_data
from pgsl_flower.ray_cluster import attach, check_ray_address, detach, quiet_known_warnings, ray_init_args

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")


def preflight(cfg: RunConfig, num_clients: int) -> None:
    """Fail before Ray starts: client count, data files, every client's partition, the
    checkpoint to resume from."""
    if num_clients < 1:
        raise ConfigError(f"num-clients must be >= 1, got {num_clients}")
    if num_clients < cfg.min_available_clients:
        raise ConfigError(
            f"num-clients ({num_clients}) is below run-config 'min-available-clients' "
            f"({cfg.min_available_clients})"
        )
    if cfg.adversary_role == "client" and (cfg.adversary >= num_clients or (cfg.adversary >= 0 and num_clients < 2)):
        raise ConfigError(
            f"run-config 'adversary' = {cfg.adversary} must be a partition id below num-clients "
            f"({num_clients}), with at least one other client to attack"
        )
    for partition_id in range(num_clients):
        local_data(cfg, partition_id, num_clients)
    from pgsl_flower.server_app import load_resume_checkpoint

    load_resume_checkpoint(cfg)  # 'resume-from': readable, same configuration, rounds left
    if cfg.defense == "pgsl":
        from pgsl_flower.pgsl.server_model import two_lanes_enabled

        two_lanes_enabled()  # a bad PGSL_TWO_LANES is refused here, not in the ServerApp


def simulate(
    config: RunConfig | Mapping[str, Any] | None = None,
    num_clients: int = 10,
    *,
    run_dir: str | Path | None = None,
    client_cpus: float = 1.0,
    client_gpus: float = 0.0,
    verbose: bool = False,
    client_app: ClientApp | None = None,
    ray_address: str | None = None,
    client_priority: str = "normal",
) -> dict[str, Any]:
    """Run one federated split-learning simulation; returns ``summary.json``'s content.

    ``config`` is a :class:`RunConfig` or a mapping of run-config keys (missing
    keys take their defaults). ``client_app`` replaces the standard ClientApp
    (e.g. one that misbehaves, to exercise failure handling). ``ray_address``
    (``"auto"`` or ``HOST:PORT``) runs the ClientApps on an existing Ray cluster
    instead of a private local Ray instance; every node needs this environment and
    the data at the same path. ``client_priority="idle"`` runs the standard ClientApp's
    threads at Linux's ``SCHED_IDLE`` priority, for a machine the simulation has to
    itself (:mod:`pgsl_flower.cpu_scheduling`).
    """
    from flwr.simulation import run_simulation

    from pgsl_flower.client_app import build_client_app
    from pgsl_flower.server_app import build_server_app, new_run_dir, resume_run_dir

    cfg = config if isinstance(config, RunConfig) else parse_run_config(config or {})
    check_client_priority(client_priority)
    if client_app is not None and client_priority != "normal":
        raise ConfigError("client_priority applies to the standard ClientApp; add idle_priority_mod to your own")
    if cfg.messages_in_flight > 1:
        raise ConfigError(
            f"run-config 'messages-in-flight' = {cfg.messages_in_flight}: more than 1 is for deployments. "
            "Flower's simulation engine may run two messages for one node at once, on two actors that "
            "would both start from the node's Context; a SuperNode handles its messages one at a time"
        )
    if ray_address is not None:
        check_ray_address(ray_address)
    preflight(cfg, num_clients)
    target = (
        Path(run_dir).resolve() if run_dir
        else resume_run_dir(cfg) or new_run_dir(cfg, f"sim-n{num_clients}-s{cfg.seed}")
    )
    summary_path = target / "summary.json"
    summary_path.unlink(missing_ok=True)  # a reused folder's old summary must not pass for this run's
    mods = [idle_priority_mod] if client_priority == "idle" else []
    with quiet_known_warnings():
        if ray_address is not None:
            attach(ray_address)
        try:
            run_simulation(
                server_app=build_server_app(cfg, target),
                client_app=client_app or build_client_app(cfg, mods=mods),
                num_supernodes=num_clients,
                backend_config={
                    "client_resources": {"num_cpus": client_cpus, "num_gpus": client_gpus},
                    "init_args": ray_init_args(ray_address),
                },
                verbose_logging=verbose,
            )
        finally:
            if ray_address is not None:
                detach()
    if not summary_path.exists():
        raise RuntimeError(f"the simulation ended without writing {summary_path}; see the log above")
    return json.loads(summary_path.read_text())
