"""Teacher targets of one batch: what each teacher says about (some rows of) the batch.

A :data:`Targets` callable answers ``(teacher name, row indices)`` with the teacher's output on
those rows and its tapped feature (or None). Three kinds exist: live (the teachers run on the
augmented batch, :func:`live_targets`), cached (:meth:`amalgam.distill.cache.TeacherCache.targets`)
and blended (:func:`with_live_rows`: cached rows, with mixup's blends answered live).
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Union

import torch

from amalgam.data.views import BatchViews
from amalgam.errors import AmalgamError
from amalgam.task import Task
from amalgam.teachers.inputs import answer_views
from amalgam.teachers.taps import FeatureTap
from amalgam.teachers.teacher import Teacher

# (teacher name, row indices in the batch) -> (target, tapped feature or None)
Targets = Callable[[str, torch.Tensor], tuple[torch.Tensor, Optional[torch.Tensor]]]

# teacher name -> the tap whose feature its targets carry (made by the Objective, which uses them)
Taps = dict[str, FeatureTap]


def apply_flip(t: torch.Tensor, flip: Optional[torch.Tensor]) -> torch.Tensor:
    """Flips the rows of ``t`` (``[B, ..., W]``) where ``flip`` is true, along the last axis."""
    if flip is None:
        return t
    return torch.where(flip.view(-1, *([1] * (t.dim() - 1))), t.flip(-1), t)


def mirror_rows(task: Task, out: torch.Tensor, flip: Optional[torch.Tensor]) -> torch.Tensor:
    """A teacher's canonical output ``out`` with the rows where ``flip`` is true replaced by
    ``task.mirror`` of them: what the teacher would answer on the mirrored images. A spatial flip
    alone is wrong for values that change under a mirror (a normal's x, left/right labels)."""
    if flip is None or not bool(flip.any()):
        return out
    mirrored = task.mirror(out)
    return torch.where(flip.to(out.device).view(-1, *([1] * (out.dim() - 1))), mirrored.to(out.dtype), out)


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


#: share of a teacher's rows in an epoch with NaN/inf targets above which training stops: it teaches
#: too little to go on without a word, and its term would read as a diverging student's
NONFINITE_STOP = 0.5
#: rows of a teacher seen in an epoch before its share stops training, mid-epoch or at its end: on
#: fewer, a teacher failing on a few images (a rarely drawn source) is most of them by chance
NONFINITE_MIN_ROWS = 64
#: rows of a teacher that, ALL NaN/inf in an epoch, stop training however few: no chance makes every
#: image of a teacher fail
NONFINITE_ALL_ROWS = 4


def nonfinite_rows(task: Task, targets: list[torch.Tensor]) -> Optional[torch.Tensor]:
    """``[teachers, rows]`` bool: the rows of each target (the teachers of one term, on the same
    rows) that hold the teacher's own NaN/inf (``Task.nonfinite_rows``); None when none does.

    A cheap whole-target test (``Task.nonfinite_any``) comes first: its one host sync replaces the
    ``nonzero`` a healthy step would take; the per-row test runs only when it fires.
    """
    if not bool(torch.stack([task.nonfinite_any(t) for t in targets]).any()):
        return None
    return torch.stack([task.nonfinite_rows(t) for t in targets])


class NonFiniteRows:
    """Counts, per teacher and epoch, the training rows whose targets hold its own NaN/inf
    (:func:`nonfinite_rows`), which :meth:`keep` leaves out of its term.

    A healthy step costs one whole-target reduction and one host sync per term; counts stay on the
    device until :meth:`epoch_lines` reads them (no sync per teacher per step).

    Under torchrun each process counts its own rows: :meth:`epoch_lines` sums them over the
    processes (its ``total``), so that every one takes the same decision, and ``stop_mid_epoch``
    is off there (a stop decided by one process alone would leave the others waiting on it).
    """

    def __init__(self, stop_mid_epoch: bool = True) -> None:
        self.stop_mid_epoch = stop_mid_epoch
        self.bad: dict[str, torch.Tensor] = {}  # teacher -> rows with NaN/inf targets (device count)
        self.rows: dict[str, int] = {}  # teacher -> rows asked of it
        self.dropped: dict[str, int] = {}  # term -> rows left out (host: known from the nonzero)
        self.term_rows: dict[str, int] = {}  # term -> rows asked of it

    def keep(self, term: str, names: list[str], targets: list[torch.Tensor], task: Task) -> Optional[torch.Tensor]:
        """Positions of the rows whose targets (one per teacher of ``term``) are all finite, or None
        when every row is; counts the others per teacher.

        Raises:
            AmalgamError: when most of the term's rows this epoch (once ``NONFINITE_MIN_ROWS`` are
                seen) were NaN/inf, naming the teachers.
        """
        n = targets[0].shape[0]
        for name in names:
            self.rows[name] = self.rows.get(name, 0) + n
        self.term_rows[term] = self.term_rows.get(term, 0) + n
        bad = nonfinite_rows(task, targets)
        if bad is None:
            return None
        for name, rows in zip(names, bad):
            self.bad[name] = self.bad.get(name, 0) + rows.sum()
        kept = (~bad.any(0)).nonzero().flatten()
        self.dropped[term] = self.dropped.get(term, 0) + n - kept.numel()
        stop = self.term_rows[term] >= NONFINITE_MIN_ROWS and self.dropped[term] > NONFINITE_STOP * self.term_rows[term]
        if stop and self.stop_mid_epoch:
            raise AmalgamError(self._stop_line(names))
        return None if kept.numel() == n else kept

    def epoch_lines(
        self, total: Callable[[list[int]], list[int]] = list, names: Optional[Iterable[str]] = None
    ) -> list[str]:
        """One line per teacher that answered NaN/inf this epoch, then resets the counts.

        Args:
            total: the sum of each count over the processes of a torchrun job (``DistContext.total``);
                a single process's own counts by default.
            names: every teacher, in one order on every process (a process may have drawn no row of
                some); by default the teachers counted here.

        Raises:
            AmalgamError: when a teacher did on most of its rows (``NONFINITE_STOP``), of at least
                ``NONFINITE_MIN_ROWS``, or on all of at least ``NONFINITE_ALL_ROWS`` (otherwise its line
                says so and training goes on).
        """
        order = list(names) if names is not None else list(self.rows)
        own = [int(self.bad.get(n, 0)) for n in order] + [self.rows.get(n, 0) for n in order]  # one device read
        summed = total(own)
        counts = {n: c for n, c in zip(order, summed[: len(order)])}
        self.rows = {n: r for n, r in zip(order, summed[len(order) :]) if r}
        counts = {n: c for n, c in counts.items() if n in self.rows}
        try:
            most = {n for n, c in counts.items() if c > NONFINITE_STOP * self.rows[n]}
            worst = [n for n in most if self.rows[n] >= NONFINITE_MIN_ROWS or _all_of(counts[n], self.rows[n])]
            if worst:
                raise AmalgamError(self._stop_line(worst, counts))
            return [
                f"warning: teacher {name} answered NaN/inf on {c} of {self.rows[name]} training rows this epoch:"
                " left out of its term (a teacher failing on some images; they teach nothing)"
                + (f"; most of its rows, but too few to stop on (< {NONFINITE_MIN_ROWS})" if name in most else "")
                for name, c in counts.items()
                if c
            ]
        finally:
            self.bad, self.rows, self.dropped, self.term_rows = {}, {}, {}, {}

    def _stop_line(self, names: list[str], counts: Optional[dict[str, int]] = None) -> str:
        counts = counts or {n: int(self.bad[n]) for n in names}
        said = ", ".join(f"{n} on {counts[n]} of {self.rows[n]} rows" for n in names if counts.get(n))
        return (
            f"teacher targets are NaN/inf on most rows ({said}): the teacher, not the student, fails"
            " (a diverged checkpoint, -inf masking, an fp16 overflow?): fix or drop the teacher"
        )


def _all_of(bad: int, rows: int) -> bool:
    """Every one of at least :data:`NONFINITE_ALL_ROWS` rows is NaN/inf."""
    return rows >= NONFINITE_ALL_ROWS and bad == rows


def take_rows(
    outputs: list[tuple[torch.Tensor, Optional[torch.Tensor]]], kept: torch.Tensor
) -> list[tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """Rows ``kept`` of each teacher's ``(target, feature or None)``."""
    return [(out[kept], None if feat is None else feat[kept]) for out, feat in outputs]
