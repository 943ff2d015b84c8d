"""The amalgamation objective: per-teacher distillation terms, feature adapters and task weighting."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from amalgam.cache import Targets, live_targets
from amalgam.errors import AmalgamError
from amalgam.plan import Plan
from amalgam.students import default_student_tap
from amalgam.teachers import FeatureTap


class FeatureAdapter(nn.Module):
    """1x1 conv from the student's tapped feature to a teacher's; squared distance after L2 normalisation.

    The student feature is resized to the teacher's spatial size, so taps at different strides work.
    """

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.proj = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        s = self.proj(student)
        if s.shape[-2:] != teacher.shape[-2:]:
            s = F.interpolate(s, size=teacher.shape[-2:], mode="bilinear", align_corners=False)
        # squared distance between unit feature vectors, summed over channels (in [0, 4]) and
        # averaged over positions: a per-element mean would shrink the term by the channel count
        diff = F.normalize(s, dim=1) - F.normalize(teacher.float(), dim=1)
        return diff.pow(2).sum(1).mean()


class Objective(nn.Module):
    """Computes the weighted sum of every teacher's term on one batch.

    Trainable parts (uncertainty log-variances, adapters) are parameters of this module, so they
    are optimised and checkpointed with the student.
    """

    def __init__(self, plan: Plan, student: nn.Module):
        super().__init__()
        amal = plan.recipe.amalgamation
        self.plan = plan
        self.temperature = amal.temperature
        self.feature_weight = amal.feature_weight
        names = list(plan.teachers)
        if amal.task_weights == "uncertainty":
            self.log_vars = nn.ParameterDict({n: nn.Parameter(torch.zeros(())) for n in names})
            self.fixed = None
        else:
            self.log_vars = None
            self.fixed = {
                n: amal.task_weights.get(n, amal.task_weights.get(plan.teachers[n].task.name, 1.0)) for n in names
            }
        self.adapters = nn.ModuleDict()
        self.student_tap: Optional[FeatureTap] = None
        if amal.features == "adapters":
            self._build_adapters(student, amal.taps, amal.student_tap or default_student_tap(student.spec))

    def _build_adapters(self, student: nn.Module, taps: dict[str, str], student_tap: str) -> None:
        self.student_tap = FeatureTap(student_tap)
        self.student_tap.attach(student, "amalgamation.student_tap")
        for name, module_name in taps.items():
            teacher = self.plan.teachers[name]
            teacher.tap = FeatureTap(module_name)
            teacher.tap.attach(teacher.model, f"amalgamation.taps.{name}")
        size = tuple(self.plan.recipe.data.image_size)
        dummy = torch.rand(2, 3, *size)
        was_training = student.training
        student.eval()
        with torch.no_grad():
            student(dummy)
        student.train(was_training)
        for name in taps:
            teacher = self.plan.teachers[name]
            teacher(dummy)
            self.adapters[name] = FeatureAdapter(self.student_tap.value.shape[1], teacher.tap.value.shape[1])

    def weight(self, name: str, loss: torch.Tensor) -> torch.Tensor:
        """Fixed weight, or Kendall et al.'s ``exp(-s) * L + s`` with a learned ``s`` per teacher."""
        if self.log_vars is None:
            return self.fixed[name] * loss
        s = self.log_vars[name]
        return torch.exp(-s) * loss + s

    def forward(
        self,
        student_out: dict[str, torch.Tensor],
        images: torch.Tensor,
        source: torch.Tensor,
        targets: Optional[Targets] = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and each term's unweighted value (``<teacher>`` and ``<teacher>/features``).

        ``targets`` supplies each teacher's output (e.g. from the teacher cache); by default the
        teachers run on ``images``.
        """
        targets = targets or live_targets(self.plan.teachers, images)
        total = images.new_zeros(())
        parts: dict[str, float] = {}
        for name, teacher in self.plan.teachers.items():
            ids = torch.tensor(self.plan.source_ids[name], device=source.device)
            idx = torch.isin(source, ids).nonzero().flatten()
            if idx.numel() == 0:
                continue  # masked: none of this batch's samples come from the teacher's sources
            target, feature = targets(name, idx)
            task = teacher.task
            loss = task.distill_loss(student_out[task.name][idx], target, self.plan.projections[name], self.temperature)
            _check_finite(loss, name, task.name)
            parts[name] = loss.item()
            total = total + self.weight(name, loss)
            if name in self.adapters:
                feat = self.adapters[name](self.student_tap.value[idx], feature)
                _check_finite(feat, f"{name}/features", task.name)
                parts[f"{name}/features"] = feat.item()
                total = total + self.feature_weight * feat
        return total, parts


def _check_finite(loss: torch.Tensor, term: str, task: str) -> None:
    if not torch.isfinite(loss):
        raise AmalgamError(f"loss of teacher term '{term}' ({task}) is {loss.item()}: training stopped")
