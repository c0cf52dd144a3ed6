"""BreastMNIST (MedMNIST v2): 780 breast ultrasound images, 28 x 28, malignant vs normal/benign.

The official ``breastmnist.npz`` (Zenodo record 10519652), md5-checked, with its
official splits: train 546, val 78, test 156. Label 0 is malignant, 1 normal or
benign (MedMNIST's ``info.py``). Published reference on the test split (Yang et
al. 2023, MedMNIST v2): ResNet-18 (28) accuracy 0.863, AUC 0.901.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .mnist import md5_of
from .paths import dataset_dir
from .types import ImageDataset

__all__ = ["BREASTMNIST_CLASSES", "BREASTMNIST_FILE", "BREASTMNIST_MD5", "BREASTMNIST_SPLITS", "load_breastmnist"]

BREASTMNIST_FILE = "breastmnist.npz"
#: The md5 the medmnist package (3.0.2) lists for breastmnist.npz.
BREASTMNIST_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"
BREASTMNIST_CLASSES: tuple[str, ...] = ("malignant", "normal-or-benign")
BREASTMNIST_SPLITS: dict[str, int] = {"train": 546, "val": 78, "test": 156}
_DOWNLOAD = "https://zenodo.org/records/10519652/files/breastmnist.npz"


def _read_split(path: Path, arrays: np.lib.npyio.NpzFile, split: str) -> ImageDataset:
    size = BREASTMNIST_SPLITS[split]
    try:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    except KeyError as exc:
        raise DataError(f"{path}: array {exc} missing (expected {split}_images and {split}_labels)") from exc
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read the {split} arrays ({exc})") from exc
    if images.shape != (size, 28, 28) or images.dtype != np.uint8:
        raise DataError(f"{path}: {split}_images is {images.dtype}{images.shape}, expected uint8({size}, 28, 28)")
    if labels.shape != (size, 1) or not np.isin(labels, (0, 1)).all():
        raise DataError(f"{path}: {split}_labels is {labels.dtype}{labels.shape}, expected ({size}, 1) of 0/1")
    return ImageDataset(
        images=torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1),
        labels=torch.from_numpy(labels.reshape(-1).astype(np.int64)),
        classes=BREASTMNIST_CLASSES,
        name=f"breastmnist/{split}",
    )


def load_breastmnist(root: str | Path | None = None, split: str = "train") -> ImageDataset:
    """One official split (``train``, ``val``, ``test``) of ``<root>/medmnist/breastmnist.npz``.

    The file's md5 is checked first; a missing, corrupt or altered file raises
    :class:`DataError` naming it (with the download address when missing).
    """
    if split not in BREASTMNIST_SPLITS:
        raise ValueError(f"split: expected one of {list(BREASTMNIST_SPLITS)}, got {split!r}")
    path = dataset_dir("breastmnist", root) / BREASTMNIST_FILE
    digest = md5_of(path)
    if digest != BREASTMNIST_MD5:
        raise DataError(
            f"{path}: md5 {digest}, expected {BREASTMNIST_MD5} (the official MedMNIST file); "
            f"the file is corrupt or not breastmnist.npz: download it again from {_DOWNLOAD}"
        )
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return _read_split(path, arrays, split)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: cannot read the npz archive ({exc})") from exc
