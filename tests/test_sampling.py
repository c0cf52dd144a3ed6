import pytest

from pgsl_flower.sampling import clients_per_round, sample_clients
from pgsl_flower.simulation import simulate


@pytest.mark.parametrize(
    ("available", "fraction", "minimum", "expected"),
    [(200, 0.1, 1, 20), (200, 0.1, 30, 30), (10, 0.25, 1, 3), (3, 0.1, 5, 3), (7, 1.0, 1, 7), (10, 0.3, 1, 3)],
)
def test_clients_per_round(available, fraction, minimum, expected):
    assert clients_per_round(available, fraction, minimum) == expected


def test_sampling_is_seeded_varies_by_round_and_never_repeats_a_client():
    nodes = list(range(100, 300))
    first = sample_clients(nodes, 0.1, 1, seed=7, round_num=1)
    assert first == sample_clients(list(reversed(nodes)), 0.1, 1, seed=7, round_num=1)  # order-free
    assert len(first) == len(set(first)) == 20 and set(first) <= set(nodes)
    assert first != sample_clients(nodes, 0.1, 1, seed=7, round_num=2)
    assert first != sample_clients(nodes, 0.1, 1, seed=8, round_num=1)
    assert sample_clients(nodes, 1.0, 1, seed=7, round_num=3) == nodes


@pytest.mark.slow
def test_only_sampled_clients_train_each_round(tmp_path):
    import csv

    cfg = {"num-rounds": 3, "samples-per-client": 200, "batch-size": 32, "batches-per-round": 2,
           "test-samples": 200, "local-eval-samples": 16, "fraction-train": 0.4, "min-train-clients": 2,
           "min-available-clients": 5, "seed": 3}
    simulate(cfg, num_clients=5, run_dir=tmp_path)
    with (tmp_path / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # ceil(0.4 * 5) = 2 clients train, 2 batches of 32 each; quorum is capped by the sample.
    assert [(int(r["clients"]), int(r["samples"])) for r in rows] == [(2, 128)] * 3
