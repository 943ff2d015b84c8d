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
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import yaml
from torch import nn

from amalgam.config.recipe import Recipe, apply_override, parse_recipe
from amalgam.config.recipe import load_recipe as _read_recipe
from amalgam.distill.plan import build_plan
from amalgam.distill.tree_search import SearchResult, search_tree, with_budget
from amalgam.errors import AmalgamError
from amalgam.evaluation.evaluate import evaluate as score
from amalgam.evaluation.evaluate import size_and_speed
from amalgam.evaluation.report import build_report, teacher_readings
from amalgam.evaluation.tree_report import tree_section
from amalgam.evaluation.visual import render
from amalgam.inspection import Inspection, inspect_recipe
from amalgam.labels import LabelSpace
from amalgam.pipeline import Run, run_build
from amalgam.students.build import has_branches
from amalgam.students.serialize import load_student as _load_student
from amalgam.training.engine import resolve_device
from amalgam.training.progress import Console

#: a recipe file (``str`` or path) or an already loaded :class:`~amalgam.config.recipe.Recipe`
RecipeLike = Union[str, "os.PathLike[str]", Recipe]
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
        return [f"{key}={_yaml_value(value)}" for key, value in overrides.items()]
    return list(overrides)


def _yaml_value(value: Any) -> str:
    """One-line YAML that reads back as ``value`` (PyYAML writes floats so that they do)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"))
    return text.removesuffix("\n").removesuffix("\n...").strip()


def load_recipe(recipe: RecipeLike, overrides: Overrides = None, output: Union[str, Path, None] = None) -> Recipe:
    """Reads and validates a recipe, with overrides applied.

    Args:
        recipe: a YAML file, or a loaded recipe (overrides then apply to a copy of it).
        overrides: see the module docstring.
        output: the run folder, replacing the recipe's ``output`` (relative to the working
            directory, like the CLI's ``--output``).

    Raises:
        RecipeError: naming the first offending key path.
    """
    sets = override_strings(overrides)
    if isinstance(recipe, Recipe):
        loaded = recipe
        if sets:
            raw = recipe.model_dump(mode="json")
            for assignment in sets:
                apply_override(raw, assignment)
            loaded = parse_recipe(raw, base_dir=recipe.base_dir)
    else:
        loaded = _read_recipe(recipe, sets)
    if output is not None:
        loaded = loaded.model_copy(update={"output": Path(output).resolve()})
    return loaded


def inspect(
    recipe: RecipeLike, overrides: Overrides = None, *, with_data: bool = True, quiet: bool = False
) -> Inspection:
    """Loads the teachers, unifies the label spaces, scans the sources and sizes the student; trains nothing.

    Args:
        recipe: a YAML file or a loaded recipe.
        overrides: see the module docstring.
        with_data: scan the image sources and eval sets (slow for big folders).
        quiet: print no progress lines.

    Returns:
        The plan, the student's spec and the parameter counts; ``.summary()`` is what ``amalgam inspect`` prints.
    """
    return inspect_recipe(load_recipe(recipe, overrides), with_data=with_data, log=Console(quiet))


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
        force: overwrite a finished run (without it, a folder with a ``report.json`` is an error).
        resume: continue a killed run from its last finished epoch.
        quiet: print no progress lines.

    Raises:
        AmalgamError: for a finished run without ``force``, and for any input the checks refuse,
            before the run folder is created.
    """
    loaded = load_recipe(recipe, overrides, output)
    record = _run_record(recipe, overrides, loaded)
    return run_build(loaded, record, force=force, resume=resume, quiet=quiet)


def _run_record(recipe: RecipeLike, overrides: Overrides, loaded: Recipe) -> dict:
    """``run.json``: how ``amalgam report`` loads the run's recipe again (the file and its overrides)."""
    if isinstance(recipe, Recipe):  # no file: the recipe itself
        return {"recipe": None, "set": [], "dump": loaded.model_dump(mode="json"), "base_dir": str(loaded.base_dir)}
    return {"recipe": str(Path(recipe).resolve()), "set": override_strings(overrides)}


def evaluate(
    recipe: RecipeLike,
    student: Union[str, "os.PathLike[str]", nn.Module],
    overrides: Overrides = None,
    *,
    quiet: bool = False,
) -> dict:
    """Scores a saved student beside the recipe's teachers on their eval sets.

    Args:
        recipe: a YAML file or a loaded recipe (its teachers and eval sets).
        student: a ``student.pt``, or a student module (scored in the recipe's label spaces).
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
    model, spaces = _student_and_spaces(student)
    log = Console(quiet)
    plan = build_plan(loaded, log=log)
    tasks = set(spaces) if spaces is not None else set(model.spec.heads)
    if tasks != set(plan.spaces):
        raise AmalgamError(f"student {student} has tasks {sorted(tasks)}, the recipe's teachers {sorted(plan.spaces)}")
    for line in _space_differences(student, spaces or {}, plan.spaces):
        log(line)
    evaluation = score(plan, model, device, spaces=spaces, log=log)
    report = build_report(loaded.name, evaluation, size_and_speed(plan, model, device), None, teacher_readings(plan))
    if has_branches(model.spec.type):
        report["tree"] = tree_section(model.spec, report, loaded.student.budget)
    return report


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
    student, stored: Mapping[str, Optional[LabelSpace]], planned: Mapping[str, Optional[LabelSpace]]
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


def _student_and_spaces(student) -> tuple[nn.Module, Optional[dict[str, Optional[LabelSpace]]]]:
    if isinstance(student, nn.Module):
        return student, None  # its label spaces are the recipe's
    return _load_student(student)


def load_student(
    path: Union[str, "os.PathLike[str]"], *, check_inputs: bool = True
) -> tuple[nn.Module, dict[str, Optional[LabelSpace]]]:
    """Rebuilds a student from a run's ``student.pt``; no teacher, no recipe file needed.

    The student takes ``[B, 3, H, W]`` float RGB in [0, 1] and normalises it itself (ImageNet mean
    and std, inside its forward). Input it would misread without a word stops with a one-line
    :class:`AmalgamError`: uint8 or other non-float tensors ("divide by 255"), values above 1.5
    (0-255 floats) or below -0.5 (already normalised), another layout, and, for a student with dense
    tasks, a height or width that is not a multiple of its encoder's stride (32 for five stages:
    "input 48x40: the student needs height and width multiples of 32 (pad or resize)"; nothing is
    padded, which would change its answers). The check is one min/max per call (one host sync on
    CUDA), skipped while tracing, scripting, compiling or exporting, so ``amalgam export`` files
    carry none; ``check_inputs=False`` leaves it out (throughput, once the input pipeline is known good).

    Returns:
        The student in eval mode (``student(images) -> {task: output}``) and its unified label
        spaces by task (``None`` for tasks without labels, e.g. depth).
    """
    return _load_student(path, check_inputs=check_inputs)


def render_report(run_dir: Union[str, Path], *, quiet: bool = False) -> Path:
    """Draws a finished run's ``report.html`` again (curves, sample predictions); returns its path."""
    run_dir = Path(run_dir)
    for name in ("report.json", "run.json", "student.pt"):
        if not (run_dir / name).is_file():
            raise AmalgamError(f"{run_dir} is not a finished run: no {name}")
    run = json.loads((run_dir / "run.json").read_text())
    if run["recipe"] is None:  # built from a Recipe object
        recipe = parse_recipe(run["dump"], base_dir=Path(run["base_dir"]))
    else:
        recipe = _read_recipe(run["recipe"], run["set"])
    student, spaces = _load_student(run_dir / "student.pt")
    plan = build_plan(recipe, log=Console(quiet))
    report = json.loads((run_dir / "report.json").read_text())
    return render(run_dir, report, plan, student, spaces, resolve_device(recipe.device))
