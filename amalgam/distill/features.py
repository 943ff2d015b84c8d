"""Feature terms (``amalgamation.features``): the student's tapped feature against one teacher's.

A term is an ``nn.Module`` class registered in :data:`FEATURE_TERMS`, built as
``term(student_channels, teacher_channels)`` and called as ``term(student_feature,
teacher_feature) -> scalar loss``. Registering a class is all a new term needs: the recipe key
takes any registered name (or ``none``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amalgam.kd import FEEDLoss, SimilarityLoss
from amalgam.registry import Registry

#: ``amalgamation.features`` values: class(student channels, teacher channels) -> module(student, teacher)
FEATURE_TERMS: Registry[type[nn.Module]] = Registry("feature term")


class FeatureAdapter(nn.Module):
    """1x1 conv from the student's tapped feature to a teacher's; squared distance after L2 normalisation.

    The student feature is resized to the teacher's spatial size, so taps at different strides work.
    """

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.proj = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        s = self.proj(student).float()  # normalised in fp32 (CPU autocast would keep bf16)
        if s.shape[-2:] != teacher.shape[-2:]:
            s = F.interpolate(s, size=teacher.shape[-2:], mode="bilinear", align_corners=False)
        # squared distance between unit feature vectors, summed over channels (in [0, 4]) and
        # averaged over positions: a per-element mean would shrink the term by the channel count
        diff = F.normalize(s, dim=1) - F.normalize(teacher.detach().float(), dim=1)
        return diff.pow(2).sum(1).mean()


class FEEDTerm(nn.Module):
    """FEED (Park & Kwak) for one teacher: non-linear adaptor, L1 between unit maps."""

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.loss = FEEDLoss(student_channels, [teacher_channels])

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.loss(student, [teacher])


class SimilarityTerm(nn.Module):
    """Similarity-preserving loss (Tung & Mori) for one teacher: batch similarity matrices."""

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.loss = SimilarityLoss(1)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.loss(student, [teacher])


FEATURE_TERMS.add("adapters", FeatureAdapter)
FEATURE_TERMS.add("feed", FEEDTerm)
FEATURE_TERMS.add("similarity", SimilarityTerm)
