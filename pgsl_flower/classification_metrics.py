"""Classification metrics for imbalanced medical data (torchmetrics).

Accuracy alone hides a model that predicts the majority class (52 % on the
mini-MIAS paper split). Every evaluation therefore also reports:

- **balanced accuracy**: the mean of the per-class recalls (chance = 1 / classes);
- **macro-F1**: the mean of the per-class F1 scores;
- **per-class recall**, precision and support;
- **AUROC**: binary AUROC for two classes (symmetric in which class is called
  positive), else the mean of the one-vs-rest AUROCs (MedMNIST's definition);
- the **confusion matrix** (rows: true class, columns: predicted class).

Classes absent from the labels are left out of the macro averages (their recall
is undefined); ``recall`` then holds ``nan`` for them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchmetrics.functional.classification import binary_auroc, multiclass_auroc

#: Columns of the scalar metrics, in the order reports print them.
SCALAR_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")


@dataclass(frozen=True)
class ClassificationReport:
    """Scores of one set of predictions; see the module docstring."""

    classes: tuple[str, ...]
    confusion: torch.Tensor  # (K, K) int64, rows true, columns predicted
    auroc: float  # nan when the labels hold a single class

    @property
    def support(self) -> torch.Tensor:
        return self.confusion.sum(1)

    @property
    def total(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(self.confusion.diagonal().sum()) / max(self.total, 1)

    @property
    def recall(self) -> torch.Tensor:
        """Per class; nan for a class absent from the labels."""
        support = self.support.double()
        return torch.where(support > 0, self.confusion.diagonal().double() / support.clamp_min(1), math.nan)

    @property
    def precision(self) -> torch.Tensor:
        """Per class; 0 for a class never predicted (as scikit-learn's zero_division=0)."""
        predicted = self.confusion.sum(0).double()
        return self.confusion.diagonal().double() / predicted.clamp_min(1)

    @property
    def f1(self) -> torch.Tensor:
        recall, precision = self.recall.nan_to_num(0.0), self.precision
        total = recall + precision
        return torch.where(total > 0, 2 * recall * precision / total.clamp_min(1e-12), 0.0)

    @property
    def balanced_accuracy(self) -> float:
        """Mean recall over the classes present in the labels."""
        present = self.support > 0
        return float(self.recall[present].mean()) if present.any() else math.nan

    @property
    def macro_f1(self) -> float:
        present = self.support > 0
        return float(self.f1[present].mean()) if present.any() else math.nan

    def scalars(self) -> dict[str, float]:
        """``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``auroc``."""
        return {name: float(getattr(self, name)) for name in SCALAR_METRICS}

    def per_class(self) -> list[dict[str, float | int | str]]:
        """One row per class: name, support, recall, precision, f1."""
        return [
            {"class": name, "support": int(self.support[k]), "recall": float(self.recall[k]),
             "precision": float(self.precision[k]), "f1": float(self.f1[k])}
            for k, name in enumerate(self.classes)
        ]

    def as_json(self) -> dict:
        """Scalars, per-class recall and the confusion matrix, for ``summary.json``."""
        return {
            **{name: _finite(value) for name, value in self.scalars().items()},
            "recall_per_class": {name: _finite(float(r)) for name, r in zip(self.classes, self.recall, strict=True)},
            "confusion_matrix": self.confusion.tolist(),
            "classes": list(self.classes),
        }


def _finite(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts, rows true class, columns predicted class."""
    index = labels.long() * num_classes + predictions.long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Binary AUROC (two classes) or the mean one-vs-rest AUROC over the classes present
    with both positives and negatives; nan when no class qualifies."""
    num_classes = scores.shape[1]
    labels = labels.long()
    present = torch.bincount(labels, minlength=num_classes)
    usable = (present > 0) & (present < len(labels))
    if not usable.any():
        return math.nan
    with warnings.catch_warnings():  # torchmetrics warns about classes without positives; they are dropped below
        warnings.simplefilter("ignore", UserWarning)
        if num_classes == 2:
            return float(binary_auroc(scores[:, 1].float(), labels))
        per_class = multiclass_auroc(scores.float(), labels, num_classes, average=None)
    return float(per_class[usable].mean())


def classification_report(
    scores: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]
) -> ClassificationReport:
    """Score class probabilities (N, K) against labels (N,); the prediction is the argmax."""
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0] or scores.shape[1] != len(classes):
        raise ValueError(
            f"scores {tuple(scores.shape)} must be (N, {len(classes)}) for labels {tuple(labels.shape)}"
        )
    scores = scores.detach().cpu()
    labels = labels.detach().cpu().long()
    return ClassificationReport(
        classes=tuple(classes),
        confusion=confusion_matrix(scores.argmax(1), labels, len(classes)),
        auroc=auroc(scores, labels),
    )


def report_from_confusion(confusion: torch.Tensor, classes: Sequence[str]) -> ClassificationReport:
    """A report from counts alone (no scores, so no AUROC), e.g. the server's training predictions."""
    return ClassificationReport(classes=tuple(classes), confusion=confusion.long().cpu(), auroc=math.nan)
