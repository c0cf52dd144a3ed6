"""Baseline defenses of the client's smashed data, behind one interface
(:class:`~pgsl_flower.defenses.interface.SmashedDataDefense`):

- ``laplace``: noise on what is sent (:mod:`.laplace`);
- ``nopeek``: a distance-correlation term in the client's loss (:mod:`.nopeek`);
- ``dp-sgd``: clipped, noised per-sample gradients of the client part (:mod:`.dp_sgd`);
- ``latent-perturbation``: a learned perturbation at the end of the client part,
  trained minimax against a simulated adversary (:mod:`.latent_perturbation`).

``make_defense(cfg)`` returns the run's defense. PGSL and its pixel attack act
on the client's *input* and the server's model instead (``pgsl_flower.pgsl``);
for those (and ``none``) the smashed data is sent as computed.
"""

from __future__ import annotations

from pgsl_flower.config import RunConfig
from pgsl_flower.defenses.dp_sgd import DPSGD, dp_epsilon, per_sample_gradients
from pgsl_flower.defenses.interface import SmashedDataDefense
from pgsl_flower.defenses.laplace import LaplaceNoise, laplace_noise
from pgsl_flower.defenses.latent_perturbation import MinimaxPerturbation
from pgsl_flower.defenses.nopeek import NoPeek, distance_correlation

__all__ = [
    "ADVERSARY_OWN_BATCH", "CALIBRATION_BATCH", "DPSGD", "HARNESS_PARTITION", "HOLDOUT_BATCH", "LaplaceNoise", "MinimaxPerturbation",
    "NoPeek", "SmashedDataDefense", "batch_seed", "distance_correlation", "dp_epsilon", "laplace_noise",
    "make_defense", "per_sample_gradients",
]


def make_defense(cfg: RunConfig, image_channels: int = 1, partition_id: int = 0) -> SmashedDataDefense:
    """The smashed-data defense of run-config ``defense`` (a client's own, for ``partition_id``)."""
    if cfg.defense == "laplace":
        return LaplaceNoise(cfg.laplace_scale)
    if cfg.defense == "nopeek":
        return NoPeek(cfg.nopeek_weight)
    if cfg.defense == "latent-perturbation":
        return MinimaxPerturbation(cfg.ldp_weight, image_channels, cfg.lr, seed=cfg.seed * 7_919 + partition_id)
    if cfg.defense == "dp-sgd":
        return DPSGD(cfg.dp_noise_multiplier, cfg.dp_max_grad_norm, cfg.dp_delta)
    return SmashedDataDefense()


#: Batch counters for the defense seeds of evaluation batches (training batches count from 0).
HOLDOUT_BATCH = -1
ADVERSARY_OWN_BATCH = -2
CALIBRATION_BATCH = -3  # BatchNorm recalibration (pgsl_flower.batchnorm)
#: Partition id of the evaluation harness's global test set.
HARNESS_PARTITION = -1


def batch_seed(cfg: RunConfig, partition_id: int, counter: int) -> int:
    """Seed of the defense's randomness for one client batch (reproducible by the harness)."""
    return abs((cfg.seed * 1_000_003 + partition_id) * 10_000_019 + counter)
