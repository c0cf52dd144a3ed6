"""On-disk cache of preprocessed image arrays (decoded, cropped, resized images).

Decoding and cropping the 322 full-resolution mini-MIAS films takes about 15 s
of CPU, and every process of a run (the driver, each Ray worker, each sweep
cell) would repeat it; in a deployment every message starts a new ClientApp
process that would decode its site's folder again. The result is stored as
``.npz`` in ``PGSL_CACHE_DIR`` (else ``~/.cache/pgsl-flower``) or a folder the
caller names, keyed by the preprocessing parameters and by the path, size and
modification time of every source file, so that a changed file invalidates it.
A cache file is never trusted: one that cannot be read, holds another key, or
fails the caller's check is recomputed. Files are written atomically (a private
temporary file, fsync, rename), readable by the owner only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["cached_arrays", "cache_root"]

_VERSION = 1
_KEY_FIELD = "__cache_key__"  # the full key, stored in the file and compared on load

_log = logging.getLogger(__name__)


def cache_root() -> Path:
    return Path(os.environ.get("PGSL_CACHE_DIR", Path.home() / ".cache" / "pgsl-flower"))


def _key(name: str, parameters: Sequence[object], files: Sequence[Path]) -> str:
    digest = hashlib.sha256(f"{name}|v{_VERSION}|{list(parameters)!r}".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _load(path: Path, key: str, check: Callable[[dict[str, np.ndarray]], bool] | None) -> dict[str, np.ndarray] | None:
    """The arrays stored at ``path`` if it holds ``key`` and passes ``check``, else None.

    Any failure (missing, truncated, not a zip, not .npy, wrong key, failed check) is
    a miss: the cache is recomputed, never trusted and never fatal.
    """
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except Exception:  # noqa: BLE001 - FileNotFoundError, BadZipFile, ValueError, EOFError, zlib...
        return None
    stored_key = arrays.pop(_KEY_FIELD, None)
    if stored_key is None or stored_key.shape != () or str(stored_key) != key:
        return None
    try:
        if check is not None and not check(arrays):
            return None
    except Exception:  # noqa: BLE001 - a check that cannot even run on the stored arrays
        return None
    return arrays


def _store(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` (plus the key) to ``path`` atomically; a failure only logs a warning."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)  # mode 0600
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays, **{_KEY_FIELD: np.array(key)})
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        _log.warning("cannot write the cache file %s (%s); continuing without it", path, exc)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def cached_arrays(
    name: str,
    parameters: Sequence[object],
    files: Sequence[Path],
    compute: Callable[[], dict[str, np.ndarray]],
    *,
    folder: Path | None = None,
    check: Callable[[dict[str, np.ndarray]], bool] | None = None,
    replace_stale: bool = False,
) -> dict[str, np.ndarray]:
    """``compute()``'s arrays, from the cache when ``name``, ``parameters`` and ``files`` are unchanged.

    The cache file is ``<folder>/<name>-<key>.npz`` (``folder`` defaults to
    ``cache_root()/data``). ``check`` vets stored arrays (False: recompute).
    ``replace_stale`` deletes the other ``<name>-*.npz`` files after a write: use it
    when ``name`` already pins everything but the source files' state, so that the
    older entries can never be hit again.
    """
    key = _key(name, parameters, files)
    root = folder if folder is not None else cache_root() / "data"
    path = root / f"{name}-{key[:32]}.npz"
    arrays = _load(path, key, check)
    if arrays is not None:
        return arrays
    arrays = compute()
    _store(path, key, arrays)
    if replace_stale:
        for stale in root.glob(f"{name}-*.npz"):
            if stale != path and len(stale.name) == len(path.name):
                stale.unlink(missing_ok=True)
    return arrays
