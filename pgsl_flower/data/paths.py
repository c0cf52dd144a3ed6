"""Locating the dataset folders (``mnist/``, ``mias/``, ``medmnist/``) on disk."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError

__all__ = [
    "DATA_DIR_ENV",
    "DATASET_FOLDERS",
    "KNOWN_DATASETS",
    "REPO_ROOT",
    "candidate_roots",
    "dataset_dir",
    "expected_files",
    "resolve_data_root",
]

#: Environment variable that overrides the data root.
DATA_DIR_ENV = "PGSL_DATA_DIR"

#: Repository root (the folder holding ``pgsl_flower/`` and ``datasets/``).
REPO_ROOT = Path(__file__).resolve().parents[2]

#: Dataset name -> its folder under the data root (``mias-roi`` is cut from ``mias/``).
DATASET_FOLDERS: dict[str, str] = {"mnist": "mnist", "mias": "mias", "mias-roi": "mias", "breastmnist": "medmnist"}
KNOWN_DATASETS = tuple(DATASET_FOLDERS)
_FOLDERS = tuple(dict.fromkeys(DATASET_FOLDERS.values()))

_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def expected_files(name: str) -> tuple[str, ...]:
    """File names a dataset folder must hold (MNIST also accepts them without ``.gz``).

    For MIAS only ``Info.txt`` is fixed; the ``mdbNNN.png`` (or ``.pgm``) images it
    lists are checked when loading.
    """
    if name == "mnist":
        return _MNIST_FILES
    if name in ("mias", "mias-roi"):
        return ("Info.txt",)
    if name == "breastmnist":
        return ("breastmnist.npz",)
    raise ValueError(f"name: unknown dataset {name!r}; known: {', '.join(KNOWN_DATASETS)}")


def _clean(value: str | Path | None) -> Path | None:
    if value is None:
        return None
    if isinstance(value, str) and not value.strip():
        return None
    return Path(value).expanduser().resolve()


def candidate_roots(explicit: str | Path | None = None) -> list[tuple[str, Path]]:
    """All data-root candidates in resolution order, as ``(source, path)`` pairs."""
    out: list[tuple[str, Path]] = []
    exp = _clean(explicit)
    if exp is not None:
        out.append(("explicit argument", exp))
    env = _clean(os.environ.get(DATA_DIR_ENV))
    if env is not None:
        out.append((f"${DATA_DIR_ENV}", env))
    out.append(("<repo>/datasets", REPO_ROOT / "datasets"))
    out.append(("<repo>/../shared/data", (REPO_ROOT.parent / "shared" / "data").resolve()))
    # `flwr run` executes an installed copy of the app, away from the repository;
    # its processes keep the working directory `flwr run` was started from.
    cwd = Path.cwd()
    if cwd.resolve() != REPO_ROOT:
        out.append(("<cwd>/datasets", cwd / "datasets"))
        out.append(("<cwd>/../shared/data", (cwd.parent / "shared" / "data").resolve()))
    return out


def resolve_data_root(explicit: str | Path | None = None) -> Path:
    """Return the folder that holds ``mnist/``, ``mias/`` and/or ``medmnist/``.

    Order: ``explicit`` if given (an empty string counts as not given); the
    environment variable ``PGSL_DATA_DIR`` if set and non-empty; then the first of
    ``<repo>/datasets``, ``<repo>/../shared/data``, ``<cwd>/datasets`` and
    ``<cwd>/../shared/data`` that contains a ``mnist``, ``mias`` or ``medmnist`` folder.
    Explicit and environment values are returned even if they do not exist, so the
    later error names the path the user asked for. If nothing is found,
    ``<repo>/datasets`` is returned (the place to put the files).
    """
    exp = _clean(explicit)
    if exp is not None:
        return exp
    env = _clean(os.environ.get(DATA_DIR_ENV))
    if env is not None:
        return env
    for _, root in candidate_roots():
        if any((root / n).is_dir() for n in _FOLDERS):
            return root
    return REPO_ROOT / "datasets"


def _searched_text(explicit: str | Path | None) -> str:
    """Human-readable list of the data-root candidates, for error messages."""
    cands: list[tuple[str, str]] = [(src, str(p)) for src, p in candidate_roots(explicit)]
    if not any(src.startswith("$") for src, _ in cands):
        cands.insert(1 if _clean(explicit) else 0, (f"${DATA_DIR_ENV}", "(not set)"))
    lines = [f"  - {src}: {path}" for src, path in cands]
    return (
        "Data root resolution order (first match wins; <repo>/datasets only if it "
        "holds mnist/, mias/ or medmnist/):\n" + "\n".join(lines)
    )


def dataset_dir(name: str, root: str | Path | None = None) -> Path:
    """Return the dataset's folder under ``root`` after checking it and its fixed files exist.

    ``root`` defaults to :func:`resolve_data_root`. Raises :class:`DataError` that
    lists the expected file names and the searched locations when the folder or
    any expected file is missing (MNIST files may be gzip-compressed or raw).
    """
    files = expected_files(name)
    base = resolve_data_root(root)
    folder = base / DATASET_FOLDERS[name]
    if not folder.is_dir():
        raise DataError(
            f"Dataset folder {folder} does not exist (data root {base}). "
            f"Put these files into {folder}/: {', '.join(files)}"
            + {"mnist": " (raw, uncompressed copies without .gz are accepted too)",
               "breastmnist": " (the official MedMNIST file)"}.get(name, " plus the mdbNNN.png (or .pgm) images it lists")
            + f". See datasets/README.md.\n{_searched_text(root)}"
        )
    missing: list[str] = []
    for f in files:
        alt = f[:-3] if f.endswith(".gz") else None
        if not (folder / f).is_file() and not (alt and (folder / alt).is_file()):
            missing.append(f)
    if missing:
        raise DataError(
            f"Dataset folder {folder} is missing {len(missing)} file(s): "
            f"{', '.join(str(folder / m) for m in missing)}. "
            f"Put {', '.join(missing)} into {folder}/ "
            f"(expected files: {', '.join(files)}). See datasets/README.md.\n{_searched_text(root)}"
        )
    return folder
