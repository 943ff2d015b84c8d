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
from amalgam.errors import RecipeError
from amalgam.task import Task
from amalgam.teachers.inputs import answer_views
from amalgam.teachers.teacher import Teacher

if TYPE_CHECKING:  # annotations only: the plan runs this check
    from amalgam.distill.plan import Plan

#: images of each source a teacher answers plain and mirrored, twice each: a classifier
#: :data:`MIRROR_MIN_ANSWERS` a label within these bounds (a ResNet-50 at 224 px takes about 47 s for 160 on
#: one CPU thread), a dense task these (judged per pixel)
MIRROR_CHECK_IMAGES = {False: (160, 400), True: (16, 16)}
#: a label whose answers move mostly to one other label under a mirror changes meaning there: a competent
#: fashion classifier keeps every label on 98-100% of images, a segmenter each label on 76-98% of its
#: pixels; a left label read as right on a mirror keeps it on few, and a mirrored 2 read as 3
MIRROR_KEPT = 0.5
#: answers a label needs (images; pixels for a dense task, its background's aside) to be judged: a
#: 100-class classifier that keeps 95% of its answers kept one of three images of a rare label
MIRROR_MIN_ANSWERS = {False: 8, True: 256}
#: images answered per teacher call
CHUNK = 16


@dataclass
class MirrorFinding:
    """What the mirror check found of one teacher on one source.

    Attributes:
        teacher: its name.
        source: the source's key.
        changed: ``(label, kept share, label answered instead, its share)`` per label whose answers
            mostly become one other label on the mirror.
        judged: the labels judged (with :data:`MIRROR_MIN_ANSWERS` answers).
        labels: the teacher's labels.
        images: the images answered.
        background: a dense teacher's label whose answers were left out as its background when it declares
            none (its most answered, kept on the mirror); None where it declares one or none was taken.
        dense: whether the teacher's task is dense (its labels need pixels, not images, to be judged).
        judgeable: the labels a mirror could swap with another (a dense teacher's background aside: one label
            beside its background has nothing to swap with).
        few: the source held fewer images than the check asks of this teacher.
    """

    teacher: str
    source: str
    changed: list[tuple[str, float, str, float]]
    judged: int
    labels: int
    images: int
    background: Optional[str] = None
    dense: bool = False
    judgeable: int = 0
    few: bool = False

    @property
    def unjudged(self) -> bool:
        """Labels a mirror could swap, none answered often enough to be judged."""
        return self.judgeable > 0 and self.judged == 0

    @property
    def keeps_flip_out(self) -> bool:
        """Whether this finding keeps its source unflipped under ``flip: auto``: a label changes, or the source is
        too small to judge any (flipped, it would be a guess on a few images; a source large enough whose
        answers spread over many labels is flipped, said as not judged)."""
        return bool(self.changed) or (self.unjudged and self.few)

    def line(self) -> str:
        """The finding in one line, with the labels that change (the first five), or that none does."""
        judged = f"{self.judged} of {self.labels} labels judged, {self.images} images"
        if self.background is not None:  # a guess, so said: a swapped pair answered most would hide there
            judged += f"; '{self.background}', answered most, left out as its background (it declares none)"
        if self.unjudged:
            need, where = MIRROR_MIN_ANSWERS[self.dense], f"mirrored images of source '{self.source}'"
            if self.few:
                return (
                    f"teacher '{self.teacher}' could not be judged on {where}: its {self.images} images gave no label"
                    f" the {need} answers it needs ({judged})"
                )
            return (
                f"teacher '{self.teacher}' could not be judged on {where}: its answers spread over its labels, none"
                f" answered {need} times ({judged}); it holds no flip back: data.sources.{self.source}.flip:"
                " false if a mirror changes what its labels mean"
            )
        if not self.judgeable:  # one label beside its background: nothing a mirror can swap
            return (
                f"teacher '{self.teacher}' keeps its labels on mirrored images of source '{self.source}' (one label"
                f" beside its background: nothing to swap; {self.images} images)"
            )
        if not self.changed:
            return f"teacher '{self.teacher}' keeps its labels on mirrored images of source '{self.source}' ({judged})"
        named = ", ".join(f"{a} kept on {k:.0%} (as {b} on {s:.0%})" for a, k, b, s in self.changed[:5])
        more = f" and {len(self.changed) - 5} more" if len(self.changed) > 5 else ""
        return (
            f"teacher '{self.teacher}' names mirrored images of source '{self.source}' otherwise: {named}{more}"
            f" ({len(self.changed)} changed, {judged})"
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


def changed_labels(
    counts: torch.Tensor, names: list[str], dense: bool, background: Optional[int] = None
) -> tuple[list, int]:
    """The labels whose answers move mostly to one other label under a mirror, and how many were judged.

    A dense task's answers to and from its background (``background``, else its most answered label
    where that one keeps its own answers) are left out: a thin class on a strided output grid loses a
    pixel at its edges under a mirror, a localisation, not a meaning (a pole at 1/4 resolution kept 46%)."""
    settled = _background(counts, background) if dense else None
    changed, judged = [], 0
    for label, row in enumerate(counts):
        others = [j for j in range(len(row)) if j not in (label, settled)]
        total = int(row.sum()) - (int(row[settled]) if settled is not None else 0)
        if label == settled or not others or total < MIRROR_MIN_ANSWERS[dense]:
            continue
        judged += 1
        instead = max(others, key=lambda j: int(row[j]))
        kept, moved = float(row[label]) / total, float(row[instead]) / total
        if kept < MIRROR_KEPT and moved >= MIRROR_KEPT:  # systematic: most of the label's answers become one other
            changed.append((names[label], kept, names[instead], moved))
    return changed, judged


def _background(counts: torch.Tensor, declared: Optional[int]) -> Optional[int]:
    """A dense teacher's background: the declared one, else its most answered label if it keeps its own
    answers on the mirror (a close-up's left arm, answered most and swapped, is no background)."""
    if declared is not None:
        return declared
    common = int(counts.sum(1).argmax())
    row = counts[common]
    return common if int(row.sum()) and float(row[common]) / float(row.sum()) >= MIRROR_KEPT else None


def mirror_finding(teacher: Teacher, source: str, dataset: ImageSet, student_view) -> MirrorFinding:
    """What the mirror check finds of ``teacher`` on ``dataset``."""
    dense, names = teacher.task.dense, list(teacher.space.names)
    least, most = MIRROR_CHECK_IMAGES[dense]
    asked = max(least, min(most, MIRROR_MIN_ANSWERS[dense] * len(names)))
    count = min(len(dataset), asked)
    counts = mirror_confusion(teacher, dataset, student_view, count)
    declared = names.index(teacher.space.background) if teacher.space.background in names else None
    settled = _background(counts, declared) if dense else None
    changed, judged = changed_labels(counts, names, dense, settled)
    guessed = names[settled] if settled is not None and declared is None else None
    swappable = len(names) - (settled is not None)  # a label beside the background alone has none to swap with
    judgeable = swappable if swappable >= 2 else 0
    return MirrorFinding(
        teacher.name, source, changed, judged, len(names), count, guessed, dense, judgeable, count < asked
    )


def checked(teacher: Teacher) -> bool:
    """Whether the check reads this teacher: exclusive labels (an argmax to compare)."""
    return teacher.task.labelled and teacher.task.exclusive_labels and teacher.space is not None


def mirror_findings(plan: Plan) -> dict[str, list[MirrorFinding]]:
    """Per training source the flip would mirror (``train.augment`` on, ``flip: auto``), what the check
    finds of each teacher on it; no side effects."""
    found: dict[str, list[MirrorFinding]] = {}
    if not plan.recipe.train.augment:
        return found
    for name, teacher in plan.teachers.items():
        for sid in auto_flipped(plan, name) if checked(teacher) else []:
            source = plan.sources.names[sid]
            found.setdefault(source, []).append(finding_of(plan, name, sid))
    return dict(sorted(found.items(), key=lambda item: plan.sources.names.index(item[0])))  # in source order


def finding_of(plan: Plan, teacher: str, sid: int) -> MirrorFinding:
    """:func:`mirror_finding` of a teacher on a source of the plan, made once (the flip-wrap check before training
    and the flip's own check read the same teacher on the same images)."""
    key = (teacher, sid)
    if key not in plan.mirror_seen:
        dataset, source = plan.sources.sets[sid], plan.sources.names[sid]
        plan.mirror_seen[key] = mirror_finding(plan.teachers[teacher], source, dataset, plan.student_view)
    return plan.mirror_seen[key]


def check_flip_wraps(plan: Plan) -> None:
    """Refuses flip averaging (``wrap: {type: multi_transform, flip: true}``) on a teacher that names mirrored
    images otherwise (``left_arm`` / ``right_arm``), judged on its first source as the mirror check judges: its
    targets would average each such label into its mirror's (a trial's teacher taught 0.5 / 0.5 where it
    answered 1 / 0), whatever ``train.augment`` and ``flip`` say.

    Raises:
        RecipeError: on ``teachers.<name>.wrap``, naming the labels that change.
    """
    for name, teacher in plan.teachers.items():
        ids = plan.source_ids.get(name, [])
        if not (teacher.sub is not None and teacher.sub.averages_mirrors and checked(teacher) and ids):
            continue
        finding = finding_of(plan, name, ids[0])
        if finding.changed:
            raise RecipeError(
                f"teachers.{name}.wrap",
                f"flip averaging would average its answers on mirrored images into its plain ones, but"
                f" {finding.line()}: each such label would be taught as half its mirror's; set flip: false",
            )


def auto_flipped(plan: Plan, teacher: str) -> list[int]:
    """The ids of the sources ``teacher`` teaches on that the flip mirrors unless the check says not
    (``flip: auto``)."""
    sources = plan.recipe.data.sources
    return [sid for sid in plan.source_ids.get(teacher, []) if sources[plan.sources.names[sid]].flip == "auto"]


def unflipped_sources(plan: Plan, log: Callable[[str], None] = print) -> dict[str, str]:
    """The training sources the flip leaves alone, each with why (``flip: false``, or the findings of
    :func:`mirror_findings`); every check and decision said in the log."""
    if not plan.recipe.train.augment:
        return {}
    unflipped = recipe_unflipped(plan.recipe)
    for line in unchecked_lines(plan):
        log(f"mirror check: {line}")
    for source, findings in mirror_findings(plan).items():
        for finding in findings:
            if not finding.keeps_flip_out:
                log(f"mirror check: {finding.line()}")
        if kept_out := [f.line() for f in findings if f.keeps_flip_out]:
            unflipped[source] = "; ".join(kept_out)
    say_unflipped(unflipped, log, plan.recipe)
    return unflipped


def unchecked_lines(plan: Plan) -> list[str]:
    """One line per labelled teacher the check cannot read (labels not exclusive: no argmax to compare)
    on a source the flip mirrors from the teacher cache: its labels may mean left or right as well (a
    trial's 'left_heavier' attribute, learnt on 0.61 of images flipped against 0.82 unflipped, unsaid)."""
    recipe, lines = plan.recipe, []
    if not (recipe.train.augment and recipe.train.cache_teachers):  # live, a teacher answers the mirror itself
        return lines
    for name, teacher in plan.teachers.items():
        sources = [plan.sources.names[sid] for sid in auto_flipped(plan, name)]
        if teacher.task.labelled and not checked(teacher) and sources:
            hook = "the default: unchanged" if type(teacher.task).mirror is Task.mirror else "its own"
            lines.append(
                f"teacher '{name}' is not checked (task {teacher.task.name} has no exclusive labels): on mirrored"
                f" images of {', '.join(sources)} the student learns its cached answers through the task's mirror"
                f" ({hook}); where a mirror changes one of its labels, set data.sources.<source>.flip: false"
            )
    return lines


def recipe_unflipped(recipe) -> dict[str, str]:
    """The sources the recipe itself keeps unflipped (``flip: false``)."""
    return {s: f"data.sources.{s}.flip: false" for s, c in recipe.data.sources.items() if c.flip is False}


def say_unflipped(unflipped: dict[str, str], log: Callable[[str], None], recipe) -> None:
    """One log line per source the flip leaves alone, with why and, for the mirror check's, the key that
    decides instead (the recipe's own ``flip: false`` is said as such)."""
    by_recipe = recipe_unflipped(recipe)
    for source, why in unflipped.items():
        if source in by_recipe:
            log(f"train.augment: source '{source}' is not flipped ({by_recipe[source]})")
        else:
            log(
                f"train.augment: source '{source}' is not flipped: {why}; a mirror changes what some labels mean"
                f" (digits, text, left/right classes): data.sources.{source}.flip: true flips it all the same"
            )
