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

#: images of each source a teacher answers plain and mirrored, twice each (per image for a classifier,
#: per pixel for a dense task: fewer images hold enough); a classifier gets :data:`MIRROR_PER_LABEL` a
#: label within these bounds (a ResNet-50 at 224 px takes about 47 s for 160 images on one CPU thread)
MIRROR_CHECK_IMAGES = {False: (48, 160), True: (16, 16)}
#: images a classifier is asked per label of its (a label needs :data:`MIRROR_MIN_ANSWERS` to be judged)
MIRROR_PER_LABEL = 6
#: a label whose answers keep it under a mirror less often than this changes meaning there: a
#: competent fashion classifier keeps every label on 98-100% of images, a segmenter each label on
#: 76-98% of its pixels; a left label read as right on a mirror keeps it on few
MIRROR_KEPT = 0.5
#: answers a label needs (images; pixels for a dense task) to be judged
MIRROR_MIN_ANSWERS = {False: 3, True: 64}
#: images answered per teacher call
CHUNK = 16


@dataclass
class MirrorFinding:
    """A teacher's labels that change under a mirror on one source.

    Attributes:
        teacher: its name.
        source: the source's key.
        changed: ``(label, kept share, label most answered instead, its share)`` per label kept
            under :data:`MIRROR_KEPT` on the mirror.
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


def mirror_finding(teacher: Teacher, source: str, dataset: ImageSet, student_view) -> Optional[MirrorFinding]:
    """The labels of ``teacher`` that change under a mirror on ``dataset``, or None when none does."""
    dense = teacher.task.dense
    least, most = MIRROR_CHECK_IMAGES[dense]
    count = min(len(dataset), most, max(least, MIRROR_PER_LABEL * len(teacher.space.names)))
    counts = mirror_confusion(teacher, dataset, student_view, count)
    names = list(teacher.space.names)
    changed, judged = [], 0
    for label, row in enumerate(counts):
        total = int(row.sum())
        if total < MIRROR_MIN_ANSWERS[dense]:
            continue
        judged += 1
        kept = float(row[label]) / total
        if kept < MIRROR_KEPT:
            others = row.clone()
            others[label] = -1
            instead = int(others.argmax())
            changed.append((names[label], kept, names[instead], float(row[instead]) / total))
    return MirrorFinding(teacher.name, source, changed, judged, count) if changed else None


def checked(teacher: Teacher) -> bool:
    """Whether the check reads this teacher: exclusive labels (an argmax to compare), its own answers
    (a sub-teacher wrap varies)."""
    return teacher.task.labelled and teacher.task.exclusive_labels and teacher.space is not None


def unflipped_sources(plan: Plan, log: Callable[[str], None] = print) -> dict[str, str]:
    """The training sources the flip leaves alone, each with why: ``flip: false`` in the recipe, or a
    teacher on it whose labels change under a mirror (``flip: auto``, the default). Said in the log."""
    recipe = plan.recipe
    if not recipe.train.augment:
        return {}
    unflipped: dict[str, str] = {}
    for sid, source in enumerate(plan.sources.names):
        setting = recipe.data.sources[source].flip
        if setting is False:
            unflipped[source] = f"data.sources.{source}.flip: false"
            log(f"train.augment: source '{source}' is not flipped ({unflipped[source]})")
        if setting != "auto":
            continue
        for name, teacher in plan.teachers.items():
            if sid not in plan.source_ids.get(name, []) or not checked(teacher):
                continue
            finding = mirror_finding(teacher, source, plan.sources.sets[sid], plan.student_view)
            if finding is not None:
                teacher.notes.append(f"labels that change under a mirror: source '{source}' trained unflipped")
                if source not in unflipped:
                    unflipped[source] = finding.line()
                    log(
                        f"train.augment: source '{source}' is not flipped: {finding.line()}; a mirror changes what"
                        f" such labels mean (digits, text, left/right classes): data.sources.{source}.flip: true"
                        " flips it all the same"
                    )
    return unflipped
