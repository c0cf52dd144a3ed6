"""The honest-but-curious adversary inside a federation, and the harness that scores it.

Interception is modelled explicitly (paper Section III, honest-but-curious). Run-config
``adversary-role`` says who the adversary is:

- ``client`` (default): partition ``adversary`` is a participant. During the final round
  :class:`Interceptor` (the network tap) copies the first batch of smashed data each *other*
  client sends, in the server's processing order (node order), with that client's batch
  counter (for scoring only), until it holds ``adversary-images`` images. The first batch of
  a SplitFed round is computed with the round's shared client part, which the adversary also
  received. After training, the server sends the adversarial client a ``query.attack``
  message holding those smashed tensors and the round's client part, and nothing else;
  :func:`reconstruct_intercepted` runs on that client.
- ``server``: the server itself. Every client's smashed data reaches it, so the tap keeps
  the first batch of *every* client (``adversary`` >= 0 only turns the attack on), and the
  attacks run in the ServerApp process (:func:`server_reconstructions`) with the round's
  client part, which the server aggregated. No message goes to any client.

The adversary learns from its own partition's images (role ``client``), or, with
``adversary-aux-samples`` > 0, from that many images of an auxiliary pool withheld from
every client (:func:`pgsl_flower.local_data.aux_pool`); the server has no images of its
own, so its ``decoder`` / ``gan`` / ``white-box-denoised`` / ``white-box-refined`` attacks need the pool
(``white-box`` needs no data).
:func:`score_reconstructions` is the evaluation harness: it reads the victims' original
images from disk (never through the protocol), checks they reproduce the intercepted smashed
data, and scores the reconstructions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from pgsl_flower.attacks.decoder import DecoderInversion
from pgsl_flower.attacks.figures import save_grid
from pgsl_flower.attacks.gan_prior import GANPriorInversion
from pgsl_flower.attacks.interface import (
    AdversaryKnowledge,
    ReconstructionAttack,
    SmashedDataObservation,
    images_from_inputs,
    smashed_in_batches,
)
from pgsl_flower.attacks.scoring import (
    classifier_scores,
    clean_classifier,
    reconstruction_metrics,
)
from pgsl_flower.attacks.perturbation_removal import DefenseAwareInversion, InversionRefinement, PerturbationRemoval
from pgsl_flower.attacks.unsplit import UnSplit
from pgsl_flower.attacks.white_box import WhiteBoxInversion
from pgsl_flower.config import RunConfig
from pgsl_flower.data import ImageDataset
from pgsl_flower.defenses import ADVERSARY_OWN_BATCH, batch_seed, make_defense
from pgsl_flower.local_data import (
    LocalData,
    augment_seed,
    aux_data,
    client_batch_indices,
    dropout_seed,
    local_data,
)
from pgsl_flower.model import ClientNet, build_client_net, input_channels, seeded_dropout


@dataclass
class InterceptedBatch:
    node: int
    counter: int  # the victim's batch counter: the harness uses it to find the originals
    smashed: torch.Tensor


@dataclass
class Interceptor:
    """Copies the first smashed batch of each victim while ``active`` (the trainer's tap).

    ``adversary_node``: the adversarial client's node, never a victim; ``None`` for the
    server adversary, whose victims are all clients.
    """

    adversary_node: int | None
    max_images: int
    active: bool = False
    batches: list[InterceptedBatch] = field(default_factory=list)

    @property
    def images(self) -> int:
        return sum(len(b.smashed) for b in self.batches)

    def __call__(self, node: int, counter: int, smashed: torch.Tensor) -> None:
        if not self.active or node == self.adversary_node or self.images >= self.max_images:
            return
        if any(b.node == node for b in self.batches):
            return
        keep = min(len(smashed), self.max_images - self.images)
        self.batches.append(InterceptedBatch(node, counter, smashed[:keep].clone()))

    def smashed(self) -> torch.Tensor:
        return torch.cat([b.smashed for b in self.batches])


#: White-box inversion's Adam steps per 'attack-steps' step (default 200 -> 1000 steps); UnSplit
#: gets the same budget of optimisation steps, input and clone steps together.
WHITE_BOX_STEP_FACTOR = 5


#: TV weight of 'white-box-l1'. Chosen once, before any simulation, on 8 MNIST test images and a
#: random client part with Laplace noise of 1, 2 and 5 x std(h) added to h (tests/test_white_box.py):
#: PSNR 28.6 / 23.1 / 15.2 dB, against 25.0 / 18.2 / 10.2 with white-box's 1e-3 in L1 and
#: 26.7 / 18.9 / 9.6 for white-box itself. Not tuned per run or per defense.
NOISE_AWARE_TV = 1e-2


def smashed_data_attack(name: str, cfg: RunConfig) -> ReconstructionAttack:
    """The attack object for an 'adversary-attacks' name."""
    if name == "decoder":
        return DecoderInversion(epochs=cfg.attack_epochs)
    if name == "gan":
        return GANPriorInversion(train_steps=cfg.gan_steps, steps=cfg.attack_steps)
    if name in ("white-box", "white-box-l1"):
        # Pixel-space optimisation (784+ free values per image, not a 64-d latent) needs more
        # steps than the GAN-prior inversion: WHITE_BOX_STEP_FACTOR x 'attack-steps'. The client
        # part runs in train mode on chunks of 'batch-size' (one victim's full batch each), as
        # the victims computed the intercepted h. 'white-box-l1' is the noise-aware variant: h
        # matched in L1 (the Laplace likelihood) under a 10x stronger TV prior (NOISE_AWARE_TV).
        noise_aware = name == "white-box-l1"
        return WhiteBoxInversion(steps=WHITE_BOX_STEP_FACTOR * cfg.attack_steps, seed=cfg.seed,
                                 client_mode="train", batch_size=cfg.batch_size, name=name,
                                 norm="l1" if noise_aware else "l2",
                                 tv_weight=NOISE_AWARE_TV if noise_aware else WhiteBoxInversion.tv_weight)
    if name == "white-box-denoised":
        # 'white-box-l1', then the inverse of the clients' input perturbation (PGSL's pixel attack),
        # learnt on the adversary's own images in as many Adam steps as the inversion takes.
        base = smashed_data_attack("white-box-l1", cfg)
        return DefenseAwareInversion(base, PerturbationRemoval(steps=base.steps), name=name)
    if name == "white-box-refined":
        # 'white-box-l1', then a refiner learnt on as many of the adversary's own images as it
        # intercepts, pushed through the clients' pipeline and defense and the same inversion.
        base = smashed_data_attack("white-box-l1", cfg)
        return DefenseAwareInversion(base, InversionRefinement(base, pairs=cfg.adversary_images, steps=base.steps),
                                     name=name)
    if name == "unsplit":
        # Same budget as white-box, split between input and clone steps; same train-mode chunks.
        per_iteration = UnSplit.input_steps + UnSplit.model_steps
        return UnSplit(iterations=max(1, WHITE_BOX_STEP_FACTOR * cfg.attack_steps // per_iteration), seed=cfg.seed,
                       client_mode="train", batch_size=cfg.batch_size)
    raise ValueError(f"unknown smashed-data attack {name!r}")


#: Stand-in partition id of the server adversary: seeds its client-side pipeline on the auxiliary
#: images and its defense randomness (client partition ids are >= 0, the harness's is -1).
SERVER_ADVERSARY = -2


def adversary_knowledge(
    cfg: RunConfig, data: LocalData | None, client: ClientNet, partition: int, image_shape: tuple[int, ...],
) -> AdversaryKnowledge:
    """The adversary's clean images and the inputs its own pipeline builds from them
    (``data`` None: no images, e.g. the server without an auxiliary pool)."""
    if data is None:
        channels, height, width = image_shape
        images = torch.zeros(0, channels, height, width)
        inputs = torch.zeros(0, input_channels(channels), height // 2, width // 2)
    else:
        images = data.train_images.float() / 255
        inputs = data.inputs(torch.arange(data.train_labels.shape[0]))
    defense = make_defense(cfg)
    return AdversaryKnowledge(
        own_images=images,
        own_inputs=inputs,
        client=client,
        map_channel_is_zero=not cfg.pixel_attacked,
        seed=cfg.seed,
        release=lambda smashed: defense.release(smashed, batch_seed(cfg, partition, ADVERSARY_OWN_BATCH)),
    )


def reconstruct_intercepted(
    cfg: RunConfig, own: LocalData | None, client: ClientNet, smashed: torch.Tensor, partition: int,
    image_shape: tuple[int, ...],
) -> dict[str, torch.Tensor]:
    """Run every configured attack; images in [0, 1]. The adversary learns from the auxiliary
    pool when 'adversary-aux-samples' > 0, else from ``own`` (its partition; None for the server)."""
    data = aux_data(cfg, partition) if cfg.adversary_aux_samples else own
    observation = SmashedDataObservation(adversary_knowledge(cfg, data, client, partition, image_shape), smashed)
    out: dict[str, torch.Tensor] = {}
    for name in cfg.attack_names:
        attack = smashed_data_attack(name, cfg)
        if isinstance(attack, DefenseAwareInversion) and attack.base.name in out:  # its inversion ran already
            out[name] = attack.reconstruct_from(observation, out[attack.base.name])
        else:
            out[name] = attack.reconstruct(observation).clamp(0, 1)
    return out


def server_reconstructions(
    cfg: RunConfig, smashed: torch.Tensor, client_weights: dict[str, torch.Tensor], image_shape: tuple[int, ...],
) -> dict[str, torch.Tensor]:
    """Run-config 'adversary-role' = 'server': the attacks, in the ServerApp process, with the
    client part the server aggregated and no images but the auxiliary pool's."""
    client = build_client_net(cfg, image_shape[0])
    client.load_state_dict(client_weights)
    return reconstruct_intercepted(cfg, None, client, smashed, SERVER_ADVERSARY, image_shape)


@dataclass(frozen=True)
class GroundTruth:
    """The victims' originals for the intercepted batches (read by the harness)."""

    images: torch.Tensor  # clean, float [0, 1]
    client_inputs: torch.Tensor  # what the victims fed their client part (attacked under PGSL)
    labels: torch.Tensor
    partitions: torch.Tensor  # each image's victim (partition id)


def ground_truth(
    cfg: RunConfig, batches: list[InterceptedBatch], partitions: dict[int, int], num_partitions: int,
    client_weights: dict[str, torch.Tensor],
) -> GroundTruth:
    """Originals of each intercepted batch, checked against the intercepted smashed data."""
    images, inputs, labels, owners = [], [], [], []
    defense = make_defense(cfg)
    channels = local_data(cfg, partitions[batches[0].node], num_partitions).train_images.shape[1]
    client = build_client_net(cfg, channels)  # one model: smashed_in_batches restores its state after each use
    client.load_state_dict(client_weights)
    for batch in batches:
        partition = partitions[batch.node]
        data = local_data(cfg, partition, num_partitions)
        index = client_batch_indices(cfg, data, partition, batch.counter)
        seed = augment_seed(cfg, partition, batch.counter)
        client_inputs = data.inputs(index, augment_seed=seed)
        with seeded_dropout(client, dropout_seed(cfg, partition, batch.counter)):  # cut-layer >= 4
            smashed = smashed_in_batches(client, client_inputs, len(index))
        # what the victim sent, noise included
        recomputed = defense.release(smashed, batch_seed(cfg, partition, batch.counter))[: len(batch.smashed)]
        if not torch.allclose(recomputed, batch.smashed, atol=1e-4, rtol=1e-4):
            raise RuntimeError(
                f"ground truth for node {batch.node} (partition {partition}, batch {batch.counter}) does not "
                f"reproduce the intercepted smashed data (max diff {float((recomputed - batch.smashed).abs().max()):.3g})"
            )
        keep = len(batch.smashed)
        images.append(data.images(index, seed)[:keep])  # the whole batch: its augmentation draws per sample
        inputs.append(client_inputs[:keep])
        labels.append(data.train_labels[index[:keep]])
        owners.append(torch.full((keep,), partition, dtype=torch.int64))
    return GroundTruth(torch.cat(images), torch.cat(inputs), torch.cat(labels), torch.cat(owners))


def score_reconstructions(
    reconstructions: dict[str, torch.Tensor], truth: GroundTruth, train_set: ImageDataset, seed: int,
    balanced: bool = False,
) -> dict[str, dict[str, float]]:
    """Per attack: MSE / PSNR / SSIM against the clean originals and the clean
    classifier's accuracy and balanced accuracy on the reconstructions; ``input`` scores the victims'
    own client input image for reference, when it differs from the original (pixel-attacked
    defenses). ``balanced``: the clean classifier is trained with a class-weighted loss."""
    classifier = clean_classifier(train_set, seed, balanced=balanced)
    rows = dict(reconstructions)
    if not torch.equal(images_from_inputs(truth.client_inputs), truth.images):
        rows = {"input": images_from_inputs(truth.client_inputs).clamp(0, 1), **rows}
    return {
        name: {**reconstruction_metrics(images, truth.images),
               **classifier_scores(classifier, images, truth.labels, train_set.classes)}
        for name, images in rows.items()
    }


def scores_by_victim(reconstructions: dict[str, torch.Tensor], truth: GroundTruth) -> dict[str, dict]:
    """Per victim partition: its intercepted images and each attack's MSE / PSNR / SSIM on them."""
    out = {}
    for partition in sorted(set(truth.partitions.tolist())):
        mine = truth.partitions == partition
        out[str(partition)] = {
            "images": int(mine.sum()),
            "scores": {name: reconstruction_metrics(images[mine], truth.images[mine])
                       for name, images in reconstructions.items()},
        }
    return out


def write_attack_outputs(run_dir: Path, reconstructions: dict[str, torch.Tensor], truth: GroundTruth,
                         scores: dict[str, dict[str, float]], role: str = "client") -> None:
    """``attacks.json`` (scores, the adversary's role, per-victim scores), ``attack_grid.png``
    (original | client input | each attack) and ``attacks.pt`` (originals, client inputs,
    labels, victim partitions, reconstructions: for later analyses)."""
    from pgsl_flower.metrics import write_json

    write_json(run_dir / "attacks.json", {
        "images": len(truth.labels), "role": role, "scores": scores,
        "victims": scores_by_victim(reconstructions, truth),
    })
    torch.save(
        {"images": truth.images, "client_inputs": truth.client_inputs, "labels": truth.labels,
         "partitions": truth.partitions, "reconstructions": reconstructions},
        run_dir / "attacks.pt",
    )
    rows = {"original": truth.images, "client input": images_from_inputs(truth.client_inputs).clamp(0, 1), **reconstructions}
    save_grid(run_dir / "attack_grid.png", rows, columns=8)
