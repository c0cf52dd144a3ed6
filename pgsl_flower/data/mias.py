"""mini-MIAS mammograms: ``Info.txt`` parsing, image decoding/resizing and the paper split."""

from __future__ import annotations

import functools
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import DataError
from .paths import dataset_dir
from .types import ImageDataset

__all__ = [
    "DEFAULT_MIAS_IMAGE_SIZE",
    "MIAS_CLASSES",
    "MIAS_TEST_COUNTS",
    "find_mias_image",
    "load_mias",
    "parse_info",
    "read_mias_image",
    "split_mias_indices",
    "validate_image_size",
]

MIAS_CLASSES: tuple[str, ...] = ("normal", "benign", "malignant")

#: Test-set size per class (Khowaja et al. 2022): 26 normal, 12 benign, 12 malignant.
MIAS_TEST_COUNTS: dict[str, int] = {"normal": 26, "benign": 12, "malignant": 12}

DEFAULT_MIAS_IMAGE_SIZE = 128

_BACKGROUNDS = {"F", "G", "D"}
_ABNORMAL = {"CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM"}
_ROW = re.compile(r"^mdb\d")  # candidate table row; validated field by field below
_REF = re.compile(r"mdb\d{3}")
_SEVERITY = {"B": "benign", "M": "malignant"}


def parse_info(path: str | Path) -> dict[str, str]:
    """Parse mini-MIAS ``Info.txt`` into ``{"mdbNNN": "normal"|"benign"|"malignant"}``.

    Only table rows (lines starting with ``mdb`` + digit) are read; the free-text
    header is skipped. Handles the known quirks: several rows per image (an image
    with any ``M`` row is malignant, e.g. mdb144), 3-field NORM rows, rows without
    coordinates or with ``*NOTE 3*``, trailing spaces. A malformed row (bad
    reference, unknown tissue/class/severity, wrong field count, NORM and abnormal
    rows for one image) raises :class:`DataError` naming the file and line number.
    The result is ordered by reference number.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1")
    except FileNotFoundError as exc:
        raise DataError(
            f"{path} does not exist; put the mini-MIAS Info.txt (and the mdbNNN.png "
            f"images) into {path.parent}/. See datasets/README.md."
        ) from exc
    except OSError as exc:
        raise DataError(f"{path} cannot be read: {exc}") from exc

    labels: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not _ROW.match(line):
            continue
        fields = line.split()

        def bad(why: str) -> DataError:
            return DataError(f"{path}, line {lineno}: malformed row ({why}): {line.rstrip()!r}")

        ref = fields[0]
        if not _REF.fullmatch(ref):
            raise bad(f"reference number {ref!r} is not mdbNNN")
        if len(fields) < 3:
            raise bad("expected at least REFNUM BG CLASS")
        bg, cls = fields[1], fields[2]
        if bg not in _BACKGROUNDS:
            raise bad(f"unknown background tissue {bg!r}, expected F, G or D")
        if cls == "NORM":
            if len(fields) != 3:
                raise bad("NORM rows have exactly 3 fields")
            label = "normal"
        elif cls in _ABNORMAL:
            if len(fields) < 4:
                raise bad(f"{cls} row without severity")
            sev = fields[3]
            if sev not in _SEVERITY:
                raise bad(f"unknown severity {sev!r}, expected B or M")
            rest = fields[4:]
            ok = (
                not rest
                or rest == ["*NOTE", "3*"]
                or (len(rest) == 3 and all(f.isdigit() for f in rest))
            )
            if not ok:
                raise bad("expected X Y RADIUS (integers), '*NOTE 3*' or nothing after the severity")
            label = _SEVERITY[sev]
        else:
            raise bad(f"unknown class {cls!r}")

        prev = labels.get(ref)
        if prev is None:
            labels[ref] = label
            first_line[ref] = lineno
        elif (prev == "normal") != (label == "normal"):
            raise bad(f"{ref} has both NORM and abnormal rows (first row at line {first_line[ref]})")
        elif label == "malignant":
            labels[ref] = "malignant"
    if not labels:
        raise DataError(f"{path}: no table rows (lines 'mdbNNN BG CLASS ...') found; is this the mini-MIAS Info.txt?")
    return dict(sorted(labels.items()))


def validate_image_size(image_size: int) -> int:
    """Return ``image_size`` if it is an even int >= 8, else raise ValueError naming it."""
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise ValueError(f"image_size: expected an int, got {image_size!r}")
    if image_size < 8 or image_size % 2:
        raise ValueError(f"image_size: must be even and >= 8, got {image_size}")
    return int(image_size)


def find_mias_image(folder: Path, ref: str) -> Path | None:
    """``folder/ref.png`` or ``folder/ref.pgm`` (PNG preferred), or None if neither exists."""
    for ext in (".png", ".pgm"):
        p = folder / f"{ref}{ext}"
        if p.is_file():
            return p
    return None


def read_mias_image(path: str | Path, image_size: int = DEFAULT_MIAS_IMAGE_SIZE) -> np.ndarray:
    """Decode an 8-bit grayscale square image and resize it to ``(image_size, image_size)`` uint8.

    Resampling is a box filter (area average): ``Image.reduce`` when the side is
    an integer multiple of ``image_size`` (1024 -> 512/256/128/64/32/16/8: fast,
    averages each k x k block), else ``Image.resize(..., BOX)``, which computes
    the same area average for fractional factors (the two agree to +-1 grey
    level for integer factors; only rounding differs). BOX was chosen
    over LANCZOS because mammograms have a hard edge between the breast and the
    zero background: LANCZOS' negative lobes ring and overshoot there (clipped
    to 0/255), and for the strong reductions used here (8x for 128) an area
    average is the alias-free, intensity-preserving choice; it is also what
    ``reduce`` computes, so integer and non-integer sizes behave the same.
    Raises :class:`DataError` naming the file if it cannot be decoded, is not
    8-bit grayscale (mode ``L``) or is not square.
    """
    path = Path(path)
    size = validate_image_size(image_size)
    try:
        with Image.open(path) as im:
            if im.mode != "L":
                raise DataError(f"{path}: not an 8-bit grayscale image (Pillow mode {im.mode!r}, expected 'L')")
            w, h = im.size
            if w != h:
                raise DataError(f"{path}: image is {w}x{h}, expected a square image (mini-MIAS is 1024x1024)")
            im.load()
            if w == size:
                out = im
            elif w % size == 0:
                out = im.reduce(w // size)
            else:
                out = im.resize((size, size), Image.Resampling.BOX)
            arr = np.asarray(out, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise DataError(f"{path} does not exist") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: cannot decode image ({exc})") from exc
    return arr


@functools.lru_cache(maxsize=4)
def _load_arrays(folder: str, image_size: int) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Decode + resize every image listed in Info.txt; cached per (folder, image_size).

    Returns read-only ``(refs, images (N, S, S) uint8, labels (N,) int64)``.
    """
    base = Path(folder)
    info = base / "Info.txt"
    label_of = parse_info(info)
    refs = tuple(label_of)
    paths: list[Path] = []
    missing: list[str] = []
    for ref in refs:
        p = find_mias_image(base, ref)
        if p is None:
            missing.append(ref)
        else:
            paths.append(p)
    if missing:
        shown = ", ".join(str(base / f"{r}.png") for r in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise DataError(
            f"{info} lists {len(missing)} image(s) that are missing: {shown}{more} "
            f"(neither .png nor .pgm found). Put the mini-MIAS images mdbNNN.png "
            f"(or the original .pgm) into {base}/. See datasets/README.md."
        )
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow releases the GIL while decoding
        arrays = list(pool.map(lambda p: read_mias_image(p, image_size), paths))
    images = np.stack(arrays)
    labels = np.array([MIAS_CLASSES.index(label_of[r]) for r in refs], dtype=np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return refs, images, labels


def split_mias_indices(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified seeded split: test gets exactly ``MIAS_TEST_COUNTS`` per class.

    Returns sorted int64 ``(train_idx, test_idx)``; train is everything else.
    Raises ValueError if a class has no more images than its test quota.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    test_parts: list[np.ndarray] = []
    for k, cls in enumerate(MIAS_CLASSES):
        idx = np.flatnonzero(labels == k)
        need = MIAS_TEST_COUNTS[cls]
        if idx.size <= need:
            raise ValueError(
                f"labels: only {idx.size} {cls} images, the test split needs {need} "
                f"and at least one must remain for training"
            )
        test_parts.append(rng.choice(idx, size=need, replace=False))
    test = np.sort(np.concatenate(test_parts)).astype(np.int64)
    train = np.setdiff1d(np.arange(labels.size, dtype=np.int64), test)
    return train, test


def load_mias(
    root: str | Path | None = None,
    image_size: int = DEFAULT_MIAS_IMAGE_SIZE,
    seed: int = 0,
) -> tuple[ImageDataset, ImageDataset]:
    """Load mini-MIAS from ``<root>/mias/`` as ``(train, test)``.

    ``root`` is the data root (``None``: :func:`resolve_data_root`). Images are
    ``(N, 1, image_size, image_size)`` uint8, labels index
    ``("normal", "benign", "malignant")`` (image-level: any malignant row ->
    malignant). The split is stratified and seeded: test has exactly 26 normal,
    12 benign, 12 malignant images (Khowaja et al. 2022), train the other 272
    (181/51/40). Decoded arrays are cached per (folder, image_size), so other
    seeds only redo the split.
    """
    size = validate_image_size(image_size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed: expected an int, got {seed!r}")
    folder = dataset_dir("mias", root)
    _, images, labels = _load_arrays(str(folder), size)
    try:
        train_idx, test_idx = split_mias_indices(labels, int(seed))
    except ValueError as exc:
        raise DataError(f"{folder / 'Info.txt'}: too few images for the paper split: {exc}") from exc

    def make(idx: np.ndarray, part: str) -> ImageDataset:
        return ImageDataset(
            images=torch.from_numpy(images[idx]).unsqueeze(1),
            labels=torch.from_numpy(labels[idx]),
            classes=MIAS_CLASSES,
            name=f"mias/{part}",
        )

    return make(train_idx, "train"), make(test_idx, "test")
