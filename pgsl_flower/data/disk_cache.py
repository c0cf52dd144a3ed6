"""On-disk cache of preprocessed image arrays (decoded, cropped, resized mammograms).

Decoding and cropping the 322 full-resolution mini-MIAS films takes about 15 s
of CPU, and every process of a run (the driver, each Ray worker, each sweep
cell) would repeat it. The result is stored as ``.npz`` in ``PGSL_CACHE_DIR``
(else ``~/.cache/pgsl-flower``), keyed by the preprocessing parameters and by
the path, size and modification time of every source file, so that a changed
file invalidates it. A corrupt or unreadable cache file is recomputed, never
trusted.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["cached_arrays", "cache_root"]

_VERSION = 1


def cache_root() -> Path:
    return Path(os.environ.get("PGSL_CACHE_DIR", Path.home() / ".cache" / "pgsl-flower"))


def _key(name: str, parameters: Sequence[object], files: Sequence[Path]) -> str:
    digest = hashlib.sha256(f"{name}|v{_VERSION}|{list(parameters)!r}".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def cached_arrays(
    name: str, parameters: Sequence[object], files: Sequence[Path], compute: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """``compute()``'s arrays, from the cache when ``name``, ``parameters`` and ``files`` are unchanged."""
    path = cache_root() / "data" / f"{name}-{_key(name, parameters, files)}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as stored:
                return {key: stored[key] for key in stored.files}
        except (OSError, ValueError, EOFError):  # corrupt: recompute below
            pass
    arrays = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return arrays
