"""Ensembles of features: the student's tapped feature map against several teachers' maps.

Features come from forward hooks on named modules (:class:`amalgam.teachers.FeatureTap`), so
any layer of any teacher or student can be used. Both losses are ``nn.Module`` s whose trainable
parts (adaptors, learned alphas) are optimised with the student and dropped after training::

    feed = FEEDLoss(student_channels=128, teacher_channels=[256, 512])
    loss = F.cross_entropy(logits, y) + feed(student_map, [t1_map, t2_map])
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from amalgam.errors import AmalgamError
from amalgam.precision import full_precision


def _unit(t: torch.Tensor) -> torch.Tensor:
    """Each sample's whole map divided by its L2 norm."""
    return t / t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


class FEEDLoss(nn.Module):
    """FEED (Park & Kwak): one non-linear adaptor per teacher from the student's map,
    ``sum_i || TF_i(f_s) / ||TF_i(f_s)||_2 - f_ti / ||f_ti||_2 ||_1`` (per sample, batch mean).

    Adaptors are conv1x1-BN-ReLU-conv1x1 to each teacher's channels; their output is resized
    (bilinear) to the teacher map's spatial size, so any stride or width pairs up.

    Its scale grows with the teachers' maps (an L1 distance of unit vectors of ``C*H*W`` values,
    up to ``2 * sqrt(C*H*W)`` each): weigh it against the other terms of a loop (a trial's started
    at 93 beside a KD term of 13).
    """

    def __init__(self, student_channels: int, teacher_channels: Sequence[int], hidden: Optional[int] = None):
        super().__init__()
        self.student_channels, self.teacher_channels = student_channels, list(teacher_channels)
        self.adaptors = nn.ModuleList()
        for c in teacher_channels:
            mid = hidden or c
            self.adaptors.append(
                nn.Sequential(
                    nn.Conv2d(student_channels, mid, 1, bias=False),
                    nn.BatchNorm2d(mid),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(mid, c, 1),
                )
            )

    def forward(self, student: torch.Tensor, teachers: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(teachers) != len(self.adaptors):
            raise AmalgamError(f"FEED: {len(self.adaptors)} adaptors but {len(teachers)} teacher maps")
        if student.dim() != 4:
            raise AmalgamError(
                f"FEED: the student's map must be [B, C, H, W] (its adaptors are 1x1 convs), got {list(student.shape)}"
            )
        if student.shape[1] != self.student_channels:
            raise AmalgamError(
                f"FEED: the student's map has {student.shape[1]} channels, its adaptors take {self.student_channels}"
            )
        total = student.new_zeros((), dtype=torch.float32)
        for i, (adaptor, t) in enumerate(zip(self.adaptors, teachers)):
            if t.dim() != 4 or t.shape[0] != student.shape[0]:
                raise AmalgamError(
                    f"FEED: teacher {i} map must be [B={student.shape[0]}, C, H, W] as the student's,"
                    f" got {list(t.shape)}"
                )
            if t.shape[1] != self.teacher_channels[i]:  # maps given in another order than teacher_channels
                raise AmalgamError(
                    f"FEED: teacher {i} map has {t.shape[1]} channels, its adaptor gives {self.teacher_channels[i]}:"
                    " give the teachers' maps in the order of teacher_channels"
                )
            weight = next(adaptor.parameters(), None)  # None: an identity where the channels match
            # outside autocast a bf16/fp16 map meets fp32 adaptors (a raw dtype error): the adaptor's dtype, as the gate
            cast = weight is not None and not torch.is_autocast_enabled(student.device.type)
            own = student.to(weight.dtype) if cast else student
            s = adaptor(own)
            if s.shape[-2:] != t.shape[-2:]:
                s = F.interpolate(s, size=t.shape[-2:], mode="bilinear", align_corners=False)
            total = total + (_unit(s.float()) - _unit(t.detach().float())).abs().flatten(1).sum(1).mean()
        return total


def similarity(features: torch.Tensor) -> torch.Tensor:
    """Tung & Mori's batch similarity: ``G = Q Q^T`` of the flattened maps, rows L2-normalised."""
    q = features.flatten(1).float()
    with full_precision(q.device):  # autocast would multiply in half precision (fp16: sums past 65504)
        return F.normalize(q @ q.t(), dim=1)


class SimilarityLoss(nn.Module):
    """Similarity-preserving KD with several teachers: ``sum_i alpha_i ||G_s - G_ti||_F^2 / b^2``.

    ``alpha`` is fixed (``alphas``, normalised) or learned (``learn=True``: softmax of a parameter
    that starts at ``log`` of the normalised ``alphas``, equal weights without them); either way the
    alphas sum to one. Learned alphas minimise the same loss they weigh, so they drift towards the
    teacher the student already matches best: learn them only with that in mind. A learned alpha
    cannot start at 0 (its logit would be -inf): refused.
    Channel and spatial sizes may differ: only the ``b x b`` similarity matrices are compared.
    """

    def __init__(self, num_teachers: int, alphas: Optional[Sequence[float]] = None, learn: bool = False):
        super().__init__()
        bad = alphas is not None and not all(math.isfinite(a) for a in alphas)  # NaN passes every comparison
        if alphas is not None and (bad or len(alphas) != num_teachers or sum(alphas) <= 0 or min(alphas) < 0):
            raise AmalgamError(f"alphas: expected {num_teachers} non-negative values, got {list(alphas)}")
        if learn and alphas is not None and min(alphas) == 0:
            raise AmalgamError(f"alphas: learned alphas start at log(alpha): expected positives, got {list(alphas)}")
        self.num_teachers = num_teachers
        fixed = torch.tensor(alphas if alphas is not None else [1.0] * num_teachers, dtype=torch.float32)
        self.register_buffer("fixed", fixed / fixed.sum())
        # softmax(log(a)) == a for normalised a: the given alphas are where learning starts
        self.logits = nn.Parameter(self.fixed.log().clone()) if learn else None

    def alphas(self) -> torch.Tensor:
        """Current teacher weights (sum to one)."""
        return F.softmax(self.logits, 0) if self.logits is not None else self.fixed

    def forward(self, student: torch.Tensor, teachers: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(teachers) != self.num_teachers:
            raise AmalgamError(f"similarity: {self.num_teachers} teachers expected, got {len(teachers)} maps")
        b = student.shape[0]
        if b < 2:  # no pair to compare (a batch's one row of a teacher's sources): 0, its graph kept for the step
            return 0.0 * student.float().sum()
        for i, t in enumerate(teachers):  # a batch of another size compared other images' similarities
            if t.shape[0] != b:
                raise AmalgamError(f"similarity: teacher {i} map has batch {t.shape[0]}, the student's {b}")
        g_s = similarity(student)
        terms = torch.stack([(g_s - similarity(t.detach())).pow(2).sum() / b**2 for t in teachers])
        return (self.alphas().to(terms.device) * terms).sum()
