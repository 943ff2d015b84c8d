"""Teacher targets of one batch: what each teacher says about (some rows of) the batch.

A :data:`Targets` callable answers ``(teacher name, row indices)`` with the teacher's output on
those rows and its tapped feature (or None). Three kinds exist: live (the teachers run on the
augmented batch, :func:`live_targets`), cached (:meth:`amalgam.distill.cache.TeacherCache.targets`)
and blended (:func:`with_live_rows`: cached rows, with mixup's blends answered live).
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch

from amalgam.data.views import BatchViews
from amalgam.teachers.inputs import answer_views
from amalgam.teachers.teacher import FeatureTap, Teacher

# (teacher name, row indices in the batch) -> (target, tapped feature or None)
Targets = Callable[[str, torch.Tensor], tuple[torch.Tensor, Optional[torch.Tensor]]]

# teacher name -> the tap whose feature its targets carry (made by the Objective, which uses them)
Taps = dict[str, FeatureTap]


def apply_flip(t: torch.Tensor, flip: Optional[torch.Tensor]) -> torch.Tensor:
    """Flips the rows of ``t`` (``[B, ..., W]``) where ``flip`` is true, along the last axis."""
    if flip is None:
        return t
    return torch.where(flip.view(-1, *([1] * (t.dim() - 1))), t.flip(-1), t)


def ask(
    teacher: Teacher, images: torch.Tensor, tap: Optional[FeatureTap]
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """A teacher's output on ``images`` and the feature ``tap`` read in that call (None without a tap)."""
    if tap is None:
        return teacher(images), None
    return teacher.answer(images, tap)


def ask_rows(
    teacher: Teacher, images: Union[torch.Tensor, BatchViews], idx: torch.Tensor, tap: Optional[FeatureTap]
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """:func:`ask` for rows ``idx`` of the augmented batch, or of its :class:`BatchViews` (the
    teacher on its own views of the originals; dense answers back on the student's grid)."""
    if isinstance(images, BatchViews):
        return answer_views(teacher, images, idx, images.student.shape[-2:], augmented=True, tap=tap)
    return ask(teacher, images[idx], tap)


def live_targets(
    teachers: dict[str, Teacher], images: Union[torch.Tensor, BatchViews], taps: Optional[Taps] = None
) -> Targets:
    """Targets from running each teacher on the (already augmented) batch, with ``taps``' features.

    ``images``: the batch's :class:`BatchViews` (each teacher sees its own view of the originals,
    flipped and blended as the student's images are), or a tensor every teacher is fed as it is.
    """
    taps = taps or {}

    def get(name: str, idx: torch.Tensor):
        return ask_rows(teachers[name], images, idx, taps.get(name))

    return get


def with_live_rows(
    targets: Targets,
    teachers: dict[str, Teacher],
    images: Union[torch.Tensor, BatchViews],
    live: torch.Tensor,
    taps: Optional[Taps] = None,
) -> Targets:
    """``targets`` for the other rows; rows where ``live`` is true are answered by the teacher on
    ``images`` (the augmented batch or its views, as in :func:`live_targets`).

    Live rows are never asked of ``targets``: a blend's raw image need not be cached, and a cache
    lookup for it would run the teacher twice and count as a hit.
    """
    taps = taps or {}

    def get(name: str, idx: torch.Tensor):
        rows = live[idx]
        if not bool(rows.any()):
            return targets(name, idx)
        fresh, fresh_feat = ask_rows(teachers[name], images, idx[rows], taps.get(name))
        if bool(rows.all()):
            return fresh, fresh_feat
        kept, kept_feat = targets(name, idx[~rows])
        return _merge(rows, kept, fresh), (None if kept_feat is None else _merge(rows, kept_feat, fresh_feat))

    return get


def _merge(rows: torch.Tensor, kept: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """One batch from ``kept`` (rows where ``rows`` is false) and ``fresh`` (where it is true)."""
    out = kept.new_empty((rows.shape[0], *kept.shape[1:]))
    out[~rows] = kept
    out[rows] = fresh.to(out.dtype)
    return out
