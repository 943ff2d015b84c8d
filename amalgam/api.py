"""The Python API: what ``amalgam inspect | build | search | eval | report`` do, as functions.

The CLI (:mod:`amalgam.cli`) is argparse over these functions, and ``tools/`` call them too::

    import amalgam

    run = amalgam.build("recipes/quickstart.yaml", overrides={"train.epochs": 1}, output="runs/q1")
    print(run.summary())                                  # the report as Markdown tables
    student, spaces = amalgam.load_student(run.paths["student"])

**Overrides** are given as one ``overrides`` argument, in either of two forms:

* a mapping of dotted key paths to Python values, ``{"train.epochs": 1, "student.init": path}``:
  the value is set as it is (a ``Path`` is set as its string);
* a sequence of ``"key.path=value"`` strings, exactly the CLI's ``--set`` (the value is YAML).

A mapping is recorded in the run's ``run.json`` as the equivalent ``--set`` strings, so that
``amalgam report RUN_DIR`` can load the same recipe again.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import yaml
from torch import nn

from amalgam.config.load import UniqueKeyDumper
from amalgam.config.recipe import (
    Recipe,
    apply_override,
    merge_recipes,
    parse_recipe,
    read_recipe_file,
    recipe_changes,
)
from amalgam.config.recipe import load_recipe as _read_recipe
from amalgam.config.schema import expand_path
from amalgam.data.views import RESIZE_KIND, RESIZE_VERSION
from amalgam.distill.plan import build_plan
from amalgam.distill.tree_search import SearchResult, search_tree, with_budget
from amalgam.errors import AmalgamError, RecipeError, error_line
from amalgam.evaluation.evaluate import evaluate as score
from amalgam.evaluation.evaluate import size_and_speed
from amalgam.evaluation.export import export as export_student
from amalgam.evaluation.report import build_report, teacher_readings
from amalgam.evaluation.tree_report import budget_section, tree_section
from amalgam.evaluation.visual import render
from amalgam.inspection import Inspection, inspect_recipe
from amalgam.io import check_writable
from amalgam.labels import LabelSpace
from amalgam.pipeline import Run, run_build
from amalgam.students.budget import latency_if_budgeted
from amalgam.students.build import has_branches
from amalgam.students.serialize import load_student as _load_student
from amalgam.students.serialize import peers_note, student_record
from amalgam.teachers.fingerprint import fingerprint_changes
from amalgam.training.engine import resolve_device
from amalgam.training.progress import Console
from amalgam.training.runlock import RESUME_FIX, unfinished
from amalgam.training.runtime import keeps_callers_state

#: wrappers whose student, with its ``spec``, ``label_spaces`` and ``image_size``, is their ``.module``
PARALLEL = (nn.DataParallel, nn.parallel.DistributedDataParallel)
#: a recipe file (``str`` or path), an already loaded :class:`~amalgam.config.recipe.Recipe`, or a mapping
#: as the YAML file would read (its relative paths resolve against the working directory)
RecipeLike = Union[str, "os.PathLike[str]", Recipe, Mapping[str, Any]]
#: ``{"key.path": value}`` or ``["key.path=value", ...]`` (see the module docstring)
Overrides = Union[Mapping[str, Any], Sequence[str], None]


def override_strings(overrides: Overrides) -> list[str]:
    """Overrides as ``--set`` strings (``key.path=value`` with the value in YAML).

    Raises:
        AmalgamError: for a single string (it would be read as a list of characters).
    """
    if overrides is None:
        return []
    if isinstance(overrides, str):
        raise AmalgamError(f"overrides: expected a mapping or a list of 'key.path=value' strings, got {overrides!r}")
    if isinstance(overrides, Mapping):
        return [f"{key}={_yaml_value(value, key)}" for key, value in overrides.items()]
    return list(overrides)


def _yaml_value(value: Any, key: str = "value") -> str:
    """One-line YAML that reads back as ``value`` (PyYAML writes floats so that they do).

    Raises:
        AmalgamError: naming ``key``, for a value YAML cannot write (an object, a tensor).
    """
    try:
        text = yaml.dump(_plain(value), Dumper=UniqueKeyDumper, default_flow_style=True, width=float("inf"))
    except yaml.YAMLError:
        raise AmalgamError(
            f"overrides: {key}: cannot set a {type(value).__name__} ({value!r}); give numbers, strings,"
            " booleans, None, paths, or lists and mappings of them"
        ) from None
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays (what ``np.logspace`` sweeps give) as Python numbers
    and lists, and paths as strings, inside lists and mappings too: YAML writes only plain types."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()  # .item() for a scalar, nested lists for an array
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def load_recipe(recipe: RecipeLike, overrides: Overrides = None, output: Union[str, Path, None] = None) -> Recipe:
    """Reads and validates a recipe, with overrides applied.

    Args:
        recipe: a YAML file, a loaded recipe (overrides then apply to a copy of it), or a mapping as
            the file would read (relative paths resolve against the working directory).
        overrides: see the module docstring.
        output: the run folder, replacing the recipe's ``output`` (relative to the working
            directory, like the CLI's ``--output``).

    Raises:
        RecipeError: naming the first offending key path.
    """
    sets = override_strings(overrides)
    if isinstance(recipe, Mapping):  # written in Python: no file, so paths are the working directory's
        loaded = parse_recipe(_overridden(_with_base(_plain(recipe)), sets), base_dir=Path.cwd())
    elif isinstance(recipe, Recipe):
        loaded = recipe
        if sets:  # only the keys it was given: a default stays unsaid (a depth_scale given is warned of)
            raw = _overridden(recipe.model_dump(mode="json", exclude_unset=True), sets)
            loaded = parse_recipe(raw, base_dir=recipe.base_dir)
    else:
        loaded = _read_recipe(recipe, sets)
    if output is not None:
        loaded = loaded.model_copy(update={"output": Path(output).resolve()})
    return loaded


@keeps_callers_state
def inspect(
    recipe: RecipeLike,
    overrides: Overrides = None,
    *,
    with_data: bool = True,
    quiet: bool = False,
    suggest_labels: Optional[int] = None,
) -> Inspection:
    """Loads the teachers, unifies the label spaces, scans the sources and sizes the student; trains nothing.

    Args:
        recipe: a YAML file or a loaded recipe.
        overrides: see the module docstring.
        with_data: scan the image sources and eval sets (slow for big folders).
        quiet: print no progress lines.
        suggest_labels: also propose label relations from the teachers' predictions on this many source
            images (``amalgam inspect --suggest-labels N``); the lines are ``.suggestions``.

    Returns:
        The plan, the student's spec and the parameter counts; ``.summary()`` is what ``amalgam inspect`` prints.
    """
    if suggest_labels is not None and not with_data:
        raise AmalgamError("inspect: --suggest-labels runs the teachers on the sources; drop --no-data")
    log = Console(quiet)
    found = inspect_recipe(load_recipe(recipe, overrides), with_data=with_data, log=log)
    if suggest_labels is not None:
        from amalgam.labels.suggest import suggestion_lines, survey

        found.suggestions = suggestion_lines(found.plan, survey(found.plan, suggest_labels, log))
    return found


@keeps_callers_state
def build(
    recipe: RecipeLike,
    overrides: Overrides = None,
    *,
    output: Union[str, Path, None] = None,
    force: bool = False,
    resume: bool = False,
    quiet: bool = False,
) -> Run:
    """Trains the student, saves it, evaluates it per task beside each teacher and writes the report.

    A peers recipe trains and scores its peers instead. Under ``torchrun`` every process calls
    this; rank 0 alone writes the run.

    Args:
        recipe: a YAML file or a loaded recipe.
        overrides: see the module docstring.
        output: the run folder (default: the recipe's ``output``, else ``runs/<name>`` beside it).
        force: overwrite a finished or unfinished run (without it, a folder with a ``report.json`` or
            a ``checkpoint.pt`` is an error; ``resume`` continues the unfinished one).
        resume: continue a killed run from its last finished epoch.
        quiet: print no progress lines.

    Raises:
        AmalgamError: for a finished run without ``force``, and for any input the checks refuse,
            before the run folder is created.
    """
    loaded = load_recipe(recipe, overrides, output)
    record = _run_record(recipe, overrides, loaded)
    return run_build(loaded, record, force=force, resume=resume, quiet=quiet)


def _with_base(raw: dict) -> dict:
    """A mapping recipe laid over the recipe file its ``base`` names (relative to the working directory)."""
    if "base" not in raw:
        return raw
    raw = dict(raw)
    base = raw.pop("base")
    if not isinstance(base, (str, Path)):
        raise RecipeError("base", f"expected the path of a recipe file, got {base!r}")
    parent = read_recipe_file(expand_path(base).resolve())
    if not isinstance(parent, dict):
        raise RecipeError("base", f"{base} is not a recipe mapping")
    return merge_recipes(parent, raw)


def _overridden(raw: dict, sets: list[str]) -> dict:
    for assignment in sets:
        apply_override(raw, assignment)
    return raw


def _run_record(recipe: RecipeLike, overrides: Overrides, loaded: Recipe) -> dict:
    """``run.json``: how ``amalgam report`` loads the run's recipe again (the file and its overrides)."""
    if isinstance(recipe, (Recipe, Mapping)):  # no file: the recipe itself
        dump = loaded.model_dump(mode="json", exclude_unset=True)  # read again, defaults stay unsaid
        return {"recipe": None, "set": [], "dump": dump, "base_dir": str(loaded.base_dir)}
    return {"recipe": str(Path(recipe).resolve()), "set": override_strings(overrides)}


@keeps_callers_state
def evaluate(
    recipe: RecipeLike,
    student: Union[str, "os.PathLike[str]", nn.Module],
    overrides: Overrides = None,
    *,
    quiet: bool = False,
) -> dict:
    """Scores a saved student beside the recipe's teachers on their eval sets.

    The student is fed its eval images at the size it was trained at (``student.pt``'s recipe, or
    the ``image_size`` attribute :func:`load_student` sets): a recipe whose ``data.image_size``
    differs is said in one line, and the size the student was trained at is used. Its outputs are
    read by class name in its own label spaces (the file's, or the ``label_spaces`` attribute).
    A module without ``label_spaces`` is read in the recipe's label order, at the recipe's size,
    and the log says so. A module is left as it came (training mode and device).

    Args:
        recipe: a YAML file or a loaded recipe (its teachers and eval sets).
        student: a ``student.pt``, or a student module: one from :func:`load_student`, one built
            from a spec (its ``spec`` names its tasks), or one's own whose ``label_spaces``
            (``{task: LabelSpace or None}``) names its tasks and classes (without it: the recipe's
            tasks, and its output must hold them).
        overrides: see the module docstring.
        quiet: print no progress lines.

    Returns:
        The report dict of ``report.json`` (its ``train`` block counts nothing).

    Raises:
        AmalgamError: for a peers recipe, or a student whose tasks are not the recipe's.
    """
    loaded = load_recipe(recipe, overrides)
    if loaded.peers is not None:
        raise AmalgamError("eval: a peers recipe has no student to evaluate; `amalgam build` scores the peers")
    device = resolve_device(loaded.device)
    model, spaces, size = _student_and_spaces(student)
    name = _student_name(student)
    log = Console(quiet)
    if (assumed := _assumed(name, spaces, size, loaded)) is not None:
        log(assumed)
    loaded, other_size = _at_trained_size(loaded, name, size, log, asked=_sets_image_size(overrides))
    record = _student_record(student)  # read once for both notes
    other = _other_teachers(student, record, loaded)
    for note in (other, _older_student(student, record, loaded)):
        if note is not None:
            log(note)
    answered = _student_tasks(model, spaces)
    loaded = _its_tasks_only(loaded, name, answered, log)
    plan = build_plan(loaded, log=log)
    if changed := eval_set_changes(record, plan):
        log(
            f"note: eval sets changed since the build ({', '.join(changed)}: other files, sizes or picks of a limit):"
            " scored on the images they hold now, the teachers beside the student on the same ones; the build's"
            " report was of others"
        )
    tasks = answered or set(plan.spaces)  # a plain module: the recipe's, as the log said
    if tasks != set(plan.spaces):  # the plan's spaces are keyed by its teachers' tasks
        raise AmalgamError(f"student {name} has tasks {sorted(tasks)}, the recipe's teachers {sorted(plan.spaces)}")
    if spaces is not None and set(spaces) != tasks:
        raise AmalgamError(f"student {name} has label_spaces for {sorted(spaces)}, but heads for {sorted(tasks)}")
    for line in _space_differences(name, spaces or {}, plan.spaces):
        log(line)
    evaluation = score(plan, model, device, spaces=spaces, log=log)
    sizes = size_and_speed(plan, model, device)
    readings = teacher_readings(plan)
    report = build_report(loaded.name, evaluation, sizes, None, readings, plan.teacher_warnings, plan.data_warnings)
    # every ratio is against other references than the build's, or of the student at a size it was not trained at:
    # first, as a resume's change (a trial's student fed 96 px read as one that lost 16 classes, the size unsaid)
    first = [line.removeprefix("note: ") for line in (other, other_size) if line is not None]
    report["warnings"] = [*first, *report["warnings"]]
    report["student"]["scored_at"] = list(loaded.data.image_size)
    spec = getattr(_unwrapped(model), "spec", None)
    cpu_ms = latency_if_budgeted(loaded.student.budget, _unwrapped(model), tuple(loaded.data.image_size))
    report["student"]["budget"] = budget_section(report, loaded.student.budget, cpu_ms)
    if spec is not None and has_branches(spec.type):
        report["tree"] = tree_section(spec, report, loaded.student.budget, cpu_ms=cpu_ms)
    return report


def _its_tasks_only(recipe: Recipe, name: str, tasks: Optional[set], log) -> Recipe:
    """The recipe without the teachers of tasks a student answers none of (a ``--task`` export was refused with no
    way on), said; as it is where the student answers them all, or some the recipe lacks (refused after)."""
    planned = {cfg.task for cfg in recipe.teachers.values()}
    if not tasks or not tasks < planned:
        return recipe
    kept = {n: cfg for n, cfg in recipe.teachers.items() if cfg.task in tasks}
    left = ", ".join(n for n in recipe.teachers if n not in kept)
    log(f"student {name} answers {', '.join(sorted(tasks))} only: scored beside {', '.join(kept)}; {left} left out")
    used = {s for cfg in kept.values() for s in (cfg.sources or recipe.data.sources)}
    # the eval sets only left-out teachers name go too (else said "no teacher's eval names it")
    only_theirs = {c.eval for n, c in recipe.teachers.items() if n not in kept} - {c.eval for c in kept.values()}
    sources = {n: s for n, s in recipe.data.sources.items() if n in used}
    evals = {n: e for n, e in recipe.data.eval.items() if n not in only_theirs}
    data = recipe.data.model_copy(update={"sources": sources, "eval": evals})
    return recipe.model_copy(update={"teachers": kept, "data": data})


def _student_name(student) -> str:
    """How messages name the student: its file, or a module's class (not its whole repr)."""
    return f"module {type(student).__name__}" if isinstance(student, nn.Module) else str(student)


def _assumed(name: str, spaces: Optional[dict], size: Optional[tuple[int, int]], recipe: Recipe) -> Optional[str]:
    """The line saying what the recipe stands in for, for a module that does not carry its label
    spaces or training size (None: it carries both)."""
    missing, read = [], []
    if spaces is None:
        missing.append("label_spaces")
        read.append("in the recipe's label order")
    if size is None:
        h, w = recipe.data.image_size
        missing.append("image_size")
        read.append(f"at the recipe's data.image_size {h}x{w}")
    if not missing:
        return None
    return f"student {name} carries no {' or '.join(missing)} (load_student sets them): scored {' and '.join(read)}"


def _sets_image_size(overrides: Overrides) -> bool:
    """Whether the overrides set ``data.image_size`` (directly or inside a ``data`` mapping)."""
    for line in override_strings(overrides):
        key, _, value = line.partition("=")
        if key.strip() == "data.image_size" or (key.strip() == "data" and "image_size" in value):
            return True
    return False


def _at_trained_size(
    recipe: Recipe, name: str, size: Optional[tuple[int, int]], log: Console, asked: bool = False
) -> tuple[Recipe, Optional[str]]:
    """The recipe with ``data.image_size`` the student's training size, said when it differs: a
    student fed another size sees objects at another scale and scores lower, without a word.
    A size the overrides ask for (``asked``: scoring at another resolution on purpose) is kept, and said in a
    note returned for the report's warnings (its scores are of a student fed a size it was not trained at)."""
    ours = tuple(recipe.data.image_size)
    if size is None or size == ours:
        return recipe, None
    if asked:
        note = (
            f"note: student {name} was trained at {size[0]}x{size[1]}: scored at {ours[0]}x{ours[1]}, the"
            " data.image_size the overrides ask for (its scores are of a size it was not trained at)"
        )
        log(note)
        return recipe, note
    log(
        f"student {name} was trained at {size[0]}x{size[1]}, the recipe's data.image_size is"
        f" {ours[0]}x{ours[1]}: scored at {size[0]}x{size[1]}, its training size"
    )
    data = recipe.data.model_copy(update={"image_size": size})
    return recipe.model_copy(update={"data": data}), None


def _student_tasks(model: nn.Module, spaces: Optional[dict]) -> Optional[set[str]]:
    """The tasks a student answers: its heads (a spec's), else its label spaces' tasks; None for a
    module naming neither (it is read as the recipe's student: its tasks, in its label order)."""
    spec = getattr(_unwrapped(model), "spec", None)
    if spec is not None:
        return set(spec.heads)
    return set(spaces) if spaces is not None else None


@keeps_callers_state
def search(
    recipe: RecipeLike,
    overrides: Overrides = None,
    *,
    budget: Optional[Mapping[str, Optional[float]]] = None,
    output: Union[str, Path, None] = None,
    quiet: bool = False,
) -> SearchResult:
    """Chooses ``student.branch_at`` from the teachers' affinities within the budget; trains no student.

    Args:
        recipe: a YAML file or a loaded recipe (a branched student).
        overrides: see the module docstring.
        budget: replaces keys of ``student.budget`` (``params``: share of the teachers',
            ``latency_ms``: batch-1 CPU latency; None removes a limit).
        output: folder of ``search.json`` and the resumable warm-up (default: ``<run>/search``,
            where a build with ``branch_at: auto`` finds it).
        quiet: print no progress lines.

    Returns:
        The chosen mapping (``.branch_at``), the ranking of the trees within budget, the affinities
        and the search's cost.

    Raises:
        RecipeError: for a budget no tree meets (naming the smallest tree's size).
    """
    loaded = load_recipe(recipe, overrides)
    if loaded.peers is not None or not has_branches(loaded.student.type):
        raise AmalgamError("search: needs a recipe with teachers and a student with branches (student.type: branched)")
    if budget:
        # a copy: a loaded recipe passed in stays as the caller has it
        student = loaded.student.model_copy(update={"budget": with_budget(loaded.student.budget, budget)})
        loaded = loaded.model_copy(update={"student": student})
    if loaded.student.encoder == "auto":  # sized as `branch_at: auto` sizes it: the tree is what is searched
        loaded = loaded.model_copy(update={"student": loaded.student.model_copy(update={"branch_at": "auto"})})
    out = Path(output) if output is not None else loaded.output_dir() / "search"
    plan = build_plan(loaded, log=Console(quiet))
    return search_tree(plan, resolve_device(loaded.device), out, Console(quiet))


def _space_differences(
    student: str, stored: Mapping[str, Optional[LabelSpace]], planned: Mapping[str, Optional[LabelSpace]]
) -> list[str]:
    """Lines saying where a saved student's classes are not the recipe's (scored by class name).

    Raises:
        AmalgamError: the recipe's teachers have classes the student cannot answer (another recipe's student).
    """
    lines = []
    for task, space in stored.items():
        ours = planned.get(task)
        if space is None or ours is None or space.names == ours.names:
            continue
        missing = [c for c in ours.names if c not in space.names]
        if missing:
            raise AmalgamError(
                f"student {student} has no {task} class {', '.join(missing)} of this recipe's teachers"
                f" (its classes: {', '.join(space.names)}): it was built from another recipe"
            )
        extra = [c for c in space.names if c not in ours.names]
        lines.append(
            f"student {student}'s {task} classes are not this recipe's"
            + (f" (its own: {', '.join(extra)})" if extra else " (another order)")
            + ": each teacher is scored on its own classes, found in the student's by name; the unified score"
            " is over the student's classes"
        )
    return lines


def _unwrapped(model: nn.Module) -> nn.Module:
    """The student inside DataParallel / DistributedDataParallel (which keep it, and what it
    carries, in ``.module``); any other module itself."""
    return model.module if isinstance(model, PARALLEL) else model


def _student_and_spaces(
    student,
) -> tuple[nn.Module, Optional[dict[str, Optional[LabelSpace]]], Optional[tuple[int, int]]]:
    """The module, its label spaces and its training size (None: not known, the recipe's are used)."""
    if not isinstance(student, nn.Module):
        student, _ = _load_student(student)  # it carries both (see load_student)
    inner = _unwrapped(student)
    size = getattr(inner, "image_size", None)
    return student, getattr(inner, "label_spaces", None), None if size is None else tuple(size)


def load_student(
    path: Union[str, "os.PathLike[str]"], *, check_inputs: bool = True
) -> tuple[nn.Module, dict[str, Optional[LabelSpace]]]:
    """Rebuilds a student from a run's ``student.pt``; no teacher, no recipe file needed.

    The student takes ``[B, 3, H, W]`` float RGB in [0, 1] and normalises it itself (ImageNet mean
    and std, inside its forward). Input it would misread without a word stops with a one-line
    :class:`AmalgamError`: uint8 or other non-float tensors ("divide by 255"), values above 1.5
    (0-255 floats) or below -0.5 (already normalised), another layout, and, for a student with dense
    tasks, a height or width that is not a multiple of its encoder's stride (32 for five stages:
    "input 48x40: the student needs height and width multiples of 32 (trained at 64x64: resize every image
    to it, as in training)"; nothing is
    padded, which would change its answers). The check is one min/max per call (one host sync on
    CUDA), skipped while tracing, scripting, compiling or exporting, so ``amalgam export`` files
    carry none; ``check_inputs=False`` leaves it out (throughput, once the input pipeline is known good).

    The student carries ``label_spaces`` (the returned spaces) and ``image_size`` (``(height,
    width)`` it was trained at), so that :func:`evaluate` reads its outputs by class name and
    feeds it images of its own size.

    Returns:
        The student in eval mode (``student(images) -> {task: output}``) and its unified label
        spaces by task (``None`` for tasks without labels, e.g. depth).
    """
    return _load_student(path, check_inputs=check_inputs)


def _unfinished_hint(run_dir: Path) -> str:
    """What to do with a run folder that holds no finished run: resume it, or build it."""
    if unfinished(run_dir):
        return f" (an unfinished build: {RESUME_FIX})"
    return " (amalgam build writes one; amalgam eval <recipe> --student <file> scores a student alone)"


@keeps_callers_state
def render_report(run_dir: Union[str, Path], *, quiet: bool = False, recipe: Union[str, Path, None] = None) -> Path:
    """Draws a finished run's ``report.html`` again (curves, sample predictions); returns its path.
    ``recipe``: where the recipe file the run was built from is now (moved since, with its relative paths);
    the recipe ``student.pt`` holds is read against that file's folder, as against the old one."""
    run_dir = Path(run_dir)
    if peers := peers_note(run_dir):  # no run.json, no student: say what it is instead
        raise AmalgamError(f"no report.html to draw{peers}")
    for name in ("report.json", "run.json", "student.pt"):
        if not (run_dir / name).is_file():
            raise AmalgamError(f"{run_dir} is not a finished run: no {name}{_unfinished_hint(run_dir)}")
    check_writable(run_dir, "run folder")  # read-only: one line, before the plan is built (a traceback after it)
    run = _run_json(run_dir / "run.json", "rebuild the run with amalgam build")
    if recipe is not None:  # moved since: the file, and the folder its relative paths start from
        run = {**run, "recipe": str(Path(recipe).resolve())}
    recipe_file = run.get("recipe") or "RECIPE"
    sets = "".join(f" --set {shlex.quote(s)}" for s in run.get("set") or [])  # as the build scored it
    student = run_dir / "student.pt"
    rescore = f"run amalgam eval {recipe_file}{sets} --student {student} --json {run_dir / 'report.json'}"
    # read before the plan is built: a damaged report is one line now, not a traceback minutes later
    report = _run_json(run_dir / "report.json", rescore + " to score the student again")
    log = Console(quiet)
    record = student_record(run_dir / "student.pt")
    built = _built_recipe(run, record["recipe"], log, named=recipe is not None)
    if changed := teacher_file_changes(record, built):  # the tables stay the build's; the pictures are drawn now
        log(
            f"warning: teachers changed since the build ({'; '.join(changed[:4])}): samples.png draws their answers"
            " as they are now, report.json's scores are the build's"
        )
    student, spaces = _load_student(run_dir / "student.pt")
    plan = build_plan(built, log=log)
    return render(run_dir, report, plan, student, spaces, resolve_device(built.device), log=log)


@keeps_callers_state
def export(
    run_dir: Union[str, Path],
    format: str = "torchscript",  # noqa: A002 - the CLI's --format
    *,
    task: Optional[str] = None,
    output: Union[str, Path, None] = None,
    tolerance: Optional[float] = None,
    quiet: bool = False,
) -> tuple[Path, Optional[float]]:
    """``amalgam export``: writes a finished run's student as TorchScript or ONNX with its ``.json``, checked
    against the student; returns the file and the parity max difference (None: unchecked, ONNX without
    onnxruntime). Raises ``ParityError`` (an :class:`AmalgamError`) over ``tolerance``, writing nothing."""
    if format not in ("torchscript", "onnx"):
        raise AmalgamError(f"format: torchscript or onnx, got {format!r}")
    out = Path(output) if output is not None else None
    return export_student(Path(run_dir), format, task, out, Console(quiet), tolerance)


def _run_json(path: Path, fix: str) -> dict:
    """A run's JSON file (``run.json``, ``report.json``) as a dict.

    Raises:
        AmalgamError: one line naming the file, what is wrong with it and ``fix``, when it is cut
            short, not JSON or not an object (a killed write, an edit).
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise AmalgamError(f"{path} is damaged ({type(exc).__name__}: {error_line(exc)}): {fix}") from None
    if not isinstance(data, dict):
        raise AmalgamError(f"{path} is damaged (it holds a {type(data).__name__}, not an object): {fix}")
    return data


def _student_record(student: object) -> Optional[dict]:
    """A ``student.pt``'s :func:`~amalgam.students.serialize.student_record` (None: a module, or unreadable)."""
    if not isinstance(student, (str, os.PathLike)):
        return None
    try:
        return student_record(Path(student))
    except (AmalgamError, OSError, KeyError, TypeError):
        return None


def _older_student(student: object, record: Optional[dict], recipe: Recipe) -> Optional[str]:
    """One line when a ``student.pt`` is older than its :func:`made_with` record: what then differed (a trial's
    student scored 0.5829 here against its report's 0.6514, on other images of a limited eval set)."""
    if record is None:
        return None
    made = record["made"]
    if made is not None:  # a resize of another version than today's is said; the limit rule has one form yet
        then = made.get("resize_version")
        if then == RESIZE_VERSION:
            return None
        return (
            f"note: {student} trained on images resized by version {then}, amalgam now resizes by version"
            f" {RESIZE_VERSION} ({RESIZE_KIND}), which can move its scores a little"
        )
    limited = [f"data.eval.{n}.limit" for n, e in recipe.data.eval.items() if e.limit is not None]
    limited += ["train.max_eval_images"] if recipe.train.max_eval_images is not None else []
    picked = (
        f"; before 2026-12-03, {' and '.join(limited)} kept the first images, now images spread evenly over the"
        " sorted files: the scores are of other images than its report's"
        if limited
        else ""
    )
    return (
        f"note: {student} records neither its resize nor how limit picked its images (a file written before"
        f" 2026-12-05): students of before 2026-12-04 trained on images resized otherwise (8-bit and antialiased"
        f" since), which can move its scores a little{picked}"
    )


def _other_teachers(student: object, record: Optional[dict], recipe: Recipe) -> Optional[str]:
    """One line when the recipe's teachers differ from those a ``student.pt`` was built with (their
    input, model, labels...): its scores are then against other references than the build's report."""
    if record is None:
        return None
    stored = record["recipe"]
    # which set scores it, which images taught it and a wrap (training targets only) change no reference
    same_reference = ("eval", "sources", "wrap")
    changed = [
        key
        for key in recipe_changes(stored, recipe)
        if key.startswith("teachers.")
        and (key.split(".") + ["", "", ""])[2] not in same_reference
        and key != "teachers.(order)"  # a student keeps its label spaces by name: their order scores alike
    ]
    changed += teacher_file_changes(record, recipe)  # the same path, other contents: no key shows it
    if not changed:
        return None
    keys = f"{', '.join(changed[:6])}{' ...' if len(changed) > 6 else ''}"
    return (
        f"note: the recipe's teachers differ from those {student} was built with ({keys}): the student is scored"
        " against these teachers, not the build's"
    )


def teacher_file_changes(record: Optional[dict], recipe: Recipe) -> list[str]:
    """``"<teacher>: <file> changed"`` for each of the recipe's teachers whose files or code differ from those a
    ``student.pt`` recorded (none for a file written before 2026-12-05, which recorded none): a teacher retrained
    in place was scored beside the student as if it had taught it (a trial's ratio 0.128 read 0.145)."""
    stored = (record or {}).get("teachers")
    return fingerprint_changes(stored, recipe) if stored else []  # it skips teachers the record lacks


def eval_set_changes(record: Optional[dict], plan) -> list[str]:
    """The eval sets whose images (names, sizes; a limit's picks) differ from those a ``student.pt`` recorded
    (none for a file written before 2026-12-05): a trial's 5 removed scenes moved every image a limit picked,
    and eval scored other images than the build's report without a word."""
    stored = (record or {}).get("eval_sets") or {}
    return [name for name, dataset in plan.eval_sets.items() if name in stored and stored[name] != dataset.listing()]


def _built_recipe(run: dict, stored: dict, log, named: bool = False) -> Recipe:
    """The recipe a run was built with: the one ``student.pt`` holds, read against the recipe file's
    folder, not the file as it is now (an edited file would draw other images, at another size,
    beside a report scored on the first). When the file changed since, one line says which keys.
    ``named``: the file was named by the caller (``--recipe``): one that cannot be read is its error."""
    if run["recipe"] is None:  # built from a Recipe object
        return parse_recipe(run["dump"], base_dir=Path(run["base_dir"]))
    try:
        now = _read_recipe(run["recipe"], run["set"])
    except AmalgamError as exc:  # moved or broken since: the stored one is all there is
        if named:
            raise
        log(
            f"recipe {run['recipe']} cannot be read now ({exc}): drawing from the recipe the run was built with, its"
            " paths read from that folder (amalgam report --recipe names where the file is now)"
        )
        return parse_recipe(stored, base_dir=Path(run["recipe"]).parent)
    changed = recipe_changes(stored, now)
    if not changed:
        return now
    keys = f"{', '.join(changed[:6])}{' ...' if len(changed) > 6 else ''}"
    try:
        built = parse_recipe(stored, base_dir=now.base_dir)
    except AmalgamError as exc:  # a run of an older amalgam whose recipe today's schema refuses
        log(f"recipe {run['recipe']} changed since the build ({keys}), and the one the run was built with no longer"
            f" reads ({exc}): drawing from the file as it is now")  # fmt: skip
        return now
    log(f"recipe {run['recipe']} changed since the build ({keys}): drawing from the recipe the run was built with"
        " (student.pt)")  # fmt: skip
    return built
