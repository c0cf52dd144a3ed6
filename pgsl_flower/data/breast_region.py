"""Breast region of a mammogram: mask, laterality, crop (pure functions on uint8 arrays).

About 48 % of mini-MIAS pixels are black background, and the breast faces left
in some images and right in others. Before resizing, the loader can

1. find the breast: pixels above :data:`TISSUE_THRESHOLD`, opened to cut thin
   bridges (film labels, border strips), the largest connected component, holes
   filled, then dilated by a margin so the skin line stays inside;
2. normalise laterality: mirror the image so that the chest wall (the side with
   more breast) is on the left;
3. crop to the mask's bounding box, black out what lies outside the mask (film
   labels and markers), and pad the box to a square (chest wall kept at the left
   edge, the breast centred vertically), so that resizing keeps the aspect ratio.

The mask is computed on a 4x-reduced copy (256 x 256 for MIAS), which is
enough to find a breast and 16x cheaper.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BreastBox", "TISSUE_THRESHOLD", "breast_box", "breast_mask", "crop_breast", "faces_right"]

#: Grey level (of 255) above which a pixel counts as tissue: the background of MIAS
#: films is 0-10, the faintest skin-line tissue about 20.
TISSUE_THRESHOLD = 18
_REDUCE = 4
_OPENING = 5  # structuring element side (reduced pixels) that cuts thin bridges
_MARGIN = 3  # dilation (reduced pixels) that keeps the skin line inside the mask


def _reduced(image: np.ndarray) -> np.ndarray:
    h, w = image.shape
    f = _REDUCE if min(h, w) >= 8 * _REDUCE else 1
    return image[: h - h % f, : w - w % f].reshape(h // f, f, w // f, f).mean(axis=(1, 3))


def breast_mask(image: np.ndarray) -> np.ndarray:
    """Boolean mask of the breast, same shape as ``image`` (2-D uint8)."""
    if image.ndim != 2:
        raise ValueError(f"image: expected a 2-D grayscale array, got shape {image.shape}")
    from scipy import ndimage  # here, not at import: every deployment message imports this package afresh

    small = _reduced(image.astype(np.float32))
    tissue = ndimage.binary_opening(small > TISSUE_THRESHOLD, structure=np.ones((_OPENING, _OPENING)))
    labels, count = ndimage.label(tissue)
    if count == 0:  # a blank image: keep everything
        return np.ones(image.shape, dtype=bool)
    sizes = ndimage.sum_labels(tissue, labels, index=np.arange(1, count + 1))
    largest = labels == (1 + int(np.argmax(sizes)))
    largest = ndimage.binary_fill_holes(largest)
    largest = ndimage.binary_dilation(largest, iterations=_MARGIN)
    f = image.shape[0] // small.shape[0]
    full = np.zeros(image.shape, dtype=bool)
    full[: small.shape[0] * f, : small.shape[1] * f] = np.kron(largest, np.ones((f, f), dtype=bool))
    return full


def faces_right(mask: np.ndarray) -> bool:
    """Whether the chest wall is on the right: more breast in the right half."""
    half = mask.shape[1] // 2
    return int(mask[:, half:].sum()) > int(mask[:, :half].sum())


@dataclass(frozen=True)
class BreastBox:
    """Where the breast is: rows ``top:bottom``, columns ``left:right`` (after the mirror)."""

    mirrored: bool
    top: int
    bottom: int
    left: int
    right: int


def breast_box(image: np.ndarray, normalise_laterality: bool = True) -> tuple[BreastBox, np.ndarray]:
    """The breast's bounding box (in the possibly mirrored image) and its mask there."""
    mask = breast_mask(image)
    mirrored = normalise_laterality and faces_right(mask)
    if mirrored:
        mask = mask[:, ::-1]
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    box = BreastBox(mirrored, int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    return box, mask


def crop_breast(image: np.ndarray, crop: bool = True, normalise_laterality: bool = True) -> np.ndarray:
    """``image`` mirrored so the chest wall is on the left (``normalise_laterality``) and/or
    cropped to the breast, background blacked out, padded to a square (``crop``)."""
    if not (crop or normalise_laterality):
        return image
    box, mask = breast_box(image, normalise_laterality)
    out = image[:, ::-1] if box.mirrored else image
    if not crop:
        return np.ascontiguousarray(out)
    region = np.where(mask, out, 0)[box.top : box.bottom, box.left : box.right]
    height, width = region.shape
    side = max(height, width)
    square = np.zeros((side, side), dtype=image.dtype)
    top = (side - height) // 2
    square[top : top + height, :width] = region  # chest wall at the left edge
    return square
