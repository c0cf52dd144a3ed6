"""In-memory image dataset container shared by all loaders."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["ImageDataset"]


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image set held fully in memory.

    Attributes:
        images: ``torch.uint8`` tensor of shape ``(N, C, H, W)``.
        labels: ``torch.int64`` tensor of shape ``(N,)`` with values in
            ``0 .. len(classes) - 1``.
        classes: class names; ``classes[k]`` is the name of label ``k``.
        name: short dataset name, e.g. ``"mnist/train"``.

    The dataclass is frozen, but the tensors are shared (loaders cache them per
    process): treat them as read-only and copy before modifying in place.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        """Validate shapes, dtypes and label range; raise ValueError naming the field."""
        if not isinstance(self.images, torch.Tensor):
            raise ValueError(f"images: expected a torch.Tensor, got {type(self.images).__name__}")
        if self.images.dtype != torch.uint8:
            raise ValueError(f"images: expected dtype torch.uint8, got {self.images.dtype}")
        if self.images.ndim != 4:
            raise ValueError(
                f"images: expected shape (N, C, H, W), got {tuple(self.images.shape)}"
            )
        if not isinstance(self.labels, torch.Tensor):
            raise ValueError(f"labels: expected a torch.Tensor, got {type(self.labels).__name__}")
        if self.labels.dtype != torch.int64:
            raise ValueError(f"labels: expected dtype torch.int64, got {self.labels.dtype}")
        if self.labels.ndim != 1:
            raise ValueError(f"labels: expected shape (N,), got {tuple(self.labels.shape)}")
        if self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"labels: length {self.labels.shape[0]} does not match "
                f"images length {self.images.shape[0]}"
            )
        if not isinstance(self.classes, tuple):
            raise ValueError(f"classes: expected a tuple of str, got {type(self.classes).__name__}")
        if not self.classes or not all(isinstance(c, str) for c in self.classes):
            raise ValueError(f"classes: expected a non-empty tuple of str, got {self.classes!r}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes: duplicate class names in {self.classes!r}")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name: expected a non-empty str, got {self.name!r}")
        if self.labels.numel():
            lo, hi = int(self.labels.min()), int(self.labels.max())
            if lo < 0 or hi >= len(self.classes):
                raise ValueError(
                    f"labels: values must lie in 0..{len(self.classes) - 1}, got {lo}..{hi}"
                )

    def __len__(self) -> int:
        """Number of samples."""
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def class_counts(self) -> dict[str, int]:
        """Number of samples per class name."""
        counts = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, counts))

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor, name: str | None = None) -> ImageDataset:
        """Return a new dataset holding the samples at ``indices`` (copies the data)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        if idx.ndim != 1:
            raise ValueError(f"indices: expected a 1-D sequence, got shape {tuple(idx.shape)}")
        return ImageDataset(
            images=self.images[idx],
            labels=self.labels[idx],
            classes=self.classes,
            name=name if name is not None else self.name,
        )
