"""The contract every task plugin must honour, as one tester subclassed per task (smp's pattern).

A subclass sets ``task_name`` (and ``space`` for labelled tasks); every ``test_*`` here then runs
against that task. Task-specific checks live beside the subclass.
"""

from __future__ import annotations

import math
from typing import Optional

import pytest
import torch

from amalgam.labels import LabelSpace
from amalgam.plugin_contract import contract_problem
from amalgam.task import DistillOptions, Task, get_task

#: DistillOptions fields a dense labelled task may declare (amalgam.distill.plan.DISTILL_OPTION_KEYS)
PIXEL_OPTIONS = ("class_balance", "focal", "pseudo_labels")


class TaskContract:
    """Base tester (not collected itself: its name does not start with ``Test``)."""

    task_name: str
    #: the unified label space the student's head covers (labelled tasks)
    space: Optional[LabelSpace] = None
    batch = 2
    size = (8, 12)  # student output size of dense tasks
    feature_channels = 16

    @pytest.fixture
    def task(self) -> Task:
        return get_task(self.task_name)

    # -- helpers subclasses may override ---------------------------------------------------------

    def channels(self, task: Task) -> int:
        return task.num_outputs(self.space)

    def output(self, task: Task, seed: int = 0, size=None, channels=None) -> torch.Tensor:
        """A canonical output (student or teacher) of this task."""
        g = torch.Generator().manual_seed(seed)
        c = channels or self.channels(task)
        shape = (self.batch, c, *(size or self.size)) if task.dense else (self.batch, c)
        return torch.randn(shape, generator=g)

    def identity(self, task: Task) -> Optional[torch.Tensor]:
        return torch.eye(len(self.space), dtype=torch.bool) if task.labelled else None

    def options(self, task: Task, **fields) -> DistillOptions:
        """What the objective hands ``distill_loss``: the identity projection at temperature 2."""
        return DistillOptions(self.identity(task), 2.0, **fields)

    def target(self, task: Task, size) -> torch.Tensor:
        """Ground truth as an eval set gives it, at ``size`` for dense tasks."""
        g = torch.Generator().manual_seed(1)
        if task.labelled:
            shape = (self.batch, *size) if task.dense else (self.batch,)
            return torch.randint(0, len(self.space), shape, generator=g)
        return torch.rand((self.batch, *size), generator=g) + 0.5

    # -- the contract ------------------------------------------------------------------------------

    def test_get_task_returns_the_plugin(self, task):
        assert isinstance(task, Task)
        assert task.name == self.task_name
        assert task.labelled == (self.space is not None)
        assert task.output_kinds, "at least the default output kind"

    def test_head_output_shape(self, task):
        head = task.build_head(self.feature_channels, self.channels(task))
        if task.dense:
            feature = torch.randn(self.batch, self.feature_channels, *self.size)
            assert head(feature).shape == (self.batch, self.channels(task), *self.size)
        else:
            feature = torch.randn(self.batch, self.feature_channels, 2, 3)  # last encoder map
            assert head(feature).shape == (self.batch, self.channels(task))

    def test_distill_loss_is_a_finite_scalar_with_gradient_to_the_student(self, task):
        student = self.output(task, seed=0).requires_grad_(True)
        teacher = self.output(task, seed=1)
        loss = task.distill_loss(student, teacher, self.options(task))
        assert loss.dim() == 0
        assert torch.isfinite(loss)
        assert loss.item() > 0
        loss.backward()
        assert student.grad is not None and torch.isfinite(student.grad).all()
        assert student.grad.abs().sum() > 0

    def test_distill_loss_is_zero_when_student_equals_teacher(self, task):
        out = self.output(task, seed=3)
        same = task.distill_loss(out.clone(), out.clone(), self.options(task))
        other = task.distill_loss(out.clone(), self.output(task, seed=4), self.options(task))
        assert same.item() == pytest.approx(0.0, abs=1e-5)
        assert other.item() > same.item() + 1e-3

    def test_distill_loss_accepts_a_teacher_at_another_resolution(self, task):
        if not task.dense:
            pytest.skip("pooled task")
        student = self.output(task, seed=0)
        for size in [(4, 6), tuple(2 * s for s in self.size)]:  # coarser, and finer (four-block students)
            teacher = self.output(task, seed=1, size=size)
            assert torch.isfinite(task.distill_loss(student, teacher, self.options(task)))

    def test_distill_loss_honours_the_options_it_declares(self, task):
        assert task.distill_options <= {"weights", "after_projection", *PIXEL_OPTIONS}
        student, teacher = self.output(task, seed=0), self.output(task, seed=1)
        plain = task.distill_loss(student, teacher, self.options(task)).item()
        if "weights" in task.distill_options:
            shape = (self.batch, *self.size) if task.dense else (self.batch,)
            ones = task.distill_loss(student, teacher, self.options(task, weights=torch.ones(shape)))
            assert ones.item() == pytest.approx(plain, rel=1e-5)
            first_only = torch.zeros(shape)
            first_only[0] = 1.0
            weighted = task.distill_loss(student, teacher, self.options(task, weights=first_only))
            assert weighted.item() != pytest.approx(plain, rel=1e-3)
        if "after_projection" in task.distill_options:  # the identity projection: the same loss
            after = task.distill_loss(student, teacher, self.options(task, after_projection=True))
            assert after.item() == pytest.approx(plain, rel=1e-4)

    @pytest.mark.parametrize("option", PIXEL_OPTIONS)
    def test_a_declared_pixel_weight_option_changes_the_loss(self, task, option):
        # the plan says a recipe's focal/class_balance/pseudo_labels are unused unless the task declares them
        if option not in task.distill_options:
            pytest.skip(f"{task.name} does not declare {option}")
        student, teacher = self.output(task, seed=0), self.output(task, seed=1)
        plain = task.distill_loss(student, teacher, self.options(task)).item()
        on = task.distill_loss(student, teacher, self.options(task, **{option: 1.0})).item()
        assert on != pytest.approx(plain, rel=1e-4)

    def test_the_class_passes_amalgams_own_checks(self, task):
        # what the recipe check and `amalgam tasks` run: attributes, hook signatures
        assert contract_problem(type(task)) is None

    def test_predict_shapes(self, task):
        # what the engine accepts: batch first, dense ones at the label map's size; one value per
        # pixel (image) or several ([B, C, H, W] normals, [B, K] multi-hot), as the task's meter takes
        target_size = (16, 24)
        pred = task.predict(self.output(task), target_size)
        assert pred.shape[0] == self.batch
        if task.dense:
            assert tuple(pred.shape[-2:]) == target_size and pred.dim() in (3, 4)
        one_value = pred.dim() == (3 if task.dense else 1)
        if task.labelled and one_value:  # class indices
            assert not pred.is_floating_point()
            assert int(pred.min()) >= 0 and int(pred.max()) < len(self.space)

    def test_meter_computes_the_headline_metric(self, task):
        target_size = (16, 24)
        meter = task.new_meter(len(self.space) if self.space else None)
        pred = task.predict(self.output(task), target_size)
        meter.update(pred, self.target(task, target_size))
        metrics = meter.compute()
        assert task.metric in metrics
        assert math.isfinite(metrics[task.metric])
        assert isinstance(task.higher_is_better, bool)

    def test_check_output_accepts_the_right_shape_and_rejects_a_wrong_one(self, task):
        good = self.output(task)
        assert task.check_output(good, self.batch, self.space) is None
        bad = good[:, :1] if self.channels(task) > 1 else torch.cat([good, good], dim=1)
        problem = task.check_output(bad, self.batch, self.space)
        assert isinstance(problem, str) and "expected" in problem and str(list(bad.shape)) in problem
        flat = good.flatten()
        assert isinstance(task.check_output(flat, self.batch, self.space), str)
