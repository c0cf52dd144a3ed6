"""A client's local data: its partition of the training set, split train/held-out.

Deterministic from (run config, partition id, number of partitions), and
cached per process: Flower calls the ClientApp once per message, and reloading
the dataset each time would dominate the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from pgsl_flower.config import RunConfig
from pgsl_flower.data import ImageDataset, load_dataset, partition_indices


@dataclass(frozen=True)
class LocalData:
    """One client's training and held-out images (uint8) and labels."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    holdout_images: torch.Tensor
    holdout_labels: torch.Tensor
    num_classes: int

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training images as float in [0, 1] and their labels."""
        return self.train_images[indices].float().div_(255.0), self.train_labels[indices]


def load_datasets(cfg: RunConfig) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) for the run's dataset, image size and seed."""
    return load_dataset(
        cfg.dataset, cfg.data_dir or None, image_size=cfg.resolved_image_size, seed=cfg.seed
    )


@lru_cache(maxsize=8)
def local_data(cfg: RunConfig, partition_id: int, num_partitions: int) -> LocalData:
    """Partition ``partition_id`` of ``num_partitions``, capped and split (seeded)."""
    train, _ = load_datasets(cfg)
    parts = partition_indices(
        train.labels.numpy(),
        num_partitions,
        partitioner=cfg.partitioner,
        alpha=cfg.alpha,
        seed=cfg.seed,
    )
    indices = parts[partition_id]
    rng = np.random.default_rng([cfg.seed, partition_id, num_partitions])
    indices = rng.permutation(indices)
    if cfg.samples_per_client:
        indices = indices[: cfg.samples_per_client]
    n_holdout = int(round(len(indices) * cfg.holdout_fraction))
    if len(indices) - n_holdout < 1:
        raise ValueError(
            f"partition {partition_id} of {num_partitions} has {len(indices)} samples: "
            "too few to train (lower the client count or 'holdout-fraction')"
        )
    held, kept = torch.from_numpy(indices[:n_holdout]), torch.from_numpy(indices[n_holdout:])
    return LocalData(
        train_images=train.images[kept],
        train_labels=train.labels[kept],
        holdout_images=train.images[held],
        holdout_labels=train.labels[held],
        num_classes=len(train.classes),
    )


def batch_indices(num_samples: int, batch_size: int, counter: int, seed: int) -> torch.Tensor:
    """Indices of the ``counter``-th batch of a client's stream of shuffled epochs.

    Epoch ``e`` is a permutation seeded by (seed, e). The incomplete last batch
    is dropped (the next epoch's permutation uses those samples): a handful of
    samples gives noisy BatchNorm statistics, and when every client ends its
    round on one, they dominate the running statistics used at evaluation
    (measured: MNIST, 10 clients, test accuracy 0.76-0.88 instead of 0.96-0.97).
    Recomputable from the counter alone, so client state stays small.
    """
    per_epoch = batches_per_epoch(num_samples, batch_size)
    epoch, step = divmod(counter, per_epoch)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_samples, generator=generator)
    return order[step * batch_size : (step + 1) * batch_size]


def batches_per_epoch(num_samples: int, batch_size: int) -> int:
    """Full batches in one pass (at least one, smaller, when there are fewer samples)."""
    return max(num_samples // batch_size, 1)
