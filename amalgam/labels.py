"""Label spaces: their union across teachers and the partial-label projections between them.

A teacher knows a subset of the unified labels. Its optional ``background`` label stands for
everything it does not know, so it covers the unified background *and* every unified class
missing from the teacher (Vongkulbhisal et al., CVPR 2019, "Unifying heterogeneous classifiers").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

IGNORE = 255  # target value that metrics skip (dense label maps use it on disk too)


@dataclass(frozen=True)
class LabelSpace:
    """An ordered list of class names, one of which may be the catch-all background."""

    names: tuple[str, ...]
    background: Optional[str] = None

    def __post_init__(self) -> None:
        if len(set(self.names)) != len(self.names):
            dup = sorted({n for n in self.names if self.names.count(n) > 1})
            raise ValueError(f"duplicate label names: {dup}")
        if self.background is not None and self.background not in self.names:
            raise ValueError(f"background '{self.background}' is not one of the labels")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def background_index(self) -> Optional[int]:
        """Index of the background label, or None."""
        return None if self.background is None else self.names.index(self.background)

    def known(self) -> list[str]:
        """The named classes: every label but the background."""
        return [n for n in self.names if n != self.background]


def unify(spaces: Sequence[LabelSpace], background: Optional[str] = None) -> LabelSpace:
    """The union of several spaces' named classes, in order of first appearance.

    Args:
        spaces: the teachers' label spaces.
        background: if given, the unified space starts with this catch-all label.
    """
    names: list[str] = [background] if background else []
    for space in spaces:
        names += [n for n in space.known() if n not in names]
    return LabelSpace(tuple(names), background)


def projection(teacher: LabelSpace, unified: LabelSpace) -> torch.Tensor:
    """Boolean matrix ``[len(teacher), len(unified)]``: teacher label j covers unified label k.

    A named teacher label covers the unified label of the same name; the teacher's background
    covers the unified background plus every unified class the teacher does not know.
    """
    matrix = torch.zeros(len(teacher), len(unified), dtype=torch.bool)
    for name in teacher.known():
        matrix[teacher.names.index(name), unified.names.index(name)] = True
    if teacher.background is not None:
        known = set(teacher.known())
        for k, name in enumerate(unified.names):
            if name not in known:
                matrix[teacher.background_index, k] = True
    return matrix


def project_log_probs(
    logits: torch.Tensor, matrix: torch.Tensor, temperature: float = 1.0, after_projection: bool = False
) -> torch.Tensor:
    """Student log-probabilities restricted to a teacher's labels and renormalised.

    ``log q_j = logsumexp_{k in S_j}(z_k / T) - logsumexp_{k in union S}(z_k / T)``; with
    ``after_projection`` the temperature softens the projected distribution instead:
    ``log q = log_softmax(log q^{T=1} / T)``.

    The two agree at ``T = 1``. They differ for a label that covers several unified classes (a
    teacher's background): softening before the sum gives such a label ``T * log(n)`` extra logit
    instead of ``log(n)``, so a student fitted at ``T > 1`` scores that label lower at ``T = 1``
    (where predictions are made) than the teacher does.

    Args:
        logits: ``[B, U, ...]`` unified logits (class dimension 1).
        matrix: ``[L, U]`` boolean projection from :func:`projection`.
        temperature: softmax temperature.
        after_projection: soften the projected distribution rather than the unified logits.

    Returns:
        ``[B, L, ...]`` log-probabilities over the teacher's labels.
    """
    z = logits.float() / (1.0 if after_projection else temperature)
    mask = torch.where(matrix, 0.0, float("-inf")).to(z.device)  # [L, U]
    shape = (1, *mask.shape) + (1,) * (z.dim() - 2)
    grouped = torch.logsumexp(z.unsqueeze(1) + mask.view(shape), dim=2)  # [B, L, ...]
    if after_projection:
        grouped = grouped / temperature
    return grouped - torch.logsumexp(grouped, dim=1, keepdim=True)


def lookup(source_names: Sequence[str], target: LabelSpace) -> torch.Tensor:
    """Maps class indices of a labelled set into ``target`` (a LUT of length ``len(source_names)``).

    A name the target knows maps to its index; any other name maps to the target's background
    if it has one, else to :data:`IGNORE`.
    """
    fallback = target.background_index if target.background is not None else IGNORE
    known = set(target.known())
    return torch.tensor([target.names.index(n) if n in known else fallback for n in source_names], dtype=torch.long)


def apply_lookup(target: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Applies a :func:`lookup` table to class indices, keeping :data:`IGNORE` (and out-of-range) ignored."""
    valid = (target >= 0) & (target < len(lut))
    mapped = lut.to(target.device)[target.clamp(0, len(lut) - 1)]
    return torch.where(valid, mapped, torch.full_like(target, IGNORE))


def partial_label_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    matrix: torch.Tensor,
    temperature: float = 1.0,
    weights: Optional[torch.Tensor] = None,
    after_projection: bool = False,
) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || student restricted to the teacher's labels)``.

    The class dimension is 1; the KL is summed over classes and averaged over every other
    position (samples, and pixels for dense outputs), each position times ``weights`` if given.

    Args:
        student_logits: ``[B, U, ...]`` unified logits.
        teacher_logits: ``[B, L, ...]`` the teacher's logits over its own labels.
        matrix: ``[L, U]`` boolean projection from :func:`projection`.
        temperature: softening temperature T.
        weights: per-position weights, the shape of the outputs without the class dimension.
        after_projection: soften the student after restricting it (see :func:`project_log_probs`).
    """
    log_q = project_log_probs(student_logits, matrix, temperature, after_projection)
    log_p = torch.log_softmax(teacher_logits.float() / temperature, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1)
    if weights is not None:
        kl = kl * weights.to(kl.dtype)
    return kl.mean() * temperature**2
