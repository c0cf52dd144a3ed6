"""Flower Datasets' pathological, shard, linear and exponential partitioners on real MNIST labels.

Each test checks the partitioner's defining property; run-config validation fails before Ray starts.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pgsl_flower.config import ConfigError, parse_run_config
from pgsl_flower.data import PartitionError, load_dataset, partition_indices
from pgsl_flower.data.partition import reserved_indices, shuffled_order


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    """The 10,000 real MNIST test labels."""
    return load_dataset("mnist", None)[1].labels.numpy()


def check_disjoint(parts: list[np.ndarray], n: int) -> np.ndarray:
    """Parts are sorted int64, in range, pairwise disjoint; returns their union."""
    union = np.concatenate(parts)
    assert np.unique(union).size == union.size, "partitions overlap"
    assert union.min() >= 0 and union.max() < n
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)
    return union


def test_pathological_each_client_holds_exactly_k_classes(labels: np.ndarray) -> None:
    for k in (1, 2, 3):
        parts = partition_indices(labels, 10, "pathological", seed=4, classes_per_partition=k)
        union = check_disjoint(parts, labels.size)
        assert [np.unique(labels[p]).size for p in parts] == [k] * 10
        # each class drawn is split evenly among its holders; a class nobody drew is left out
        holders: dict[int, list[int]] = {}
        for p in parts:
            for c, count in zip(*np.unique(labels[p], return_counts=True)):
                holders.setdefault(int(c), []).append(int(count))
        for c, counts in holders.items():
            assert sum(counts) == int((labels == c).sum()) and max(counts) - min(counts) <= 1
        assert union.size == sum(int((labels == c).sum()) for c in holders)
    again = partition_indices(labels, 10, "pathological", seed=4, classes_per_partition=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_pathological_deterministic_assignment(labels: np.ndarray) -> None:
    parts = partition_indices(labels, 10, "pathological", seed=0, classes_per_partition=3,
                              class_assignment="deterministic")
    assert [set(np.unique(labels[p]).tolist()) for p in parts] == [{i, (i + 1) % 10, (i + 2) % 10} for i in range(10)]
    assert check_disjoint(parts, labels.size).size == labels.size  # every class drawn three times


def test_shard_partitions_are_label_sorted_contiguous_shards(labels: np.ndarray) -> None:
    n, seed = labels.size, 5
    # where each sample sits once the shuffled labels are sorted (stably) by label, as ShardPartitioner does
    order = shuffled_order(n, seed)
    order = order[np.argsort(labels[order], kind="stable")]
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)

    def shards_of(part: np.ndarray, size: int) -> set[int]:
        pos = np.sort(position[part])
        blocks = pos // size
        # every shard is a whole aligned block of `size` consecutive positions
        for b in np.unique(blocks):
            assert np.array_equal(pos[blocks == b], np.arange(b * size, (b + 1) * size))
        return set(np.unique(blocks).tolist())

    for shards, size, expect_size in ((2, 0, n // 20), (3, 200, 200), (1, 1000, 1000)):
        parts = partition_indices(labels, 10, "shard", seed=seed, shards_per_partition=shards, shard_size=size)
        check_disjoint(parts, n)
        assert [p.size for p in parts] == [shards * expect_size] * 10
        all_shards = [shards_of(p, expect_size) for p in parts]
        assert all(len(s) == shards for s in all_shards)
        if expect_size <= np.bincount(labels).min():  # a run of the label-sorted data spans <= 2 labels
            assert max(np.unique(labels[p]).size for p in parts) <= 2 * shards
    # shard-size alone: floor(n / size) shards dealt out as evenly as possible
    parts = partition_indices(labels, 10, "shard", seed=seed, shards_per_partition=0, shard_size=900)
    check_disjoint(parts, n)
    assert sorted(p.size for p in parts) == [900] * 9 + [1800]
    assert sum(len(shards_of(p, 900)) for p in parts) == n // 900


def test_linear_sizes_grow_linearly(labels: np.ndarray) -> None:
    n = labels.size
    parts = partition_indices(labels, 8, "linear", seed=1)
    assert check_disjoint(parts, n).size == n
    sizes = np.array([p.size for p in parts])
    expect = np.floor(n * np.arange(1, 9) / 36).astype(int)
    expect[-1] += n - expect.sum()  # the remainder goes to the last partition
    assert sizes.tolist() == expect.tolist()
    ratios = sizes[:-1] / sizes[0]
    assert np.allclose(ratios, np.arange(1, 8), rtol=0.01)
    assert np.allclose(np.diff(sizes[:-1]), sizes[0], atol=1)  # constant step


def test_exponential_sizes_grow_exponentially(labels: np.ndarray) -> None:
    n = labels.size
    parts = partition_indices(labels, 5, "exponential", seed=1)
    assert check_disjoint(parts, n).size == n
    sizes = np.array([p.size for p in parts])
    weights = np.exp(np.arange(1, 6))
    expect = np.floor(n * weights / weights.sum()).astype(int)
    expect[-1] += n - expect.sum()
    assert sizes.tolist() == expect.tolist()
    assert np.allclose(sizes[1:] / sizes[:-1], math.e, rtol=0.02)


@pytest.mark.parametrize("name", ["iid", "dirichlet", "pathological", "shard", "linear", "exponential"])
def test_all_partitioners_disjoint_and_seeded(labels: np.ndarray, name: str) -> None:
    parts = partition_indices(labels, 6, name, seed=2)
    check_disjoint(parts, labels.size)
    assert all(p.size > 0 for p in parts)
    again = partition_indices(labels, 6, name, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"partitioner": "pathological", "classes_per_partition": 11}, "classes_per_partition"),
        ({"partitioner": "pathological", "classes_per_partition": 0}, "classes_per_partition"),
        ({"partitioner": "pathological", "class_assignment": "greedy"}, "class_assignment"),
        ({"partitioner": "shard", "shards_per_partition": 0, "shard_size": 0}, "shards_per_partition"),
        ({"partitioner": "shard", "shards_per_partition": 3, "shard_size": 400}, "shard_size"),
        ({"partitioner": "shard", "shards_per_partition": 0, "shard_size": 1200}, "shard_size"),
        ({"partitioner": "shard", "shards_per_partition": 1001}, "shards_per_partition"),
        ({"partitioner": "shard", "shard_size": -1}, "shard_size"),
        ({"partitioner": "exponential", "num_partitions": 12}, "num_partitions"),
        ({"reserve": -1}, "reserve"),
        ({"reserve": 10_000}, "reserve"),
    ],
)
def test_partition_errors_name_the_argument(labels: np.ndarray, kwargs: dict, argument: str) -> None:
    kwargs = {"num_partitions": 10, **kwargs}
    with pytest.raises(PartitionError, match=argument) as info:
        partition_indices(labels, **kwargs)
    assert info.value.argument == argument


@pytest.mark.parametrize(
    ("config", "clients", "fragment"),
    [
        ({"partitioner": "pathological", "classes-per-partition": 11}, 10,
         "run-config 'classes-per-partition' = 11 does not work with partitioner 'pathological'"),
        ({"partitioner": "shard", "shard-size": 7000}, 10, "run-config 'shard-size' = 7000"),
        ({"partitioner": "shard", "shards-per-partition": 0, "shard-size": 7000}, 10, "fewer than the 10 partitions"),
        ({"partitioner": "exponential"}, 40, "num-clients = 40 does not work with partitioner 'exponential'"),
    ],
)
def test_impossible_partitions_fail_before_ray(config: dict, clients: int, fragment: str) -> None:
    from pgsl_flower.simulation import simulate

    with pytest.raises(ConfigError, match=fragment):
        simulate(config, num_clients=clients)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("classes-per-partition", 0, "'classes-per-partition' must be >= 1"),
        ("shards-per-partition", -1, "'shards-per-partition' must be >= 0"),
        ("shard-size", -5, "'shard-size' must be >= 0"),
        ("class-assignment", "greedy", "'class-assignment' must be one of"),
    ],
)
def test_run_config_ranges(key: str, value: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_run_config({key: value})
    with pytest.raises(ConfigError, match="'shards-per-partition' or 'shard-size' > 0"):
        parse_run_config({"partitioner": "shard", "shards-per-partition": 0})
    assert parse_run_config({"partitioner": "linear"}).partitioner == "linear"


@pytest.mark.parametrize("name", ["iid", "dirichlet", "pathological", "shard"])
def test_reserve_withholds_the_same_indices_for_every_partition_count(labels: np.ndarray, name: str) -> None:
    """``reserve``: the same seeded indices, fixed by the seed alone, are in no partition."""
    pool = reserved_indices(labels.size, 3, 1000)
    assert pool.size == 1000 and np.array_equal(pool, reserved_indices(labels.size, 3, 1000))
    for n in (2, 10):
        union = check_disjoint(partition_indices(labels, n, name, seed=3, reserve=1000), labels.size)
        assert np.intersect1d(union, pool).size == 0, f"{name}, {n} partitions"
        if name in ("iid", "dirichlet"):
            assert union.size == labels.size - 1000
