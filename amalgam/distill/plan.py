"""From a validated recipe to everything a build needs: tasks, label spaces, teachers, data, student."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from amalgam.config.checks import unused_student_keys
from amalgam.config.ensembles import ensemble_lines
from amalgam.config.label_entries import space_of
from amalgam.config.schema import Recipe, SourceConfig
from amalgam.data import ImageSet, MixedSources, build_image_set, shared_images
from amalgam.data.sources import spread
from amalgam.data.views import BatchViews, ViewSpec, same_view
from amalgam.distill.input_probe import mean_recall, normalisation_line
from amalgam.errors import AmalgamError, RecipeError
from amalgam.evaluation.metrics import ConfusionMatrix
from amalgam.evaluation.per_class import label_order_warning
from amalgam.labels import IGNORE, LabelSpace, apply_lookup, extents, lookup, missing_labels, projection, unify
from amalgam.labels.names import unmarked_catch_all
from amalgam.labels.relations import relation_warnings, unnamed_label_lines
from amalgam.students.build import StudentSpec
from amalgam.students.sizing import (
    AUTO,
    DEFAULT_DECODER_CHANNELS,
    EncoderChoice,
    Rung,
    choose_encoder,
    kept_choice,
)
from amalgam.task import Task, get_task
from amalgam.teachers.inputs import answer_views
from amalgam.teachers.teacher import Teacher, build_teachers, distinct_params


@dataclass
class Plan:
    """The resolved amalgamation.

    Attributes:
        tasks: task name -> plugin, in order of first appearance among the teachers.
        spaces: task name -> unified label space (None for unlabelled tasks).
        teachers: name -> frozen teacher.
        projections: teacher name -> ``[L_teacher, U]`` projection (labelled tasks only).
        sources: the mixed training sources; ``source_ids[teacher]`` are the indices it teaches on.
        eval_sets: eval set name -> labelled image set.
    """

    recipe: Recipe
    tasks: dict[str, Task]
    spaces: dict[str, Optional[LabelSpace]]
    teachers: dict[str, Teacher] = field(default_factory=dict)
    projections: dict[str, Optional[torch.Tensor]] = field(default_factory=dict)
    sources: Optional[MixedSources] = None
    source_ids: dict[str, list[int]] = field(default_factory=dict)
    eval_sets: dict[str, ImageSet] = field(default_factory=dict)
    #: what makes the scores doubtful whatever the training does (a source holding eval images): report.json's too
    data_warnings: list[str] = field(default_factory=list)
    _encoder_choice: Optional[EncoderChoice] = field(default=None, init=False, repr=False)

    @property
    def student_view(self) -> ViewSpec:
        """The student's view: the original stretched to ``data.image_size``."""
        return ViewSpec(tuple(self.recipe.data.image_size), "stretch")

    @property
    def needs_originals(self) -> bool:
        """Some teacher's view differs from the student's: the loaders give the originals too."""
        return any(not same_view(t.input_spec.view, self.student_view) for t in self.teachers.values())

    def extents(self, task: str) -> dict[str, frozenset[str]]:
        """What each label name of ``task``'s teachers stands for (read into eval sets' ground truth)."""
        return extents([t.space for t in self.teachers.values() if t.task.name == task and t.space is not None])

    @property
    def teacher_params(self) -> int:
        """All teachers' parameters together, a network two teachers share counted once (what
        ``student.budget`` is a share of)."""
        return distinct_params(self.teachers.values())

    @property
    def dense_tasks(self) -> list[str]:
        """The tasks whose student output is a map (at the input size in eval mode)."""
        return [name for name, task in self.tasks.items() if task.dense]

    def student_spec(self, branch_at: int | dict[str, int] | None = None) -> StudentSpec:
        """The student's architecture with one head per task over its unified label space.

        Args:
            branch_at: overrides the recipe's (required when it is ``auto``: the search's choice).
        """
        s = self.recipe.student
        branch_at = s.branch_at if branch_at is None else branch_at
        if branch_at == "auto":
            raise AmalgamError("student.branch_at: auto is chosen by the search (amalgam search, or at build)")
        choice = self.encoder_choice()
        rung = choice.rung if choice else Rung(s.encoder, tuple(s.decoder_channels or DEFAULT_DECODER_CHANNELS))
        heads, own, args = self.student_heads(), dict(s.task_decoder_channels), dict(s.encoder_args)
        return StudentSpec(s.type, rung.encoder, branch_at, list(rung.decoder_channels), heads, own, args)

    def student_heads(self) -> dict[str, int]:
        """Task name -> the output channels of the student's head (over the unified label space)."""
        return {name: task.num_outputs(self.spaces[name]) for name, task in self.tasks.items()}

    def encoder_choice(self) -> Optional[EncoderChoice]:
        """``student.encoder: auto`` resolved against ``student.budget``, once (None: the recipe names one).

        Raises:
            RecipeError: when no rung of the ladder fits the budget.
        """
        s = self.recipe.student
        if s.encoder != AUTO:
            return None
        if self._encoder_choice is None:
            size = tuple(self.recipe.data.image_size)
            self._encoder_choice = choose_encoder(s, self.student_heads(), self.teacher_params, size)
        return self._encoder_choice

    def keep_rung(self, encoder: str, decoder_channels: list[int]) -> None:
        """``student.encoder: auto`` takes this rung instead of choosing (a resume keeps its checkpoint's)."""
        size = tuple(self.recipe.data.image_size)
        rung = Rung(encoder, tuple(decoder_channels))
        self._encoder_choice = kept_choice(rung, self.recipe.student, self.student_heads(), self.teacher_params, size)


def unify_tasks(recipe: Recipe) -> tuple[dict[str, Task], dict[str, Optional[LabelSpace]]]:
    """Each task's plugin and unified label space (union of its teachers' labels)."""
    tasks: dict[str, Task] = {}
    members: dict[str, list[LabelSpace]] = {}
    for cfg in recipe.teachers.values():
        task = tasks.setdefault(cfg.task, get_task(cfg.task))
        if task.labelled:
            members.setdefault(cfg.task, []).append(space_of(cfg.labels, cfg.background))
    spaces = {
        name: unify(members[name], task.unified_background) if task.labelled else None for name, task in tasks.items()
    }
    return tasks, spaces


def unmarked_catch_alls(recipe: Recipe, spaces: dict[str, Optional[LabelSpace]]) -> list[str]:
    """A line per labelled teacher whose ``background``-like label is not marked as its catch-all
    while it knows only part of its task's classes (see :func:`unmarked_catch_all`)."""
    lines = []
    for name, cfg in recipe.teachers.items():
        unified = spaces.get(cfg.task)
        if unified is not None and cfg.labels:  # labels_file is read into labels by the recipe check
            line = unmarked_catch_all(name, space_of(cfg.labels, cfg.background), unified.names)
            lines += [line] if line else []
    return lines


def relation_lines(plan: Plan) -> list[str]:
    """:func:`relation_warnings` for the labelled teachers of each task, the classes of their eval sets
    (when scanned) and the task's catch-all counting as named."""
    lines = []
    for name, task in plan.tasks.items():
        teachers = {n: t for n, t in plan.teachers.items() if t.task.name == name and t.space}
        sets = [plan.eval_sets.get(t.eval_name) for t in teachers.values() if t.eval_name]
        named = {task.unified_background, *(c for d in sets if d is not None for c in (d.classes or []))}
        lines += relation_warnings({n: t.space for n, t in teachers.items()}, named - {None})
    return lines


def build_plan(recipe: Recipe, with_data: bool = True, log: Callable[[str], None] = print) -> Plan:
    """Builds the plan: unified label spaces, loaded teachers, checked sources and eval sets.

    Every check that can fail runs here, before any training.
    """
    tasks, spaces = unify_tasks(recipe)
    plan = Plan(recipe, tasks, spaces)
    plan.teachers = build_teachers(recipe)
    for name, teacher in plan.teachers.items():
        if teacher.output_is_a_choice():
            log(f"teacher '{name}': distilling {teacher.output_note()}")
    for name, teacher in plan.teachers.items():
        log(f"teacher '{name}' input: {teacher.input_spec.describe()}")
        if teacher.checkpoint_note:  # a wrapper may hold several state dicts (model and ema)
            log(f"teacher '{name}' checkpoint: {teacher.checkpoint_note}")
        if wrap := teacher.wrap_note():
            log(f"teacher '{name}' wrap: {wrap}")
    if recipe.train.channels_last:  # here, not in training: build and eval must score the same teachers
        for teacher in plan.teachers.values():
            teacher.use_channels_last()
    for name, teacher in plan.teachers.items():
        plan.projections[name] = teacher_projection(name, teacher, spaces[teacher.task.name])
    for line in unused_distill_options(recipe, tasks):
        log(line)
    for line in unmarked_catch_alls(recipe, spaces) + ensemble_lines(recipe) + unused_student_keys(recipe):
        log(line)
    if with_data:
        scan_data(plan, log)
    list(map(log, relation_lines(plan)))  # after the scan: an eval set's class names count as named
    return plan


def scan_data(plan: Plan, log: Callable[[str], None] = print) -> None:
    """Fills the plan's training sources and the eval sets its teachers name, and checks them."""
    recipe = plan.recipe
    size = tuple(recipe.data.image_size)
    originals = plan.needs_originals  # else every view is the student's: nothing more is loaded
    sets = []
    for key, cfg in recipe.data.sources.items():
        log(f"scanning source '{key}' ({cfg.type})")
        sets.append(
            build_image_set(f"data.sources.{key}", cfg, recipe.resolve, size, False, log=log, originals=originals)
        )
    plan.sources = MixedSources(sets, list(recipe.data.sources))
    for name, teacher in plan.teachers.items():
        plan.source_ids[name] = [plan.sources.names.index(s) for s in teacher.source_names]
    for key, cfg in recipe.data.eval.items():
        if any(t.eval_name == key for t in plan.teachers.values()):
            log(f"scanning eval set '{key}' ({cfg.type})")
            # dense ground truth stays at its own resolution: it is scored there, as benchmarks do
            capped = eval_limit(cfg, recipe.train.max_eval_images)
            if capped is not cfg:  # the limit line that follows is train.max_eval_images'
                log(f"data.eval.{key}: train.max_eval_images {capped.limit:,} is its limit here")
            cfg = capped
            scored = frozenset(t.task.target_key for t in plan.teachers.values() if t.eval_name == key)
            plan.eval_sets[key] = build_image_set(
                f"data.eval.{key}", cfg, recipe.resolve, size, True, log=log, originals=originals,
                native_targets=True, targets=scored,
            )  # fmt: skip
    for key, line in overlap_warnings(plan):
        log(f"{key}: warning: {line}")
        plan.data_warnings.append(f"{key}: {line}")
    for teacher in plan.teachers.values():
        if teacher.eval_name:
            check_eval_set(teacher, plan.eval_sets[teacher.eval_name], plan.extents(teacher.task.name), log)
            check_reading_on_eval(plan, teacher, plan.eval_sets[teacher.eval_name], log)
            check_label_order_on_eval(plan, teacher, plan.eval_sets[teacher.eval_name], log)
        elif teacher.task.eval_reading is not None:  # said, so that a check that could not run is not read as passed
            unchecked = "not checked against ground truth (no eval set): taken as declared"
            log(f"teacher '{teacher.name}' reading ({teacher.output_kind}) {unchecked}")
            teacher.notes.append(unchecked)


#: eval images a task's reading check runs a teacher on before training (spread over the set as scored)
READING_CHECK_IMAGES = 16


def teacher_projection(name: str, teacher: Teacher, unified: Optional[LabelSpace]) -> Optional[torch.Tensor]:
    """The teacher's projection onto its task's unified space; a background left covering nothing
    (every class of the unified space, which has none, named by its other labels) is the recipe's
    ``background`` key, not an infinite loss at the first step."""
    if teacher.space is None:
        return None
    try:
        return projection(teacher.space, unified)
    except AmalgamError as exc:
        if teacher.space.background is None or "covers no unified class" not in str(exc):
            raise
        raise RecipeError(
            f"teachers.{name}.background",
            f"'{teacher.space.background}' stands for no class: its other labels name every class the"
            f" {teacher.task.name} teachers know and that task has no catch-all class; drop background"
            " (the label is then a class of its own) or give the other teachers the classes it stands for",
        ) from None


def check_reading_on_eval(plan: Plan, teacher: Teacher, dataset: ImageSet, log: Callable[[str], None] = print) -> None:
    """Checks a teacher's reading against its eval set's ground truth before training, where its task
    has such a check (:attr:`~amalgam.task.Task.eval_reading`, as depth's: a
    disparity read as metres correlates negatively with the truth and would be distilled upside down).

    The plain teacher runs on up to :data:`READING_CHECK_IMAGES` eval images, scored as evaluation
    scores it; the numbers and the rule are said in the log and with the teacher's reading
    (``amalgam inspect``), the check's warnings in the log.

    Raises:
        RecipeError: on ``teachers.<name>.output`` when the task finds the reading wrong.
    """
    check = teacher.task.eval_reading
    if check is None:
        return
    answers, truths = eval_answers(plan, teacher, dataset, READING_CHECK_IMAGES)
    reading = check(teacher.name, teacher.output_kind, answers, truths)
    where = f"against '{teacher.eval_name}' before training"
    rule = f"; {reading.rule}" if reading.rule else ""
    log(f"teacher '{teacher.name}' reading ({teacher.output_kind}) checked {where}: {reading.said}{rule}")
    teacher.notes.append(f"checked {where}: {reading.said}")
    if reading.problem:  # a task names the teacher's eval set as data.eval.<set>
        raise RecipeError(f"teachers.{teacher.name}.output", reading.problem.replace("<set>", teacher.eval_name))
    for line in reading.warnings:
        log(f"warning: {line}")


#: share of the classes seen in the check's images that must each be named mostly as one other class
#: for the label-order warning before training (after training, two such classes are enough: the
#: whole set leaves a competent teacher's confusions no room; 16 images do)
ORDER_SHARE = 0.25
#: ... and at least this many (a weak teacher confuses two classes on 16 images by chance)
ORDER_MIN_CLASSES = 3
#: eval images the label-order check runs a classifier on (one answer per image, not per pixel)
ORDER_CHECK_ITEMS = 160  # five of each of 32 classes (or a spread judging about as many)
#: images a class needs in a classifier's check to be judged (one wrong image is a confusion, not an order)
ORDER_MIN_ITEMS = 2


def check_label_order_on_eval(
    plan: Plan, teacher: Teacher, dataset: ImageSet, log: Callable[[str], None] = print
) -> None:
    """Warns before training when a teacher of one label per pixel or image, on some of its eval images
    (:data:`READING_CHECK_IMAGES` for a dense task; for a classifier :data:`ORDER_CHECK_ITEMS`, a few of
    each class where the set knows its labels), names most of many classes (:data:`ORDER_SHARE` of those
    seen, three at least) as one other class each: its labels, or the set's class names (a
    ``classes.txt`` one line short, label ids read as train ids, folders sorted by name against a model
    trained in another order), are not in the order of its outputs; or when it is blind
    (:func:`blind_line`). Merged with another teacher's labels the student would learn the swap; the
    scores, wrong too, are said only after the whole schedule. What was checked is said with the
    teacher's notes."""
    task, space = teacher.task, teacher.space
    if not (task.labelled and task.exclusive_labels and space is not None and dataset.classes):
        return
    lut = lookup(dataset.classes, space, plan.extents(task.name))
    picks = None if task.dense else per_class_picks(dataset, ORDER_PICKS, ORDER_CHECK_ITEMS)
    answers, truths = eval_answers(
        plan, teacher, dataset, READING_CHECK_IMAGES if task.dense else ORDER_CHECK_ITEMS, picks
    )
    by_set_class = _confusion(answers, truths, len(space), rows=len(dataset.classes))
    truths = [apply_lookup(t, lut) for t in truths]
    matrix = _confusion(answers, truths, len(space))
    judged = _judged(matrix, ORDER_MIN_PIXELS if task.dense else ORDER_MIN_ITEMS)
    where = f"on {len(truths)} images of '{teacher.eval_name}', before training"

    def score() -> float:  # the same images, as the teacher is fed now; NaN for one that collapses there
        again, _ = eval_answers(plan, teacher, dataset, len(truths), picks)
        found = _confusion(again, truths, len(space))
        collapsed = blind_line(teacher.name, list(space.names), found, task.dense) is not None
        return float("nan") if collapsed else mean_recall(found, judged)

    confusion = ConfusionMatrix(len(space))
    confusion.matrix = matrix  # its own thresholds (judged): not the report's, made for a whole eval set
    mostly = [j if c in judged else None for c, j in enumerate(confusion.mostly_predicted_as(skip_common=task.dense))]
    line = label_order_warning(teacher.name, list(space.names), mostly)
    swapped = sum(j is not None for j in mostly)
    out_of_order = bool(line) and swapped >= max(ORDER_MIN_CLASSES, ORDER_SHARE * len(judged))
    # labels out of order make any input look wrong: the mean/std probe is for a teacher named right
    if not out_of_order and (
        fed_wrong := normalisation_line(teacher, score, mean_recall(matrix, judged), len(truths), len(judged))
    ):
        log(f"warning: {fed_wrong} ({where})")
        teacher.notes.append(f"input mean/std doubtful {where}")
    blind = blind_line(teacher.name, list(space.names), matrix, task.dense)
    least, unit = (ORDER_MIN_PIXELS, "pixels") if task.dense else (ORDER_PICKS - 2, "images")
    if hints := unnamed_label_lines(teacher.name, space, dataset.classes, by_set_class, least, unit, where):
        for hint in hints:
            log(f"warning: {hint}")
        lacks = "labels the set does not name answered on its classes the teacher lacks"
        teacher.notes.append(f"{len(hints)} {lacks} {where}")
    if out_of_order:
        log(f"warning: {line} ({where})")
        teacher.notes.append(f"label order doubtful {where}: {swapped} of {len(judged)} classes named as another")
    elif blind:
        log(f"warning: {blind} {where}: check its input (value range, mean/std, channel order: teachers.{teacher.name}"
            ".input) and its checkpoint; a student cannot learn from it what it does not see")  # fmt: skip
        teacher.notes.append(f"near-blind {where}")
    elif len(judged) >= ORDER_MIN_CLASSES:
        teacher.notes.append(f"label order checked {where}: {len(judged)} classes, {swapped} named mostly as another")
    else:  # said, so that a check that could not judge is not read as passed
        teacher.notes.append(f"label order not checked {where}: {len(judged)} classes with enough of them")


#: a classifier's check takes this many images of each class, where its eval set knows their labels
ORDER_PICKS = 5
#: pixels a class needs in a dense teacher's check to be judged (a stray pixel is no class)
ORDER_MIN_PIXELS = 64
#: recall under which a class counts as unseen (the report's near-blind rule, after training)
BLIND_RECALL = 0.1
#: blind on this share of the judged classes (two at least), each with this many entries: pixels, images
BLIND_SHARE = 0.5
BLIND_MIN_CLASSES = 2
BLIND_MIN_PIXELS = 256
BLIND_MIN_ITEMS = ORDER_PICKS  # the check takes this many of each class where the set knows them (at 3, a
#: 40%-accurate classifier read as near-blind on 4 classes one time in five)
#: a classifier naming one class for this share of the images, where the truth holds three or more
COLLAPSED_SHARE = 0.9


def blind_line(teacher: str, names: list[str], matrix: torch.Tensor, dense: bool) -> Optional[str]:
    """The warning's head when a teacher finds almost none (recall < :data:`BLIND_RECALL`) of half or
    more of the classes with enough entries (:data:`BLIND_MIN_PIXELS` pixels, :data:`BLIND_MIN_ITEMS`
    images: a weak but real classifier misses two images of a class by chance), or, a classifier,
    names one class for nearly every image (:data:`COLLAPSED_SHARE`) where the truth holds three or more.
    ``matrix``: truth x prediction counts."""
    truth, predicted = matrix.sum(1), matrix.sum(0)
    if not dense and (truth > 0).sum() >= 3 and predicted.max() >= COLLAPSED_SHARE * truth.sum() > 0:
        named, classes = names[int(predicted.argmax())], int((truth > 0).sum())
        return f"teacher {teacher} names one class, '{named}', for {int(predicted.max())} images of {classes} classes"
    judged = [c for c in range(len(names)) if truth[c] >= (BLIND_MIN_PIXELS if dense else BLIND_MIN_ITEMS)]
    blind = [c for c in judged if matrix[c, c] < BLIND_RECALL * truth[c]]
    if len(blind) < max(BLIND_MIN_CLASSES, BLIND_SHARE * len(judged)):
        return None
    shown = ", ".join(f"'{names[c]}'" for c in blind[:5]) + (f" and {len(blind) - 5} more" if len(blind) > 5 else "")
    seen = f"{len(blind)} of the {len(judged)} classes seen"
    return f"teacher {teacher} finds almost none of {seen} ({shown}: recall < {BLIND_RECALL})"


def _confusion(
    answers: list[torch.Tensor], truths: list[torch.Tensor], classes: int, rows: Optional[int] = None
) -> torch.Tensor:
    """Truth x prediction counts over every scored entry (one bincount per image, not one pass per class);
    ``rows``: truth classes of another space than the predictions' (default: the same ``classes``)."""
    rows = classes if rows is None else rows
    matrix = torch.zeros(rows * classes, dtype=torch.long)
    for answer, truth in zip(answers, truths):
        answer, truth = answer.flatten().long(), truth.flatten().long()
        keep = (truth >= 0) & (truth < rows) & (answer >= 0) & (answer < classes)
        matrix += torch.bincount(truth[keep] * classes + answer[keep], minlength=rows * classes)
    return matrix.view(rows, classes)


def _judged(matrix: torch.Tensor, least: int) -> set[int]:
    """Classes with at least ``least`` scored entries (pixels or images)."""
    return {c for c, n in enumerate(matrix.sum(1).tolist()) if n >= least}


def per_class_picks(dataset: ImageSet, each: int, most: int) -> Optional[list[int]]:
    """Up to ``each`` images of each class, of classes spread over the set's, at most ``most`` in all,
    where the set knows every image's label without reading it (an imagefolder set); else None (a
    spread over the set: sorted by class, that held one or two classes of a large label set)."""
    labels = getattr(dataset, "labels", None)
    if not labels:
        return None
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    classes = sorted(by_class)
    chosen = [classes[k] for k in spread(len(classes), max(1, most // each))]
    return [by_class[c][k] for c in chosen for k in spread(len(by_class[c]), min(each, len(by_class[c])))]


def eval_answers(
    plan: Plan, teacher: Teacher, dataset: ImageSet, count: int, indices: Optional[list[int]] = None
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The plain teacher's predictions (at each target's size, as evaluation scores them) and the
    targets of ``count`` images spread over ``dataset`` (or of ``indices``), one image at a time
    (originals differ in size)."""
    task, first = teacher.task, torch.zeros(1, dtype=torch.long)
    answers, truths = [], []
    for index in spread(len(dataset), count) if indices is None else indices:
        sample = dataset[index]
        truth = torch.as_tensor(sample[task.target_key])
        originals = [sample["original"]] if "original" in sample else None
        views = BatchViews(sample["image"][None], plan.student_view, originals)
        size = tuple(truth.shape[-2:]) if task.dense else None
        out, _ = answer_views(teacher, views, first, size, augmented=False, wrapped=False)
        answers.append(task.predict(out, size)[0])
        truths.append(truth)
    return answers, truths


def eval_limit(cfg: SourceConfig, max_eval_images: Optional[int]) -> SourceConfig:
    """An eval set's block with ``train.max_eval_images`` as its ``limit`` where that is smaller: only
    the images scored are checked, and they are the same even spread ``limit`` keeps (the first N
    of a sorted imagefolder set were its first classes only)."""
    if max_eval_images is None or (cfg.limit is not None and cfg.limit <= max_eval_images):
        return cfg
    return cfg.model_copy(update={"limit": max_eval_images})


def overlap_warnings(plan: Plan) -> list[tuple[str, str]]:
    """One (recipe key, line) per training source holding images of an eval set: the student would be
    distilled on images it is then scored on (a source pointed at an eval set's images/ folder, or
    holding copies of its files)."""
    lines = []
    for name, source in zip(plan.sources.names, plan.sources.sets):
        for eval_name, eval_set in plan.eval_sets.items():
            count, example = shared_images(source, eval_set)
            if count:
                lines.append(
                    (
                        f"data.sources.{name}",
                        f"{count} of its {len(source)} images are also in eval set '{eval_name}' (e.g. {example}):"
                        " the student is distilled on images it is then scored on",
                    )
                )
    return lines


#: recipe keys that hand a labelled task's distill_loss an optional DistillOptions field
DISTILL_OPTION_KEYS = {
    "weights": "domain_weights",
    "after_projection": "temperature_after_projection",
    "class_balance": "class_balance",
    "focal": "focal",
    "pseudo_labels": "pseudo_labels",
}


def unused_distill_options(recipe: Recipe, tasks: dict[str, Task]) -> list[str]:
    """Log lines for recipe settings a labelled task's plugin does not use (its ``distill_options``).

    Only settings moved from their defaults are said: the pixel weights on by default would
    otherwise be said of every classifier (and a recipe passed through ``model_dump`` marks every
    field as set, so "set" cannot be read from pydantic).
    """
    lines = []
    amalgamation = recipe.amalgamation
    for option, key in DISTILL_OPTION_KEYS.items():
        value = getattr(amalgamation, key)
        if not value or value == type(amalgamation).model_fields[key].default:
            continue
        for name, task in tasks.items():
            if task.labelled and option not in task.distill_options:
                lines.append(
                    f"amalgamation.{key}: task '{name}' does not use it (its plugin's distill_options do not"
                    f" name '{option}'): its teachers' terms are computed without it"
                )
    return lines


def check_eval_set(
    teacher: Teacher,
    dataset: ImageSet,
    extent: Optional[dict[str, frozenset[str]]] = None,
    log: Callable[[str], None] = print,
) -> None:
    """The eval set must hold the teacher's kind of ground truth and some of its labels.

    Labels match by name or through the label relations (``extent``). A teacher whose labels are
    only partly in the set is scored on those, and one line says which are absent.
    """
    path = f"teachers.{teacher.name}.eval"
    key = teacher.task.target_key
    if key not in dataset.target_keys:
        raise RecipeError(
            path, f"eval set '{teacher.eval_name}' has no '{key}' ground truth for a {teacher.task.name} teacher"
        )
    if teacher.space is None:
        return
    if not dataset.classes:
        raise RecipeError(
            path,
            f"eval set '{teacher.eval_name}' has no class names to match labels against: give it a classes.txt"
            " beside images/ (one name per line, line i = the class of index i in its label maps) or its"
            " classes_file",
        )
    try:
        absent = absent_labels(teacher.space, dataset.classes, extent)
    except AmalgamError as exc:  # a class named like a label (lookup's look-alike rule): say which set
        raise RecipeError(path, f"eval set '{teacher.eval_name}': {exc}") from None
    known = teacher.space.known()
    if len(absent) == len(known):
        raise RecipeError(
            path,
            f"none of the teacher's {len(known)} labels is in eval set '{teacher.eval_name}' "
            f"(its labels: {shorten(known)}; the set's classes: {shorten(dataset.classes)})",
        )
    if absent:
        log(
            f"teacher '{teacher.name}' is scored on {len(known) - len(absent)} of its {len(known)} labels on "
            f"'{teacher.eval_name}'; absent from the set: {shorten(absent)}"
        )
    unscored, as_background = outside_labels(teacher.space, dataset.classes, extent)
    where = f"teacher '{teacher.name}' on '{teacher.eval_name}'"
    if unscored:
        log(f"{where}: not scored on the set's classes it has no label for: {shorten(unscored)}")
    if as_background:
        log(f"{where}: the set's classes outside its labels count as its background: {shorten(as_background)}")


def outside_labels(
    space: LabelSpace, classes: list[str], extent: Optional[dict[str, frozenset[str]]]
) -> tuple[list[str], list[str]]:
    """An eval set's classes a teacher has no label for, as :func:`~amalgam.labels.lookup` scores
    them: ``(not scored, counted as the teacher's background)``."""
    lut = lookup(classes, space, extent).tolist()
    covered = {c for name in space.known() for c in space.covered(name)}
    unscored = [c for c, i in zip(classes, lut) if i == IGNORE]
    named = {*space.known(), space.background}
    uncovered = [c for c in classes if c not in named and not (extent or {}).get(c, frozenset([c])) & covered]
    return unscored, [c for c in uncovered if c not in unscored]


def absent_labels(space: LabelSpace, classes: list[str], extent: Optional[dict[str, frozenset[str]]]) -> list[str]:
    """The named labels of ``space`` that no class of an eval set maps to."""
    return missing_labels(space, lookup(classes, space, extent))


def shorten(names: list[str], count: int = 8) -> str:
    """``a, b, c and 12 more``: long label lists stay one readable line."""
    shown = ", ".join(names[:count])
    return shown + (f" and {len(names) - count} more" if len(names) > count else "")


def describe_error(exc: Exception) -> str:
    """One line for any failure during preparation."""
    return str(exc) if isinstance(exc, AmalgamError) else f"{type(exc).__name__}: {exc}"


def prepare(recipe: Recipe, with_data: bool = True, log: Callable[[str], None] = print) -> Plan:
    """Deprecated name of :func:`build_plan` ("prepare" also named a teacher's input conversion)."""
    warnings.warn("amalgam.distill.plan.prepare is now build_plan", DeprecationWarning, stacklevel=2)
    return build_plan(recipe, with_data, log)
