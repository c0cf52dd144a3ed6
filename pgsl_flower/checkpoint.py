"""Checkpoints for resuming a run: the server's at each round end, each site's own.

The server writes ``<run dir>/checkpoint.pt`` after every complete round (server
model and optimizer, the aggregated client part, the clients' batch counters,
the RNG state, the round number). Client optimizer states never leave a site:
each site writes its own file after its last message of a round, under its
``state-dir``. A restarted run (run-config ``resume-from``) loads the server's
checkpoint and tells each site the round to reload. Every write goes to a
temporary file in the same folder, is fsynced, then renamed over the old one,
so a crash leaves either the previous or the new checkpoint, never half of one.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from pgsl_flower.config import default_run_config

SERVER_CHECKPOINT = "checkpoint.pt"
#: Per site, the newest rounds' files kept: a crash during round r + 1 leaves the
#: server at round r, while the site may already have written r + 1.
CLIENT_ROUNDS_KEPT = 2
_CLIENT_FILE = re.compile(r"partition-(\d+)\.round-(\d+)\.pt")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or belongs to a different run configuration."""


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`atomic_save` (tensors and plain values only)."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types on truncated or foreign files
        raise CheckpointError(f"checkpoint {path} is unreadable: {err}") from err


def server_checkpoint_path(resume_from: str | Path) -> Path:
    """``resume-from`` may name the run folder or the checkpoint file itself."""
    path = Path(resume_from)
    return path / SERVER_CHECKPOINT if path.is_dir() else path


#: Run-config keys added after checkpoints existed, whose default reproduces what a checkpoint
#: written before them did: such a checkpoint resumes at the default. Any other missing key is a
#: difference (e.g. 'bn-recalibration': runs before it had no recalibration at all).
PREDATED_KEYS = frozenset({"cut-layer", "adversary-role", "adversary-aux-samples", "messages-in-flight"})
_MISSING = object()


def check_compatible(saved: dict[str, Any], current: dict[str, Any], ignored: set[str]) -> None:
    """Raise naming the first run-config key whose value differs from the checkpoint's; a key of
    :data:`PREDATED_KEYS` that the checkpoint predates counts as its default."""
    defaults = default_run_config()
    for key in sorted(set(saved) | set(current)):
        if key in ignored:
            continue
        if key in saved:
            was = saved[key]
        elif key in PREDATED_KEYS:
            was = defaults.get(key)
        else:
            was = _MISSING
        if was is _MISSING or was != current.get(key):
            written = repr(saved[key]) if key in saved else (
                f"{was!r} (the key's default: the checkpoint predates it)" if key in PREDATED_KEYS else "no such key")
            raise CheckpointError(
                f"run-config '{key}' is {current.get(key)!r}, but the checkpoint was written with "
                f"{written}: resume with the same configuration"
            )


#: Run-config keys that may change between the interrupted and the resumed run.
RESUMABLE_CHANGES = frozenset({
    "num-rounds", "output-dir", "resume-from", "reply-timeout", "max-in-flight", "device",
    "min-available-clients", "data-dir", "tracking",
})


def server_training_state(server: Any) -> dict[str, Any]:
    """A server model's weights, optimizer state and step count (ServerModel or PGSLServerModel)."""
    return {
        "model": server.model.state_dict(),
        "optimizer": server.optimizer.state_dict(),
        "steps": server.steps_taken,
    }


def restore_server(server: Any, saved: dict[str, Any]) -> None:
    server.model.load_state_dict(saved["model"])
    server.optimizer.load_state_dict(saved["optimizer"])
    server.steps_taken = int(saved["steps"])


def client_state_file(folder: Path, partition: int, round_num: int) -> Path:
    return folder / f"partition-{partition}.round-{round_num}.pt"


def save_client_state(folder: Path, partition: int, round_num: int, state: dict[str, Any]) -> None:
    """Write a site's state after round ``round_num``; keep its newest two rounds."""
    atomic_save({**state, "round": round_num}, client_state_file(folder, partition, round_num))
    for old in _client_rounds(folder, partition)[:-CLIENT_ROUNDS_KEPT]:
        client_state_file(folder, partition, old).unlink(missing_ok=True)


def load_client_state(folder: Path, partition: int, round_num: int) -> dict[str, Any]:
    """A site's newest state written at or before round ``round_num``."""
    rounds = [r for r in _client_rounds(folder, partition) if r <= round_num]
    if not rounds:
        raise CheckpointError(
            f"site partition {partition}: no state of round <= {round_num} in {folder} "
            "(node-config 'state-dir' must be the folder this site used before the restart)"
        )
    return load(client_state_file(folder, partition, rounds[-1]))


def _client_rounds(folder: Path, partition: int) -> list[int]:
    if not folder.is_dir():
        return []
    rounds = []
    for path in folder.iterdir():
        match = _CLIENT_FILE.fullmatch(path.name)
        if match and int(match.group(1)) == partition:
            rounds.append(int(match.group(2)))
    return sorted(rounds)
