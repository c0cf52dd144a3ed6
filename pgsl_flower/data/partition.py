"""Client partitions of a label array via Flower Datasets partitioners."""

from __future__ import annotations

import functools
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CLASS_ASSIGNMENTS", "PARTITIONERS", "PartitionError", "partition_indices", "reserved_indices", "shuffled_order",
]

PARTITIONERS: tuple[str, ...] = ("iid", "dirichlet", "pathological", "shard", "linear", "exponential")
#: PathologicalPartitioner's ``class_assignment_mode`` values.
CLASS_ASSIGNMENTS: tuple[str, ...] = ("random", "deterministic", "first-deterministic")


class PartitionError(ValueError):
    """An argument makes the partitioning invalid or impossible; ``argument`` names it."""

    def __init__(self, argument: str, value: object, reason: str) -> None:
        super().__init__(f"{argument} = {value!r}: {reason}")
        self.argument = argument
        self.value = value
        self.reason = reason


def _is_int(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


@dataclass(frozen=True)
class PartitionSpec:
    """The arguments of :func:`partition_indices` (hashable: the cache key beside the labels)."""

    num_partitions: int
    partitioner: str
    alpha: float
    seed: int
    min_partition_size: int
    classes_per_partition: int
    class_assignment: str
    shards_per_partition: int
    shard_size: int
    reserve: int = 0  # samples withheld before partitioning (:func:`reserved_indices`)


def _validate(labels: np.ndarray, spec: PartitionSpec) -> np.ndarray:
    """Check every argument, raising PartitionError naming it; return labels as int64 1-D."""
    num_partitions, partitioner, alpha = spec.num_partitions, spec.partitioner, spec.alpha
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels: expected a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("labels: expected a non-empty array")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)):
        raise ValueError(f"labels: expected integer labels, got dtype {arr.dtype}")
    for name in ("num_partitions", "seed", "min_partition_size", "classes_per_partition",
                 "shards_per_partition", "shard_size", "reserve"):
        if not _is_int(getattr(spec, name)):
            raise PartitionError(name, getattr(spec, name), "expected an int")
    if spec.seed < 0:
        raise PartitionError("seed", spec.seed, "must be >= 0")
    if not 0 <= spec.reserve < arr.size:
        raise PartitionError("reserve", spec.reserve, f"must be >= 0 and below len(labels)={arr.size}")
    full = arr
    if spec.reserve:  # every check below is on the samples left to partition
        arr = np.delete(arr, reserved_indices(arr.size, spec.seed, spec.reserve))
    if not 1 <= num_partitions <= arr.size:
        raise PartitionError(
            "num_partitions", num_partitions,
            f"must be between 1 and the {arr.size} samples to partition (len(labels) - reserve)",
        )
    if partitioner not in PARTITIONERS:
        raise PartitionError("partitioner", partitioner, f"unknown; known: {', '.join(PARTITIONERS)}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)) \
            or not math.isfinite(alpha) or alpha <= 0:
        raise PartitionError("alpha", alpha, "must be a finite number > 0")
    if spec.min_partition_size < 0 or spec.min_partition_size * num_partitions > arr.size:
        raise PartitionError(
            "min_partition_size", spec.min_partition_size,
            f"must be >= 0 and at most len(labels)/num_partitions={arr.size // num_partitions}",
        )
    if partitioner == "pathological":
        _validate_pathological(arr, num_partitions, spec.classes_per_partition, spec.class_assignment)
    if partitioner == "shard":
        _validate_shard(arr.size, num_partitions, spec.shards_per_partition, spec.shard_size)
    return full.astype(np.int64, copy=False)


def _validate_pathological(labels: np.ndarray, num_partitions: int, k: int, mode: str) -> None:
    """PathologicalPartitioner: k distinct classes per partition, each class split among its holders."""
    if mode not in CLASS_ASSIGNMENTS:
        raise PartitionError("class_assignment", mode, f"must be one of {', '.join(CLASS_ASSIGNMENTS)}")
    classes, counts = np.unique(labels, return_counts=True)
    if not 1 <= k <= classes.size:
        raise PartitionError(
            "classes_per_partition", k, f"must be between 1 and the {classes.size} classes present in the labels"
        )
    if mode == "deterministic":  # each class goes to about num_partitions * k / classes partitions
        holders = np.zeros(classes.size, dtype=np.int64)
        for pid in range(num_partitions):
            holders[(pid + np.arange(k)) % classes.size] += 1
        short = np.flatnonzero(holders > counts)
        if short.size:
            c = int(short[0])
            raise PartitionError(
                "classes_per_partition", k,
                f"class {int(classes[c])} has {int(counts[c])} samples but would be split among "
                f"{int(holders[c])} partitions; lower it or the number of partitions",
            )


def _validate_shard(n: int, num_partitions: int, shards: int, size: int) -> None:
    """ShardPartitioner's rules, checked up front (see :func:`partition_indices`)."""
    if shards < 0:
        raise PartitionError("shards_per_partition", shards, "must be >= 0 (0: derive from shard_size)")
    if size < 0:
        raise PartitionError("shard_size", size, "must be >= 0 (0: derive from shards_per_partition)")
    if shards == 0 and size == 0:
        raise PartitionError("shards_per_partition", shards, "and shard_size cannot both be 0 (shard partitioner)")
    if shards and size:
        if shards * size * num_partitions > n:
            raise PartitionError(
                "shard_size", size,
                f"{num_partitions} partitions x {shards} shards x {size} samples = "
                f"{num_partitions * shards * size} is more than the {n} samples",
            )
    elif shards:
        if n // (num_partitions * shards) < 1:
            raise PartitionError(
                "shards_per_partition", shards,
                f"{num_partitions} partitions x {shards} shards is more than the {n} samples (empty shards)",
            )
    elif n // size < num_partitions:
        raise PartitionError(
            "shard_size", size,
            f"{n} samples make only {n // size} shards of this size, fewer than the {num_partitions} partitions",
        )


def shuffled_order(num_samples: int, seed: int) -> np.ndarray:
    """The seeded permutation applied before any partitioner sees the labels."""
    return np.random.default_rng(seed).permutation(num_samples).astype(np.int64)


#: Salt of the reserved pool's permutation: not the partitioners' (:func:`shuffled_order`).
_RESERVE_SALT = 7_919


def reserved_indices(num_samples: int, seed: int, size: int) -> np.ndarray:
    """The ``size`` sample indices withheld from every partition (sorted): the first ``size`` of a
    permutation seeded by ``seed`` alone, so the same for every number of partitions and partitioner."""
    order = np.random.default_rng([seed, _RESERVE_SALT]).permutation(num_samples)
    return np.sort(order[:size]).astype(np.int64)


def _make_partitioner(spec: PartitionSpec):  # noqa: ANN202 - flwr_datasets is imported lazily
    """The Flower Datasets partitioner ``spec.partitioner`` names."""
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        ExponentialPartitioner,
        IidPartitioner,
        LinearPartitioner,
        PathologicalPartitioner,
        ShardPartitioner,
    )

    n = spec.num_partitions
    if spec.partitioner == "iid":
        return IidPartitioner(num_partitions=n)
    if spec.partitioner == "dirichlet":
        return DirichletPartitioner(
            num_partitions=n, partition_by="label", alpha=float(spec.alpha),
            min_partition_size=spec.min_partition_size, self_balancing=False, shuffle=True, seed=spec.seed,
        )
    if spec.partitioner == "pathological":
        return PathologicalPartitioner(
            num_partitions=n, partition_by="label", num_classes_per_partition=spec.classes_per_partition,
            class_assignment_mode=spec.class_assignment, shuffle=False, seed=spec.seed,  # type: ignore[arg-type]
        )
    if spec.partitioner == "shard":
        return ShardPartitioner(
            num_partitions=n, partition_by="label",
            num_shards_per_partition=spec.shards_per_partition or None, shard_size=spec.shard_size or None,
            keep_incomplete_shard=False, shuffle=False, seed=spec.seed,
        )
    if spec.partitioner == "linear":
        return LinearPartitioner(num_partitions=n)
    return ExponentialPartitioner(num_partitions=n)


#: The argument a failed partitioning is blamed on, per partitioner, and a hint.
_BLAME = {
    "iid": ("num_partitions", "lower the number of partitions"),
    "dirichlet": ("alpha", "raise alpha or lower min_partition_size"),
    "pathological": ("classes_per_partition", "lower it or the number of partitions"),
    "shard": ("shards_per_partition", "lower it, shard_size or the number of partitions"),
    "linear": ("num_partitions", "lower the number of partitions"),
    "exponential": ("num_partitions", "lower the number of partitions"),
}


@functools.lru_cache(maxsize=16)
def _partition_cached(labels_bytes: bytes, spec: PartitionSpec) -> tuple[np.ndarray, ...]:
    """Compute the partitions (cached on the exact label bytes and arguments)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets  # deferred: importing datasets/flwr_datasets takes ~2 s

    labels = np.frombuffer(labels_bytes, dtype=np.int64)
    # Shuffle first: IidPartitioner, LinearPartitioner and ExponentialPartitioner take contiguous
    # runs, DirichletPartitioner and PathologicalPartitioner split each class in index order and
    # ShardPartitioner sorts by label (stably): without this the result follows file order.
    perm = shuffled_order(labels.size, spec.seed)
    if spec.reserve:  # the reserved pool is in no partition
        perm = perm[~np.isin(perm, reserved_indices(labels.size, spec.seed, spec.reserve))]
    table = datasets.Dataset.from_dict({"label": labels[perm], "index": perm})
    part = _make_partitioner(spec)
    part.dataset = table
    out: list[np.ndarray] = []
    try:
        with warnings.catch_warnings():  # PathologicalPartitioner: classes no partition drew
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)  # pyarrow, inside ShardPartitioner's sort
            for pid in range(spec.num_partitions):
                idx = np.sort(np.asarray(part.load_partition(pid)["index"], dtype=np.int64))
                idx.setflags(write=False)
                out.append(idx)
    except ValueError as exc:
        argument, hint = _BLAME[spec.partitioner]
        raise PartitionError(
            argument, getattr(spec, argument),
            f"Flower Datasets' {type(part).__name__} cannot split {labels.size} samples into "
            f"{spec.num_partitions} partitions ({exc}); {hint}",
        ) from exc
    return tuple(out)


def partition_indices(
    labels: np.ndarray,
    num_partitions: int,
    partitioner: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    min_partition_size: int = 0,
    *,
    classes_per_partition: int = 2,
    class_assignment: str = "random",
    shards_per_partition: int = 2,
    shard_size: int = 0,
    reserve: int = 0,
) -> list[np.ndarray]:
    """Split ``range(len(labels))`` into ``num_partitions`` disjoint parts with a Flower Datasets partitioner.

    The labels are first permuted (:func:`shuffled_order`, seeded), then:

    - ``"iid"``: ``IidPartitioner``, sizes differ by at most one;
    - ``"dirichlet"``: ``DirichletPartitioner(partition_by="label", alpha, seed, min_partition_size)``
      (smaller ``alpha`` -> more label skew);
    - ``"pathological"``: ``PathologicalPartitioner(num_classes_per_partition=classes_per_partition,
      class_assignment_mode=class_assignment)``: each partition holds exactly that many classes, each
      class split evenly among the partitions that drew it; a class no partition drew is left out;
    - ``"shard"``: ``ShardPartitioner``: labels sorted, cut into contiguous shards of ``shard_size``
      samples, each partition gets ``shards_per_partition`` random shards. 0 derives one from the
      other: ``shard_size = len // (num_partitions * shards_per_partition)``, or (shards 0)
      ``len // shard_size`` shards dealt out as evenly as possible; samples in no shard are left out;
    - ``"linear"`` / ``"exponential"``: ``LinearPartitioner`` / ``ExponentialPartitioner``: partition
      ``i`` gets ``floor(len * w_i / sum w)`` samples with ``w_i = i + 1`` / ``e ** (i + 1)``, the
      remainder going to the last partition.

    ``reserve`` > 0 first withholds :func:`reserved_indices` ``(len(labels), seed, reserve)`` (the
    same for every ``num_partitions``): no partition holds them, the partitioners split the rest.
    iid, dirichlet, linear and exponential cover every other index. Returns sorted int64 index arrays;
    reproducible for a seed. Results are cached per (label bytes, arguments); each call returns
    fresh copies. Raises :class:`PartitionError` (a ValueError) naming a bad or impossible argument.
    """
    spec = PartitionSpec(num_partitions, partitioner, alpha, seed, min_partition_size,
                         classes_per_partition, class_assignment, shards_per_partition, shard_size, reserve)
    arr = _validate(labels, spec)
    normalised = PartitionSpec(  # one cache entry whatever int/float types the caller used
        int(num_partitions), partitioner, float(alpha), int(seed), int(min_partition_size),
        int(classes_per_partition), class_assignment, int(shards_per_partition), int(shard_size), int(reserve),
    )
    parts = _partition_cached(np.ascontiguousarray(arr).tobytes(), normalised)
    return [p.copy() for p in parts]
