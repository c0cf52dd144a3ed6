"""``mias-roi``: mini-MIAS patches centred on the annotated abnormalities, and breast-tissue
patches of normal images.

- one patch per ``Info.txt`` abnormality row with coordinates (119 rows: benign or
  malignant by that row's severity), a ``roi_size`` x ``roi_size`` window of the
  1024 x 1024 image centred on (x, 1023 - y), shifted inside the image where it
  would cross the border;
- one patch per normal image (207), centred at a seeded random point of the breast
  at least ``roi_size / 4`` inside the breast mask (:mod:`.breast_region`), so the
  window is mostly tissue;
- patches are resized to ``image_size`` (box filter) and, with ``laterality``,
  mirrored like their image (chest wall on the left).

Splits are made on source images (the paper split, or the stratified patient-grouped
cross-validation folds of :func:`.mias.mias_split`), and a patch goes where its image
goes: no image contributes patches to both train and test.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from .breast_region import breast_mask, faces_right
from .disk_cache import cached_arrays
from .errors import DataError
from .mias import (
    MIAS_CLASSES,
    _box_resize,
    _decode,
    _image_paths,
    map_images,
    mias_split,
    parse_abnormalities,
    parse_info,
    validate_image_size,
)
from .paths import dataset_dir
from .types import ImageDataset

__all__ = ["DEFAULT_ROI_IMAGE_SIZE", "DEFAULT_ROI_SIZE", "RoiPatches", "load_mias_roi", "roi_patches"]

#: Window side in pixels of the 1024 x 1024 image (200 um pixels: 51 mm).
DEFAULT_ROI_SIZE = 256
DEFAULT_ROI_IMAGE_SIZE = 64
_NORMAL_SEED = 20_221_013  # fixes where the normal patches are, whatever the run seed


@dataclass(frozen=True)
class RoiPatches:
    """All patches with their label and the image (reference) they come from."""

    images: np.ndarray  # (P, S, S) uint8
    labels: np.ndarray  # (P,) int64
    sources: tuple[str, ...]  # mdbNNN of each patch
    centres: np.ndarray  # (P, 2) int64: row, column in the (mirrored) 1024 x 1024 image


def _window(centre: int, side: int, extent: int) -> int:
    """Start of a ``side`` window centred on ``centre``, shifted inside ``0..extent``."""
    return int(min(max(centre - side // 2, 0), max(extent - side, 0)))


def _normal_centre(mask: np.ndarray, side: int, ref: str) -> tuple[int, int]:
    """A seeded random breast pixel at least side/4 inside the mask (the deepest one if none is)."""
    step = 4
    depth = ndimage.distance_transform_edt(mask[::step, ::step]) * step
    candidates = np.argwhere(depth >= side / 4)
    if len(candidates) == 0:
        candidates = np.argwhere(depth == depth.max())
    rng = np.random.default_rng([_NORMAL_SEED, int(ref[3:])])
    row, col = candidates[rng.integers(len(candidates))] * step
    return int(row), int(col)


def _patches_of_image(
    path: Path, ref: str, label: str, lesions: list, roi_size: int, image_size: int, laterality: bool
) -> list[tuple[np.ndarray, int, tuple[int, int]]]:
    image = np.asarray(_decode(path))
    height, width = image.shape
    side = min(roi_size, height, width)
    mask = breast_mask(image)
    mirrored = laterality and faces_right(mask)
    if mirrored:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if label == "normal":
        centres = [(_normal_centre(mask, side, ref), MIAS_CLASSES.index("normal"))]
    else:
        centres = []
        for lesion in lesions:
            col = width - 1 - lesion.x if mirrored else lesion.x
            centres.append(((height - 1 - lesion.y, col), MIAS_CLASSES.index(lesion.severity)))
    out = []
    for (row, col), cls in centres:
        top, left = _window(row, side, height), _window(col, side, width)
        patch = Image.fromarray(np.ascontiguousarray(image[top : top + side, left : left + side]))
        out.append((_box_resize(patch, image_size), cls, (row, col)))
    return out


@functools.lru_cache(maxsize=4)
def roi_patches(folder: str, roi_size: int, image_size: int, laterality: bool) -> RoiPatches:
    """Every patch of the mini-MIAS folder (cached per arguments)."""
    base = Path(folder)
    label_of = parse_info(base / "Info.txt")
    lesions_of: dict[str, list] = {}
    for lesion in parse_abnormalities(base / "Info.txt"):
        lesions_of.setdefault(lesion.ref, []).append(lesion)
    refs = tuple(r for r in label_of if label_of[r] == "normal" or r in lesions_of)
    paths = _image_paths(base, refs)

    def compute() -> dict[str, np.ndarray]:
        per_image = map_images(
            list(range(len(refs))),
            lambda i: _patches_of_image(paths[i], refs[i], label_of[refs[i]], lesions_of.get(refs[i], []),
                                        roi_size, image_size, laterality),
        )
        flat = [(patch, cls, centre, ref) for ref, items in zip(refs, per_image, strict=True)
                for patch, cls, centre in items]
        return {"images": np.stack([p for p, _, _, _ in flat]),
                "labels": np.array([c for _, c, _, _ in flat], dtype=np.int64),
                "centres": np.array([c for _, _, c, _ in flat], dtype=np.int64),
                "sources": np.array([r for *_, r in flat])}

    arrays = cached_arrays("mias-roi", (roi_size, image_size, laterality), [base / "Info.txt", *paths], compute)
    for array in arrays.values():
        array.setflags(write=False)
    return RoiPatches(arrays["images"], arrays["labels"], tuple(str(r) for r in arrays["sources"]), arrays["centres"])


def load_mias_roi(
    root: str | Path | None = None,
    image_size: int = DEFAULT_ROI_IMAGE_SIZE,
    seed: int = 0,
    fold: int = -1,
    folds: int = 5,
    roi_size: int = DEFAULT_ROI_SIZE,
    laterality: bool = True,
) -> tuple[ImageDataset, ImageDataset]:
    """``(train, test)`` patches; the split is made on source images (see the module docstring)."""
    size = validate_image_size(image_size)
    if isinstance(roi_size, bool) or not isinstance(roi_size, (int, np.integer)) or not 16 <= roi_size <= 1024:
        raise ValueError(f"roi_size: must be an int in 16..1024, got {roi_size!r}")
    folder = dataset_dir("mias", root)
    patches = roi_patches(str(folder), int(roi_size), size, bool(laterality))
    label_of = parse_info(folder / "Info.txt")
    refs = tuple(label_of)
    image_labels = np.array([MIAS_CLASSES.index(label_of[r]) for r in refs], dtype=np.int64)
    try:
        _, test_images = mias_split(refs, image_labels, int(seed), int(fold), int(folds))
    except ValueError as exc:
        raise DataError(f"{folder / 'Info.txt'}: cannot split: {exc}") from exc
    test_refs = {refs[i] for i in test_images}
    in_test = np.array([r in test_refs for r in patches.sources])

    def make(mask: np.ndarray, part: str) -> ImageDataset:
        return ImageDataset(
            images=torch.from_numpy(patches.images[mask]).unsqueeze(1),
            labels=torch.from_numpy(patches.labels[mask]),
            classes=MIAS_CLASSES,
            name=f"mias-roi/{part}",
        )

    return make(~in_test, "train"), make(in_test, "test")
