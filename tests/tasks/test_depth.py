"""Depth plugin: the shared contract plus output conversion, metrics and the loss by hand."""

from __future__ import annotations

import math

import pytest
import torch
from amalgam_tasks.depth import log_depth_loss
from contract import TaskContract

from amalgam.task import DistillOptions, get_task


class TestDepthContract(TaskContract):
    task_name = "depth"

    def output(self, task, seed=0, size=None, channels=None):
        # depth is metres: strictly positive
        return super().output(task, seed, size, channels).exp()

    def test_head_is_positive(self, task):
        head = task.build_head(4, 1)
        assert (head(torch.randn(2, 4, 5, 5) * 100) > 0).all()


def test_convert_output_metric_inverse_log_and_wrappers():
    task = get_task("depth")
    raw = torch.tensor([[[[0.5, 2.0], [4.0, 1.0]]]])
    assert torch.equal(task.convert_output(raw, "metric"), raw)
    assert torch.allclose(task.convert_output(raw, "inverse"), torch.tensor([[[[2.0, 0.5], [0.25, 1.0]]]]))
    logs = torch.log(torch.tensor([[[[3.0, 0.5]]]]))
    assert torch.allclose(task.convert_output(logs, "log"), torch.tensor([[[[3.0, 0.5]]]]))
    # [B, H, W] gains the channel; dicts and tuples are unwrapped
    assert task.convert_output(raw[:, 0], "metric").shape == (1, 1, 2, 2)
    assert torch.equal(task.convert_output({"out": raw, "aux": raw * 0}, "metric"), raw)
    assert torch.equal(task.convert_output((raw, None), "metric"), raw)
    assert task.output_kinds[0] == "metric"


def test_metrics_by_hand_with_an_invalid_pixel():
    task = get_task("depth")
    target = torch.tensor([[[2.0, 0.0], [4.0, 1.0]]])  # 0 = invalid
    pred = torch.tensor([[[1.0, 5.0], [4.0, 2.0]]])
    # valid pairs (pred, truth): (1, 2), (4, 4), (2, 1)
    meter = task.new_meter(None)
    meter.update(pred, target)
    m = meter.compute()
    assert m["pixels"] == 3
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 0 + 1) / 3))
    assert m["abs_rel"] == pytest.approx((0.5 + 0 + 1.0) / 3)
    assert m["delta1"] == pytest.approx(1 / 3)  # ratios 2, 1, 2
    assert m["scale"] == pytest.approx(1.0)  # pred / truth: 0.5, 1, 2, geometric mean 1


def test_a_depth_teacher_in_another_unit_than_its_eval_set_is_warned():
    # KITTI's PNGs hold 256 values a metre: read as millimetres the truth is 3.9x too small, and a
    # metric teacher's rmse against it is no reference for the student
    task = get_task("depth")
    meter = task.new_meter(None)
    meter.update(torch.full((1, 2, 2), 3.9), torch.ones(1, 2, 2))
    (line,) = task.teacher_warnings("depth-t", meter.compute())
    assert line.startswith("teacher depth-t's depth is 3.9x its eval set's") and "depth_scale" in line
    assert "(1000/256: KITTI-style PNGs, 256 values a metre, read at the default 1000? set depth_scale: 256)" in line
    assert "KITTI-style" not in task.teacher_warnings("depth-t", {"scale": 2.0})[0]  # named only at 1000/256
    assert task.teacher_warnings("depth-t", {"scale": 1.4}) == []
    assert task.teacher_warnings("depth-t", {"scale": 0.6}) != []
    assert task.teacher_warnings("depth-t", {}) == []  # the teacher was not scored


def test_a_unit_warning_names_the_output_scale_and_the_reverse_kitti_mistake():
    # a trial: 0.18x-0.30x teachers were warned with no factor, and millimetre PNGs read at depth_scale 256
    # (0.256x) got no hint, where 1000/256 did
    task = get_task("depth")
    (line,) = task.teacher_warnings("t", {"scale": 0.2})
    assert "a metric teacher answering another unit: teachers.t.output_scale 5 times the one it has" in line
    (line,) = task.teacher_warnings("t", {"scale": 0.256})
    assert (
        "(256/1000: PNGs of 1000 values a metre, millimetres, read at depth_scale 256? set depth_scale: 1000)" in line
    )


def test_metrics_are_nan_without_valid_pixels():
    meter = get_task("depth").new_meter(None)
    meter.update(torch.ones(1, 2, 2), torch.zeros(1, 2, 2))
    assert math.isnan(meter.compute()["rmse"]) and meter.compute()["pixels"] == 0


def test_log_depth_loss_by_hand():
    student = torch.tensor([[[[1.0, math.e]]], [[[2.0, 2.0]]]])
    teacher = torch.ones(2, 1, 1, 2)
    # g = [0, 1] and [ln2, ln2]
    ln2 = math.log(2)
    l1 = (0 + 1 + ln2 + ln2) / 4
    si = ((0.5 - 0.5 * 0.25) + (ln2**2 - 0.5 * ln2**2)) / 2
    assert log_depth_loss(student, teacher).item() == pytest.approx(l1 + si, rel=1e-5)


def test_log_depth_loss_ignores_a_global_scale_less_than_l1():
    teacher = torch.rand(2, 1, 4, 4) + 0.5
    # a global scale factor is fully forgiven by the scale-invariant term when lambda = 1
    assert log_depth_loss(teacher * 2, teacher, si_weight=1.0).item() == pytest.approx(math.log(2), rel=1e-5)


def test_distill_loss_resizes_the_teacher():
    task = get_task("depth")
    student = torch.full((1, 1, 8, 8), 2.0)
    teacher = torch.full((1, 1, 4, 4), 2.0)
    assert task.distill_loss(student, teacher, DistillOptions(None, 2.0)).item() == pytest.approx(0.0, abs=1e-6)


def test_predict_returns_metres_at_the_target_size():
    task = get_task("depth")
    out = torch.full((2, 1, 4, 4), 3.0)
    pred = task.predict(out, (8, 6))
    assert pred.shape == (2, 8, 6)
    assert torch.allclose(pred, torch.full((2, 8, 6), 3.0))
