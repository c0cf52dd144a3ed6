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

Bit depth: a site declares ``bit_depth`` 8 or 16 and every image must have that
depth (PNG mode ``L`` = 8, ``I;16``/``I`` = 16; PGM maxval <= 255 = 8, else 16;
DICOM BitsStored 8 = 8, 9..16 = 16). 16-bit images are converted to uint8 by
linear scaling with their container's maximum: ``round(v * 255 / 65535)`` for
PNG/PGM (Pillow first scales a PGM with maxval M to 0..65535, so that is
``v * 255 / M`` overall) and ``round(v * 255 / (2**BitsStored - 1))`` for DICOM.
DICOM pixels first get ``RescaleSlope``/``RescaleIntercept`` (if present) and
MONOCHROME1 inversion (``max - v``), then are clipped to ``0..2**BitsStored - 1``.
Images are never resized: each must be ``image_size`` x ``image_size``.

CLI (writes MNIST/MIAS subsets as site folders, e.g. for a pilot runbook)::

    python -m pgsl_flower.data.site_folder export --dataset mnist --sites 3 \\
        --per-site 200 --out /path [--format png|pgm|dcm] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from .errors import DataError
from .partition import partition_indices
from .types import ImageDataset

__all__ = [
    "BIT_DEPTHS",
    "FORMATS",
    "LABELS_FILE",
    "SiteData",
    "export_sites",
    "load_site_folder",
    "main",
    "read_site_image",
    "save_image",
    "write_site_folder",
]

LABELS_FILE = "labels.csv"
#: Image formats (file extensions without the dot) a site folder may hold.
FORMATS: tuple[str, ...] = ("png", "pgm", "dcm")
BIT_DEPTHS: tuple[int, ...] = (8, 16)

_REQUIRED_COLUMNS = ("id", "label")
_PIL_FORMAT = {"png": "PNG", "pgm": "PPM"}  # what Image.open reports for each extension
_PIL_DEPTH = {"1": 1, "L": 8, "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 16}
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")


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


def _check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` as int if it is an int >= ``minimum``, else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}: expected an int, got {value!r}")  # noqa: TRY004 - project convention
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return int(value)


def _check_bit_depth(bit_depth: object) -> int:
    """Return ``bit_depth`` if it is 8 or 16, else ValueError naming it."""
    if isinstance(bit_depth, bool) or bit_depth not in BIT_DEPTHS:
        raise ValueError(f"bit_depth: must be 8 or 16, got {bit_depth!r}")
    return int(bit_depth)  # type: ignore[arg-type]


def _check_format(fmt: object) -> str:
    """Return ``fmt`` if it is one of :data:`FORMATS`, else ValueError naming it."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return str(fmt)


def _check_classes(classes: object) -> tuple[str, ...]:
    """Return ``classes`` if it is a non-empty tuple of distinct non-blank str, else ValueError."""
    if not isinstance(classes, tuple) or not classes:
        raise ValueError(f"classes: expected a non-empty tuple of class names, got {classes!r}")
    if not all(isinstance(c, str) and c.strip() == c and c for c in classes):
        raise ValueError(f"classes: names must be non-empty str without surrounding spaces, got {classes!r}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes: duplicate class names in {classes!r}")
    return classes


# --------------------------------------------------------------------------- images


def _scale_to_uint8(values: np.ndarray, maximum: int) -> np.ndarray:
    """Linearly map ``0..maximum`` to ``0..255`` (rounded; values outside are clipped)."""
    v = np.clip(values.astype(np.float64), 0, maximum)
    return np.rint(v * (255.0 / maximum)).astype(np.uint8)


def _check_size(path: Path, height: int, width: int, image_size: int) -> None:
    """DataError naming ``path`` unless the image is ``image_size`` x ``image_size``."""
    if (height, width) != (image_size, image_size):
        raise DataError(
            f"{path}: wrong image size: got {height}x{width} (HxW), "
            f"expected {image_size}x{image_size} (image_size={image_size})"
        )


def _read_pillow(path: Path, ext: str, image_size: int, bit_depth: int) -> np.ndarray:
    """Decode a PNG/PGM file to ``(H, W)`` uint8 (see the module docstring for 16-bit)."""
    try:
        with Image.open(path) as im:
            if im.format != _PIL_FORMAT[ext]:
                raise DataError(
                    f"{path}: file content is {im.format or 'unknown'}, not {_PIL_FORMAT[ext]} "
                    f"as the .{ext} extension says"
                )
            depth = _PIL_DEPTH.get(im.mode)
            if depth is None:
                raise DataError(
                    f"{path}: not a single-channel grayscale image (Pillow mode {im.mode!r} with "
                    f"{len(im.getbands())} band(s) {''.join(im.getbands())}; expected mode 'L' "
                    f"for 8-bit or 'I;16' for 16-bit grayscale)"
                )
            if depth != bit_depth:
                raise DataError(
                    f"{path}: wrong bit depth: {depth}-bit image (Pillow mode {im.mode!r}) but "
                    f"the site declares bit_depth={bit_depth}"
                )
            w, h = im.size
            _check_size(path, h, w, image_size)
            im.load()
            arr = np.asarray(im)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"{path} does not exist") from exc
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, struct.error, ...
        raise DataError(f"{path}: cannot decode image, corrupt or truncated ({type(exc).__name__}: {exc})") from exc
    if bit_depth == 8:
        return np.ascontiguousarray(arr, dtype=np.uint8)
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535):
        raise DataError(
            f"{path}: 16-bit image holds values {int(arr.min())}..{int(arr.max())}, outside 0..65535"
        )
    return _scale_to_uint8(arr, 65535)


def _dicom_number(ds: Dataset, keyword: str, default: float) -> float:
    """Numeric value of an optional DICOM element (``default`` if absent or empty)."""
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    return float(value)


def _read_dicom(path: Path, image_size: int, bit_depth: int) -> np.ndarray:
    """Decode a single-frame grayscale DICOM file to ``(H, W)`` uint8."""
    try:
        ds = pydicom.dcmread(path)
    except FileNotFoundError as exc:
        raise DataError(f"{path} does not exist") from exc
    except Exception as exc:  # InvalidDicomError, EOFError, OSError, ValueError, ...
        raise DataError(f"{path}: cannot read DICOM file, corrupt or not DICOM ({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in ds:
        raise DataError(f"{path}: DICOM file has no PixelData element (truncated, or not an image)")
    samples = ds.get("SamplesPerPixel")
    if samples != 1:
        raise DataError(
            f"{path}: not a single-channel grayscale image (DICOM SamplesPerPixel {samples}, expected 1)"
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in _MONOCHROME:
        raise DataError(
            f"{path}: not a grayscale image (DICOM PhotometricInterpretation {photometric!r}, "
            f"expected MONOCHROME1 or MONOCHROME2)"
        )
    frames = int(_dicom_number(ds, "NumberOfFrames", 1))
    if frames != 1:
        raise DataError(f"{path}: DICOM file holds {frames} frames, expected a single frame")
    bits = ds.get("BitsStored")
    if not isinstance(bits, int):
        raise DataError(f"{path}: DICOM BitsStored is missing or invalid ({bits!r})")
    ok = bits == 8 if bit_depth == 8 else 9 <= bits <= 16
    if not ok:
        want = "8" if bit_depth == 8 else "9..16"
        raise DataError(
            f"{path}: wrong bit depth: DICOM BitsStored {bits} but the site declares "
            f"bit_depth={bit_depth} (expected BitsStored {want})"
        )
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if not isinstance(rows, int) or not isinstance(cols, int):
        raise DataError(f"{path}: DICOM Rows/Columns missing or invalid ({rows!r}, {cols!r})")
    _check_size(path, rows, cols, image_size)
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as exc:  # unsupported compression, missing decoder, short pixel data, ...
        ts = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
        ts_text = f"{ts.name} ({ts})" if ts is not None else "missing"
        hint = (
            "compressed pixel data that cannot be decoded here; store it uncompressed, "
            "e.g. Explicit VR Little Endian"
            if ts is not None and ts.is_compressed
            else "corrupt or truncated"
        )
        raise DataError(
            f"{path}: cannot decode the DICOM pixel data (transfer syntax {ts_text}; {hint}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if arr.shape != (image_size, image_size):
        raise DataError(f"{path}: DICOM pixel data has shape {arr.shape}, expected ({image_size}, {image_size})")
    maximum = (1 << bits) - 1
    values = arr.astype(np.float64)
    slope = _dicom_number(ds, "RescaleSlope", 1.0)
    intercept = _dicom_number(ds, "RescaleIntercept", 0.0)
    if slope != 1.0 or intercept != 0.0:
        values = values * slope + intercept
    if photometric == "MONOCHROME1":
        values = maximum - values
    return _scale_to_uint8(values, maximum)


def read_site_image(path: str | Path, image_size: int, bit_depth: int = 8) -> np.ndarray:
    """Read one site image (``.png``, ``.pgm`` or ``.dcm``) as ``(image_size, image_size)`` uint8.

    Checks, each raising :class:`DataError` naming ``path``: the file exists and
    decodes, its content matches its extension, it is single-channel grayscale,
    its bit depth is ``bit_depth`` and it is ``image_size`` x ``image_size``.
    16-bit images are scaled to uint8 as described in the module docstring.
    """
    path = Path(path)
    size = _check_int("image_size", image_size, 2)
    depth = _check_bit_depth(bit_depth)
    ext = path.suffix.lower().lstrip(".")
    if ext not in FORMATS:
        raise DataError(
            f"{path}: unsupported image file type {path.suffix!r}; expected one of "
            + ", ".join(f".{f}" for f in FORMATS)
        )
    if not path.is_file():
        raise DataError(f"{path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    if ext == "dcm":
        return _read_dicom(path, size, depth)
    return _read_pillow(path, ext, size, depth)


# --------------------------------------------------------------------------- labels.csv


_Bad = Callable[[str], DataError]  # builds a DataError prefixed with "labels.csv, line N (row M)"


@dataclass(frozen=True)
class _Row:
    """One validated labels.csv row."""

    where: str  # "line 3 (row 2)"
    id: str
    label: int
    path: Path


def _read_rows(folder: Path, classes: tuple[str, ...]) -> list[_Row]:
    """Parse and validate ``folder/labels.csv`` and locate each row's image file."""
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
    allowed = ", ".join(repr(c) for c in classes)
    class_index = {c: k for k, c in enumerate(classes)}
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
    return rows


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


def load_site_folder(
    folder: str | Path,
    classes: tuple[str, ...],
    image_size: int,
    bit_depth: int = 8,
    name: str | None = None,
) -> SiteData:
    """Load a site folder (``labels.csv`` + images) into a :class:`SiteData`.

    Images come out as ``(N, 1, image_size, image_size)`` uint8 in ``labels.csv``
    row order, labels as int64 indices into ``classes`` (``labels.csv`` holds
    the class names). ``bit_depth`` (8 or 16) is the depth every image must
    have; 16-bit images are scaled to uint8 (module docstring). ``name`` is the
    dataset name (default ``site/<folder name>``). The whole ``labels.csv`` is
    validated before any image is decoded; the first problem raises
    :class:`DataError` naming the file (and the CSV line/row). Bad arguments
    raise ValueError naming the argument.
    """
    classes = _check_classes(classes)
    size = _check_int("image_size", image_size, 2)
    depth = _check_bit_depth(bit_depth)
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"name: expected a non-empty str or None, got {name!r}")
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise DataError(f"{folder}: site folder does not exist")
    if not folder.is_dir():
        raise DataError(f"{folder}: site folder is not a directory")

    rows = _read_rows(folder, classes)
    images = np.empty((len(rows), 1, size, size), dtype=np.uint8)
    for i, row in enumerate(rows):
        try:
            images[i, 0] = read_site_image(row.path, size, depth)
        except DataError as exc:
            raise DataError(f"{exc} (listed in {folder / LABELS_FILE}, {row.where})") from exc.__cause__
    dataset = ImageDataset(
        images=torch.from_numpy(images),
        labels=torch.tensor([r.label for r in rows], dtype=torch.int64),
        classes=classes,
        name=name if name is not None else f"site/{folder.resolve().name or 'root'}",
    )
    return SiteData(dataset=dataset, ids=tuple(r.id for r in rows), paths=tuple(r.path for r in rows))


def _dicom_dataset(pixels: np.ndarray, bits_stored: int) -> Dataset:
    """A minimal Secondary Capture DICOM dataset (MONOCHROME2, no patient data)."""
    allocated = 8 if pixels.dtype == np.uint8 else 16
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.PatientName = ""  # type 2 elements: present but empty, no patient data
    ds.PatientID = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(s) for s in pixels.shape)
    ds.BitsAllocated = allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    data = np.ascontiguousarray(pixels, dtype="<u2" if allocated == 16 else np.uint8).tobytes()
    if len(data) % 2:
        data += b"\x00"  # DICOM values have even length
    ds.add_new(0x7FE00010, "OW" if allocated == 16 else "OB", data)
    return ds


def save_image(path: str | Path, pixels: np.ndarray, bits_stored: int | None = None) -> Path:
    """Write a 2-D grayscale image; the format follows the extension (.png, .pgm, .dcm).

    ``pixels`` uint8 gives an 8-bit file, uint16 a 16-bit one (PNG mode I;16, PGM
    maxval 65535, DICOM BitsAllocated 16). ``bits_stored`` is for DICOM only
    (default 8 for uint8, 16 for uint16; uint16 allows 9..16 and the values must
    fit). DICOM files are minimal Secondary Capture objects: MONOCHROME2,
    explicit VR little endian, generated UIDs, no patient data.
    """
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    _check_format(ext)
    arr = np.asarray(pixels)
    if arr.ndim != 2 or arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pixels: expected a 2-D uint8 or uint16 array, got {arr.dtype} {arr.shape}")
    if ext != "dcm":
        if bits_stored is not None:
            raise ValueError(f"bits_stored: only used for .dcm files, got {bits_stored!r} for {path}")
        Image.fromarray(np.ascontiguousarray(arr)).save(path, format=_PIL_FORMAT[ext])
        return path
    if arr.dtype == np.uint8:
        bits = 8 if bits_stored is None else bits_stored
        if bits != 8:
            raise ValueError(f"bits_stored: uint8 pixels are stored with 8 bits, got {bits_stored!r}")
    else:
        bits = 16 if bits_stored is None else _check_int("bits_stored", bits_stored, 9)
        if bits > 16:
            raise ValueError(f"bits_stored: uint16 pixels allow 9..16, got {bits}")
        if arr.size and int(arr.max()) >= 1 << bits:
            raise ValueError(f"pixels: maximum {int(arr.max())} does not fit in bits_stored={bits}")
    _dicom_dataset(arr, bits).save_as(path, enforce_file_format=True)
    return path


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
    fmt = _check_format(fmt)
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

    sites = _check_int("num_sites", num_sites, 1)
    count = _check_int("per_site", per_site, 1)
    _check_int("seed", seed, 0)
    fmt = _check_format(fmt)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``export`` writes site folders and prints their paths; ``check``
    validates a site's folder the way its SuperNode will load it."""
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
    chk = sub.add_parser("check", help="validate a site folder (what its SuperNode loads)")
    chk.add_argument("folder", type=Path)
    chk.add_argument("--dataset", required=True, choices=("mnist", "mias", "mias-roi", "breastmnist"),
                     help="sets the class names")
    chk.add_argument("--image-size", required=True, type=int, help="the run's image-size (28 for MNIST)")
    chk.add_argument("--bit-depth", default=8, type=int, choices=BIT_DEPTHS)
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            from . import DATASET_CLASSES

            site = load_site_folder(args.folder, DATASET_CLASSES[args.dataset], args.image_size, args.bit_depth)
            counts = ", ".join(f"{name}: {count}" for name, count in site.dataset.class_counts().items())
            print(f"{args.folder}: {len(site)} images OK ({counts})")
            return 0
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
