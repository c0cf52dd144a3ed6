"""Where a simulation's ClientApps run: a private local Ray instance, or an existing Ray cluster.

Ray's ``ray.init()`` without an address attaches to whatever cluster ``ray start`` last
started on this machine (``RAY_ADDRESS`` or ``/tmp/ray/ray_current_cluster``), so a
plain simulation could silently join someone else's cluster. :func:`ray_init_args`
therefore asks for ``address="local"`` unless the user names a cluster, and
:func:`attach` connects to a named cluster before Flower's backend starts, so that an
unreachable address fails with a clear error instead of inside the simulation thread.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pgsl_flower.config import ConfigError

_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")


def check_ray_address(address: str) -> str:
    """``auto`` or ``HOST:PORT`` (Ray's GCS address, ``ray start --head --port``); else ConfigError."""
    if address == "auto":
        return address
    match = _HOST_PORT.match(address)
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise ConfigError(
            f"--ray-address must be 'auto' or HOST:PORT of a running Ray head (e.g. 10.0.0.5:6379), "
            f"got {address!r}"
        )
    return address


def _reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout):
            return True
    except OSError:
        return False


def attach(address: str) -> dict[str, Any]:
    """Connect this process to the Ray cluster at ``address``; returns ``ray.cluster_resources()``.

    ClientApp actors on other nodes import ``pgsl_flower`` from the same paths as this
    driver, so every node needs the same environment (and the data at the same path).
    """
    import ray

    check_ray_address(address)
    if address != "auto":
        host, port = address.rsplit(":", 1)
        if not _reachable(host, int(port)):
            raise ConfigError(
                f"--ray-address {address}: nothing listens there; start the head with "
                f"`ray start --head --port {port}` (and workers with `ray start --address {address}`)"
            )
    if ray.is_initialized():
        ray.shutdown()
    pythonpath = os.pathsep.join(p for p in sys.path if p)
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
            logging_level=logging.WARNING,
        )
    except ConnectionError as err:
        raise ConfigError(f"--ray-address {address}: {err}") from err
    return dict(ray.cluster_resources())


def detach() -> None:
    """Disconnect this driver from the cluster (the cluster keeps running)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def ray_init_args(address: str | None) -> dict[str, Any]:
    """Flower backend ``init_args``: a private local instance unless a cluster is named.

    With a cluster, :func:`attach` has already connected, and Flower's backend skips
    ``ray.init`` because Ray is initialised.
    """
    if address is None:
        return {"include_dashboard": False, "address": "local"}
    return {"include_dashboard": False}


@contextmanager
def quiet_known_warnings() -> Iterator[None]:
    """Silence two warnings a simulation always triggers, each kept with its reason.

    - Flower 1.42 marks ``flwr.simulation.run_simulation`` deprecated in favour of
      ``flwr run``. ``simulate()`` keeps it: it is Flower's only entry point that runs
      app *objects* in-process, which :func:`simulate` needs for its validated config
      closed over by the apps, for custom ClientApps (failure injection in tests) and
      to return the summary. ``flwr run`` stays supported and tested beside it.
    - Ray 2.55 announces that it will stop hiding GPUs from actors that asked for none.
      We rely on that hiding today (``client-gpus = 0`` keeps clients on the CPU), so
      the behaviour is kept and the notice dropped.
    """
    flwr_logger = logging.getLogger("flwr")

    def drop_run_simulation_notice(record: logging.LogRecord) -> bool:
        return "`run_simulation` function is deprecated" not in record.getMessage()  # other notices stay

    flwr_logger.addFilter(drop_run_simulation_notice)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)
            yield
    finally:
        flwr_logger.removeFilter(drop_run_simulation_notice)
