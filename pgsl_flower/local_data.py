"""A client's local data: its partition of the training set, split train/held-out.

In simulation, a partition of the training set, deterministic from (run config,
partition id, number of partitions); in a deployment, the site's own folder
(node-config ``data-dir``). Cached per process: Flower calls the ClientApp once per message, and reloading
the dataset each time would dominate the run. A deployment starts a new process per message, so a
site's decoded images are also cached on the site's disk (:mod:`pgsl_flower.data.site_cache`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from pgsl_flower.augmentation import Augmentation, augmentation_for
from pgsl_flower.config import ConfigError, RunConfig
from pgsl_flower.data import (
    DATASET_CLASSES,
    ImageDataset,
    PartitionError,
    load_dataset,
    partition_indices,
)
from pgsl_flower.data.partition import reserved_indices
from pgsl_flower.data.site_folder import load_site_folder
from pgsl_flower.model import prepare_input
from pgsl_flower.pgsl.client_side import AttackSettings, attacked_split
from pgsl_flower.pgsl.resampling import downsample

#: Class names per dataset: the labels a site's ``labels.csv`` may use.
CLASSES = DATASET_CLASSES


@dataclass(frozen=True)
class LocalData:
    """One client's training and held-out images (uint8) and labels.

    With PGSL (or its client side alone), ``attacked`` holds the pixel-attacked images and
    saliency maps of both splits, and the model input is built from those.
    ``augmentation`` (run-config 'augment') transforms training batches when given a seed.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    holdout_images: torch.Tensor
    holdout_labels: torch.Tensor
    num_classes: int
    attacked: dict[str, torch.Tensor] | None = None
    augmentation: Augmentation | None = None

    def inputs(self, indices: torch.Tensor, split: str = "train", augment_seed: int | None = None) -> torch.Tensor:
        """Client-part input for the given samples: (N, 4C + 1, H/2, W/2).

        ``augment_seed`` (training split only) applies the augmentation, seeded by it.
        """
        augment = self.augmentation if split == "train" and augment_seed is not None else None
        if self.attacked is not None:
            key = "train" if split == "train" else "other"
            images, maps = self.attacked[key][indices].float(), self.attacked[f"{key}-map"][indices].float()
            if augment is not None:
                images, maps = augment.apply(images, augment_seed, maps)
            return downsample(images, maps)
        images = (self.train_images if split == "train" else self.holdout_images)[indices].float().div_(255.0)
        if augment is not None:
            images, _ = augment.apply(images, augment_seed)
        return prepare_input(images)

    def images(self, indices: torch.Tensor, augment_seed: int | None = None) -> torch.Tensor:
        """Clean training images as floats in [0, 1], augmented as :meth:`inputs` augments them
        for the same seed (the victim's image an attack is scored against)."""
        images = self.train_images[indices].float().div_(255.0)
        if self.augmentation is not None and augment_seed is not None:
            images, _ = self.augmentation.apply(images, augment_seed)
        return images

    def labels(self, indices: torch.Tensor, split: str = "train") -> torch.Tensor:
        return (self.train_labels if split == "train" else self.holdout_labels)[indices]


def load_datasets(cfg: RunConfig) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) for the run's dataset, image size, seed, fold and preprocessing."""
    return load_dataset(
        cfg.dataset, cfg.data_dir or None, image_size=cfg.resolved_image_size, seed=cfg.seed, fold=cfg.fold,
        folds=cfg.cv_folds, breast_crop=cfg.crops_breast, laterality=cfg.normalises_laterality,
        roi_size=cfg.roi_size,
    )


@lru_cache(maxsize=2)
def _run_partitions(cfg: RunConfig, num_partitions: int) -> dict[int, LocalData]:
    """The partitions of one run built so far (filled by :func:`local_data`)."""
    return {}


def local_data(cfg: RunConfig, partition_id: int, num_partitions: int) -> LocalData:
    """Partition ``partition_id`` of ``num_partitions`` of the training set (simulation).

    Cached per process for all partitions of the last two (config, client count) pairs: a
    ClientApp actor serves every node in turn, so a cache of fewer entries than nodes (an LRU of
    8 before) missed on about a third of the messages at N = 10 (and on all of them once N > 8
    nodes take turns), rebuilding the partition each time. Memory: at most two runs'
    partitions, disjoint slices of the training set.
    """
    built = _run_partitions(cfg, num_partitions)
    if partition_id not in built:
        train, _ = load_datasets(cfg)
        parts = client_partitions(cfg, train.labels.numpy(), num_partitions)
        where = f"partition {partition_id} of {num_partitions}"
        built[partition_id] = _split(
            cfg, train, parts[partition_id], partition_id, [cfg.seed, partition_id, num_partitions], where
        )
    return built[partition_id]


#: Share of the training set reserved as the adversary's auxiliary pool whenever run-config
#: 'adversary-aux-samples' > 0 (MNIST: 6,000 images); withheld from every client's partition.
AUX_POOL_FRACTION = 0.1
_AUX_SALT = 104_729


def aux_pool_size(cfg: RunConfig, num_samples: int) -> int:
    """Size of the adversary's auxiliary pool: :data:`AUX_POOL_FRACTION` of the training set when
    'adversary-aux-samples' > 0, else 0. Raises :class:`ConfigError` when 'adversary-aux-samples'
    exceeds the pool."""
    if not cfg.adversary_aux_samples:
        return 0
    size = int(num_samples * AUX_POOL_FRACTION)
    if cfg.adversary_aux_samples > size:
        raise ConfigError(
            f"run-config 'adversary-aux-samples' = {cfg.adversary_aux_samples} is more than the auxiliary pool: "
            f"{size} images ({AUX_POOL_FRACTION:.0%} of the {num_samples} {cfg.dataset} training images)"
        )
    return size


def aux_pool(cfg: RunConfig, num_samples: int) -> np.ndarray:
    """Training-set indices of the adversary's auxiliary pool (empty when 'adversary-aux-samples'
    is 0): a seeded slice fixed by the run's seed alone, the same for every client count."""
    size = aux_pool_size(cfg, num_samples)
    return reserved_indices(num_samples, cfg.seed, size) if size else np.zeros(0, dtype=np.int64)


def aux_indices(cfg: RunConfig, num_samples: int) -> np.ndarray:
    """The 'adversary-aux-samples' training-set indices the adversary learns from: drawn from
    :func:`aux_pool` by a permutation seeded by the run's seed alone (any client count, any role)."""
    pool = aux_pool(cfg, num_samples)
    if not pool.size:
        raise ConfigError("run-config 'adversary-aux-samples' = 0: there is no auxiliary pool")
    return np.random.default_rng([cfg.seed, _AUX_SALT]).permutation(pool)[: cfg.adversary_aux_samples]


@lru_cache(maxsize=4)
def aux_data(cfg: RunConfig, salt: int) -> LocalData:
    """The adversary's auxiliary images (:func:`aux_indices`), all in the training split, through
    the client-side pipeline a client would apply (PGSL: a pixel attack whose surrogate is seeded
    by ``salt`` and trained on these images)."""
    train, _ = load_datasets(cfg)
    indices = aux_indices(cfg, len(train))
    kept = cfg.replace(samples_per_client=0, holdout_fraction=0.0)
    return _split(kept, train, indices, salt, [cfg.seed, _AUX_SALT], "the auxiliary pool")


def client_partitions(cfg: RunConfig, labels: np.ndarray, num_partitions: int) -> list[np.ndarray]:
    """Indices of each client's partition of ``labels`` (run-config 'partitioner' and its keys),
    the auxiliary pool (:func:`aux_pool`) left out.

    An impossible combination (e.g. 'classes-per-partition' above the classes present, shards
    that do not fit the training set for this client count) raises :class:`ConfigError` naming
    the key and its value.
    """
    reserve = aux_pool_size(cfg, labels.size)  # the adversary's auxiliary pool is in no partition
    try:
        return partition_indices(
            labels, num_partitions, partitioner=cfg.partitioner, alpha=cfg.alpha, seed=cfg.seed,
            classes_per_partition=cfg.classes_per_partition, class_assignment=cfg.class_assignment,
            shards_per_partition=cfg.shards_per_partition, shard_size=cfg.shard_size, reserve=reserve,
        )
    except PartitionError as exc:
        what = "num-clients" if exc.argument == "num_partitions" else f"run-config '{exc.argument.replace('_', '-')}'"
        raise ConfigError(
            f"{what} = {exc.value!r} does not work with partitioner {cfg.partitioner!r}, "
            f"{num_partitions} clients and the {labels.size} {cfg.dataset} training samples: {exc.reason}"
        ) from exc


@lru_cache(maxsize=8)
def site_local_data(
    cfg: RunConfig, folder: str, partition_id: int, bit_depth: int | None = None,
    site_name: str = "", cache_dir: str | None = None,
) -> LocalData:
    """A site's own folder of images + ``labels.csv`` (deployment: node-config ``data-dir``).

    Images of any size are made run-config ``image-size`` square (the dataset's default when 0)
    by run-config ``site-resize``, and labelled with the dataset's class names; ``bit_depth``
    (node-config ``bit-depth``), if given, is the depth every image must have. See
    :mod:`pgsl_flower.data.site_folder`. With ``cache_dir`` (node-config ``cache-dir``; off when
    unset: decoded patient images are copied nowhere the site did not choose), the decoded images
    are cached there for the next message's process, for this site (``site_name``,
    ``partition_id``) only: :mod:`pgsl_flower.data.site_cache`.
    """
    site = load_site_folder(
        folder, CLASSES[cfg.dataset], cfg.resolved_image_size, bit_depth, resize=cfg.site_resize,
        cache_dir=cache_dir or None, site=f"{site_name}#{partition_id}",
    ).dataset
    indices = np.arange(len(site))
    return _split(cfg, site, indices, partition_id, [cfg.seed, partition_id], f"site folder {folder}")


def _split(
    cfg: RunConfig, dataset: ImageDataset, indices: np.ndarray, partition_id: int, seed: list[int], where: str
) -> LocalData:
    """Shuffle (seeded), cap at 'samples-per-client', split off 'holdout-fraction'; pixel-attack if PGSL."""
    rng = np.random.default_rng(seed)
    indices = rng.permutation(indices)
    if cfg.samples_per_client:
        indices = indices[: cfg.samples_per_client]
    n_holdout = int(round(len(indices) * cfg.holdout_fraction))
    if len(indices) - n_holdout < 1:
        raise ValueError(
            f"{where} has {len(indices)} samples: "
            "too few to train (lower the client count or 'holdout-fraction')"
        )
    held, kept = torch.from_numpy(indices[:n_holdout]), torch.from_numpy(indices[n_holdout:])
    data = LocalData(
        train_images=dataset.images[kept],
        train_labels=dataset.labels[kept],
        holdout_images=dataset.images[held],
        holdout_labels=dataset.labels[held],
        num_classes=len(dataset.classes),
        augmentation=augmentation_for(cfg),
    )
    if cfg.pixel_attacked:
        attacked = attacked_split(
            data.train_images, data.train_labels, data.holdout_images,
            data.num_classes, attack_settings(cfg, partition_id),
        )
        data = dataclasses.replace(data, attacked=attacked)
    return data


def attack_settings(cfg: RunConfig, salt: int = 0) -> AttackSettings:
    """The run's pixel-attack parameters; ``salt`` varies the surrogate's seed per client."""
    return AttackSettings(cfg.attack_pixels, cfg.attack_theta, cfg.surrogate_epochs, cfg.seed * 1_009 + salt)


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


def balanced_batch_indices(labels: torch.Tensor, batch_size: int, counter: int, seed: int) -> torch.Tensor:
    """Like :func:`batch_indices`, but each epoch draws its samples with replacement, with
    probability inversely proportional to their class's count (run-config class-balance =
    'sampling'): every class present is drawn equally often in expectation."""
    num_samples = int(labels.shape[0])
    per_epoch = batches_per_epoch(num_samples, batch_size)
    epoch, step = divmod(counter, per_epoch)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    counts = torch.bincount(labels)
    weights = 1.0 / counts[labels].double()
    order = torch.multinomial(weights, per_epoch * min(batch_size, num_samples), replacement=True, generator=generator)
    return order[step * batch_size : (step + 1) * batch_size]


def client_batch_indices(cfg: RunConfig, data: LocalData, partition_id: int, counter: int) -> torch.Tensor:
    """The client's ``counter``-th training batch: shuffled epochs, or class-balanced draws."""
    seed = client_order_seed(cfg, partition_id)
    if cfg.resolved_class_balance == "sampling":
        return balanced_batch_indices(data.train_labels, cfg.batch_size, counter, seed)
    return batch_indices(int(data.train_labels.shape[0]), cfg.batch_size, counter, seed)


def augment_seed(cfg: RunConfig, partition_id: int, counter: int) -> int:
    """Seed of the augmentation of a client's ``counter``-th training batch (not the defense's seed)."""
    return (cfg.seed * 2_000_003 + partition_id) * 10_000_079 + counter


def dropout_seed(cfg: RunConfig, partition_id: int, counter: int) -> int:
    """Seed of the client part's dropout masks on its ``counter``-th training batch (cut-layer >= 4,
    :func:`pgsl_flower.model.seeded_dropout`): the sent forward and its recomputation draw the same."""
    return abs((cfg.seed * 3_000_017 + partition_id) * 10_000_103 + counter) % 2**63


def client_order_seed(cfg: RunConfig, partition_id: int) -> int:
    """Seed of a client's batch order (:func:`batch_indices`)."""
    return cfg.seed * 100_003 + partition_id


def batches_per_epoch(num_samples: int, batch_size: int) -> int:
    """Full batches in one pass (at least one, smaller, when there are fewer samples)."""
    return max(num_samples // batch_size, 1)


#: The evaluation harness trains its own surrogate on the first training images.
HARNESS_SURROGATE_SAMPLES = 6000
_HARNESS_SALT = 999_983


def harness_attacked(cfg: RunConfig, train_set: ImageDataset, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``images`` attacked by the evaluation harness (``other``, ``other-map``).

    The harness holds none of the clients' surrogates, so it trains its own with
    the same recipe on the first 6000 training images; the labels of ``images``
    are not used.
    """
    subset = slice(0, min(HARNESS_SURROGATE_SAMPLES, len(train_set)))
    return attacked_split(
        train_set.images[subset], train_set.labels[subset], images,
        len(train_set.classes), attack_settings(cfg, salt=_HARNESS_SALT),
    )
