"""MNIST from the original IDX files (gzip-compressed or raw), with md5 checks."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Literal
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from .errors import DataError
from .paths import dataset_dir
from .types import ImageDataset

__all__ = [
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
    "MNIST_CLASSES",
    "MNIST_FILES",
    "MNIST_MD5",
    "MNIST_MIRRORS",
    "download_mnist",
    "load_mnist",
    "md5_of",
    "read_idx",
]

IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension

#: Published md5 per file stem: (md5 of the .gz file, md5 of the uncompressed file).
MNIST_MD5: dict[str, tuple[str, str]] = {
    "train-images-idx3-ubyte": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
}

#: (images stem, labels stem) per split.
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: Canonical download mirrors (the original yann.lecun.com host is no longer reliable).
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

MNIST_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))

_SPLIT_SIZES = {"train": 60000, "test": 10000}


def md5_of(data: bytes | Path) -> str:
    """Hex md5 of a byte string or of a file's content (read in chunks)."""
    h = hashlib.md5()
    if isinstance(data, (bytes, bytearray, memoryview)):
        h.update(data)
    else:
        with open(data, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _expected_md5(path: Path) -> str | None:
    """Published md5 for ``path`` (compressed md5 for .gz, uncompressed otherwise)."""
    name = path.name
    if name.endswith(".gz"):
        entry = MNIST_MD5.get(name[:-3])
        return entry[0] if entry else None
    entry = MNIST_MD5.get(name)
    return entry[1] if entry else None


def _gunzip(blob: bytes) -> tuple[bytes, bool, str | None]:
    """Decompress a (possibly multi-member) gzip blob.

    Returns ``(data, complete, error)``: ``complete`` is False when the stream ends
    before its end-of-stream marker (truncated file) and ``data`` is then the part
    that could be decoded; ``error`` describes an invalid stream or CRC mismatch.
    """
    out: list[bytes] = []
    rest = blob
    try:
        while rest:
            d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            out.append(d.decompress(rest))
            out.append(d.flush())
            if not d.eof:
                return b"".join(out), False, None
            rest = d.unused_data
            if rest and not rest.lstrip(b"\x00"):
                break  # zero padding after the last member, as gzip(1) tolerates
    except zlib.error as exc:
        return b"".join(out), False, str(exc)
    return b"".join(out), True, None


def read_idx(
    path: str | Path,
    expected_magic: int | None = None,
    verify_checksum: bool = True,
) -> np.ndarray:
    """Read an unsigned-byte IDX file (``.gz`` or raw) into a uint8 array.

    Checks the gzip stream (invalid data, CRC, early end), the magic number
    (against ``expected_magic`` if given), the declared dimensions against the
    actual byte length and, if ``verify_checksum``, the published md5 when the
    file name is one of the four MNIST files (compressed md5 for ``.gz``,
    uncompressed md5 for raw). Structural problems are reported first (with the
    md5 mismatch appended, if any) because they say more. Every failure raises
    :class:`DataError` naming the file.
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path} does not exist; put the MNIST IDX file there") from exc
    except OSError as exc:
        raise DataError(f"{path} cannot be read: {exc}") from exc

    is_gz = path.name.endswith(".gz")
    want = _expected_md5(path) if verify_checksum else None
    got = md5_of(blob) if want is not None else None
    md5_note = f"corrupt: md5 {got}, expected {want}" if got != want else ""

    def fail(what: str) -> DataError:
        extra = f" ({md5_note})" if md5_note else ""
        return DataError(f"{path}: {what}{extra}")

    if is_gz:
        data, complete, gz_error = _gunzip(blob)
        if gz_error is not None:
            raise fail(f"corrupt: invalid gzip stream ({gz_error})")
        kind = "decompressed "
    else:
        data, complete, kind = blob, True, ""

    if len(data) < 4:
        raise fail(
            f"truncated: {len(data)} {kind}bytes, too short for an IDX header"
            + ("" if complete else " (gzip stream ends early)")
        )
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise fail(f"wrong magic number {magic}, expected {expected_magic}")
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise fail(
            f"wrong magic number {magic}: not an unsigned-byte IDX file "
            f"(expected {IMAGES_MAGIC} for images or {LABELS_MAGIC} for labels)"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise fail(
            f"truncated: {len(data)} {kind}bytes, header needs {header} bytes"
            + ("" if complete else " (gzip stream ends early)")
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) < expected:
        raise fail(
            f"truncated: header declares shape {dims}, i.e. {expected} {kind}bytes, "
            f"but only {len(data)} {kind}bytes are present"
            + ("" if complete else " (gzip stream ends early)")
        )
    if not complete:
        raise fail("truncated: gzip stream ends before its end-of-stream marker and CRC")
    if len(data) > expected:
        raise fail(
            f"wrong size: header declares shape {dims}, i.e. {expected} {kind}bytes, "
            f"but {len(data)} {kind}bytes are present (trailing data)"
        )
    if md5_note:
        raise DataError(f"{path} is {md5_note}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find(folder: Path, stem: str) -> Path:
    """``stem.gz`` if present, else raw ``stem``; DataError naming both otherwise."""
    for cand in (folder / f"{stem}.gz", folder / stem):
        if cand.is_file():
            return cand
    raise DataError(
        f"{folder / (stem + '.gz')} is missing (no raw {folder / stem} either). "
        f"Put {stem}.gz (md5 {MNIST_MD5[stem][0]}) into {folder}/, e.g. with "
        f"pgsl_flower.data.download_mnist({str(folder)!r}). See datasets/README.md."
    )


def load_mnist(
    root: str | Path | None,
    split: Literal["train", "test"],
    verify_checksum: bool = True,
) -> ImageDataset:
    """Load an MNIST split from ``<root>/mnist/``.

    ``root`` is the data root (the folder containing ``mnist/``); ``None`` means
    :func:`~pgsl_flower.data.paths.resolve_data_root`. Returns images of shape
    ``(N, 1, 28, 28)`` uint8 and int64 labels 0..9 (N = 60000 train, 10000 test).
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    folder = dataset_dir("mnist", root)
    img_stem, lbl_stem = MNIST_FILES[split]
    img_path, lbl_path = _find(folder, img_stem), _find(folder, lbl_stem)
    images = read_idx(img_path, IMAGES_MAGIC, verify_checksum)
    labels = read_idx(lbl_path, LABELS_MAGIC, verify_checksum)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{img_path}: images are {images.shape[1:]}, expected (28, 28)")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{img_path} holds {images.shape[0]} images but {lbl_path} holds "
            f"{labels.shape[0]} labels; the counts must match"
        )
    if labels.size and int(labels.max()) > 9:
        bad = np.flatnonzero(labels > 9)
        raise DataError(
            f"{lbl_path}: {bad.size} label(s) outside 0..9, first at index {bad[0]} "
            f"(value {labels[bad[0]]})"
        )
    return ImageDataset(
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=MNIST_CLASSES,
        name=f"mnist/{split}",
    )


def download_mnist(
    dest: str | Path,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    files: Iterable[str] | None = None,
    timeout: float = 60.0,
    overwrite: bool = False,
) -> list[Path]:
    """Download the MNIST ``.gz`` files into the folder ``dest`` and verify their md5.

    ``dest`` is the MNIST folder itself (normally ``<data root>/mnist``). Each file
    is tried on each mirror in turn (any URL scheme ``urllib`` supports, e.g.
    ``file://``) and only moved into place after its md5 matches the published
    one. Existing files with the right md5 are kept unless ``overwrite``. Returns
    the paths of the four (or the requested) files. Never called implicitly.
    """
    dest = Path(dest).expanduser()
    names = list(files) if files is not None else [f"{s}.gz" for s in MNIST_MD5]
    for name in names:
        if _expected_md5(Path(name)) is None:
            raise ValueError(
                f"files: {name!r} is not an MNIST file; known: "
                + ", ".join(f"{s}.gz" for s in MNIST_MD5)
            )
    if not mirrors:
        raise ValueError("mirrors: at least one mirror URL is needed")
    dest.mkdir(parents=True, exist_ok=True)
    done: list[Path] = []
    for name in names:
        target = dest / name
        want = _expected_md5(target)
        assert want is not None
        if target.is_file() and not overwrite and md5_of(target) == want:
            done.append(target)
            continue
        tmp = dest / f".{name}.part"
        problems: list[str] = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                req = urllib.request.Request(url, headers={"User-Agent": "pgsl-flower"})
                with urllib.request.urlopen(req, timeout=timeout) as resp, open(tmp, "wb") as out:
                    shutil.copyfileobj(resp, out, 1 << 20)
            except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
                problems.append(f"{url}: {exc}")
                tmp.unlink(missing_ok=True)
                continue
            got = md5_of(tmp)
            if got != want:
                problems.append(f"{url}: corrupt: md5 {got}, expected {want}")
                tmp.unlink(missing_ok=True)
                continue
            os.replace(tmp, target)
            done.append(target)
            break
        else:
            raise DataError(
                f"Could not download {target}: " + "; ".join(problems)
                + f". Put {name} (md5 {want}) into {dest}/ by hand."
            )
    return done
