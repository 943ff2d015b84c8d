"""Which training sources the horizontal flip (``train.augment``) may mirror.

The flip teaches the student that a mirrored image means what the original does: the teacher cache
stores answers to the originals and mirrors them (``Task.mirror``). Digits, text and classes named
left and right change meaning under a mirror; a student flipped on them learns a mirrored 3 as a 3
and a right arm as a left one, without a word. Before training each teacher of exclusive labels
(classification, segmentation) answers some images of its sources plain and mirrored; a label whose
answers mostly change is named, and its sources train unflipped (``data.sources.<s>.flip`` decides
instead when set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import torch

from amalgam.data.image_set import ImageSet, spread
from amalgam.data.views import BatchViews, collate
from amalgam.teachers.inputs import answer_views
from amalgam.teachers.teacher import Teacher

if TYPE_CHECKING:  # annotations only: the plan runs this check
    from amalgam.distill.plan import Plan

#: images of each source a teacher answers plain and mirrored, twice each: per image for a classifier
#: (a ResNet-50 at 224 px takes about 47 s for 160 on one CPU thread), per pixel for a dense task
MIRROR_CHECK_IMAGES = {False: 160, True: 16}
#: a label whose answers move mostly to one other label under a mirror changes meaning there: a competent
#: fashion classifier keeps every label on 98-100% of images, a segmenter each label on 76-98% of its
#: pixels; a left label read as right on a mirror keeps it on few, and a mirrored 2 read as 3
MIRROR_KEPT = 0.5
#: answers a label needs (images; pixels for a dense task) to be judged: a 100-class classifier that
#: keeps 95% of its answers kept one of three images of a rare label
MIRROR_MIN_ANSWERS = {False: 8, True: 256}
#: images answered per teacher call
CHUNK = 16


@dataclass
class MirrorFinding:
    """A teacher's labels whose answers move to another label under a mirror, on one source.

    Attributes:
        teacher: its name.
        source: the source's key.
        changed: ``(label, kept share, label answered instead, its share)`` per such label.
        judged: the labels judged (with :data:`MIRROR_MIN_ANSWERS` answers).
        images: the images answered.
    """

    teacher: str
    source: str
    changed: list[tuple[str, float, str, float]]
    judged: int
    images: int

    def line(self) -> str:
        """The finding in one line, with the labels that change (the first five)."""
        named = ", ".join(f"{a} kept on {k:.0%} (as {b} on {s:.0%})" for a, k, b, s in self.changed[:5])
        more = f" and {len(self.changed) - 5} more" if len(self.changed) > 5 else ""
        return (
            f"teacher '{self.teacher}' names mirrored images of source '{self.source}' otherwise: {named}{more}"
            f" ({len(self.changed)} of {self.judged} labels judged, {self.images} images)"
        )


def mirror_confusion(teacher: Teacher, dataset: ImageSet, student_view, count: int) -> torch.Tensor:
    """``[C, C]`` counts: rows the teacher's answer on the plain image, mirrored (``Task.mirror``, what
    the flip trains on); columns its answer on the mirrored image."""
    task, classes = teacher.task, len(teacher.space.names)
    counts = torch.zeros(classes * classes, dtype=torch.long)
    picks = spread(len(dataset), count)
    for start in range(0, len(picks), CHUNK):
        batch = collate([dataset[i] for i in picks[start : start + CHUNK]])
        images = batch["image"]
        rows = torch.arange(images.shape[0])
        views = BatchViews(images, student_view, batch.get("original"), torch.ones(len(rows), dtype=torch.bool))
        size = tuple(images.shape[-2:]) if task.dense else None
        with torch.no_grad():
            plain, _ = answer_views(teacher, views, rows, size, augmented=False, wrapped=False)
            mirrored, _ = answer_views(teacher, views, rows, size, augmented=True, wrapped=False)
        kept = task.predict(task.mirror(plain), size).flatten()
        seen = task.predict(mirrored, size).flatten()
        counts += torch.bincount(kept * classes + seen, minlength=classes * classes)
    return counts.reshape(classes, classes)


def changed_labels(counts: torch.Tensor, names: list[str], dense: bool) -> tuple[list, int]:
    """The labels whose answers move to one other label under a mirror, and how many were judged.

    A dense task's answers moving to its most answered label (the background) are not counted: a thin
    class on a strided output grid loses a pixel at its edges under a mirror, a localisation, not a
    meaning (a pole at 1/4 resolution kept 46%)."""
    common = int(counts.sum(1).argmax()) if dense else -1
    changed, judged = [], 0
    for label, row in enumerate(counts):
        total = int(row.sum())
        if total < MIRROR_MIN_ANSWERS[dense] or label == common:
            continue
        judged += 1
        others = [j for j in range(len(row)) if j not in (label, common)]
        if not others:
            continue
        instead = max(others, key=lambda j: int(row[j]))
        kept, moved = float(row[label]) / total, float(row[instead]) / total
        if kept < MIRROR_KEPT and moved >= MIRROR_KEPT:  # systematic: most of the label's answers become one other
            changed.append((names[label], kept, names[instead], moved))
    return changed, judged


def mirror_finding(teacher: Teacher, source: str, dataset: ImageSet, student_view) -> Optional[MirrorFinding]:
    """The labels of ``teacher`` that change under a mirror on ``dataset``, or None when none does."""
    dense = teacher.task.dense
    count = min(len(dataset), MIRROR_CHECK_IMAGES[dense])
    counts = mirror_confusion(teacher, dataset, student_view, count)
    changed, judged = changed_labels(counts, list(teacher.space.names), dense)
    return MirrorFinding(teacher.name, source, changed, judged, count) if changed else None


def checked(teacher: Teacher) -> bool:
    """Whether the check reads this teacher: exclusive labels (an argmax to compare)."""
    return teacher.task.labelled and teacher.task.exclusive_labels and teacher.space is not None


def mirror_findings(plan: Plan) -> dict[str, list[MirrorFinding]]:
    """Per training source the flip would mirror (``train.augment`` on, ``flip: auto``), the findings of
    the teachers on it; no side effects."""
    recipe = plan.recipe
    found: dict[str, list[MirrorFinding]] = {}
    if not recipe.train.augment:
        return found
    for sid, source in enumerate(plan.sources.names):
        if recipe.data.sources[source].flip != "auto":
            continue
        for name, teacher in plan.teachers.items():
            if sid in plan.source_ids.get(name, []) and checked(teacher):
                finding = mirror_finding(teacher, source, plan.sources.sets[sid], plan.student_view)
                found.setdefault(source, []).extend([finding] if finding else [])
    return found


def unflipped_sources(plan: Plan, log: Callable[[str], None] = print) -> dict[str, str]:
    """The training sources the flip leaves alone, each with why (``flip: false``, or the findings of
    :func:`mirror_findings`), each said in the log."""
    if not plan.recipe.train.augment:
        return {}
    unflipped = {s: f"data.sources.{s}.flip: false" for s, c in plan.recipe.data.sources.items() if c.flip is False}
    for source, findings in mirror_findings(plan).items():
        if findings:
            unflipped[source] = "; ".join(f.line() for f in findings)
    say_unflipped(unflipped, log)
    return unflipped


def say_unflipped(unflipped: dict[str, str], log: Callable[[str], None]) -> None:
    """One log line per source the flip leaves alone, with why and the key that decides instead."""
    for source, why in unflipped.items():
        if why.startswith("data.sources."):
            log(f"train.augment: source '{source}' is not flipped ({why})")
        else:
            log(
                f"train.augment: source '{source}' is not flipped: {why}; a mirror changes what such labels mean"
                f" (digits, text, left/right classes): data.sources.{source}.flip: true flips it all the same"
            )
