"""Scores of reconstructions: MSE on [0, 1] pixels, PSNR, SSIM, clean-classifier (balanced) accuracy.

MSE, PSNR and SSIM are torchmetrics' functional metrics with ``data_range=1``,
computed per image and averaged. The paper does not state its MSE scale
(DESIGN.md §3); ours is the mean squared error of [0, 1] pixels.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch.nn import functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from pgsl_flower.classification_metrics import classification_report
from pgsl_flower.data import ImageDataset
from pgsl_flower.model import SplitNet, make_optimizer, prepare_input


def _check_pair(reconstructed: torch.Tensor, original: torch.Tensor) -> None:
    if reconstructed.shape != original.shape or reconstructed.dim() != 4:
        raise ValueError(
            f"reconstructions {tuple(reconstructed.shape)} and originals {tuple(original.shape)} "
            "must both be (N, C, H, W)"
        )


def reconstruction_metrics(reconstructed: torch.Tensor, original: torch.Tensor) -> dict[str, float]:
    """Mean per-image MSE, PSNR (dB) and SSIM of float images in [0, 1]."""
    _check_pair(reconstructed, original)
    rec, ref = reconstructed.float().clamp(0, 1), original.float()
    mse = ((rec - ref) ** 2).flatten(1).mean(1)
    psnr = peak_signal_noise_ratio(rec, ref, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(rec, ref, data_range=1.0, reduction="none")
    return {"mse": float(mse.mean()), "psnr": float(psnr.mean()), "ssim": float(ssim.mean())}


#: Training images and passes of the clean classifier (central, clean data).
CLASSIFIER_SAMPLES = 10_000
CLASSIFIER_EPOCHS = 2
#: At least this many optimizer steps (a few hundred images need more than 2 passes).
CLASSIFIER_MIN_STEPS = 300


def clean_classifier(
    train_set: ImageDataset, seed: int, cache_dir: Path | None = None, balanced: bool = False
) -> SplitNet:
    """The paper's CNN trained centrally on clean training images (eval mode).

    Used only to ask "is a reconstruction still recognisable": its accuracy on
    reconstructions is the privacy metric "attacker accuracy". ``balanced`` weights
    the loss by inverse class frequency (imbalanced medical data, where an unweighted
    model predicts the majority class). At least :data:`CLASSIFIER_EPOCHS` passes and
    :data:`CLASSIFIER_MIN_STEPS` steps. Cached on disk by the data, seed and recipe
    (``PGSL_CACHE_DIR``, else ``~/.cache/pgsl-flower``).
    """
    images = train_set.images[:CLASSIFIER_SAMPLES]
    labels = train_set.labels[:CLASSIFIER_SAMPLES]
    steps_per_epoch = max(1, (len(labels) - 1) // 64 + 1)
    epochs = max(CLASSIFIER_EPOCHS, -(-CLASSIFIER_MIN_STEPS // steps_per_epoch))
    weight = None
    if balanced:
        from pgsl_flower.strategy import balanced_class_weights

        weight = balanced_class_weights(torch.bincount(labels, minlength=len(train_set.classes)).tolist())
    version = "v1" if epochs == CLASSIFIER_EPOCHS and not balanced else f"v2-{epochs}-{balanced}"
    digest = hashlib.sha256()
    for part in (images.numpy().tobytes(), labels.numpy().tobytes(), f"{seed}-{CLASSIFIER_EPOCHS}-{version}".encode()):
        digest.update(part)
    folder = cache_dir or Path(os.environ.get("PGSL_CACHE_DIR", Path.home() / ".cache" / "pgsl-flower"))
    path = folder / f"clean-classifier-{digest.hexdigest()[:20]}.pt"
    num_classes = len(train_set.classes)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SplitNet(images.shape[1], num_classes)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    optimizer = make_optimizer(model)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order) - 1, 64):
            batch = order[start : start + 64]
            if len(batch) < 2:
                continue
            loss = F.cross_entropy(model(prepare_input(images[batch].float() / 255)), labels[batch], weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model.eval()


@torch.no_grad()
def classifier_scores(classifier: SplitNet, images: torch.Tensor, labels: torch.Tensor,
                      classes: tuple[str, ...]) -> dict[str, float]:
    """Accuracy and balanced accuracy of the clean classifier on float images in [0, 1]
    (``attacker_accuracy``, ``attacker_balanced_accuracy``)."""
    classifier.eval()
    scores = torch.cat(
        [classifier(prepare_input(images[i : i + 256].float().clamp(0, 1))).softmax(1) for i in range(0, len(images), 256)]
    )
    report = classification_report(scores, labels, classes)
    return {"attacker_accuracy": report.accuracy, "attacker_balanced_accuracy": report.balanced_accuracy}


def classifier_accuracy(classifier: SplitNet, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of the clean classifier on float images in [0, 1]."""
    classes = tuple(str(k) for k in range(classifier.server.head[-1].out_features))
    return classifier_scores(classifier, images, labels, classes)["attacker_accuracy"]
