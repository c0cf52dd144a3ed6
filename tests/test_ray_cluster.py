"""A simulation attached to a two-node Ray cluster on 127.0.0.1 (``simulate(ray_address=...)``).

The head and the worker are separate ``ray start --block`` processes, each in its own
session, with one CPU each: the two ClientApp actors (one CPU per client) can only fit
one per node. The worker carries a custom resource so that the test can tell the nodes
apart from Ray's own node table. Every process the cluster started is stopped by PID,
pass or fail; ``ray stop`` is never used (it would stop other users' Ray instances).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgsl_flower.client_app import build_client_app
from pgsl_flower.config import ConfigError, parse_run_config
from pgsl_flower.ray_cluster import check_ray_address
from pgsl_flower.simulation import simulate

RAY = str(Path(sys.executable).with_name("ray"))
WORKER_RESOURCE = "pgsl_test_worker"


def _free_port() -> int:
    """An ephemeral port, outside Ray's default worker-port range (10002-19999)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pids_in(procs: list[subprocess.Popen]) -> set[int]:
    """Every live process in the process groups of these ``ray start`` sessions (GCS, raylets,
    agents, workers: Ray keeps them all in the group of the command that started the node)."""
    if not procs:
        return set()
    out = subprocess.run(["pgrep", "-g", ",".join(str(p.pid) for p in procs)], capture_output=True, text=True)
    return {int(pid) for pid in out.stdout.split()}


def _stop(procs: list[subprocess.Popen]) -> set[int]:
    """SIGTERM each ``ray start`` session's group, then SIGKILL what is left; returns survivors."""
    for proc in reversed(procs):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while _pids_in(procs) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in _pids_in(procs):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for proc in procs:
        proc.wait(timeout=10)
    time.sleep(0.5)
    return _pids_in(procs)


def _wait_for_nodes(address: str, count: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True)
        if status.returncode == 0 and status.stdout.count(" node_") >= count:
            return
        time.sleep(1)
    raise TimeoutError(f"the Ray cluster at {address} did not reach {count} nodes: {status.stdout}{status.stderr}")


@pytest.fixture()
def two_node_cluster() -> Iterator[str]:
    """A head and one worker node on 127.0.0.1, one CPU each; yields the head's address."""
    # A short temp dir: Ray's socket paths must stay under the 107-character UNIX limit.
    temp_dir = tempfile.mkdtemp(prefix="pgsl-ray-", dir="/tmp")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory", str(100 * 2**20),
              "--disable-usage-stats", "--block"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(
            [RAY, "start", "--head", "--port", str(port), "--temp-dir", temp_dir, "--include-dashboard=false",
             "--dashboard-port", str(_free_port()), "--ray-client-server-port", str(_free_port()), *common],
            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        _wait_for_nodes(address, 1)
        procs.append(subprocess.Popen(
            [RAY, "start", "--address", address, "--resources", f'{{"{WORKER_RESOURCE}": 1}}', *common],
            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        _wait_for_nodes(address, 2)
        yield address
    finally:
        survivors = _stop(procs)
        assert not survivors, f"Ray processes of the test cluster survived SIGKILL: {sorted(survivors)}"


def _node_recorder(log: Path):
    """A Flower mod: each ClientApp call appends '<partition-id> <Ray node id>' to ``log``."""

    def mod(message, context, call_next):  # noqa: ANN001, ANN202
        import ray

        with log.open("a") as f:
            f.write(f"{context.node_config['partition-id']} {ray.get_runtime_context().get_node_id()}\n")
        return call_next(message, context)

    return mod


def _node_ids(address: str) -> tuple[str, str]:
    """(head node id, worker node id) from Ray's node table."""
    import ray

    ray.init(address=address, include_dashboard=False, logging_level="WARNING")
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()
    workers = [n["NodeID"] for n in nodes if WORKER_RESOURCE in n["Resources"]]
    heads = [n["NodeID"] for n in nodes if WORKER_RESOURCE not in n["Resources"]]
    assert len(workers) == 1 and len(heads) == 1, nodes
    return heads[0], workers[0]


@pytest.mark.slow
def test_simulation_runs_client_apps_on_both_nodes(two_node_cluster, tmp_path):
    cfg = parse_run_config({"num-rounds": 1, "samples-per-client": 64, "test-samples": 128, "batch-size": 32,
                            "output-dir": str(tmp_path)})
    log = tmp_path / "nodes.log"
    summary = simulate(cfg, num_clients=4, run_dir=tmp_path / "run", ray_address=two_node_cluster,
                       client_app=build_client_app(cfg, mods=[_node_recorder(log)]))
    assert summary["rounds"] == 1 and 0.0 <= summary["final_test_accuracy"] <= 1.0
    calls = [line.split() for line in log.read_text().splitlines()]
    assert {int(pid) for pid, _ in calls} == {0, 1, 2, 3}
    head, worker = _node_ids(two_node_cluster)
    assert {node for _, node in calls} == {head, worker}, "every ClientApp call ran on the head and the worker"


@pytest.mark.parametrize("address", ["", "localhost", "10.0.0.5:", "10.0.0.5:99999", "ray://10.0.0.5:10001"])
def test_bad_ray_address_is_refused(address):
    with pytest.raises(ConfigError, match="ray-address"):
        check_ray_address(address)


def test_unreachable_ray_address_fails_before_the_simulation(tmp_path):
    port = _free_port()  # nothing listens there once the probe socket is closed
    with pytest.raises(ConfigError, match=f"127.0.0.1:{port}: nothing listens there"):
        simulate({"num-rounds": 1, "samples-per-client": 32}, num_clients=2, run_dir=tmp_path,
                 ray_address=f"127.0.0.1:{port}")
    assert not (tmp_path / "metrics.csv").exists()
