"""mini-MIAS mammograms: ``Info.txt`` parsing, image decoding/resizing and the paper split."""

from __future__ import annotations

import functools
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from .breast_region import crop_breast
from .disk_cache import cached_arrays
from .errors import DataError
from .folds import cv_split
from .paths import dataset_dir
from .types import ImageDataset

__all__ = [
    "Abnormality",
    "DEFAULT_MIAS_IMAGE_SIZE",
    "MIAS_CLASSES",
    "MIAS_TEST_COUNTS",
    "find_mias_image",
    "load_mias",
    "map_images",
    "mias_split",
    "parse_abnormalities",
    "parse_info",
    "patient_of",
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


@dataclass(frozen=True)
class Abnormality:
    """One abnormality row of ``Info.txt`` that has coordinates.

    ``x``, ``y`` are the centre in pixels of the 1024 x 1024 image with the origin at
    the bottom-left corner (array row ``1023 - y``); ``radius`` in pixels.
    """

    ref: str
    severity: str  # "benign" | "malignant"
    kind: str  # CALC, CIRC, SPIC, MISC, ARCH, ASYM
    x: int
    y: int
    radius: int


def _read_info(path: Path) -> str:
    try:
        return path.read_text(encoding="latin-1")
    except FileNotFoundError as exc:
        raise DataError(
            f"{path} does not exist; put the mini-MIAS Info.txt (and the mdbNNN.png "
            f"images) into {path.parent}/. See datasets/README.md."
        ) from exc
    except OSError as exc:
        raise DataError(f"{path} cannot be read: {exc}") from exc


def _rows(path: Path) -> list[tuple[int, str, str, str, tuple[int, int, int] | None]]:
    """Validated table rows: (line number, ref, CLASS, label, (x, y, radius) or None)."""
    rows = []
    for lineno, line in enumerate(_read_info(path).splitlines(), start=1):
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
        coords = None
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
            if len(rest) == 3 and all(f.isdigit() for f in rest):
                coords = (int(rest[0]), int(rest[1]), int(rest[2]))
            elif rest and rest != ["*NOTE", "3*"]:
                raise bad("expected X Y RADIUS (integers), '*NOTE 3*' or nothing after the severity")
            label = _SEVERITY[sev]
        else:
            raise bad(f"unknown class {cls!r}")
        rows.append((lineno, ref, cls, label, coords))
    return rows


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
    labels: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, ref, _, label, _ in _rows(path):
        prev = labels.get(ref)
        if prev is None:
            labels[ref] = label
            first_line[ref] = lineno
        elif (prev == "normal") != (label == "normal"):
            raise DataError(
                f"{path}, line {lineno}: malformed row ({ref} has both NORM and abnormal rows "
                f"(first row at line {first_line[ref]}))"
            )
        elif label == "malignant":
            labels[ref] = "malignant"
    if not labels:
        raise DataError(f"{path}: no table rows (lines 'mdbNNN BG CLASS ...') found; is this the mini-MIAS Info.txt?")
    return dict(sorted(labels.items()))


def parse_abnormalities(path: str | Path) -> list[Abnormality]:
    """The abnormality rows of ``Info.txt`` that have coordinates (119 in mini-MIAS), in file order."""
    return [
        Abnormality(ref, label, cls, *coords)
        for _, ref, cls, label, coords in _rows(Path(path))
        if coords is not None
    ]


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


def _decode(path: Path) -> Image.Image:
    """Open an 8-bit grayscale square image fully (DataError naming the file otherwise)."""
    try:
        with Image.open(path) as im:
            if im.mode != "L":
                raise DataError(f"{path}: not an 8-bit grayscale image (Pillow mode {im.mode!r}, expected 'L')")
            w, h = im.size
            if w != h:
                raise DataError(f"{path}: image is {w}x{h}, expected a square image (mini-MIAS is 1024x1024)")
            im.load()
            return im.copy()
    except FileNotFoundError as exc:
        raise DataError(f"{path} does not exist") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: cannot decode image ({exc})") from exc


def _box_resize(im: Image.Image, size: int) -> np.ndarray:
    w = im.size[0]
    if w == size and im.size[1] == size:
        out = im
    elif w % size == 0 and im.size[1] == w:
        out = im.reduce(w // size)
    else:
        out = im.resize((size, size), Image.Resampling.BOX)
    return np.asarray(out, dtype=np.uint8)


def read_mias_image(
    path: str | Path, image_size: int = DEFAULT_MIAS_IMAGE_SIZE, crop: bool = False, laterality: bool = False
) -> np.ndarray:
    """Decode an 8-bit grayscale square image and resize it to ``(image_size, image_size)`` uint8.

    ``laterality``: mirror it so the chest wall is on the left; ``crop``: crop it to the
    breast, black out the background and pad to a square (:mod:`.breast_region`); both
    happen at full resolution, before resizing.

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
    im = _decode(path)
    if crop or laterality:
        im = Image.fromarray(crop_breast(np.asarray(im), crop=crop, normalise_laterality=laterality))
    return _box_resize(im, size)


def _image_paths(base: Path, refs: tuple[str, ...]) -> list[Path]:
    """``mdbNNN.png`` (or ``.pgm``) of every reference, or DataError listing the missing ones."""
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
            f"{base / 'Info.txt'} lists {len(missing)} image(s) that are missing: {shown}{more} "
            f"(neither .png nor .pgm found). Put the mini-MIAS images mdbNNN.png "
            f"(or the original .pgm) into {base}/. See datasets/README.md."
        )
    return paths


def map_images(paths: list[Path], read: Callable[[Path], np.ndarray]) -> list[np.ndarray]:
    """``read`` over ``paths`` on a few threads (Pillow and NumPy release the GIL)."""
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(read, paths))


@functools.lru_cache(maxsize=4)
def _load_arrays(
    folder: str, image_size: int, crop: bool = False, laterality: bool = False
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Decode + resize every image listed in Info.txt; cached per (folder, image_size, crop, laterality).

    Returns read-only ``(refs, images (N, S, S) uint8, labels (N,) int64)``.
    """
    base = Path(folder)
    label_of = parse_info(base / "Info.txt")
    refs = tuple(label_of)
    paths = _image_paths(base, refs)
    images = cached_arrays(
        "mias", (image_size, crop, laterality), [base / "Info.txt", *paths],
        lambda: {"images": np.stack(map_images(paths, lambda p: read_mias_image(p, image_size, crop, laterality)))},
    )["images"]
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


def patient_of(ref: str) -> int:
    """mini-MIAS images come in left/right pairs of one woman: mdb001+mdb002 -> 0, mdb003+mdb004 -> 1, ..."""
    return (int(ref[3:]) - 1) // 2


def mias_split(
    refs: tuple[str, ...], labels: np.ndarray, seed: int, fold: int, folds: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, test_idx)``: the paper split when ``fold`` is -1, else fold ``fold`` of a
    stratified ``folds``-fold cross-validation grouped by patient (:func:`.folds.cv_split`)."""
    if fold < 0:
        return split_mias_indices(labels, seed)
    return cv_split(labels, np.array([patient_of(r) for r in refs]), fold, folds, seed)


def load_mias(
    root: str | Path | None = None,
    image_size: int = DEFAULT_MIAS_IMAGE_SIZE,
    seed: int = 0,
    fold: int = -1,
    folds: int = 5,
    crop: bool = False,
    laterality: bool = False,
) -> tuple[ImageDataset, ImageDataset]:
    """Load mini-MIAS from ``<root>/mias/`` as ``(train, test)``.

    ``root`` is the data root (``None``: :func:`resolve_data_root`). Images are
    ``(N, 1, image_size, image_size)`` uint8, labels index
    ``("normal", "benign", "malignant")`` (image-level: any malignant row ->
    malignant). ``fold`` = -1 gives the paper split, stratified and seeded: test has
    exactly 26 normal, 12 benign, 12 malignant images (Khowaja et al. 2022), train
    the other 272 (181/51/40). ``fold`` in 0..folds-1 gives that fold of a stratified
    cross-validation grouped by patient (the two breasts of a woman stay together),
    seeded: the folds of one seed partition all 322 images. ``crop`` and
    ``laterality``: see :func:`read_mias_image`. Decoded arrays are cached per
    (folder, image_size, crop, laterality), so other seeds and folds only redo the split.
    """
    size = validate_image_size(image_size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed: expected an int, got {seed!r}")
    folder = dataset_dir("mias", root)
    refs, images, labels = _load_arrays(str(folder), size, bool(crop), bool(laterality))
    try:
        train_idx, test_idx = mias_split(refs, labels, int(seed), int(fold), int(folds))
    except ValueError as exc:
        raise DataError(f"{folder / 'Info.txt'}: cannot split: {exc}") from exc

    def make(idx: np.ndarray, part: str) -> ImageDataset:
        return ImageDataset(
            images=torch.from_numpy(images[idx]).unsqueeze(1),
            labels=torch.from_numpy(labels[idx]),
            classes=MIAS_CLASSES,
            name=f"mias/{part}",
        )

    return make(train_idx, "train"), make(test_idx, "test")
