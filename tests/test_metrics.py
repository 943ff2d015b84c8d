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


def test_a_class_only_predicted_is_no_zero_of_its_own_so_teacher_and_student_share_the_classes():
    # truth: classes 0 and 1 only; the teacher also names class 2 somewhere, the student never does
    truth = torch.tensor([0, 0, 1, 1])
    teacher, student = ConfusionMatrix(3), ConfusionMatrix(3)
    teacher.update(torch.tensor([0, 2, 1, 1]), truth)
    student.update(torch.tensor([0, 1, 1, 1]), truth)
    assert teacher.mean_iou() == pytest.approx((1 / 2 + 1) / 2)  # it was (1/2 + 1 + 0) / 3: a 0 for class 2
    assert student.mean_iou() == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert math.isnan(teacher.mean_iou([2]))  # a class without ground truth cannot be scored


def test_a_student_output_finer_than_the_label_map_is_shrunk_as_the_teachers_answers_are():
    # the teacher's answer reached a coarser map antialiased, the student's by predict's plain bilinear:
    # the same logits scored 0.3% apart
    import torch.nn.functional as F

    from amalgam.data.views import resize
    from amalgam.evaluation.evaluate import as_teachers_answer
    from amalgam.task import get_task

    out = torch.randn(2, 4, 64, 64)
    segmentation, classification = get_task("segmentation"), get_task("classification")
    shrunk = as_teachers_answer(segmentation, out, (32, 32))
    assert torch.equal(shrunk, resize(out, (32, 32)))
    assert not torch.allclose(shrunk, F.interpolate(out, size=(32, 32), mode="bilinear", align_corners=False))
    assert as_teachers_answer(segmentation, out, (128, 128)) is out  # enlarging: predict's bilinear, as before
    assert as_teachers_answer(classification, out[:, :, 0, 0], (32, 32)).shape == (2, 4)


def test_a_class_seen_on_a_few_pixels_is_not_judged_a_swapped_label():
    # three eval scenes: 37 pixels of a class named as another read as "are its labels in order?"
    from amalgam_tasks.segmentation import SegmentationMeter

    truth = torch.tensor([0] * 1000 + [1] * 37 + [2] * 300)
    pred = torch.tensor([0] * 1000 + [2] * 37 + [1] * 300)
    meter = SegmentationMeter(3)
    meter.update(pred, truth)
    assert meter.compute()["mostly_predicted_as"] == [None, None, 1]  # 300 pixels are judged, 37 are not
    cm = ConfusionMatrix(3)
    cm.update(pred, truth)
    assert cm.mostly_predicted_as() == [None, 2, 1]  # without a floor, as before


def test_a_prediction_outside_the_classes_stops_naming_it_not_counted_as_the_last_class():
    # a plugin's predict answering 255 (its own "void") was clamped into class 2 and scored as such
    from amalgam.errors import AmalgamError

    m = ConfusionMatrix(3)
    with pytest.raises(AmalgamError, match=r"a prediction of class index 255 outside 0\.\.2: a task's predict"):
        m.update(torch.tensor([0, 255, 2]), torch.tensor([0, 2, 2]))
    m.update(torch.tensor([0, 255, 2]), torch.tensor([0, IGNORE, 2]))  # where the truth is ignored: not scored
    assert m.matrix.sum() == 2
