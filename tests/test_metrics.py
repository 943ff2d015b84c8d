"""ConfusionMatrix: counts, ignored targets, accuracy and IoU by hand."""

from __future__ import annotations

import math

import pytest
import torch

from amalgam.evaluation.metrics import ConfusionMatrix
from amalgam.labels import IGNORE


def test_confusion_matrix_by_hand_rows_are_truth():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 1, 1, 2, 0]), torch.tensor([0, 0, 1, 1, 2, IGNORE]))
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    assert cm.accuracy() == pytest.approx(4 / 5)
    iou = cm.iou()
    assert iou.tolist() == pytest.approx([0.5, 2 / 3, 1.0])
    assert cm.mean_iou() == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)


def test_confusion_matrix_accumulates_and_accepts_any_matching_shapes():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, 1], [0, 1]]))
    cm.update(torch.tensor([0]), torch.tensor([1]))
    assert cm.matrix.tolist() == [[1, 1], [1, 2]]
    # IoU0 = 1 / (2 + 2 - 1), IoU1 = 2 / (3 + 3 - 2)
    assert cm.iou().tolist() == pytest.approx([1 / 3, 0.5])


def test_targets_outside_the_classes_are_skipped():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 0, 0, 1]), torch.tensor([-1, 2, IGNORE, 1]))
    assert cm.matrix.tolist() == [[0, 0], [0, 1]]


def test_absent_classes_are_nan_and_excluded_from_the_mean():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 0]), torch.tensor([0, 0]))
    iou = cm.iou()
    assert iou[0].item() == 1.0 and math.isnan(iou[1].item()) and math.isnan(iou[2].item())
    assert cm.mean_iou() == 1.0


def test_empty_matrix_gives_nan():
    cm = ConfusionMatrix(2)
    assert math.isnan(cm.accuracy()) and math.isnan(cm.mean_iou())
