"""Medical classification metrics on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from pgsl_flower.classification_metrics import auroc, classification_report, report_from_confusion
from pgsl_flower.strategy import balanced_class_weights

CLASSES = ("normal", "benign", "malignant")


def test_majority_class_predictor_scores_chance_balanced_accuracy():
    # 26 normal, 12 benign, 12 malignant (the paper's MIAS test split), everything predicted normal
    labels = torch.tensor([0] * 26 + [1] * 12 + [2] * 12)
    scores = torch.tensor([[0.6, 0.2, 0.2]]).repeat(50, 1)
    report = classification_report(scores, labels, CLASSES)
    assert report.accuracy == pytest.approx(0.52)
    assert report.balanced_accuracy == pytest.approx(1 / 3)
    assert report.recall.tolist() == [1.0, 0.0, 0.0]
    # F1 normal = 2 * 1 * 0.52 / 1.52; the others 0
    assert report.macro_f1 == pytest.approx((2 * 0.52 / 1.52) / 3)
    assert report.auroc == pytest.approx(0.5)  # constant scores: no ranking
    assert report.confusion.tolist() == [[26, 0, 0], [12, 0, 0], [12, 0, 0]]


def test_hand_computed_three_class_case():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    scores = torch.tensor([[.8, .1, .1], [.6, .3, .1], [.2, .7, .1], [.1, .8, .1], [.5, .4, .1], [.3, .3, .4]])
    report = classification_report(scores, labels, CLASSES)
    # predictions 0 0 1 1 0 2: confusion [[2,1,0],[1,1,0],[0,0,1]]
    assert report.confusion.tolist() == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert report.accuracy == pytest.approx(4 / 6)
    assert report.recall.tolist() == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert report.balanced_accuracy == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    precision = [2 / 3, 1 / 2, 1.0]
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, [2 / 3, 1 / 2, 1.0], strict=True)]
    assert report.macro_f1 == pytest.approx(sum(f1) / 3)
    # one-vs-rest AUROC, counted by hand from the pairs:
    # normal (scores .8 .6 .2 vs .1 .5 .3): 7 of 9 pairs; benign (.8 .4 vs .1 .3 .7 .3): 7 of 8;
    # malignant (.4 vs five .1): 5 of 5
    assert report.auroc == pytest.approx((7 / 9 + 7 / 8 + 1.0) / 3)
    rows = report.per_class()
    assert [r["support"] for r in rows] == [3, 2, 1] and rows[2]["recall"] == 1.0


def test_binary_auroc_is_symmetric_in_the_positive_class():
    labels = torch.tensor([0, 0, 1, 1])
    p1 = torch.tensor([0.1, 0.4, 0.35, 0.8])
    scores = torch.stack([1 - p1, p1], 1)
    assert auroc(scores, labels) == pytest.approx(0.75)  # 3 of 4 (positive, negative) pairs ranked right
    assert auroc(scores.flip(1), 1 - labels) == pytest.approx(0.75)


def test_absent_classes_are_left_out_of_macro_averages():
    labels = torch.tensor([0, 0, 1, 1])
    scores = torch.tensor([[.9, .05, .05], [.2, .7, .1], [.1, .8, .1], [.3, .6, .1]])
    report = classification_report(scores, labels, CLASSES)
    assert math.isnan(float(report.recall[2]))
    assert report.balanced_accuracy == pytest.approx((0.5 + 1.0) / 2)
    # normal: positives .9 .2 vs negatives .1 .3 -> 3 of 4 pairs; benign: .8 .6 vs .05 .7 -> 3 of 4;
    # malignant has no positives: not averaged
    assert report.auroc == pytest.approx(0.75)
    assert report.as_json()["recall_per_class"]["malignant"] is None
    one_class = classification_report(scores[:2], labels[:2], CLASSES)
    assert math.isnan(one_class.auroc)


def test_report_from_counts_and_shape_checks():
    report = report_from_confusion(torch.tensor([[5, 5], [0, 10]]), ("a", "b"))
    assert report.accuracy == pytest.approx(0.75) and report.balanced_accuracy == pytest.approx(0.75)
    assert math.isnan(report.auroc)
    with pytest.raises(ValueError, match="must be"):
        classification_report(torch.rand(4, 2), torch.zeros(4, dtype=torch.long), CLASSES)


def test_balanced_class_weights():
    weights = balanced_class_weights([10, 30, 0])
    # n / (K * n_k) with K = 2 classes present, n = 40
    assert weights.tolist() == pytest.approx([2.0, 40 / 60, 0.0])
    labels = torch.tensor([0] * 10 + [1] * 30)
    assert float((weights[labels]).sum()) == pytest.approx(40.0)  # every present class contributes 20
