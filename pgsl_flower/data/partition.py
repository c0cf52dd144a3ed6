"""Client partitions of a label array via Flower Datasets partitioners."""

from __future__ import annotations

import functools
import math
import os

import numpy as np

__all__ = ["PARTITIONERS", "partition_indices"]

PARTITIONERS: tuple[str, ...] = ("iid", "dirichlet")


def _validate(
    labels: np.ndarray,
    num_partitions: int,
    partitioner: str,
    alpha: float,
    seed: int,
    min_partition_size: int,
) -> np.ndarray:
    """Check every argument, raising ValueError naming it; return labels as int64 1-D."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels: expected a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("labels: expected a non-empty array")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)):
        raise ValueError(f"labels: expected integer labels, got dtype {arr.dtype}")
    for name, value in (("num_partitions", num_partitions), ("seed", seed),
                        ("min_partition_size", min_partition_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name}: expected an int, got {value!r}")
    if not 1 <= num_partitions <= arr.size:
        raise ValueError(
            f"num_partitions: must be between 1 and len(labels)={arr.size}, got {num_partitions}"
        )
    if partitioner not in PARTITIONERS:
        raise ValueError(f"partitioner: unknown {partitioner!r}; known: {', '.join(PARTITIONERS)}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)) \
            or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha: must be a finite number > 0, got {alpha!r}")
    if seed < 0:
        raise ValueError(f"seed: must be >= 0, got {seed}")
    if min_partition_size < 0 or min_partition_size * num_partitions > arr.size:
        raise ValueError(
            f"min_partition_size: must be >= 0 and at most len(labels)/num_partitions="
            f"{arr.size // num_partitions}, got {min_partition_size}"
        )
    return arr.astype(np.int64, copy=False)


@functools.lru_cache(maxsize=16)
def _partition_cached(
    labels_bytes: bytes,
    num_partitions: int,
    partitioner: str,
    alpha: float,
    seed: int,
    min_partition_size: int,
) -> tuple[np.ndarray, ...]:
    """Compute the partitions (cached on the exact label bytes and arguments)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets  # deferred: importing datasets/flwr_datasets takes ~2 s
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, Partitioner

    labels = np.frombuffer(labels_bytes, dtype=np.int64)
    # Shuffle first: IidPartitioner takes contiguous shards and DirichletPartitioner
    # splits each class in index order, so without this the result follows file order.
    perm = np.random.default_rng(seed).permutation(labels.size).astype(np.int64)
    table = datasets.Dataset.from_dict({"label": labels[perm], "index": perm})
    part: Partitioner
    if partitioner == "iid":
        part = IidPartitioner(num_partitions=num_partitions)
    else:
        part = DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=float(alpha),
            min_partition_size=min_partition_size,
            self_balancing=False,
            shuffle=True,
            seed=seed,
        )
    part.dataset = table
    out: list[np.ndarray] = []
    try:
        for pid in range(num_partitions):
            idx = np.sort(np.asarray(part.load_partition(pid)["index"], dtype=np.int64))
            idx.setflags(write=False)
            out.append(idx)
    except ValueError as exc:
        raise ValueError(
            f"alpha/min_partition_size: Dirichlet sampling failed with alpha={alpha}, "
            f"min_partition_size={min_partition_size}, num_partitions={num_partitions} "
            f"({exc}); raise alpha or lower min_partition_size"
        ) from exc
    return tuple(out)


def partition_indices(
    labels: np.ndarray,
    num_partitions: int,
    partitioner: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    min_partition_size: int = 0,
) -> list[np.ndarray]:
    """Split ``range(len(labels))`` into ``num_partitions`` disjoint, complete parts.

    ``partitioner="iid"`` uses Flower Datasets' ``IidPartitioner`` on a seeded
    permutation (sizes differ by at most one); ``"dirichlet"`` uses
    ``DirichletPartitioner(partition_by="label", alpha, seed, min_partition_size)``
    (smaller ``alpha`` -> more label skew). Returns sorted int64 index arrays;
    reproducible for a seed. Results are cached per (label bytes, arguments);
    each call returns fresh copies. Raises ValueError naming a bad argument.
    """
    arr = _validate(labels, num_partitions, partitioner, alpha, seed, min_partition_size)
    parts = _partition_cached(
        np.ascontiguousarray(arr).tobytes(), int(num_partitions), partitioner,
        float(alpha), int(seed), int(min_partition_size),
    )
    return [p.copy() for p in parts]
