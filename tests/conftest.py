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


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _lineage(pid: int) -> list[int]:
    """``pid`` and its ancestors up to init."""
    chain = []
    while pid and pid not in chain:
        chain.append(pid)
        pid = _parent(pid) or 0
    return chain


def _user_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-u", str(os.getuid())], capture_output=True, text=True)
    return {int(pid) for pid in out.stdout.split()}


@pytest.fixture(autouse=True, scope="session")
def _no_servers_left_behind():
    """Fail the session if tests leave Flower or Ray servers running.

    Servers that another job of this user starts meanwhile (a sweep on the same machine)
    are not the tests': a process descending from one that was already running before the
    session, outside pytest's own ancestry, is left out.
    """
    before = server_pids()
    others = _user_pids() - set(_lineage(os.getpid()))

    def ours(pid: int) -> bool:
        return not any(p in others for p in _lineage(pid))

    yield
    deadline = time.monotonic() + 30  # Ray takes a moment to wind down after shutdown
    while (left := {p for p in server_pids() - before if ours(p)}) and time.monotonic() < deadline:
        time.sleep(1)
    assert not left, f"tests left Flower/Ray processes running: {sorted(left)}"


@pytest.fixture(autouse=True)
def _seed() -> None:
    import torch

    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """Small per-step work (the pixel-space inversions): one thread is faster than several on shared cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def inversion_setup():
    """8 MNIST test images, a randomly initialised client part (eval mode), its smashed data, and
    an adversary whose own images are 16 MNIST training images: (images, client, knowledge, smashed)."""
    import torch

    from pgsl_flower.attacks.interface import AdversaryKnowledge
    from pgsl_flower.data import load_dataset
    from pgsl_flower.model import ClientNet, prepare_input

    train, test = load_dataset("mnist", None)
    images = test.images[:8].float() / 255
    torch.manual_seed(0)
    client = ClientNet(1).eval()
    own = train.images[:16].float() / 255
    knowledge = AdversaryKnowledge(own, prepare_input(own), client, map_channel_is_zero=True, seed=0)
    with torch.no_grad():
        smashed = client(prepare_input(images))
    return images, client, knowledge, smashed
