"""Per-round client sampling (run-config ``fraction-train``, ``min-train-clients``)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence


def clients_per_round(available: int, fraction: float, minimum: int) -> int:
    """``max(ceil(fraction * available), minimum)``, capped by ``available``."""
    return min(available, max(math.ceil(fraction * available - 1e-9), minimum))


def sample_clients(nodes: Sequence[int], fraction: float, minimum: int, seed: int, round_num: int) -> list[int]:
    """The clients that train in round ``round_num``: a seeded sample without replacement, sorted.

    With ``fraction = 1`` every client trains. The draw depends only on the
    seed, the round and the node list, so reruns sample the same clients.
    """
    count = clients_per_round(len(nodes), fraction, minimum)
    if count == len(nodes):
        return sorted(nodes)
    return sorted(random.Random(seed * 1_000_033 + round_num).sample(sorted(nodes), count))
