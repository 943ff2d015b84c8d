"""Segmentation plugin: the shared contract plus mIoU / pixel accuracy from a hand-made confusion matrix."""

from __future__ import annotations

import pytest
import torch
from contract import TaskContract

from amalgam.labels import IGNORE, LabelSpace
from amalgam.task import get_task


class TestSegmentationContract(TaskContract):
    task_name = "segmentation"
    space = LabelSpace(("background", "disc", "square", "bar"), "background")

    def test_unified_space_starts_with_background(self, task):
        assert task.unified_background == "background"


def one_hot_logits(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(classes, num_classes).permute(0, 3, 1, 2).float() * 5


def test_miou_and_pixel_accuracy_by_hand():
    task = get_task("segmentation")
    target = torch.tensor([[[0, 0, 1], [1, 2, IGNORE]]])
    pred = torch.tensor([[[0, 1, 1], [1, 2, 0]]])
    # confusion (rows truth): [[1, 1, 0], [0, 2, 0], [0, 0, 1]], the ignored pixel is not scored
    # IoU: 1 / (1 + 2 - 1) = 1/2, 2 / (3 + 2 - 2) = 2/3, 1 / 1 = 1; class 3 absent -> excluded
    meter = task.new_meter(4)
    meter.update(task.predict(one_hot_logits(pred, 4), (2, 3)), target)
    metrics = meter.compute()
    assert metrics["miou"] == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    assert metrics["pixel_acc"] == pytest.approx(4 / 5)
    assert metrics["iou"] == [0.5, pytest.approx(2 / 3), 1.0, None]


def test_predict_resizes_to_the_target_size():
    task = get_task("segmentation")
    classes = torch.tensor([[[0, 1], [2, 3]]])
    pred = task.predict(one_hot_logits(classes, 4), (4, 4))
    expected = classes.repeat_interleave(2, 1).repeat_interleave(2, 2)
    assert pred.shape == (1, 4, 4)
    assert torch.equal(pred, expected)
