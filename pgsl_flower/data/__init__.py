"""Datasets for pgsl_flower: MNIST and mini-MIAS loaders, paths, partitions.

Typical use (a Flower ClientApp calls this once per message; it is cached)::

    from pgsl_flower.data import load_dataset, partition_indices
    train, test = load_dataset("mias", image_size=128, seed=0)
    parts = partition_indices(train.labels.numpy(), num_partitions=10, partitioner="dirichlet")
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from .errors import DataError
from .mias import (
    DEFAULT_MIAS_IMAGE_SIZE,
    MIAS_CLASSES,
    MIAS_TEST_COUNTS,
    load_mias,
    parse_info,
    read_mias_image,
    split_mias_indices,
    validate_image_size,
)
from .mnist import (
    MNIST_CLASSES,
    MNIST_MD5,
    MNIST_MIRRORS,
    download_mnist,
    load_mnist,
    read_idx,
)
from .partition import PARTITIONERS, partition_indices
from .paths import DATA_DIR_ENV, KNOWN_DATASETS, dataset_dir, resolve_data_root
from .types import ImageDataset

__all__ = [
    "DATA_DIR_ENV",
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
    "dataset_dir",
    "default_image_size",
    "download_mnist",
    "load_dataset",
    "load_mias",
    "load_mnist",
    "parse_info",
    "partition_indices",
    "read_idx",
    "read_mias_image",
    "resolve_data_root",
    "split_mias_indices",
    "validate_image_size",
]

_DEFAULT_SIZES = {"mnist": 28, "mias": DEFAULT_MIAS_IMAGE_SIZE}


def default_image_size(name: str) -> int:
    """Image side used when ``image_size`` is None or 0 (MNIST 28, MIAS 128)."""
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
def _load_cached(name: str, root: str, image_size: int, seed: int) -> tuple[ImageDataset, ImageDataset]:
    if name == "mnist":
        train = load_mnist(Path(root), "train")
        test = load_mnist(Path(root), "test")
        if image_size != 28:
            train, test = _resize(train, image_size), _resize(test, image_size)
        return train, test
    return load_mias(Path(root), image_size=image_size, seed=seed)


def load_dataset(
    name: str,
    root: str | Path | None = None,
    image_size: int | None = None,
    seed: int = 0,
) -> tuple[ImageDataset, ImageDataset]:
    """Load ``(train, test)`` for ``name`` in ``{"mnist", "mias"}``.

    ``root`` is the data root (None or "": :func:`resolve_data_root`);
    ``image_size`` None or 0 means the dataset default (MNIST 28, native; MIAS
    128), otherwise an even int >= 8 (MNIST is then resized with an area
    average). ``seed`` only affects the MIAS train/test split. Results are cached
    per process on the resolved arguments: the returned tensors are shared, so
    do not modify them in place. MNIST md5s are always verified.
    """
    if name not in KNOWN_DATASETS:
        raise ValueError(f"name: unknown dataset {name!r}; known: {', '.join(KNOWN_DATASETS)}")
    size = default_image_size(name) if image_size in (None, 0) else validate_image_size(image_size)  # type: ignore[arg-type]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an int, got {seed!r}")
    resolved = str(resolve_data_root(root))
    return _load_cached(name, resolved, size, seed if name == "mias" else 0)
