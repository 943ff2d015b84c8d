"""Classification plugin: the shared contract plus top-1 and restricted predictions by hand."""

from __future__ import annotations

import math

import pytest
import torch
from contract import TaskContract

from amalgam.labels import IGNORE, LabelSpace, projection
from amalgam.task import DistillOptions, get_task


class TestClassificationContract(TaskContract):
    task_name = "classification"
    space = LabelSpace(("cat", "dog", "bird"))


def test_top1_by_hand():
    task = get_task("classification")
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [0.0, 0.0, 1.0], [9.0, 0.0, 0.0]])
    target = torch.tensor([0, 1, 1, 2, IGNORE])  # predictions 0, 1, 2, 2, 0 -> 3 of 4 scored right
    meter = task.new_meter(3)
    meter.update(task.predict(logits, (1, 1)), target)
    metrics = meter.compute()
    assert metrics["top1"] == pytest.approx(0.75)
    assert metrics["count"] == 4


def test_top1_accumulates_over_batches_and_is_nan_when_empty():
    task = get_task("classification")
    meter = task.new_meter(2)
    assert math.isnan(meter.compute()["top1"])
    meter.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    meter.update(torch.tensor([1]), torch.tensor([1]))
    assert meter.compute()["top1"] == pytest.approx(2 / 3)


def test_predict_restricted_to_a_teacher_with_background():
    task = get_task("classification")
    unified = LabelSpace(("cat", "dog", "bird"))
    teacher = LabelSpace(("other", "bird"), "other")  # other covers cat and dog
    logits = torch.log(torch.tensor([[1.0, 1.0, 1.5]]))  # bird wins over the whole space ...
    assert task.predict(logits, (1, 1)).tolist() == [2]
    # ... but cat + dog (2) beat bird (1.5) among the teacher's labels: 'other' (0)
    assert task.predict(logits, (1, 1), projection(teacher, unified)).tolist() == [0]
    # a teacher without background only chooses among its own classes
    assert task.predict(logits, (1, 1), projection(LabelSpace(("dog", "cat")), unified)).tolist() in ([0], [1])


def test_distill_loss_with_a_projection_to_fewer_labels():
    task = get_task("classification")
    unified = LabelSpace(("cat", "dog", "bird"))
    proj = projection(LabelSpace(("cat", "dog")), unified)
    student = torch.tensor([[0.0, 0.0, 50.0]])  # mass on bird does not matter to a cat/dog teacher
    teacher = torch.tensor([[0.0, 0.0]])
    assert task.distill_loss(student, teacher, DistillOptions(proj, 2.0)).item() == pytest.approx(0.0, abs=1e-6)
