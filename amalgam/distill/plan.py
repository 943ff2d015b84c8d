"""From a validated recipe to everything a build needs: tasks, label spaces, teachers, data, student."""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Optional, Sequence

import torch

from amalgam.config.checks import unused_settings, unused_student_keys
from amalgam.config.ensembles import ensemble_lines
from amalgam.config.label_entries import space_of
from amalgam.config.schema import AMALGAM_TEACHER_KEYS, Recipe
from amalgam.data import ImageSet, MixedSources, build_image_set, shared_images
from amalgam.data.sources import eval_limit
from amalgam.data.views import ViewSpec, same_view
from amalgam.distill.eval_checks import (  # noqa: F401 - the unused ones: importable from here before the split
    ReadingStop,
    absent_labels,
    blind_line,
    check_eval_set,
    check_label_order_on_eval,
    check_reading_on_eval,
    check_without_truth,
    eval_answers,
    outside_labels,
    per_class_picks,
    said_before_training,
    shorten,
)
from amalgam.distill.mirror_check import check_flip_wraps
from amalgam.errors import AmalgamError, RecipeError
from amalgam.labels import LabelSpace, extents, projection, unify
from amalgam.labels.names import ignore_like_label, unmarked_catch_all
from amalgam.labels.relations import relation_warnings
from amalgam.labels.taxonomy import look_alikes_by_task
from amalgam.plugin_contract import declares_direction, takes_old_form
from amalgam.students.build import StudentSpec
from amalgam.students.sizing import (
    AUTO,
    DEFAULT_DECODER_CHANNELS,
    EncoderChoice,
    Rung,
    choose_encoder,
    hypercolumn_heads,
    kept_choice,
)
from amalgam.task import TASKS, Task, get_task
from amalgam.teachers.factories import import_factory
from amalgam.teachers.model_sources import runs_random
from amalgam.teachers.teacher import Teacher, build_teachers, distinct_params

#: importable from here, as before they moved beside TeacherConfig
TEACHER_KEYS = AMALGAM_TEACHER_KEYS


def _named_by(cfg, key: str, recipe: Recipe) -> bool:
    """Whether a python factory names ``key`` among its own parameters (a model with an ``output`` argument of its
    own): then it is the model's, not amalgam's slip; one taking it through ``**kwargs`` only is said."""
    if cfg.model.source != "python":
        return False
    try:
        factory = import_factory(cfg.model.kwargs().get("factory"), recipe.base_dir)
        params = inspect.signature(factory).parameters
    except (AmalgamError, TypeError, ValueError):  # no signature to read: said, as for any other source
        return False
    return key in params and params[key].kind is not inspect.Parameter.VAR_KEYWORD


def _said(value: object) -> str:
    return "left out" if value is None or value == [] else f"'{value}'"


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
    #: what the checks of each teacher against its eval set warned of before training: report.json's too
    teacher_warnings: list[str] = field(default_factory=list)
    #: training sources the flip (``train.augment``) leaves alone, each with why: decided for training and
    #: ``inspect`` (``mirror_check.py``), empty for evaluation
    unflipped: dict[str, str] = field(default_factory=dict)
    #: what the mirror check found of each (teacher, source id), made once (``mirror_check.finding_of``)
    mirror_seen: dict = field(default_factory=dict)
    _encoder_choice: Optional[EncoderChoice] = field(default=None, init=False, repr=False)

    @property
    def student_view(self) -> ViewSpec:
        """The student's view: the original stretched to ``data.image_size``."""
        return ViewSpec(tuple(self.recipe.data.image_size), "stretch")

    @property
    def needs_originals(self) -> bool:
        """Some teacher's view differs from the student's: the loaders give the originals too."""
        return any(not same_view(t.input_spec.view, self.student_view) for t in self.teachers.values())

    @property
    def least_side(self) -> int:
        """The short side training sources' JPEGs are decoded at least at: twice the largest side any view
        (the student's, a teacher's, before its centre crop) is made at, so each view is still a shrink."""
        views = [self.student_view] + [t.input_spec.view for t in self.teachers.values()]
        return 2 * max(math.ceil(max(v.size) / v.crop) for v in views)

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
        spec = StudentSpec(s.type, rung.encoder, branch_at, list(rung.decoder_channels), heads, own, args)
        spec.hypercolumn = self.hypercolumn_tasks()
        return spec

    def hypercolumn_tasks(self) -> list[str]:
        """``student.hypercolumn`` as the dense tasks it names (true: every dense task of the recipe).

        Raises:
            RecipeError: for a name that is no dense task of the recipe.
        """
        given = self.recipe.student.hypercolumn
        if stray := [t for t in given if t not in self.dense_tasks] if isinstance(given, list) else []:
            dense = ", ".join(self.dense_tasks) or "none"
            raise RecipeError("student.hypercolumn", f"{', '.join(stray)}: not a dense task of the recipe ({dense})")
        return hypercolumn_heads(self.recipe.student, self.student_heads())

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
            space = space_of(cfg.labels, cfg.background)
            found = (unmarked_catch_all(name, space, unified.names), ignore_like_label(name, space))
            lines += [line for line in found if line]
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


def look_alike_lines(plan: Plan) -> list[str]:
    """Each task's pairs of unified classes whose names look alike (:func:`near_duplicates`): a trial's build
    split ``T-shirt/top`` and ``tshirt`` into two classes, said by ``inspect`` only."""
    return look_alikes_by_task({n: (t.task.name, t.space) for n, t in plan.teachers.items() if t.space}, plan.spaces)


def say_teachers(teachers: dict[str, Teacher], log: Callable[[str], None]) -> None:
    """Logs what was decided for each teacher: the output distilled (where it was a choice), its input,
    checkpoint and wrap."""
    for name, teacher in teachers.items():
        if teacher.output_is_a_choice():
            log(f"teacher '{name}': distilling {teacher.output_note()}")
    for name, teacher in teachers.items():
        log(f"teacher '{name}' input: {teacher.input_line()}")
        if teacher.checkpoint_note:  # a wrapper may hold several state dicts (model and ema)
            log(f"teacher '{name}' checkpoint: {teacher.checkpoint_note}")
        if wrap := teacher.wrap_note():
            log(f"teacher '{name}' wrap: {wrap}")


def build_plan(recipe: Recipe, with_data: bool = True, log: Callable[[str], None] = print) -> Plan:
    """Builds the plan: unified label spaces, loaded teachers, checked sources and eval sets.

    Every check that can fail runs here, before any training.
    """
    tasks, spaces = unify_tasks(recipe)
    for line in TASKS.broken().values():  # a recipe using one stops at its check; the others run
        log(f"warning: {line}: its task cannot be used until that is mended (this recipe does not use it)")
    plan = Plan(recipe, tasks, spaces)
    plan.teachers = build_teachers(recipe)
    say_teachers(plan.teachers, log)
    for name, cfg in recipe.teachers.items():  # a teacher's key written inside model: went to the factory
        if misplaced := [k for k in cfg.model.kwargs() if k in AMALGAM_TEACHER_KEYS and not _named_by(cfg, k, recipe)]:
            key = misplaced[0]
            said_before_training(
                plan,
                log,
                f"teachers.{name}.model.{key} is passed to the model's constructor; amalgam reads teachers.{name}.{key}"
                f" (here {_said(getattr(cfg, key))}): if you meant amalgam's, write it beside model:, not inside it",
            )
    for name, teacher in plan.teachers.items():  # a checkpoint left out of the recipe: nothing to distil
        if drawn := runs_random(teacher.checkpoint_note):
            part = drawn == "some"  # a fresh head on a pretrained body, say
            said_before_training(
                plan,
                log,
                f"teacher {name} runs with {'some ' if part else ''}random weights (no checkpoint;"
                f" {teacher.checkpoint_note}): {'those teach noise unless unused' if part else 'it teaches noise'}."
                f" Give teachers.{name}.checkpoint, or load the weights in its model",
            )
    if recipe.train.channels_last:  # here, not in training: build and eval must score the same teachers
        for teacher in plan.teachers.values():
            teacher.use_channels_last()
    for name, teacher in plan.teachers.items():
        plan.projections[name] = teacher_projection(name, teacher, spaces[teacher.task.name])
    say_task_lines(plan, log)
    unused = unused_student_keys(recipe) + unused_settings(recipe)
    for line in unmarked_catch_alls(recipe, spaces) + ensemble_lines(recipe) + unused:
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
    least_side = plan.least_side
    sets = []
    for key, cfg in recipe.data.sources.items():
        log(f"scanning source '{key}' ({cfg.type})")
        sets.append(
            build_image_set(
                f"data.sources.{key}",
                cfg,
                recipe.resolve,
                size,
                False,
                log=log,
                originals=originals,
                least_side=least_side,
            )  # fmt: skip
        )
    plan.sources = MixedSources(sets, list(recipe.data.sources))
    for name, teacher in plan.teachers.items():
        plan.source_ids[name] = [plan.sources.names.index(s) for s in teacher.source_names]
    for key, cfg in recipe.data.eval.items():
        if not any(t.eval_name == key for t in plan.teachers.values()):  # a set is scored for its teachers
            unscored_set(plan, key, log)
            continue
        log(f"scanning eval set '{key}' ({cfg.type})")
        # dense ground truth stays at its own resolution: it is scored there, as benchmarks do
        capped = eval_limit(cfg, recipe.train.max_eval_images)
        if capped is not cfg:  # the limit line that follows is train.max_eval_images'
            log(f"data.eval.{key}: train.max_eval_images {capped.limit:,} is its limit here")
        cfg = capped
        scored = frozenset(t.task.target_key for t in plan.teachers.values() if t.eval_name == key)
        plan.eval_sets[key] = build_image_set(
            f"data.eval.{key}", cfg, recipe.resolve, size, True, log=partial(_kept, plan, log), originals=originals,
            native_targets=True, targets=scored,
        )  # fmt: skip
    for key, line in overlap_warnings(plan):
        log(f"{key}: warning: {line}")
        plan.data_warnings.append(f"{key}: {line}")
    check_teachers(plan, log)


def one_meaning(
    spaces: dict[str, LabelSpace], eval_name: str, classes: Optional[list[str]], unified: Sequence[str] = ()
) -> None:
    """Refuses an eval set class named as a label that teachers relate to different classes: which one the set
    means decides how every teacher's row scores it (a trial's 'crane', the bird to one teacher and the machine to
    another, scored each teacher by its own reading and the whole-label-space row by the first teacher's). A
    unified class's own name (``unified``) means that class: Cityscapes' 'person' beside COCO's
    ``{person: [person, rider]}`` is one.

    Raises:
        RecipeError: on ``data.eval.<set>``, naming each teacher's reading.
    """
    for cls in classes or []:
        if cls in unified:
            continue
        seen = {n: s.covered(cls) for n, s in spaces.items() if cls in s.known()}
        if len(set(seen.values())) > 1:
            shown = "; ".join(f"teacher {n}'s stands for {', '.join(c)}" for n, c in seen.items())
            raise RecipeError(
                f"data.eval.{eval_name}",
                f"its class '{cls}' is a label of several teachers that mean different classes by it ({shown}):"
                " which one the set means is not guessed: name the set's classes in a classes_file (the class it"
                " means), or rename one teacher's label",
            )


def check_teachers(plan: Plan, log: Callable[[str], None]) -> None:
    """Each teacher against its eval set (its labels, reading and label order), or said unchecked; then the label
    orders of teachers that share labels where an eval set cannot judge them."""
    misread: dict[str, ReadingStop] = {}  # teacher -> its reading's stop, raised once every teacher is checked
    confirmed: set[str] = set()  # teachers whose eval set confirmed their reading: the peers of those without one
    for task, eval_name in {(t.task.name, t.eval_name) for t in plan.teachers.values() if t.eval_name}:
        same_task = {n: t.space for n, t in plan.teachers.items() if t.task.name == task and t.space}
        unified = plan.spaces.get(task)
        one_meaning(same_task, eval_name, plan.eval_sets[eval_name].classes, unified.known() if unified else ())
    for teacher in plan.teachers.values():
        if teacher.eval_name:
            check_eval_set(
                teacher, plan.eval_sets[teacher.eval_name], plan.extents(teacher.task.name), log,
                warn=partial(said_before_training, plan, log),
            )  # fmt: skip
            try:
                if check_reading_on_eval(plan, teacher, plan.eval_sets[teacher.eval_name], log):
                    confirmed.add(teacher.name)
            except ReadingStop as exc:
                misread[teacher.name] = exc
                continue
            check_label_order_on_eval(plan, teacher, plan.eval_sets[teacher.eval_name], log)
        elif teacher.task.eval_reading is not None:  # said, so that a check that could not run is not read as passed
            cfg = plan.recipe.teachers.get(teacher.name)
            declared = cfg is not None and "output" in cfg.model_fields_set
            unchecked = "not checked against ground truth (no eval set): " + (
                "taken as declared"
                if declared
                else f"taken as {teacher.output_kind}, the default, not declared"
                f" (set teachers.{teacher.name}.output, or give it an eval set: a reading in another form may"
                " look plausible)"
            )
            log(f"teacher '{teacher.name}' reading ({teacher.output_kind}) {unchecked}")
            teacher.notes.append(unchecked)
    if misread:
        raise misread_error(plan, misread)
    check_without_truth(plan, confirmed, log)  # once every reading an eval set judges has passed: peers known
    check_flip_wraps(plan)  # a flip wrap on left/right labels: refused whatever the augmentation does
    from amalgam.labels.suggest import order_lines_before_training  # it reads the plan: imported when used

    for line in order_lines_before_training(plan, log):  # teachers sharing labels where an eval set cannot judge
        said_before_training(plan, log, line)


def _kept(plan: Plan, log: Callable[[str], None], line: str) -> None:
    """Logs a line of an eval set's scan, and keeps its warnings for report.json (``plan.data_warnings``): maps
    holding values beyond the classes, or smeared by a lossy save, make every score on the set doubtful, and a
    trial found them in the log only."""
    log(line)
    if ": warning: " in line:
        plan.data_warnings.append(line.replace(": warning: ", ": ", 1))


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


def misread_error(plan: Plan, misread: dict[str, ReadingStop]) -> RecipeError:
    """The stop for teachers whose reading failed against their eval sets: where two or more of them fail on
    one set, the set is named first (every depth teacher 3.9x off is a depth_scale read wrong, which the first
    teacher's own stop blamed on that teacher); else the first teacher's own stop."""
    by_set: dict[str, list[str]] = {}
    for name in misread:
        by_set.setdefault(plan.teachers[name].eval_name, []).append(name)
    shared = next(((key, names) for key, names in by_set.items() if len(names) > 1), None)
    if shared is None:
        return next(iter(misread.values()))
    key, names = shared
    each = "; ".join(f"{n}: {misread[n].said}" for n in names)
    return RecipeError(
        f"data.eval.{key}",
        f"{len(names)} teachers' readings disagree with its ground truth ({each}): its maps are likely read wrong"
        f" (depth_scale, depth_reading, classes); if not, each teacher's own fix: {misread[names[0]]}",
    )


def unscored_set(plan: Plan, key: str, log: Callable[[str], None]) -> None:
    """Says (log and report.json) an eval set no teacher's ``eval`` names: it is never read, and a user
    who added it to score the student over all its classes got no row and no word (a trial)."""
    line = (
        "no teacher's eval names it: it is not scored (name it in teachers.<name>.eval of a teacher whose"
        " labels it holds; the student's whole-label-space row is scored on every set a teacher names)"
    )
    log(f"data.eval.{key}: warning: {line}")
    plan.data_warnings.append(f"data.eval.{key}: {line}")


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


def say_task_lines(plan: Plan, log: Callable[[str], None]) -> None:
    """Logs what the recipe's task plugins leave unused or undeclared."""
    for line in unused_distill_options(plan.recipe, plan.tasks) + old_form_lines(plan.tasks):
        log(line)
    for line in undeclared_direction_lines(plan.tasks):
        said_before_training(plan, log, line)


def old_form_lines(tasks: dict[str, Task]) -> list[str]:
    """Warnings for plugins whose ``distill_loss`` has the 0.1 form: the DeprecationWarning of each call is
    attributed to amalgam's own module, where Python's default filters hide it from a command line."""
    return [
        f"warning: task plugin '{name}' ({TASKS.origin(name)}): distill_loss(student, teacher, projection,"
        " temperature) is the deprecated 0.1 form: write distill_loss(self, student, teacher, options)"
        " (docs/plugins.md)"
        for name, task in tasks.items()
        if takes_old_form(type(task))
    ]


def undeclared_direction_lines(tasks: dict[str, Task]) -> list[str]:
    """Lines for plugins that leave ``higher_is_better`` to ``Task``'s default: an error rate read
    as higher-is-better turned a student 2.4x worse into 2.4x better in the report (a trial)."""
    return [
        f"task plugin '{name}' ({TASKS.origin(name)}) does not declare higher_is_better: its metric"
        f" '{task.metric}' is read as higher is better (Task's default); declare it in the class"
        " (False for an error or a distance)"
        for name, task in tasks.items()
        if not declares_direction(task)
    ]


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
            elif task.labelled and option == "weights" and not task.exclusive_labels:
                lines.append(
                    f"amalgamation.{key}: not for task '{name}': the weights are the student's softmax over a"
                    " teacher's labels, and its labels are not exclusive (exclusive_labels is False): its"
                    " teachers' terms are computed without them"
                )
    return lines


def describe_error(exc: Exception) -> str:
    """One line for any failure during preparation."""
    return str(exc) if isinstance(exc, AmalgamError) else f"{type(exc).__name__}: {exc}"


def prepare(recipe: Recipe, with_data: bool = True, log: Callable[[str], None] = print) -> Plan:
    """Deprecated name of :func:`build_plan` ("prepare" also named a teacher's input conversion)."""
    warnings.warn("amalgam.distill.plan.prepare is now build_plan", DeprecationWarning, stacklevel=2)
    return build_plan(recipe, with_data, log)
