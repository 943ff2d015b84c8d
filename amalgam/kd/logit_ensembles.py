"""Ensembles of logits: K teachers' logits over the same labels -> one soft target per sample.

Every ensemble is an ``nn.Module`` called as ``ensemble(teacher_logits, temperature, features=...,
labels=...)`` with ``teacher_logits`` ``[K, B, C]``; it returns ``(target, weights)``: the target
probabilities ``[B, C]`` at that temperature and the per-sample teacher weights ``[B, K]`` (rows sum
to one). Pair it with :func:`kd_loss`::

    ens = LOGIT_ENSEMBLES.get("entropy")(num_teachers=3)
    target, w = ens(torch.stack([t(x) for t in teachers]), temperature=4.0)
    loss = F.cross_entropy(student(x), y) + kd_loss(student_logits, target, 4.0)
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from amalgam.errors import AmalgamError
from amalgam.registry import Registry


def kd_loss(student_logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.: ``T^2 * KL(target || softmax(student / T))``, summed over classes, batch mean."""
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    kl = (target * (target.clamp_min(1e-12).log() - log_q)).sum(1)
    return kl.mean() * temperature**2


class LogitEnsemble(nn.Module):
    """Base: per-sample weights from :meth:`weights`, target = sum_k w_k softmax(z_k / T).

    Class attributes say what a loop must give: ``needs_features`` (the student's features, and an
    ``in_features`` constructor argument: their width) and ``needs_labels`` (ground truth, which
    amalgamation never has).
    """

    needs_features: bool = False
    needs_labels: bool = False

    def __init__(self, num_teachers: int):
        super().__init__()
        self.num_teachers = num_teachers

    def weights(
        self, logits: torch.Tensor, features: Optional[torch.Tensor], labels: Optional[torch.Tensor]
    ) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        teacher_logits: torch.Tensor,
        temperature: float = 1.0,
        features: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = teacher_logits.detach().float()  # teachers are never trained through the target
        if logits.dim() != 3 or logits.shape[0] != self.num_teachers:
            raise AmalgamError(f"expected teacher logits [K={self.num_teachers}, B, C], got {list(logits.shape)}")
        w = self.weights(logits, features, labels)
        probs = F.softmax(logits / temperature, dim=2)  # [K, B, C]
        return torch.einsum("bk,kbc->bc", w, probs), w


LOGIT_ENSEMBLES: Registry[type[LogitEnsemble]] = Registry("logit ensemble")


@LOGIT_ENSEMBLES.register("mean")
class MeanEnsemble(LogitEnsemble):
    """Equal weights (the plain average of the softened teachers)."""

    def weights(self, logits, features, labels):
        return logits.new_full((logits.shape[1], self.num_teachers), 1.0 / self.num_teachers)


@LOGIT_ENSEMBLES.register("fixed")
class FixedEnsemble(LogitEnsemble):
    """Fixed per-teacher weights, normalised to sum to one."""

    def __init__(self, num_teachers: int, weights: Sequence[float]):
        super().__init__(num_teachers)
        if len(weights) != num_teachers or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise AmalgamError(f"weights: expected {num_teachers} non-negative values, got {list(weights)}")
        self.register_buffer("w", torch.tensor(weights, dtype=torch.float32) / sum(weights))

    def weights(self, logits, features, labels):
        return self.w.to(logits.device).expand(logits.shape[1], -1)


@LOGIT_ENSEMBLES.register("gate")
class LearnedGate(LogitEnsemble):
    """A gating network on the student's features gives per-sample weights ``softmax(g(f))``.

    ``features`` are the student's ``[B, D]`` (or ``[B, D, H, W]``, average-pooled) features; the gate
    is trained by the distillation loss together with the student.
    """

    needs_features = True

    def __init__(self, num_teachers: int, in_features: int, hidden: int = 0):
        super().__init__(num_teachers)
        if hidden:
            self.gate = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_teachers))
        else:
            self.gate = nn.Linear(in_features, num_teachers)

    def weights(self, logits, features, labels):
        if features is None:
            raise AmalgamError("gate: needs the student's features")
        if features.dim() == 4:
            features = features.mean((2, 3))
        return F.softmax(self.gate(features.float()), dim=1)


@LOGIT_ENSEMBLES.register("entropy")
class EntropyEnsemble(LogitEnsemble):
    """Lower-entropy teachers count more: ``w = softmax_k(-H(softmax(z_k)))`` per sample."""

    def weights(self, logits, features, labels):
        p = F.softmax(logits, dim=2)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(2)  # [K, B]
        return F.softmax(-entropy, dim=0).t()


@LOGIT_ENSEMBLES.register("confidence")
class ConfidenceEnsemble(LogitEnsemble):
    """CA-MKD (Zhang et al., ICASSP 2022): ``w_k = (1 - softmax_k(CE_k)) / (K - 1)`` with ``CE_k``
    each teacher's cross-entropy against the label; needs labels (and K >= 2)."""

    needs_labels = True

    def weights(self, logits, features, labels):
        if labels is None:
            raise AmalgamError("confidence: needs labels (CA-MKD weighs teachers by their loss on the label)")
        if self.num_teachers < 2:
            raise AmalgamError("confidence: needs at least two teachers")
        ce = torch.stack([F.cross_entropy(z, labels, reduction="none") for z in logits])  # [K, B]
        return ((1 - F.softmax(ce, dim=0)) / (self.num_teachers - 1)).t()
