"""Per-site cache of a site folder's decoded, validated images (deployment).

Flower starts a new ClientApp process for every message, and each one would
read and decode the site's whole folder again (seconds per exchange for a few
hundred images). :func:`cached_site_images` keeps the decoded
``(N, 1, image_size, image_size)`` uint8 array in the site's own cache folder
(node-config ``cache-dir``; no cache when the site sets none: it decides where
copies of its patients' images may live), via
:func:`~pgsl_flower.data.disk_cache.cached_arrays`.

The key holds:

- the site's identity (node-config ``site-name`` and ``partition-id``) and the
  folder's resolved path: two sites, or two folders, never share an entry;
- the decoding settings that change the result: class names, ``image-size``,
  ``site-resize``, ``bit-depth`` (and the cache format version);
- every file under the folder: relative path, size and ``st_mtime_ns`` (so
  ``labels.csv`` too), plus each listed image's resolved path, size and mtime
  (a ``file`` cell may go through a symbolic link).

Adding, removing, or rewriting any file therefore invalidates the entry; a file
rewritten with the same size *and* the same mtime to the nanosecond is not
noticed (no content hash: hashing every image would read the whole folder at
each message). ``labels.csv`` is still parsed and validated at every load (a
few ms); only the image decoding is skipped. A corrupt, foreign or mis-shaped
cache file is rebuilt, never trusted; a cache folder that cannot be written
only costs the speed-up. The cache holds the site's images: keep it on the
site's disk, with the data's access rights (files are created owner-only).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .disk_cache import cached_arrays

__all__ = ["cached_site_images", "folder_listing"]

_VERSION = 1


def folder_listing(folder: Path, skip: Path | None = None) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every file under ``folder``, sorted; ``skip`` (a folder
    inside it, e.g. a cache folder placed there) is left out. Symbolic links are followed for
    files (their target's size and mtime), not for folders."""
    skip_real = os.path.realpath(skip) if skip is not None else None
    entries: list[tuple[str, int, int]] = []
    for root, dirs, files in os.walk(folder):
        if skip_real is not None:
            dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(root, d)) != skip_real]
        for name in files:
            path = os.path.join(root, name)
            try:
                stat = os.stat(path)
            except OSError:  # dangling link, or removed meanwhile: its name still counts
                entries.append((os.path.relpath(path, folder), -1, -1))
                continue
            entries.append((os.path.relpath(path, folder), stat.st_size, stat.st_mtime_ns))
    return sorted(entries)


def _slug(site: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", site).strip("-")[:40] or "site"


def cached_site_images(
    folder: Path,
    site: str,
    settings: Sequence[object],
    image_size: int,
    paths: Sequence[Path],
    decode: Callable[[], np.ndarray],
    cache_dir: Path,
) -> np.ndarray:
    """The site's decoded images: ``decode()``'s array, from ``cache_dir`` when the site, folder,
    ``settings`` (everything that changes the decoded result) and every file are unchanged.

    ``paths`` are the images in row order; a stored array must be uint8 of shape
    ``(len(paths), 1, image_size, image_size)``, or it is decoded again.
    """
    folder = Path(folder).resolve()
    cache_dir = Path(cache_dir).expanduser().resolve()
    identity = hashlib.sha256(f"v{_VERSION}|{site}|{folder}|{list(settings)!r}".encode()).hexdigest()[:16]
    name = f"site-{_slug(site)}-{identity}"
    skip = cache_dir if cache_dir.is_relative_to(folder) else None
    parameters = [_VERSION, site, str(folder), *settings, folder_listing(folder, skip)]
    shape = (len(paths), 1, image_size, image_size)

    def check(arrays: dict[str, np.ndarray]) -> bool:
        images = arrays.get("images")
        return images is not None and images.dtype == np.uint8 and images.shape == shape

    arrays = cached_arrays(
        name, parameters, list(paths), lambda: {"images": decode()},
        folder=cache_dir, check=check, replace_stale=True,
    )
    return arrays["images"]
