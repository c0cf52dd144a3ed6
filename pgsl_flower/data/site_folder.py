"""Site folders: one hospital's labelled images for a Flower SuperNode.

A site folder holds ``labels.csv`` plus grayscale images (PNG, PGM or DICOM)::

    site-0/
        labels.csv          # header "id,label" (+ optional "file")
        mnist-train-00001.png
        ...

``labels.csv`` is UTF-8 (a BOM is allowed) with a header row naming the
columns ``id`` and ``label`` and, optionally, ``file``; other columns are
ignored, column order is free and header names are matched case-insensitively.
``label`` holds a class NAME (``"7"`` for MNIST, ``"malignant"`` for MIAS).
``file`` is a path relative to the folder (it must stay inside it); without the
column (or where its cell is blank) the image is the single file named
``<id>.png``, ``<id>.pgm`` or ``<id>.dcm`` in the folder (extension matched
case-insensitively). Blank lines are skipped. Every problem raises
:class:`DataError` naming the file (and, for ``labels.csv``, the line, counting
the header as line 1, and the data row, counting from 1).

Images may have any size, aspect and bit depth: :mod:`.site_image` maps each
one's intensities to 0..255 (PNG/PGM linearly from their container's range;
DICOM through its Modality LUT, VOI LUT or Window Center/Width, else its stored
range, MONOCHROME1 inverted) and makes it ``image_size`` square (``resize``:
``pad`` to a square with its background value, or centre-``crop``, then
resize). A site may declare ``bit_depth`` 8 or 16 that every image must have;
``None`` (the default) accepts each file's own depth.

CLI: ``export`` writes MNIST/MIAS subsets as site folders (e.g. for a pilot
runbook); ``check`` reports what a folder holds (image count, sizes, bit depths,
photometric interpretations, intensity mappings, labels) and exits 1 naming
every problem::

    python -m pgsl_flower.data.site_folder export --dataset mnist --sites 3 \\
        --per-site 200 --out /path [--format png|pgm|dcm] [--seed 0]
    python -m pgsl_flower.data.site_folder check /path/site-0 \\
        [--dataset mnist] [--image-size 28] [--bit-depth 8|16] [--resize pad|crop]
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .partition import partition_indices
from .site_cache import cached_site_images
from .site_image import (
    BIT_DEPTHS,
    FORMATS,
    RESIZE_RULES,
    check_format,
    check_bit_depth,
    check_int,
    check_resize,
    decode_site_image,
    fit_image,
    read_site_image,
    save_image,
)
from .types import ImageDataset

__all__ = [
    "BIT_DEPTHS",
    "FORMATS",
    "LABELS_FILE",
    "RESIZE_RULES",
    "SiteData",
    "SiteReport",
    "export_sites",
    "inspect_site_folder",
    "load_site_folder",
    "main",
    "read_site_image",
    "save_image",
    "write_site_folder",
]

LABELS_FILE = "labels.csv"

_REQUIRED_COLUMNS = ("id", "label")


@dataclass(frozen=True, eq=False)
class SiteData:
    """A loaded site folder.

    Attributes:
        dataset: images ``(N, 1, image_size, image_size)`` uint8 and int64 labels
            indexing ``classes``, in ``labels.csv`` row order.
        ids: the ``id`` column, ``ids[i]`` belongs to ``dataset.images[i]``.
        paths: the image file of each row.
    """

    dataset: ImageDataset
    ids: tuple[str, ...]
    paths: tuple[Path, ...]

    def __post_init__(self) -> None:
        """Check that ``ids`` and ``paths`` have one entry per image."""
        n = len(self.dataset)
        if len(self.ids) != n or len(self.paths) != n:
            raise ValueError(
                f"ids/paths: expected {n} entries each, got {len(self.ids)} ids and {len(self.paths)} paths"
            )

    def __len__(self) -> int:
        """Number of images."""
        return len(self.dataset)


# --------------------------------------------------------------------------- arguments


def _check_classes(classes: object) -> tuple[str, ...]:
    """Return ``classes`` if it is a non-empty tuple of distinct non-blank str, else ValueError."""
    if not isinstance(classes, tuple) or not classes:
        raise ValueError(f"classes: expected a non-empty tuple of class names, got {classes!r}")
    if not all(isinstance(c, str) and c.strip() == c and c for c in classes):
        raise ValueError(f"classes: names must be non-empty str without surrounding spaces, got {classes!r}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes: duplicate class names in {classes!r}")
    return classes


# --------------------------------------------------------------------------- labels.csv


_Bad = Callable[[str], DataError]  # builds a DataError prefixed with "labels.csv, line N (row M)"


@dataclass(frozen=True)
class _Row:
    """One validated labels.csv row."""

    where: str  # "line 3 (row 2)"
    id: str
    label: int
    path: Path


def _read_rows(folder: Path, classes: tuple[str, ...] | None) -> tuple[list[_Row], tuple[str, ...]]:
    """Parse and validate ``folder/labels.csv`` and locate each row's image file.

    Returns the rows and the class names; ``classes=None`` takes every label as a class name
    (in order of first appearance) instead of checking them against a dataset's classes.
    """
    csv_path = folder / LABELS_FILE
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise DataError(
            f"{csv_path} does not exist; a site folder needs {LABELS_FILE} with the header "
            f"'id,label' (optional 'file' column) and one row per image"
        ) from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{csv_path} is not UTF-8 text ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{csv_path} cannot be read: {exc}") from exc
    if not text.strip():
        raise DataError(f"{csv_path} is empty; expected the header 'id,label' and one row per image")

    try:
        records = list(_numbered_rows(text))
    except csv.Error as exc:
        raise DataError(f"{csv_path}: malformed CSV ({exc})") from exc
    header_line, header = records[0]
    names = [h.strip().lower() for h in header]
    for i, name in enumerate(names):
        if name and name in names[:i]:
            raise DataError(f"{csv_path}, line {header_line} (header): column {name!r} appears twice")
    missing = [c for c in _REQUIRED_COLUMNS if c not in names]
    if missing:
        raise DataError(
            f"{csv_path}, line {header_line} (header): missing column(s) {', '.join(missing)}; "
            f"expected the header 'id,label' (optional 'file'), got {','.join(header)!r}"
        )
    col = {name: names.index(name) for name in ("id", "label", "file") if name in names}
    if len(records) == 1:
        raise DataError(f"{csv_path}: no image rows, only the header; the site has no images")

    by_stem = _images_by_stem(folder)
    allowed = ", ".join(repr(c) for c in classes) if classes is not None else "any non-blank name"
    class_index = {c: k for k, c in enumerate(classes or ())}
    first_id: dict[str, str] = {}
    first_file: dict[str, str] = {}
    rows: list[_Row] = []
    for n, (line, fields) in enumerate(records[1:], start=1):
        where = f"line {line} (row {n})"

        def bad(why: str, where: str = where) -> DataError:
            return DataError(f"{csv_path}, {where}: {why}")

        if len(fields) > len(header):
            raise bad(f"{len(fields)} fields but the header has {len(header)}")
        cells = {name: (fields[i].strip() if i < len(fields) else "") for name, i in col.items()}
        rid, label = cells["id"], cells["label"]
        if not rid:
            raise bad("blank id")
        if not label:
            raise bad(f"blank label for id {rid!r}; allowed class names: {allowed}")
        if rid in first_id:
            raise bad(f"duplicate id {rid!r}, already used at {first_id[rid]}")
        first_id[rid] = where
        if classes is None:
            class_index.setdefault(label, len(class_index))
        if label not in class_index:
            raise bad(f"unknown label {label!r} for id {rid!r}; allowed class names: {allowed}")
        rel = cells.get("file", "")
        if rel:
            path = _listed_file(folder, rel, bad)
        else:
            path = _file_for_id(folder, rid, by_stem, bad)
        key = os.path.normpath(path)
        if key in first_file:
            raise bad(f"image {path} is also used by {first_file[key]}")
        first_file[key] = where
        rows.append(_Row(where=where, id=rid, label=class_index[label], path=path))
    return rows, tuple(class_index)


def _numbered_rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number, fields)`` for each non-blank CSV record (header included)."""
    reader = csv.reader(text.splitlines(keepends=True))
    start = 1
    for fields in reader:
        if any(f.strip() for f in fields):
            yield start, fields
        start = reader.line_num + 1


def _images_by_stem(folder: Path) -> dict[str, list[str]]:
    """Map file stem -> names of the image files (supported extensions) in ``folder``."""
    out: dict[str, list[str]] = {}
    for entry in sorted(os.listdir(folder)):
        stem, dot, ext = entry.rpartition(".")
        if dot and ext.lower() in FORMATS:
            out.setdefault(stem, []).append(entry)
    return out


def _file_for_id(folder: Path, rid: str, by_stem: dict[str, list[str]], bad: _Bad) -> Path:
    """The single ``<id>.png|pgm|dcm`` file in ``folder``; DataError if none or several."""
    found = by_stem.get(rid, [])
    if not found:
        expected = ", ".join(str(folder / f"{rid}.{ext}") for ext in FORMATS)
        raise bad(f"image for id {rid!r} is missing: none of {expected} exists")
    if len(found) > 1:
        both = " and ".join(str(folder / name) for name in found)
        raise bad(f"id {rid!r} matches several images: {both}; keep exactly one")
    return folder / found[0]


def _listed_file(folder: Path, rel: str, bad: _Bad) -> Path:
    """``folder/rel`` for a ``file`` cell; DataError if absolute, outside the folder or missing."""
    path = folder / rel
    if Path(rel).is_absolute():
        raise bad(f"file {rel!r} must be a path relative to {folder}")
    if Path(os.path.normpath(rel)).parts[:1] == ("..",):
        raise bad(f"file {rel!r} points outside the site folder {folder}")
    if not path.is_file():
        raise bad(f"image {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    return path


# --------------------------------------------------------------------------- public API


def _check_folder(folder: str | Path) -> Path:
    """``folder`` as a Path; DataError unless it is an existing directory."""
    path = Path(folder).expanduser()
    if not path.exists():
        raise DataError(f"{path}: site folder does not exist")
    if not path.is_dir():
        raise DataError(f"{path}: site folder is not a directory")
    return path


def load_site_folder(
    folder: str | Path,
    classes: tuple[str, ...],
    image_size: int,
    bit_depth: int | None = None,
    name: str | None = None,
    resize: str = "pad",
    cache_dir: str | Path | None = None,
    site: str = "",
) -> SiteData:
    """Load a site folder (``labels.csv`` + images) into a :class:`SiteData`.

    Images come out as ``(N, 1, image_size, image_size)`` uint8 in ``labels.csv``
    row order, labels as int64 indices into ``classes`` (``labels.csv`` holds
    the class names). Images of any size and depth are mapped to 0..255 and made
    square by ``resize`` (``pad`` or ``crop``, :mod:`.site_image`); ``bit_depth``
    (8 or 16), if given, is the depth every image must have. ``name`` is the
    dataset name (default ``site/<folder name>``). The whole ``labels.csv`` is
    validated before any image is decoded; the first problem raises
    :class:`DataError` naming the file (and the CSV line/row). Bad arguments
    raise ValueError naming the argument.

    With ``cache_dir``, the decoded images are kept there for site ``site`` and
    reused while the folder's files and the settings are unchanged
    (:mod:`.site_cache`); ``labels.csv`` is validated at every load.
    """
    classes = _check_classes(classes)
    size = check_int("image_size", image_size, 2)
    depth = check_bit_depth(bit_depth)
    rule = check_resize(resize)
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"name: expected a non-empty str or None, got {name!r}")
    folder = _check_folder(folder)

    if not isinstance(site, str):
        raise ValueError(f"site: expected a str, got {site!r}")
    rows, _ = _read_rows(folder, classes)

    def decode() -> np.ndarray:
        images = np.empty((len(rows), 1, size, size), dtype=np.uint8)
        for i, row in enumerate(rows):
            try:
                images[i, 0] = read_site_image(row.path, size, depth, rule)
            except DataError as exc:
                raise DataError(f"{exc} (listed in {folder / LABELS_FILE}, {row.where})") from exc.__cause__
        return images

    if cache_dir is None:
        images = decode()
    else:
        settings = [list(classes), size, depth, rule]
        images = cached_site_images(folder, site, settings, size, [r.path for r in rows], decode, Path(cache_dir))
    dataset = ImageDataset(
        images=torch.from_numpy(images),
        labels=torch.tensor([r.label for r in rows], dtype=torch.int64),
        classes=classes,
        name=name if name is not None else f"site/{folder.resolve().name or 'root'}",
    )
    return SiteData(dataset=dataset, ids=tuple(r.id for r in rows), paths=tuple(r.path for r in rows))


# --------------------------------------------------------------------------- check


@dataclass(frozen=True)
class SiteReport:
    """What a site folder holds (:func:`inspect_site_folder`); counters count images."""

    folder: Path
    label_counts: dict[str, int]  # class name -> images, in class order (zero for absent classes)
    sizes: Counter[tuple[int, int]]  # (H, W) as stored
    bit_depths: Counter[int]
    photometric: Counter[str]  # DICOM PhotometricInterpretation, or "grayscale" (PNG/PGM)
    intensity: Counter[str]  # container | voi-lut | window | stored-range
    formats: Counter[str]
    problems: tuple[str, ...]  # one message per image that failed, naming the file
    image_size: int | None = None
    resize: str = "pad"

    @property
    def images(self) -> int:
        """Rows in labels.csv."""
        return sum(self.label_counts.values())

    def summary(self) -> str:
        """Human-readable report, one fact per line."""

        def counts(counter: Counter, fmt: Callable[[object], str] = str) -> str:
            return ", ".join(f"{fmt(k)}: {v}" for k, v in sorted(counter.items())) or "none"

        bad = len(self.problems)
        lines = [f"{self.folder}: {self.images} images " + ("OK" if not bad else f"({bad} with problems)")]
        lines.append("  labels: " + ", ".join(f"{k}: {v}" for k, v in self.label_counts.items()))
        if self.sizes:
            by_area = sorted(self.sizes, key=lambda hw: (hw[0] * hw[1], hw))
            common, n = max(self.sizes.items(), key=lambda kv: (kv[1], -kv[0][0] * kv[0][1]))
            heights, widths = [h for h, _ in self.sizes], [w for _, w in self.sizes]
            lines.append(
                f"  sizes (HxW): {len(self.sizes)} distinct; smallest {_hw(by_area[0])}, largest {_hw(by_area[-1])}, "
                f"most common {_hw(common)} ({n} images); heights {min(heights)}..{max(heights)}, "
                f"widths {min(widths)}..{max(widths)}"
            )
        lines.append("  bit depths: " + counts(self.bit_depths, lambda b: f"{b}-bit"))
        lines.append("  photometric: " + counts(self.photometric))
        lines.append("  intensity mapping: " + counts(self.intensity))
        lines.append("  formats: " + counts(self.formats))
        if self.image_size:
            side = self.image_size
            grow = sum(n for (h, w), n in self.sizes.items() if _side(h, w, self.resize) < side)
            shrink = sum(n for (h, w), n in self.sizes.items() if _side(h, w, self.resize) > side)
            same = sum(self.sizes.values()) - grow - shrink
            lines.append(
                f"  loads as {side}x{side} ({self.resize} to a square, then resize): "
                f"{shrink} shrunk, {grow} enlarged, {same} kept"
            )
        return "\n".join(lines)


def _hw(hw: tuple[int, int]) -> str:
    return f"{hw[0]}x{hw[1]}"


def _side(height: int, width: int, resize: str) -> int:
    """Side of the square an image becomes before resizing."""
    return max(height, width) if resize == "pad" else min(height, width)


def inspect_site_folder(
    folder: str | Path,
    classes: tuple[str, ...] | None = None,
    bit_depth: int | None = None,
    image_size: int | None = None,
    resize: str = "pad",
) -> SiteReport:
    """Decode every image of a site folder and report sizes, depths, labels and problems.

    ``classes`` checks the labels against a dataset's class names (``None``: any
    label is a class). Unlike :func:`load_site_folder`, every image is tried and each
    failure is collected in ``problems`` (naming the file and the labels.csv line);
    a missing folder or a bad ``labels.csv`` still raises :class:`DataError`. With
    ``image_size``, each image is also fitted as a run would (``resize``).
    """
    if classes is not None:
        classes = _check_classes(classes)
    depth = check_bit_depth(bit_depth)
    size = None if image_size is None else check_int("image_size", image_size, 2)
    rule = check_resize(resize)
    folder = _check_folder(folder)
    rows, names = _read_rows(folder, classes)
    sizes: Counter[tuple[int, int]] = Counter()
    depths: Counter[int] = Counter()
    photometric: Counter[str] = Counter()
    intensity: Counter[str] = Counter()
    formats: Counter[str] = Counter()
    problems: list[str] = []
    for row in rows:
        try:
            image = decode_site_image(row.path, depth)
            if size is not None:
                fit_image(image.pixels, size, rule)
        except DataError as exc:
            problems.append(f"{exc} (listed in {folder / LABELS_FILE}, {row.where})")
            continue
        sizes[image.shape] += 1
        depths[image.bits] += 1
        photometric[image.photometric] += 1
        intensity[image.intensity] += 1
        formats[row.path.suffix.lower()] += 1
    label_counts = dict.fromkeys(names, 0)
    for row in rows:
        label_counts[names[row.label]] += 1
    return SiteReport(folder, label_counts, sizes, depths, photometric, intensity, formats, tuple(problems), size, rule)


def _site_id(dataset_name: str, index: int, width: int) -> str:
    """Stable image id ``<dataset name>-<index>``, safe as a file name."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", dataset_name).strip("-") or "image"
    return f"{stem}-{index:0{width}d}"


def write_site_folder(
    dataset: ImageDataset,
    indices: Sequence[int] | np.ndarray | torch.Tensor,
    folder: str | Path,
    fmt: str = "png",
) -> Path:
    """Write ``dataset[indices]`` as a site folder: 8-bit images + ``labels.csv``.

    Each image is ``<id>.<fmt>`` with id ``<dataset name>-<index>`` (e.g.
    ``mnist-train-00042``, ``/`` replaced by ``-``); ``labels.csv`` has the
    header ``id,label`` and the class names, in ``indices`` order. ``fmt`` is
    png, pgm or dcm. ``folder`` is created; it must not exist or be empty
    (FileExistsError otherwise). Returns the folder. The dataset must have one
    channel; ``indices`` must be non-empty, distinct and in range (ValueError).
    """
    fmt = check_format(fmt)
    if not isinstance(dataset, ImageDataset):
        raise ValueError(f"dataset: expected an ImageDataset, got {type(dataset).__name__}")  # noqa: TRY004
    if dataset.image_shape[0] != 1:
        raise ValueError(f"dataset: expected single-channel images, got shape {dataset.image_shape}")
    idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"indices: expected a non-empty 1-D sequence of ints, got {idx.dtype} {idx.shape}")
    if idx.min() < 0 or idx.max() >= len(dataset):
        raise ValueError(f"indices: values must lie in 0..{len(dataset) - 1}, got {idx.min()}..{idx.max()}")
    if np.unique(idx).size != idx.size:
        raise ValueError("indices: contains duplicates (each image would need two ids)")
    folder = Path(folder).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder}: already exists and is not an empty folder; choose a new one")
    folder.mkdir(parents=True, exist_ok=True)
    width = max(1, len(str(len(dataset) - 1)))
    images = dataset.images[torch.as_tensor(idx, dtype=torch.int64), 0].numpy()
    labels = dataset.labels[torch.as_tensor(idx, dtype=torch.int64)].tolist()
    with open(folder / LABELS_FILE, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", "label"])
        for i, (k, label) in enumerate(zip(idx.tolist(), labels)):
            rid = _site_id(dataset.name, k, width)
            save_image(folder / f"{rid}.{fmt}", images[i])
            writer.writerow([rid, dataset.classes[label]])
    return folder


def export_sites(
    dataset_name: str,
    num_sites: int,
    per_site: int,
    out_dir: str | Path,
    fmt: str = "png",
    seed: int = 0,
    data_dir: str | Path | None = None,
) -> list[Path]:
    """Write ``out_dir/site-0 .. site-{num_sites-1}`` from a dataset's training split.

    Loads the training set with :func:`~pgsl_flower.data.load_dataset`
    (``data_dir``, default image size, ``seed``: it also fixes the MIAS
    train/test split, so use the run's seed), partitions it IID with
    ``partition_indices(..., partitioner="iid", seed=seed)`` and writes the first
    ``per_site`` (lowest) indices of partition k to ``site-k`` with
    :func:`write_site_folder`. Returns the folders written.
    """
    # Deferred: keeps this module importable from the package __init__.
    from . import load_dataset

    sites = check_int("num_sites", num_sites, 1)
    count = check_int("per_site", per_site, 1)
    check_int("seed", seed, 0)
    fmt = check_format(fmt)
    train, _ = load_dataset(dataset_name, data_dir, None, seed)
    parts = partition_indices(train.labels.numpy(), sites, partitioner="iid", seed=seed)
    small = [k for k, p in enumerate(parts) if p.size < count]
    if small:
        raise ValueError(
            f"per_site: {count} is more than partition {small[0]} holds ({parts[small[0]].size} of "
            f"{len(train)} {dataset_name} training images over {sites} sites)"
        )
    out = Path(out_dir).expanduser()
    return [write_site_folder(train, p[:count], out / f"site-{k}", fmt) for k, p in enumerate(parts)]


def _check(folder: Path, dataset: str | None, bit_depth: int | None, image_size: int | None, resize: str) -> int:
    """``check``: print the report; 1 (problems on stderr) if any image failed."""
    from . import DATASET_CLASSES

    classes = DATASET_CLASSES[dataset] if dataset else None
    report = inspect_site_folder(folder, classes, bit_depth, image_size, resize)
    print(report.summary())
    for problem in report.problems:
        print(f"error: {problem}", file=sys.stderr)
    if report.problems:
        print(f"error: {len(report.problems)} of {report.images} images in {folder} cannot be loaded", file=sys.stderr)
    return 1 if report.problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``export`` writes site folders and prints their paths; ``check``
    reports what a site's folder holds and every problem its SuperNode would hit."""
    parser = argparse.ArgumentParser(
        prog="python -m pgsl_flower.data.site_folder",
        description="Lay out dataset subsets as site folders (labels.csv + images), or check one.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="write <out>/site-0 .. site-{N-1} from a training set")
    exp.add_argument("--dataset", required=True, choices=("mnist", "mias", "breastmnist"))
    exp.add_argument("--sites", required=True, type=int, help="number of site folders")
    exp.add_argument("--per-site", required=True, type=int, help="images per site")
    exp.add_argument("--out", required=True, type=Path, help="parent folder of the site folders")
    exp.add_argument("--format", default="png", choices=FORMATS, help="image format (default png)")
    exp.add_argument("--seed", default=0, type=int, help="partition seed (default 0)")
    exp.add_argument("--data-dir", default=None, help="data root (default: PGSL_DATA_DIR or ../shared/data)")
    chk = sub.add_parser("check", help="report what a site folder holds and every problem in it")
    chk.add_argument("folder", type=Path)
    chk.add_argument("--dataset", default=None, choices=("mnist", "mias", "mias-roi", "breastmnist"),
                     help="check the labels against this dataset's class names (default: any label)")
    chk.add_argument("--image-size", default=None, type=int,
                     help="also fit every image to the run's image-size (28 for MNIST)")
    chk.add_argument("--bit-depth", default=None, type=int, choices=BIT_DEPTHS,
                     help="the depth every image must have (the SuperNode's node-config bit-depth; default: any)")
    chk.add_argument("--resize", default="pad", choices=RESIZE_RULES, help="run-config site-resize (default pad)")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            return _check(args.folder, args.dataset, args.bit_depth, args.image_size, args.resize)
        folders = export_sites(
            args.dataset, args.sites, args.per_site, args.out,
            fmt=args.format, seed=args.seed, data_dir=args.data_dir,
        )
    except (DataError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for folder in folders:
        print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
