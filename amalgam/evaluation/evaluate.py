"""Per-task evaluation of the student beside each teacher, plus size and latency."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from typing import Callable, Iterable, Iterator, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from amalgam.data.image_set import spread
from amalgam.data.views import BatchViews, collate, resize
from amalgam.distill.eval_checks import shorten
from amalgam.distill.plan import Plan
from amalgam.errors import AmalgamError
from amalgam.evaluation.coverage import Coverage
from amalgam.evaluation.per_class import (
    MOSTLY,
    class_verdicts,
    class_warnings,
    label_order_warning,
    per_class_rows,
    verdict_counts,
)
from amalgam.labels import IGNORE, LabelSpace, lookup, projection
from amalgam.labels.names import CATCH_ALL_NAMES, fold
from amalgam.plugin_contract import is_built_in, plugin_failure, require_metric
from amalgam.students.build import StudentSpec, count_params
from amalgam.students.serialize import at_chosen_size, run_student
from amalgam.task import Task, map_size
from amalgam.teachers.inputs import answer_views
from amalgam.teachers.teacher import Teacher
from amalgam.training.progress import bar_for


def relative_to_teacher(teacher: Optional[float], student: Optional[float], higher_is_better: bool) -> float:
    """The student's score as a share of the teacher's where 1 is as good and higher is always better:
    student / teacher, or teacher / student for a lower-is-better metric (rmse). The plain ratio
    read 1.058 for an rmse 5.8% worse than the teacher's. NaN when either is missing or zero."""
    top, bottom = (student, teacher) if higher_is_better else (teacher, student)
    return top / bottom if top is not None and bottom else float("nan")


@dataclass
class TaskResult:
    """One teacher's row: its metrics and the student's on the teacher's eval set and labels."""

    teacher: str
    task: Task
    eval: str
    teacher_metrics: dict
    student_metrics: dict
    classes: Optional[list[str]] = None
    #: the recipe's sub-teacher wrap of this teacher: it shaped the training targets only, the
    #: teacher's metrics are of the plain model
    wrap: Optional[str] = None
    #: the part of the eval set the teacher is scored on (labelled tasks)
    coverage: Optional[Coverage] = None
    #: the wrap's arguments (``SubTeacher.args``), beside its type in ``wrap``
    wrap_args: Optional[dict] = None
    #: positions (in the eval set as loaded) of the images the teacher answered NaN/inf on: left
    #: out of its and the student's scores in this row, so the ratio compares like with like
    left_out: list[int] = field(default_factory=list)
    #: the eval images this row was scored on before any was left out
    images: int = 0
    #: share of the row's scored images on which the student, over its whole label space, names a
    #: class the teacher has no label for (pooled labelled tasks; None where not counted)
    outside_share: Optional[float] = None
    #: the student's per-class scores over its whole label space on the teacher's classes, where the
    #: teacher knows part of it (:func:`deployed_per_class`; None otherwise)
    deployed: Optional[dict[str, float]] = None
    #: the set's background holding classes of the teacher the set names nowhere (:func:`set_catch_all`): said
    catch_all: Optional[str] = None
    #: the images the eval set holds (``images`` fewer: a limit cut it; None: not known)
    set_images: Optional[int] = None

    def scored_images(self) -> int:
        """The eval images this row scored: those evaluated, less the ones the teacher answered NaN/inf on and
        the ones of classes it has no label for (a review: 12 said where 8 were scored)."""
        unscored = self.coverage.unscored_images if self.coverage and self.coverage.images else 0
        return self.images - len(self.left_out) - unscored

    def per_class(self) -> Optional[list[dict]]:
        """Teacher vs student on each of the teacher's classes, for tasks whose meter scores classes."""
        key = self.task.per_class_metric
        if key is None or self.classes is None or key not in self.teacher_metrics:
            return None
        support = self.teacher_metrics.get("support")  # a plugin's meter may name something else so
        support = support if isinstance(support, (list, tuple)) else None
        return per_class_rows(
            self.classes, self.teacher_metrics[key], self.student_metrics[key], self.deployed, support
        )

    def warnings(self) -> list[str]:
        """Classes the teacher is near-blind on or the student lost (see per_class.py), what the
        task finds wrong with the teacher as a reference (a depth teacher in another unit), and
        the part of the eval set it is scored on when that is not all of it (see coverage.py); first,
        the eval images it answered NaN/inf on."""
        return self.nonfinite_warning() + self._reference_warnings()

    def _reference_warnings(self) -> list[str]:
        rows = self.per_class()
        metric, floor = self.task.per_class_metric, self.task.per_class_floor
        counts = self.task.per_class_counts
        lines = (
            class_warnings(self.teacher, metric, rows, floor=floor, counts=counts) + self._unseen_warning(rows)
            if rows
            else []
        )
        if rows and (order := label_order_warning(self.teacher, self.classes, self.teacher_metrics.get(MOSTLY))):
            lines.insert(0, order)
        partial = self.coverage.warning() if self.coverage else None
        own = self.task.teacher_warnings(self.teacher, self.teacher_metrics)
        far = [] if lines or own else self._far_above_warning()  # a reason said already is not said twice
        return lines + own + ([partial] if partial else []) + far

    def _unseen_warning(self, rows: list[dict]) -> list[str]:
        """The line naming the teacher's labels that the eval set has classes for but that no image
        scored holds (a limit, ``train.max_eval_images``, can leave them out): the mean covers the others."""
        absent = set(self.coverage.absent) if self.coverage else set()
        unseen = [r["class"] for r in rows if r.get("support") == 0 and r["class"] not in absent]
        if not unseen:
            return []
        scored = sum(1 for r in rows if r.get("support"))
        whole = self.set_images is not None and self.images >= self.set_images
        why = (  # a trial's whole set holding none of them was told a limit left them out
            "no image of the set holds them"
            if whole
            else f"data.eval.{self.eval}.limit or train.max_eval_images left them out?"
        )
        return [
            f"teacher {self.teacher}: {len(unseen)} of its labels that '{self.eval}' names have no ground truth in"
            f" the {self.images:,} images scored ({shorten(unseen)}): its {self.task.metric} covers the other"
            f" {scored} ({why})"
        ]

    def _far_above_warning(self) -> list[str]:
        """The line when the student scores :data:`FAR_ABOVE` times the teacher or more: more often a
        teacher scored below what it can (misfed or misread; a trial's misfed depth teacher read 1.4-3x
        worse, its student's ratio said it was beaten) than a student that outgrew it."""
        metric = self.task.metric
        t, s = self.teacher_metrics.get(metric), self.student_metrics.get(metric)
        relative = relative_to_teacher(t, s, self.task.higher_is_better)
        if not relative >= FAR_ABOVE:  # NaN: not scored
            return []
        return [
            f"the student scores {relative:.2f}x teacher {self.teacher} on '{self.eval}' ({metric}): a teacher far"
            " below its student is more often scored below what it can than outgrown; is it fed as it was trained"
            f" (teachers.{self.teacher}.input: size, mean/std, channel order) and read right (output, labels)?"
        ]

    def nonfinite_warning(self) -> list[str]:
        """The line saying on how many eval images the teacher answered NaN/inf (none when it never did):
        first, as the class and unit warnings below it may only be its echo."""
        if not self.left_out:
            return []
        return [
            f"teacher {self.teacher} answered NaN/inf on {len(self.left_out)} of {self.images} eval images"
            f" ('{self.eval}'): they are left out of its and the student's scores"
        ]

    def row(self) -> dict:
        """The ``tasks[]`` entry of report.json."""
        metric = self.task.metric
        t, s = self.teacher_metrics.get(metric), self.student_metrics.get(metric)
        ratio = s / t if t else float("nan")
        extra = {}
        if (rows := self.per_class()) is not None:
            extra = {"per_class_metric": self.task.per_class_metric, "per_class": rows}
            if verdicts := verdict_counts(class_verdicts(rows, floor=self.task.per_class_floor)):
                extra["per_class_verdicts"] = verdicts
        return {
            "teacher": self.teacher,
            "task": self.task.name,
            "eval": self.eval,
            "metric": metric,
            "higher_is_better": self.task.higher_is_better,
            "teacher_value": t,
            "student_value": s,
            "ratio": ratio,
            "relative": relative_to_teacher(t, s, self.task.higher_is_better),
            "teacher_metrics": self.teacher_metrics,
            "student_metrics": self.student_metrics,
            "teacher_wrap": self.wrap,
            "teacher_wrap_args": self.wrap_args,
            **extra,
            **({"catch_all": self.catch_all} if self.catch_all else {}),
            # how many eval images the row scored: 60 of a set's 1,000 was said in the log only (a trial)
            **({"images": self.scored_images()} if self.images else {}),
        }


#: a student this many times its teacher (``relative``: higher is better) is warned about
FAR_ABOVE = 1.3

#: share of a teacher's scored images on which the student may name, over its whole label space, a
#: class the teacher has no label for before it is said (:meth:`Evaluation._unified_gaps`)
UNIFIED_GAP = 0.02


@dataclass
class Evaluation:
    tasks: list[TaskResult] = field(default_factory=list)
    unified: list[dict] = field(default_factory=list)
    #: (task, eval set) -> the set's classes its whole-label-space row leaves out (``unified[].unscored``'s entries)
    unscored: dict[tuple[str, str], list[Unscored]] = field(default_factory=dict)

    def warnings(self) -> list[str]:
        """Every teacher's warnings (per class, and its task's own), in teacher order; first, those
        of teachers that answered NaN/inf on eval images (their other lines may be its echo)."""
        failed = [line for r in self.tasks for line in r.nonfinite_warning()]
        return failed + [line for r in self.tasks for line in r._reference_warnings()] + self._unified_gaps()

    def _unified_gaps(self) -> list[str]:
        """One line per pooled teacher row on whose own images the student, over its whole label
        space, names a class the teacher has no label for on more than :data:`UNIFIED_GAP` of them:
        the row counts only the teacher's labels, so such answers (a '1' called an '8' that only the
        other teacher knows) were invisible in it."""
        groups = {key: [u.text() for u in found if u.group] for key, found in self.unscored.items()}
        lines = [  # a class no teacher knows is unscored by nature (ADE20K's 'other'): listed in unscored, not said
            f"the student's whole-label-space {task} row on '{name}' does not score the set's classes"
            f" {', '.join(found[:8])}{' and more' if len(found) > 8 else ''}: their images (or pixels) are left out of"
            " it (name one unified class for each, or their classes in the set)"
            for (task, name), found in groups.items()
            if found
        ]
        for r in self.tasks:
            if r.outside_share is not None and r.outside_share > UNIFIED_GAP:
                lines.append(
                    f"student on '{r.eval}': on {r.outside_share:.1%} of the images teacher {r.teacher} is scored on,"
                    f" its answer over all its {r.task.name} labels is one {r.teacher} has no label for, which the"
                    " teacher's row does not count, the whole-label-space row does (mistakes for another teacher's"
                    " classes, or one class under two teachers' names? amalgam inspect --suggest-labels proposes"
                    " relations from the teachers' predictions)"
                )
        return lines


def deployed_per_class(scorer: _Scorer, unified: Optional[dict]) -> Optional[dict[str, float]]:
    """The student's per-class scores over its whole label space (as deployed) on the teacher's labels
    that are one unified class each, where the teacher knows only part of the space; None otherwise.

    A teacher's row sums the student's probabilities into the teacher's labels: a partial teacher's
    background takes the classes it does not know and may outweigh a class the student does name
    (a trial's Dress: 0.000 in the row, 0.148 as deployed)."""
    key, projection = scorer.teacher.task.per_class_metric, scorer.projection
    if unified is None or key is None or key not in unified or projection is None:
        return None
    projection = projection.cpu()
    one = projection.sum(1) == 1
    if bool(one.all()) and bool(projection.any(0).all()):
        return None  # each label one unified class, every class a label's: the row is the deployed answer
    names, values = scorer.teacher.space.names, unified[key]
    found = [(name, values[int(projection[i].float().argmax())]) for i, name in enumerate(names)]
    return {name: value for i, (name, value) in enumerate(found) if bool(one[i]) and value is not None}


def _answers_every_task(out: object, tasks: set[str]) -> None:
    """Refuses a student output that is no ``{task: tensor}`` dict holding every task scored (a module
    of one's own: a KeyError deep in scoring named neither)."""
    missing = sorted(tasks - set(out)) if isinstance(out, dict) else None
    if missing is None or missing:
        got = f"keys {sorted(out)}" if isinstance(out, dict) else type(out).__name__
        raise AmalgamError(f"the student's output must be a dict {{task: output}} with {sorted(tasks)}, got {got}")


def prediction_size(task: Task, target: torch.Tensor, images: torch.Tensor) -> tuple[int, ...]:
    """The size predictions are scored at: a dense target's own (a map of several channels comes
    channels last), else (pooled tasks) the images'."""
    return map_size(target) if task.dense else tuple(images.shape[-2:])


def _loader(dataset, batch_size: int, limit: Optional[int]) -> DataLoader:
    if limit is not None and limit < len(dataset):  # as a source's limit keeps them: an even spread
        dataset = Subset(dataset, spread(len(dataset), limit))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate)


@dataclass
class _Scorer:
    """The meters of one teacher on one eval set: the teacher, the student restricted to the
    teacher's labels, and (once per task and set) the student over its unified labels."""

    teacher: Teacher
    projection: Optional[torch.Tensor]
    teacher_lut: Optional[torch.Tensor]
    unified_lut: Optional[torch.Tensor]
    with_unified: bool
    meters: list
    coverage: Optional[Coverage] = None
    score_teacher: bool = True  # False: the teacher's meter stays empty (its score is known already)
    #: positions of the eval images the teacher answered NaN/inf on: found while scoring it, or
    #: given (``evaluate(left_out=...)``) when it is not run
    left_out: list[int] = field(default_factory=list)
    seen: int = 0  # eval images scored so far: the position of the next batch's first
    #: of the row's own scored images (pooled tasks), how many, and on how many the student's answer
    #: over its whole label space is a class the teacher has no label for
    scored: int = 0
    outside: int = 0
    #: the set's classes the whole-label-space row leaves out, each with why (:func:`unscored_in_space`)
    unified_unscored: list[Unscored] = field(default_factory=list)
    #: the set's catch-all background, if it holds unified classes the set names nowhere (:func:`set_catch_all`)
    catch_all: Optional[CatchAll] = None
    #: the same over the teacher's labels: its row and the student's among them read alike (a trial's set labelled
    #: for 2 of 10 items counted the teacher's right Coat on the set's background as wrong, mIoU 0.74 for 0.82)
    teacher_catch_all: Optional[CatchAll] = None
    #: the set's classes no teacher knows, which the whole-label-space row scores as the background
    as_background: list[str] = field(default_factory=list)
    #: the reading the whole-label-space row scores and resizes the student's answer as (:func:`unified_kind`)
    unified_kind: Optional[str] = None

    def update(self, views: BatchViews, student_out: dict, batch: dict) -> None:
        """Scores one batch at each dense label map's own resolution (rows grouped by size).

        Images the teacher answers NaN/inf on are left out of the teacher's and the student's
        meters of this row (not of the unified one, which no teacher answers)."""
        task = self.teacher.task
        images = views.student
        for rows, target in by_size(batch[task.target_key], images.device):
            size = prediction_size(task, target, images)
            s_out = student_out[task.name][rows.to(images.device)]  # resized by each row that scores it
            t_target = self._mapped(target, self.teacher_lut, lambda: len(self.teacher.space))
            if self.with_unified:
                u_target = self._mapped(target, self.unified_lut, lambda: self.projection.shape[1])
                u_pred = predicted_as(task, s_out, size, self.unified_kind)
                if self.catch_all is not None:
                    u_pred = self.catch_all.merged(u_pred, target)
                self.meters[2].update(u_pred, u_target)
            t_out = None
            if self.score_teacher:
                # the plain model: a wrap (flips, noise, dropout) shapes training targets, not the baseline
                t_out, _ = answer_views(self.teacher, views, rows, size, augmented=False, wrapped=False)
            keep = self._finite(rows, t_out)
            if keep is not None and not bool(keep.any()):
                continue  # the teacher answered NaN/inf on every image of this group
            if keep is not None:
                s_out, t_target = s_out[keep.to(s_out.device)], t_target[keep.to(t_target.device)]
                t_out = t_out[keep.to(t_out.device)] if t_out is not None else None
            if self.coverage is not None:
                self.coverage.count(t_target)
            if t_out is not None:
                self.meters[0].update(self._merged(task.predict(t_out, size), target, keep), t_target)
            kind = self.teacher.output_kind if resizes(task, s_out, size) else None  # read where it is used
            s_pred = predicted_as(task, s_out, size, kind, self.projection)
            self.meters[1].update(self._merged(s_pred, target, keep), t_target)
            self._count_outside(s_out, t_target)
        self.seen += len(batch["image"])

    def _merged(self, pred: torch.Tensor, target: torch.Tensor, keep: Optional[torch.Tensor]) -> torch.Tensor:
        """``pred`` over the teacher's labels with :attr:`teacher_catch_all` applied (``target``: the set's values)."""
        if self.teacher_catch_all is None:
            return pred
        return self.teacher_catch_all.merged(pred, target if keep is None else target[keep.to(target.device)])

    def _mapped(self, target: torch.Tensor, lut: Optional[torch.Tensor], labels: Callable[[], int]) -> torch.Tensor:
        """The set's ground truth over a teacher's labels or the unified ones (unlabelled tasks: as is)."""
        return target if lut is None else self.teacher.task.map_target(target, lut, labels())

    def _count_outside(self, s_out: torch.Tensor, t_target: torch.Tensor) -> None:
        """Counts, on the row's scored images of a pooled labelled task, the student's unrestricted
        answers that fall on a unified class the teacher's labels do not cover."""
        task = self.teacher.task
        one_label = task.exclusive_labels and not task.dense and t_target.dim() == 1  # a multi-label plugin's is not
        if self.projection is None or not one_label or s_out.dim() != 2 or s_out.shape[1] != self.projection.shape[1]:
            return
        scored = t_target != IGNORE
        covered = self.projection.any(0).to(s_out.device)
        answer = task.predict(s_out, (1, 1)).reshape(-1).long()  # as the unified meter reads it
        self.scored += int(scored.sum())
        self.outside += int((scored & ~covered[answer]).sum())

    def _finite(self, rows: torch.Tensor, t_out: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The mask of ``rows`` to score (None: all): without the images the teacher answered NaN/inf
        on, found in ``t_out`` and recorded, or (teacher not run) as recorded before."""
        positions = rows.cpu() + self.seen
        if t_out is not None:
            bad = self.teacher.task.nonfinite_rows(t_out).cpu()
            self.left_out += positions[bad].tolist()
        else:
            bad = torch.isin(positions, torch.tensor(self.left_out, dtype=positions.dtype))
        return ~bad if bool(bad.any()) else None


def predicted_as(
    task, out: torch.Tensor, size: tuple[int, ...], kind: Optional[str], projection: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """The student's prediction at ``size`` (over ``projection``'s labels, if given), resized as an answer of
    reading ``kind`` is (:meth:`~amalgam.task.Task.resize_space`): a row scores teacher and student alike."""
    if not resizes(task, out, size):
        return task.predict(out, size, projection)
    moved = as_teachers_answer(task, task.resize_space(out, kind), size)
    return task.resize_space(task.predict(moved, size, projection), kind, back=True)


def resizes(task, out: torch.Tensor, size: tuple[int, ...]) -> bool:
    """Whether ``out`` is a dense answer of another size than ``size``, which scoring resizes."""
    return task.dense and out.dim() == 4 and tuple(out.shape[-2:]) != tuple(size)


def as_teachers_answer(task, out: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A dense student output larger than a label map shrunk onto it as the teachers' answers are
    (antialiased, :func:`~amalgam.data.views.resize`), not by ``predict``'s plain bilinear: teacher and
    student are then scored alike."""
    if not task.dense or out.dim() != 4 or (out.shape[-2] <= size[0] and out.shape[-1] <= size[1]):
        return out
    return resize(out, size)


def by_size(targets, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(rows, stacked targets)`` per target size: label maps of differing sizes come as a list."""
    if isinstance(targets, torch.Tensor):
        return [(torch.arange(targets.shape[0]), targets.to(device))]
    groups: dict[tuple, list[int]] = {}
    for row, t in enumerate(targets):
        groups.setdefault(tuple(t.shape), []).append(row)
    return [(torch.tensor(rows), torch.stack([targets[r] for r in rows]).to(device)) for rows in groups.values()]


@contextmanager
def scoring(student: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """``student`` in eval mode on ``device`` for the block, then as the caller had it.

    Scoring from one's own training loop must not leave BatchNorm frozen or the weights on another
    device than the optimizer's state: every module's ``training`` flag (a submodule frozen on
    purpose stays frozen) and the device are put back, even when scoring fails. A student spread
    over several devices is moved back to the first of them (``.to`` cannot undo a spread).
    """
    modes = [(module, module.training) for module in student.modules()]
    tensor = next(chain(student.parameters(), student.buffers()), None)
    home = tensor.device if tensor is not None else None
    student.eval().to(device)
    try:
        yield student
    finally:
        for module, mode in modes:
            module.training = mode
        if home is not None:
            student.to(home)


@torch.no_grad()
def evaluate(
    plan: Plan,
    student: nn.Module,
    device: torch.device,
    spaces: Optional[dict[str, Optional[LabelSpace]]] = None,
    log: Callable[[str], None] = print,
    teachers: bool = True,
    left_out: Optional[dict[str, list[int]]] = None,
    images: Optional[int] = None,
) -> Evaluation:
    """Scores every teacher and the student on each teacher's eval set.

    The student is scored restricted to the teacher's labels (with the teacher's background
    semantics), and once per (task, eval set) over its whole unified label space. Each eval set
    is read, and the student run on it, once for all the teachers that use it.

    Args:
        spaces: the student's unified spaces (default: the plan's; pass the stored ones when
            evaluating a saved student).
        teachers: False scores the student alone (the teachers' metrics come back empty): for
            repeated scoring during training, where the teachers' scores do not change.
        left_out: with ``teachers=False``, each teacher's ``TaskResult.left_out`` from a scoring
            with the teachers: the images it answered NaN/inf on, left out of the student's score
            again so it stays comparable with the teacher's.
        images: score this many images of each set (spread over it) instead of
            ``train.max_eval_images``: a trial of the scoring before training.

    Images a teacher answers NaN/inf on are left out of its row's scores (its and the student's),
    counted in ``TaskResult.left_out`` and said in one warning line: a teacher scored on its
    failures would read worse, and the student's ratio to it better, than either is.

    The student is run in eval mode on ``device`` and left as it came (mode and device, see
    :func:`scoring`).
    """
    with scoring(student, device):
        limit = plan.recipe.train.max_eval_images if images is None else images
        return _evaluate(plan, student, device, spaces or plan.spaces, log, teachers, left_out or {}, limit)


#: eval images per set a trial scoring reads before training
TRIAL_IMAGES = 2


def trial_scoring(plan: Plan, student: nn.Module, device: torch.device, log: Callable[[str], None] = print) -> None:
    """Scores the teachers and the untrained student on :data:`TRIAL_IMAGES` images of each eval set
    before training, where a task plugin's teacher has one: a plugin's ``predict``, ``map_target`` or
    meter that fails stopped the build only after the whole schedule.

    Raises:
        AmalgamError: naming the plugin, its hook and the line, when its code fails.
    """
    plugged = [t for t in plan.teachers.values() if t.eval_name and not is_built_in(type(t.task))]
    if not plugged:
        return
    try:
        evaluate(plan, student, device, log=lambda m: None, images=TRIAL_IMAGES)
    except AmalgamError as exc:
        raise AmalgamError(f"{exc} (found before training, scoring {TRIAL_IMAGES} eval images)") from exc
    except Exception as exc:
        if (failure := plugin_failure(exc)) is None:
            raise
        if failure.hook == "compute":  # a metric 2 images cannot give (an AUC of one class): said only
            log(f"warning: {failure.line}; on {TRIAL_IMAGES} eval images before training (the whole set may score)")
            return
        raise AmalgamError(f"{failure.line}; found before training, scoring {TRIAL_IMAGES} eval images") from exc


def _evaluate(
    plan: Plan,
    student: nn.Module,
    device: torch.device,
    spaces: dict[str, Optional[LabelSpace]],
    log: Callable[[str], None],
    teachers: bool,
    left_out: dict[str, list[int]],
    limit: Optional[int],
) -> Evaluation:
    cfg = plan.recipe.train
    result = Evaluation()
    for set_name, dataset in plan.eval_sets.items():
        scorers = _scorers(plan, set_name, dataset.classes, spaces, device)
        for name, scorer in scorers.items():
            scorer.score_teacher = teachers
            scorer.left_out = [] if teachers else list(left_out.get(name, []))
        log(f"evaluating the student{' and ' + ', '.join(scorers) if teachers else ''} on '{set_name}'")
        loader = _loader(dataset, cfg.eval_batch_size, limit)
        bar = bar_for(log, len(loader), f"eval {set_name}")
        for batch in loader:
            images = batch["image"].to(device)
            views = BatchViews(images, plan.student_view, batch.get("original"))
            with at_chosen_size():  # the size it is scored at is said once, in the log
                student_out = run_student(student, images)
            _answers_every_task(student_out, {s.teacher.task.name for s in scorers.values()})
            for scorer in scorers.values():
                scorer.update(views, student_out, batch)
            bar.update(1)
        bar.close()
        unified = {s.teacher.task.name: s.meters[2].compute() for s in scorers.values() if s.with_unified}
        for name, scorer in scorers.items():
            held = dataset.total_images or len(dataset)
            result.tasks.append(_task_result(name, scorer, (set_name, held), teachers, unified, log))
            if scorer.with_unified:
                task = scorer.teacher.task.name
                row = {"task": task, "eval": set_name, "metrics": unified[task]}
                if said := unified_reading_line(plan, scorer.teacher.task, set_name):  # a rule chosen: said
                    log(said)
                    row["scored_as"] = scorer.unified_kind
                if spaces.get(task) is not None:  # per-class lists are in this order, which is not sorted
                    row["classes"] = list(spaces[task].names)
                found = scorer.unified_unscored
                if scorer.catch_all is not None:  # said, with the rule: the row is not the plain confusion
                    row["catch_all"] = scorer.catch_all.text()
                    log(f"the student's whole-label-space {task} row on '{set_name}': {scorer.catch_all.text()}")
                if scorer.as_background:  # a class no teacher knows: the rule its teachers' rows follow, said here too
                    row["as_background"] = scorer.as_background
                    shown = ", ".join(scorer.as_background)
                    log(f"the student's whole-label-space {task} row on '{set_name}': {shown}, which no teacher"
                        " knows, scored as the background")  # fmt: skip
                result.unified.append(row | ({"unscored": [u.text() for u in found]} if found else {}))
                result.unscored[row["task"], set_name] = found
    order = list(plan.teachers)
    result.tasks.sort(key=lambda r: order.index(r.teacher))
    for line in result.warnings():
        log(f"warning: {line}")
    return result


def _task_result(
    name: str, scorer: _Scorer, eval_set: tuple[str, int], teachers: bool, unified: dict, log: Callable[[str], None]
) -> TaskResult:
    """One teacher's row from its scorer's meters (``eval_set``: the set's name and the images it holds before
    any limit; ``teachers``: the teacher was scored too)."""
    set_name, held = eval_set
    if scorer.teacher_catch_all is not None:  # said, with the rule: the row is not the plain confusion
        log(f"teacher {name}'s row on '{set_name}': {scorer.teacher_catch_all.text()}")
    m = scorer.meters
    classes = list(scorer.teacher.space.names) if scorer.teacher.space else None
    student_metrics = m[1].compute()
    require_metric(scorer.teacher.task, student_metrics)  # else every score is n/a without a word
    return TaskResult(
        name,
        scorer.teacher.task,
        set_name,
        m[0].compute() if teachers else {},
        student_metrics,
        classes,
        scorer.teacher.wrap,
        scorer.coverage,
        scorer.teacher.wrap_args,
        scorer.left_out,
        scorer.seen,
        scorer.outside / scorer.scored if scorer.scored else None,
        deployed_per_class(scorer, unified.get(scorer.teacher.task.name)),
        scorer.teacher_catch_all.text() if scorer.teacher_catch_all else None,
        held,
    )


def _scorers(
    plan: Plan, set_name: str, classes: list[str], spaces: dict[str, Optional[LabelSpace]], device: torch.device
) -> dict[str, _Scorer]:
    """The meters of every teacher scored on eval set ``set_name`` (whose classes are ``classes``)."""
    scorers: dict[str, _Scorer] = {}
    unified_tasks: set[str] = set()
    for name, teacher in plan.teachers.items():
        if teacher.eval_name != set_name:
            continue
        teacher.to(device)
        task, space = teacher.task, spaces[teacher.task.name]
        n = len(teacher.space) if teacher.space else None
        extent = plan.extents(task.name)
        teacher_lut = lookup(classes, teacher.space, extent) if teacher.space else None
        kind = teacher.output_kind  # teacher and student are scored alike (depth's relative: both fitted)
        unified = unified_meter(plan, task, len(space) if space else None)
        meters = [task.reading_meter(n, kind), task.reading_meter(n, kind), unified]
        if teacher_lut is not None:
            restrict(meters[:2], teacher_lut, n)
        # a look-alike of another teacher's label (each teacher's own were refused by the plan)
        # must not stop the report after training: the unified score leaves it out, as it did
        unified_lut = lookup(classes, space, extent, refuse_look_alikes=False) if space is not None else None
        scorers[name] = _Scorer(
            teacher,
            projection(teacher.space, space).to(device) if teacher.space else None,
            teacher_lut.to(device) if teacher_lut is not None else None,
            unified_lut.to(device) if unified_lut is not None else None,
            task.name not in unified_tasks,
            meters,
            Coverage.of(name, set_name, teacher.space, classes, teacher_lut) if teacher_lut is not None else None,
            unified_kind=unified_kind(plan, task) if task.name not in unified_tasks else None,
        )
        if teacher_lut is not None:
            scorers[name].teacher_catch_all = set_catch_all(plan, task, classes, teacher_lut, teacher.space, extent)
        if space is not None and scorers[name].with_unified:
            lut = unified_lut.tolist()
            scorers[name].unified_unscored = unscored_in_space(classes, lut, extent)
            scorers[name].catch_all = set_catch_all(plan, task, classes, unified_lut, space, extent)
            scorers[name].as_background = unknown_as_background(classes, lut, space, extent, plan, task)
        unified_tasks.add(task.name)
    return scorers


@dataclass(frozen=True)
class Unscored:
    """One of an eval set's classes a whole-label-space row cannot score, and the unified classes it
    stands for: several (a group label a relation made of a folder's name) or none."""

    name: str
    covers: tuple[str, ...]

    @property
    def group(self) -> bool:
        """A name standing for several unified classes: a relation the user can undo, unlike a class no
        teacher knows (ADE20K's 'other'), unscored by nature."""
        return len(self.covers) > 1

    def text(self) -> str:
        """The report's ``unified[].unscored`` entry."""
        why = f"stands for {len(self.covers)} unified classes, {', '.join(self.covers)}" if self.group else ""
        return f"'{self.name}' ({why or 'no unified class'})"


@dataclass(frozen=True)
class CatchAll:
    """An eval set's background that holds unified classes the set names nowhere (a set labelled only for
    a partial teacher's classes puts every other object there): on its pixels the whole-label-space row
    counts an answer of any of those classes as the background, so a student right on them is not
    counted wrong, and one painting a named class there still is."""

    names: tuple[str, ...]  # the set's background classes
    values: torch.Tensor  # their values in the set's ground truth
    classes: tuple[str, ...]  # the unified classes their pixels may hold, besides the background
    indices: torch.Tensor  # their unified indices
    background: int  # the unified background's index

    def merged(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``pred`` with its answers of :attr:`classes` on these classes' pixels read as the background."""
        if pred.shape != target.shape:
            return pred
        on = torch.isin(target.to(pred.device), self.values.to(pred.device))
        on &= torch.isin(pred, self.indices.to(pred.device))
        return torch.where(on, torch.full_like(pred, self.background), pred)

    def text(self) -> str:
        """The unified row's ``catch_all`` entry (report.json) and its log line."""
        shown = " and ".join(f"'{n}'" for n in self.names)
        return (
            f"the set's {shown} holds {', '.join(self.classes)} too (the set names none of them): an answer"
            " of one of them there is counted as it"
        )


def background_names(plan: Plan, task: Task, space: LabelSpace) -> set[str]:
    """The names a set's class is a background by: the unified background's and each teacher's ``background``."""
    teachers = {t.space.background for t in plan.teachers.values() if t.task.name == task.name and t.space is not None}
    return {space.background} | teachers


def unknown_as_background(
    classes: list[str], lut: list[int], space: LabelSpace, extent: dict, plan: Plan, task: Task
) -> list[str]:
    """The set's classes no teacher knows ('purple', 'sky') that the whole-label-space row reads as the unified
    background (its lookup's fallback, ``lut``), leaving out the set's own backgrounds (by name)."""
    if space.background is None:
        return []
    known = set(space.names) | set(extent) | background_names(plan, task, space)
    return [
        name
        for name, u in zip(classes, lut)
        if u == space.background_index and name not in known and fold(name) not in CATCH_ALL_NAMES
    ]


def set_catch_all(
    plan: Plan,
    task: Task,
    classes: list[str],
    unified_lut: torch.Tensor,
    space: LabelSpace,
    extent: dict[str, frozenset[str]],
) -> Optional[CatchAll]:
    """The set's catch-all background (:class:`CatchAll`) in ``space`` (the unified one, or a teacher's with its
    lookup), judged from the set alone: its class read as the space's background and named as a background (the
    space's, a teacher's ``background``, or a catch-all name: 'void', 'other'), while classes of the space go
    unnamed by the set; else None. A class no teacher knows ('sky') is no background by name and keeps its
    reading."""
    if space.background is None or not task.exclusive_labels:  # a multi-label target is no class map
        return None
    named = {c for name in classes for c in extent.get(name, frozenset([name]))}
    unnamed = [c for c in space.known() if not set(space.covered(c)) & named]  # a teacher's labels by their classes
    backgrounds = background_names(plan, task, space)
    found = [
        k
        for k, (name, u) in enumerate(zip(classes, unified_lut.tolist()))
        if u == space.background_index and (name in backgrounds or fold(name) in CATCH_ALL_NAMES)
    ]
    if not unnamed or not found:
        return None
    indices = torch.tensor([space.names.index(c) for c in unnamed])
    names = tuple(classes[k] for k in found)
    return CatchAll(names, torch.tensor(found), tuple(unnamed), indices, space.background_index)


def unscored_in_space(classes: list[str], lut: list[int], extent: dict[str, frozenset[str]]) -> list[Unscored]:
    """The set's classes a whole-label-space row cannot score (:data:`IGNORE` in its lookup), each with
    the unified classes it stands for: several (a group label a relation made of a folder's name:
    160 images left out of a row without a word), or none."""
    return [Unscored(name, tuple(sorted(extent.get(name, ())))) for name, index in zip(classes, lut) if index == IGNORE]


def unified_kind(plan: Plan, task) -> Optional[str]:
    """The reading a task's whole-label-space row is scored as (``Task.unified_reading`` of its teachers'), or
    None: the task's own meter."""
    return task.unified_reading([t.output_kind for t in plan.teachers.values() if t.task.name == task.name])


def unified_meter(plan: Plan, task, num_classes: Optional[int]):
    """The meter of a task's whole-label-space row: the one of the reading the task names for its teachers'
    (a student taught by relative depth alone knows no metric scale), else its own."""
    kind = unified_kind(plan, task)
    return task.new_meter(num_classes) if kind is None else task.reading_meter(num_classes, kind)


def unified_reading_line(plan: Plan, task, set_name: str) -> Optional[str]:
    """Where the row is scored as a reading not every teacher of the task has (relative and affine teachers: as
    relative), the rule, said; else None."""
    kind = unified_kind(plan, task)
    readings = sorted({t.output_kind for t in plan.teachers.values() if t.task.name == task.name})
    if kind is None or readings == [kind]:
        return None
    return (
        f"the student's whole-label-space {task.name} row on '{set_name}': scored as {kind} (its teachers read"
        f" {', '.join(readings)})"
    )


def restrict(meters: list, lut: torch.Tensor, num_classes: int) -> None:
    """Scores only the classes an eval set holds, on meters that can (``restrict(classes)``, e.g. mIoU)."""
    present = sorted(set(lut.tolist()) - {IGNORE})
    if len(present) < num_classes:
        for meter in meters:
            if hasattr(meter, "restrict"):
                meter.restrict(present)


@torch.no_grad()
def latency_ms(
    fn: Callable[[torch.Tensor], object], shape: tuple[int, ...], device: torch.device, repeats: int = 5
) -> float:
    """Median wall time in ms per *image* of ``fn`` on random input of ``shape`` (after a warm-up)."""
    x = torch.rand(*shape, device=device)
    with at_chosen_size():  # timed at the size asked, whatever the student learnt at
        fn(x)
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    times.sort()
    return 1000.0 * times[len(times) // 2] / shape[0]


def size_and_speed(plan: Plan, student: nn.Module, device: torch.device, repeats: int = 5) -> dict:
    """Parameters and latency (ms per image at batch 1 and 32) of the student and of all teachers
    together, at ``data.image_size``; the student is left as it came (mode and device)."""
    with scoring(student, device):
        return _size_and_speed(plan, student, device, repeats)


def distinct_runs(teachers: Iterable[Teacher]) -> list[Teacher]:
    """The teachers whose forward passes deployment needs: a network shared by several (two heads read
    through ``output_key``) answers them all in one pass when they are fed the same input, so it is
    timed once, as its parameters are counted once."""
    seen, runs = set(), []
    for t in teachers:
        key = (id(t.model), t.input_spec.view, t.channels, tuple(t.mean), tuple(t.std), t.input_spec.bgr)
        if key not in seen:
            seen.add(key)
            runs.append(t)
    return runs


def _size_and_speed(plan: Plan, student: nn.Module, device: torch.device, repeats: int) -> dict:
    h, w = plan.recipe.data.image_size

    runs = distinct_runs(plan.teachers.values())

    def teachers(x: torch.Tensor) -> None:
        for t in runs:
            t(x)

    out = {}
    for key, fn, params in (
        ("student", student, count_params(student)),
        ("teachers", teachers, plan.teacher_params),
    ):
        out[key] = {
            "params": params,
            "latency_ms": {f"b{b}": round(latency_ms(fn, (b, 3, h, w), device, repeats), 3) for b in (1, 32)},
        }
    spec = getattr(student, "spec", None)  # a student built from a spec (peers are not)
    out["student"] |= spec.report_fields() if isinstance(spec, StudentSpec) else {}
    return out
