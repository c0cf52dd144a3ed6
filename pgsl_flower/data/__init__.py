"""Datasets for pgsl_flower: MNIST, mini-MIAS (whole images and ROI patches) and
BreastMNIST loaders, paths, cross-validation folds, partitions.

Typical use (a Flower ClientApp calls this once per message; it is cached)::

    from pgsl_flower.data import load_dataset, partition_indices
    train, test = load_dataset("mias", image_size=128, seed=0)
    parts = partition_indices(train.labels.numpy(), num_partitions=10, partitioner="dirichlet")
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from .breastmnist import BREASTMNIST_CLASSES, BREASTMNIST_MD5, load_breastmnist
from .errors import DataError
from .folds import cv_split, fold_assignment
from .mias import (
    DEFAULT_MIAS_IMAGE_SIZE,
    MIAS_CLASSES,
    MIAS_TEST_COUNTS,
    load_mias,
    parse_abnormalities,
    parse_info,
    read_mias_image,
    split_mias_indices,
    validate_image_size,
)
from .mias_roi import DEFAULT_ROI_IMAGE_SIZE, DEFAULT_ROI_SIZE, load_mias_roi
from .mnist import (
    MNIST_CLASSES,
    MNIST_MD5,
    MNIST_MIRRORS,
    download_mnist,
    load_mnist,
    read_idx,
)
from .partition import PARTITIONERS, PartitionError, partition_indices
from .paths import DATA_DIR_ENV, KNOWN_DATASETS, dataset_dir, resolve_data_root
from .types import ImageDataset

__all__ = [
    "BREASTMNIST_CLASSES",
    "BREASTMNIST_MD5",
    "DATASET_CLASSES",
    "DATA_DIR_ENV",
    "DEFAULT_ROI_SIZE",
    "DEFAULT_MIAS_IMAGE_SIZE",
    "DataError",
    "ImageDataset",
    "KNOWN_DATASETS",
    "MIAS_CLASSES",
    "MIAS_TEST_COUNTS",
    "MNIST_CLASSES",
    "MNIST_MD5",
    "MNIST_MIRRORS",
    "PARTITIONERS",
    "PartitionError",
    "cv_split",
    "dataset_dir",
    "default_image_size",
    "download_mnist",
    "fold_assignment",
    "load_breastmnist",
    "load_dataset",
    "load_mias",
    "load_mias_roi",
    "load_mnist",
    "parse_abnormalities",
    "parse_info",
    "partition_indices",
    "read_idx",
    "read_mias_image",
    "resolve_data_root",
    "split_mias_indices",
    "validate_image_size",
]

_DEFAULT_SIZES = {"mnist": 28, "mias": DEFAULT_MIAS_IMAGE_SIZE, "mias-roi": DEFAULT_ROI_IMAGE_SIZE, "breastmnist": 28}
#: Class names per dataset.
DATASET_CLASSES: dict[str, tuple[str, ...]] = {
    "mnist": MNIST_CLASSES, "mias": MIAS_CLASSES, "mias-roi": MIAS_CLASSES, "breastmnist": BREASTMNIST_CLASSES,
}
#: Datasets whose train/test split is fixed by their files (no cross-validation folds).
FIXED_SPLITS = ("mnist", "breastmnist")


def default_image_size(name: str) -> int:
    """Image side used when ``image_size`` is None or 0 (MNIST 28, MIAS 128, MIAS ROI 64, BreastMNIST 28)."""
    if name not in _DEFAULT_SIZES:
        raise ValueError(f"name: unknown dataset {name!r}; known: {', '.join(KNOWN_DATASETS)}")
    return _DEFAULT_SIZES[name]


def _resize(ds: ImageDataset, size: int) -> ImageDataset:
    """Resize all images to ``size`` x ``size`` (area average down, bilinear up)."""
    x = ds.images.float()
    mode = "area" if size < x.shape[-1] else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    y = torch.nn.functional.interpolate(x, size=(size, size), mode=mode, **kwargs)
    images = y.round_().clamp_(0, 255).to(torch.uint8)
    return ImageDataset(images=images, labels=ds.labels, classes=ds.classes, name=ds.name)


@functools.lru_cache(maxsize=8)
def _load_cached(
    name: str, root: str, image_size: int, seed: int, fold: int, folds: int, breast_crop: bool, laterality: bool,
    roi_size: int,
) -> tuple[ImageDataset, ImageDataset]:
    if name in FIXED_SPLITS:
        if name == "mnist":
            train, test = load_mnist(Path(root), "train"), load_mnist(Path(root), "test")
        else:
            train, test = load_breastmnist(Path(root), "train"), load_breastmnist(Path(root), "test")
        if image_size != train.images.shape[-1]:
            train, test = _resize(train, image_size), _resize(test, image_size)
        return train, test
    if name == "mias-roi":
        return load_mias_roi(Path(root), image_size, seed, fold, folds, roi_size, laterality)
    return load_mias(Path(root), image_size, seed, fold, folds, breast_crop, laterality)


def load_dataset(
    name: str,
    root: str | Path | None = None,
    image_size: int | None = None,
    seed: int = 0,
    *,
    fold: int = -1,
    folds: int = 5,
    breast_crop: bool = False,
    laterality: bool = False,
    roi_size: int = DEFAULT_ROI_SIZE,
) -> tuple[ImageDataset, ImageDataset]:
    """Load ``(train, test)`` for ``name`` in ``{"mnist", "mias", "mias-roi", "breastmnist"}``.

    ``root`` is the data root (None or "": :func:`resolve_data_root`);
    ``image_size`` None or 0 means the dataset default (MNIST 28, native; MIAS
    128; MIAS ROI 64; BreastMNIST 28, native), otherwise an even int >= 8 (MNIST and
    BreastMNIST are then resized with an area average). MNIST and BreastMNIST use
    their official splits. For MIAS and its ROI patches, ``fold`` = -1 is the paper's
    50-image test split (seeded by ``seed``), ``fold`` in 0..folds-1 a fold of the
    stratified, patient-grouped cross-validation (seeded by ``seed``);
    ``breast_crop`` and ``laterality`` are the MIAS preprocessing
    (:mod:`.breast_region`; patches use ``laterality`` only), ``roi_size`` the patch
    window in native pixels. Results are cached per process on the resolved
    arguments: the returned tensors are shared, so do not modify them in place.
    MNIST and BreastMNIST md5s are always verified.
    """
    if name not in KNOWN_DATASETS:
        raise ValueError(f"name: unknown dataset {name!r}; known: {', '.join(KNOWN_DATASETS)}")
    size = default_image_size(name) if image_size in (None, 0) else validate_image_size(image_size)  # type: ignore[arg-type]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an int, got {seed!r}")
    if name in FIXED_SPLITS and fold != -1:
        raise ValueError(f"fold: {name} has a fixed train/test split; folds apply to mias and mias-roi, got {fold!r}")
    resolved = str(resolve_data_root(root))
    split_seed = 0 if name in FIXED_SPLITS else seed
    return _load_cached(name, resolved, size, split_seed, int(fold), int(folds), bool(breast_crop),
                        bool(laterality), int(roi_size))
