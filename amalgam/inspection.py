"""What a recipe amounts to before any training: teachers, label spaces, sources, the student."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from amalgam.config.checks import unused_peers_sections
from amalgam.config.schema import Recipe
from amalgam.distill.cache import TeacherCache
from amalgam.distill.mirror_check import unflipped_sources
from amalgam.distill.objective import check_feature_taps, objective_terms, student_tap_module, task_weighting
from amalgam.distill.plan import Plan, build_plan
from amalgam.distill.tree_search import check_some_tree_fits
from amalgam.errors import AmalgamError
from amalgam.io import gb_text
from amalgam.labels import IGNORE, lookup
from amalgam.labels.taxonomy import label_report
from amalgam.students.budget import latency_if_budgeted, resolve_budget, student_lines
from amalgam.students.build import StudentSpec, build_student, check_student_runs, count_params
from amalgam.students.pretrained import EncoderWeights, match_encoder_weights
from amalgam.students.serialize import init_student
from amalgam.students.tree import STAGES
from amalgam.training.peer_training import build_peers
from amalgam.training.routing import routing_line
from amalgam.training.runtime import device_text, precision_text, resolve_device
from amalgam.training.schedule import distillation_line, schedule_lines, source_repeats, steps_per_epoch


@dataclass
class Inspection:
    """A recipe resolved without training (what ``amalgam inspect`` prints, see :meth:`summary`).

    Attributes:
        recipe: the loaded recipe.
        plan: the plan (teachers loaded, label spaces unified, sources scanned unless skipped);
            None for a peers recipe.
        student_spec: the student's architecture (None for a peers recipe).
        student_params: the student's parameters (peers: all peers together).
        teacher_params: all teachers' parameters together (0 for peers).
        encoder_weights: ``student.encoder_weights`` matched to the student's encoder (None: not set).
        routing: the build log's row-routing line (None: nothing is routed).
        suggestions: ``amalgam inspect --suggest-labels``'s lines (None: not asked for).
    """

    recipe: Recipe
    plan: Optional[Plan]
    student_spec: Optional[StudentSpec]
    student_params: int
    teacher_params: int = 0
    encoder_weights: Optional[EncoderWeights] = None
    routing: Optional[str] = None
    latency_ms: Optional[float] = None  # the student's batch-1 latency, measured where the budget limits it
    #: label relations proposed from the teachers' predictions (``suggest_labels=N``), the lines to read and paste
    suggestions: Optional[list[str]] = None

    def summary(self) -> str:
        """The human-readable description, one fact per line."""
        return "\n".join(self._peer_lines() if self.plan is None else self._lines())

    def _peer_lines(self) -> list[str]:
        r, p = self.recipe, self.recipe.peers
        return [
            f"recipe '{r.name}' -> {r.output_dir()}{output_note(r.output_dir())}",
            f"peers: {p.strategy}, {p.count} x {p.model.source} model ({self.student_params:,} params in all)",
            f"  labels: {p.labels}",
            f"  trained on '{p.source}' with labels, eval {p.eval or '-'}",
            *unused_peers_sections(r),
        ]

    def _lines(self) -> list[str]:
        r, plan, spec = self.recipe, self.plan, self.student_spec
        lines = [f"recipe '{r.name}' -> {r.output_dir()}{output_note(r.output_dir())}", "", "teachers:"]
        lines += teacher_lines(plan)
        lines += ["", "unified label spaces:"]
        lines += [f"  {task}: {listed(s.names) if s else '(no labels)'}" for task, s in plan.spaces.items()]
        lines += ["", "label relations:"]
        lines += label_report({n: (t.task.name, t.space) for n, t in plan.teachers.items() if t.space}, plan.spaces)
        if plan.sources is not None:
            lines += ["", "sources:"] + source_lines(plan) + [f"  {w}" for w in source_repeats(plan)]
        images = len(plan.sources) if plan.sources is not None else None
        lines += ["", distillation_line(r.amalgamation), *schedule_lines(r.train, images, plan.dense_tasks)]
        lines += weighting_lines(plan, images)
        lines += precision_lines(r)
        lines += cache_lines(plan)
        lines += [self.routing] if self.routing else []
        params, teachers = self.student_params, self.teacher_params
        choice = plan.encoder_choice()
        sized = [f"  {choice.describe()}"] if choice else []  # student.encoder: auto says what it chose
        if self.encoder_weights is not None:
            sized.append(f"  encoder weights (student.encoder_weights): {self.encoder_weights.describe()}")
        if r.student.init is not None and r.student.branch_at != "auto":  # checked above: every tensor loads
            sized.append(f"  starts from (student.init): {r.resolve(r.student.init)}, every tensor")
        if r.student.branch_at == "auto":
            return lines + auto_lines(r, teachers, spec.describe_encoder()) + sized
        lines += [
            "",
            f"student: {spec.type}, encoder {spec.describe_encoder()}, heads {spec.heads}",
            *sized,
            f"  {params:,} params = {_share(params, teachers)} of the teachers' {teachers:,}",
        ]
        lines += student_lines(spec, params, teachers, r.student.budget, self.latency_ms)
        return lines


def weighting_lines(plan: Plan, source_images: Optional[int]) -> list[str]:
    """How the distillation terms are weighed (``amalgamation.task_weights``), as the build log says it."""
    train = plan.recipe.train
    if source_images is None and train.samples_per_epoch is None:
        return []  # the epoch is unknown, as for the schedule
    epoch_steps = steps_per_epoch(train, source_images or 0)
    return [task_weighting(plan.recipe.amalgamation.task_weights, plan, objective_terms(plan), epoch_steps).describe()]


def precision_lines(recipe: Recipe) -> list[str]:
    """Where and in what the student would train on this machine (``device``, ``train.precision``), as the build
    log says it."""
    try:
        device = resolve_device(recipe.device)
        return [device_text(recipe.device, device), precision_text(device, recipe.train.precision)]
    except AmalgamError as err:  # a device or dtype this machine lacks: the build refuses it the same way
        return [f"warning: precision: {err} (a build on this machine stops there)"]


def cache_lines(plan: Plan) -> list[str]:
    """What the teacher cache would take on disk, as the build decides it (``train.cache_max_gb``): a
    150-class segmenter's is gigabytes, said before the build, not in its log only."""
    train = plan.recipe.train
    if plan.sources is None:
        return []
    if not train.cache_teachers:
        return ["teacher cache: off (train.cache_teachers: false): teachers run on every batch"]
    need = TeacherCache.estimate_bytes(plan) / 1e9
    features = "" if plan.recipe.amalgamation.features == "none" else ", plus the tapped teacher features"
    cap = f"train.cache_max_gb {train.cache_max_gb:g}"
    if need > train.cache_max_gb:
        return [f"teacher cache: off at build, it would take {gb_text(need)}{features} > {cap}"]
    return [f"teacher cache: up to {gb_text(need)}{features} under the run's folder ({cap})"]


def _share(part: int, whole: int) -> str:
    """``part`` as a percentage of ``whole``; teachers without parameters (e.g. fixed filters) have none."""
    return f"{part / whole:.0%}" if whole else "n/a (teachers have no parameters)"


def auto_lines(recipe: Recipe, teacher_params: int, encoder: str) -> list[str]:
    """The student of ``branch_at: auto``: chosen at build, within the budget (``encoder``: as resolved)."""
    budget = resolve_budget(recipe.student.budget, teacher_params)
    return [
        "",
        f"student: branched, encoder {encoder}, branch_at: auto",
        "  the tree is chosen at build by the affinity search (`amalgam search` runs only that)",
        f"  budget (student.budget): {budget.describe()}",
    ]


def teacher_lines(plan: Plan) -> list[str]:
    """Each teacher: task, model source, size, input, sources, eval set and labels."""
    lines = []
    for name, t in plan.teachers.items():
        cfg = plan.recipe.teachers[name]
        lines.append(
            f"  {name}: {t.task.name}, {cfg.model.source} model, {t.num_params():,} params, "
            f"input {list(t.size)}x{t.channels}ch, sources {t.source_names}, eval {t.eval_name or '-'}"
        )
        lines.append(f"    input: {t.input_line()}")
        lines.append(f"    distils: {t.output_note()}")
        if wrap := t.wrap_note():
            lines.append(f"    wrap: {wrap}")
        if t.checkpoint_note:
            lines.append(f"    checkpoint: {t.checkpoint_note}")
        if t.space:
            bg = f" (background: {t.space.background})" if t.space.background else ""
            lines.append(f"    labels: {listed(t.space.names)}{bg}")
    return lines


def output_note(run_dir: Path) -> str:
    """What a build into ``run_dir`` meets there, as the build would stop on it (a trial: inspect passed a folder
    holding a finished run, and the build stopped at once)."""
    if (run_dir / "report.json").exists():
        return " (it holds a finished run: a build needs --force)"
    if (run_dir / "checkpoint.pt").exists():
        return " (it holds an unfinished run: a build needs --resume or --force)"
    return ""


def source_lines(plan: Plan) -> list[str]:
    """Each training source and eval set: type, size, weight or targets."""
    data = plan.recipe.data
    lines = []
    for s, name in zip(plan.sources.sets, plan.sources.names):
        cfg = data.sources[name]
        lines.append(f"  {name}: {cfg.type}, {len(s):,} images, weight {cfg.weight}")
    for name, ds in plan.eval_sets.items():
        lines.append(f"  eval {name}: {data.eval[name].type}, {len(ds):,} images, targets {sorted(ds.target_keys)}")
        lines += thin_class_lines(plan, name, ds)
    return lines


def thin_class_lines(plan: Plan, name: str, dataset) -> list[str]:
    """Per teacher scored on the eval set by images (a task's ``per_class_floor`` in images), its labels the set
    holds fewer images of than the floor, read off the set's labels through the teacher's label lookup before
    any image: the build says them only after training, where their scores are noise."""
    labels = dataset.image_labels()
    if not labels or not dataset.classes:
        return []
    counts, lines = Counter(labels), []
    for teacher in (t for t in plan.teachers.values() if t.eval_name == name and t.space is not None):
        unit, floor = teacher.task.per_class_floor
        if unit != "images":
            continue
        try:  # the set's classes in the teacher's labels (a coarse label sums its classes)
            lut = lookup(dataset.classes, teacher.space, plan.extents(teacher.task.name)).tolist()
        except AmalgamError:  # a set the teacher cannot be scored on: said by the build's own check
            continue
        held = Counter()
        for c, n in counts.items():
            if c < len(lut) and lut[c] != IGNORE:
                held[lut[c]] += n
        thin = [(teacher.space.names[k], n) for k, n in sorted(held.items()) if n < floor]
        if thin:
            shown = ", ".join(f"{c} ({n})" for c, n in thin[:8]) + (
                f" and {len(thin) - 8} more" if len(thin) > 8 else ""
            )
            lines.append(
                f"    teacher {teacher.name}: {len(thin)} of its {len(held)} labels here hold under {floor} images"
                f" each: {shown}; their per-class scores will be noise (the report says so, not judging them): a"
                " larger eval set or limit scores them"
            )
    return lines


def inspect_recipe(recipe: Recipe, with_data: bool = True, log: Callable[[str], None] = print) -> Inspection:
    """Resolves a loaded recipe: loads the teachers, scans the data unless told not to, sizes the student."""
    if recipe.peers is not None:
        return Inspection(recipe, None, None, count_params(build_peers(recipe.peers, recipe.base_dir)))
    plan = build_plan(recipe, with_data=with_data, log=log)
    if with_data:  # what a build would decide, said (evaluation never decides it)
        plan.unflipped = unflipped_sources(plan, log)
    budget = recipe.student.budget
    if recipe.student.branch_at == "auto" and (budget.params is not None or budget.latency_ms is not None):
        check_some_tree_fits(plan, timed=False)  # a budget no tree meets stops here, as the search would
    spec = plan.student_spec(STAGES if recipe.student.branch_at == "auto" else None)  # auto: the warm-up's
    teachers = plan.teacher_params
    path = recipe.resolve(recipe.student.encoder_weights)
    weights = match_encoder_weights(spec.encoder, path, spec.encoder_args) if path else None  # a bad file fails here
    student = build_student(spec)
    if recipe.student.init is not None and recipe.student.branch_at != "auto":  # auto's tree is not known yet
        init_student(student, plan.spaces, recipe.resolve(recipe.student.init))  # refused here as by the build
    check_student_runs(student, tuple(recipe.data.image_size), recipe.train.batch_size)  # a size it cannot take stops
    check_feature_taps(plan, student)  # a tap on a module that never runs stops here, not at the build
    routing = routing_line(plan, student, student_tap_module(plan, spec))
    latency = latency_if_budgeted(recipe.student.budget, student, tuple(recipe.data.image_size))
    return Inspection(recipe, plan, spec, count_params(student), teachers, weights, routing, latency)


#: names of a label space inspect lists; the rest are counted (a 1000-class teacher's line was 13.5 kB)
LISTED_NAMES = 40


def listed(names) -> str:
    """A label space's names as a list, the first :data:`LISTED_NAMES` of a longer one and a count."""
    names = list(names)
    if len(names) <= LISTED_NAMES:
        return str(names)
    return f"{names[:LISTED_NAMES]} and {len(names) - LISTED_NAMES} more"
