"""Shared fixtures. Tests use the real data (PGSL_DATA_DIR, datasets/ or ../shared/data)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")

_SERVER_PROCESSES = "flower-superlink|flower-supernode|flower-superexec|flwr-simulation|raylet|gcs_server"


def server_pids() -> set[int]:
    """PIDs of Flower/Ray server processes of this user."""
    out = subprocess.run(
        ["pgrep", "-u", str(os.getuid()), "-f", _SERVER_PROCESSES], capture_output=True, text=True
    )
    return {int(pid) for pid in out.stdout.split()}


@pytest.fixture(autouse=True, scope="session")
def _no_servers_left_behind():
    """Fail the session if tests leave Flower or Ray servers running."""
    before = server_pids()
    yield
    deadline = time.monotonic() + 30  # Ray takes a moment to wind down after shutdown
    while (left := server_pids() - before) and time.monotonic() < deadline:
        time.sleep(1)
    assert not left, f"tests left Flower/Ray processes running: {sorted(left)}"


@pytest.fixture(autouse=True)
def _seed() -> None:
    import torch

    torch.manual_seed(0)
