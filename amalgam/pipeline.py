"""The build pipeline: plan -> train -> save -> evaluate -> report (what :func:`amalgam.build` runs)."""

from __future__ import annotations

import json
import shutil
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from amalgam.config.schema import Recipe
from amalgam.distill.mirror_check import recipe_unflipped, say_unflipped, unflipped_sources
from amalgam.distill.plan import Plan, build_plan, look_alike_lines, said_before_training
from amalgam.distill.tree_search import search_tree
from amalgam.errors import AmalgamError, error_line
from amalgam.evaluation.during import eval_callback
from amalgam.evaluation.evaluate import evaluate, size_and_speed, trial_scoring
from amalgam.evaluation.export import written_exports
from amalgam.evaluation.report import build_report, teacher_readings, to_markdown, write_report
from amalgam.evaluation.tree_report import budget_section, tree_section
from amalgam.evaluation.visual import render
from amalgam.io import DiskFull, check_writable, is_disk_full
from amalgam.students.budget import latency_if_budgeted, student_lines
from amalgam.students.build import StudentSpec, build_student, check_student_runs, count_params, has_branches
from amalgam.students.serialize import save_student
from amalgam.students.sizing import AUTO
from amalgam.students.start import start_weights
from amalgam.training import engine
from amalgam.training.checkpoint import PREVIOUS, clean_stale_temps
from amalgam.training.distributed import DistContext, decided_on_main, init_distributed, launched_world_size
from amalgam.training.engine import read_checkpoint, resolve_device, seed_everything
from amalgam.training.peer_training import to_markdown as peers_markdown
from amalgam.training.peer_training import train_peers
from amalgam.training.progress import Console
from amalgam.training.runlock import NewRunFolder, RunLock
from amalgam.training.runtime import autocast_dtype
from amalgam.training.schedule import distillation_line, schedule_lines, source_repeats

Log = Callable[[str], None]
#: what a build writes for the user to read, by role, in the order ``amalgam build`` lists them
STUDENT_FILES = {
    "student": "student.pt",
    "report_json": "report.json",
    "report_md": "report.md",
    "report_html": "report.html",
    "train_log": "train_log.csv",
}
PEER_FILES = {"peers": "peers.pt", "report_json": "report.json", "report_md": "report.md", "train_log": "train_log.csv"}
#: everything else a build writes into its run folder; ``--force`` removes these and the exports
#: before it trains. The teacher cache and ``search/`` stay: both are keyed, reused only while valid.
RUN_FILES = ("run.json", "curves.png", "samples.png", "tree.png", "checkpoint.pt", PREVIOUS, "tensorboard")
#: what ``--resume`` continues: ``--force --resume`` keeps them
RESUMED = ("checkpoint.pt", PREVIOUS, "train_log.csv", "tensorboard")


@dataclass(frozen=True)
class Run:
    """A finished build (what :func:`amalgam.build` returns).

    Attributes:
        run_dir: the run folder.
        kind: ``"student"`` (teachers -> student) or ``"peers"`` (a peer-learning recipe).
        report: the contents of ``report.json`` (empty on a torchrun rank other than 0: it writes nothing).
        paths: what the run wrote for you to read, by role, in the order ``amalgam build`` lists
            them: for a student ``student``, ``report_json``, ``report_md``, ``report_html``,
            ``train_log``; for peers ``peers``, ``report_json``, ``report_md``, ``train_log``.
        recipe: the recipe the run was built from (overrides applied).
    """

    run_dir: Path
    kind: str
    report: dict
    paths: dict[str, Path] = field(default_factory=dict)
    recipe: Optional[Recipe] = None

    def summary(self) -> str:
        """The report as Markdown tables (what ``amalgam build`` prints)."""
        return peers_markdown(self.report) if self.kind == "peers" else to_markdown(self.report)


def _other_recipe(run_dir: Path, name: str) -> str:
    """Where the finished run in ``run_dir`` is another recipe's (a variant that renamed itself but kept its
    base's ``output``): said, so that --force is not taken as this recipe's own overwrite."""
    try:
        then = json.loads((run_dir / "report.json").read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        return ""
    if not then or then == name:
        return ""
    return (
        f" of recipe '{then}', not this '{name}' (a variant keeps its base's output unless it sets its own: give"
        " this one its own output:, or --output)"
    )


def run_build(recipe: Recipe, record: dict, *, force: bool, resume: bool, quiet: bool) -> Run:
    """Builds a loaded recipe into its run folder.

    Args:
        recipe: the loaded recipe (overrides and ``output`` applied).
        record: what ``run.json`` holds (how ``amalgam report`` loads the recipe again).
        force, resume, quiet: as :func:`amalgam.build`.
    """
    run_dir = recipe.output_dir()
    device = resolve_device(recipe.device)
    if recipe.peers is not None and launched_world_size() > 1:  # every rank would train it all; refused before joining
        raise AmalgamError("peers: peer training runs in one process: run amalgam build without torchrun")
    ctx = init_distributed(device.type)  # torchrun: one process per device, rank 0 writes
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    log = Console(quiet or not ctx.is_main)
    if recipe.peers is None:  # a precision this device cannot compute stops before any teacher loads
        autocast_dtype(device, recipe.train.precision)
    if ctx.is_main:  # before the teachers load: a folder that cannot be written wastes no compute
        check_writable(run_dir, "run folder")
    main_only = (lambda guard: guard) if ctx.is_main else (lambda guard: nullcontext())
    # one build per folder; a build that fails before its first checkpoint leaves no folder behind
    with main_only(NewRunFolder(run_dir)), main_only(RunLock(run_dir)):
        if (run_dir / "report.json").exists() and not force:
            raise AmalgamError(
                f"{run_dir} already holds a finished run{_other_recipe(run_dir, recipe.name)}: pass --force to"
                " overwrite it (force=True from Python)"
            )
        unfinished = not (run_dir / "report.json").exists() and (run_dir / "checkpoint.pt").exists()
        if unfinished and not resume and not force:  # hours of training are worth a flag, as a finished run is
            raise AmalgamError(
                f"{run_dir} holds an unfinished run ({unfinished_progress(run_dir / 'checkpoint.pt', recipe)}): "
                "pass --resume to continue it or --force to start over (resume=True, force=True from Python)"
            )
        if ctx.is_main and (run_dir / "report.json").exists():
            clear_finished_run(run_dir, RESUMED if resume else (), log)
        elif ctx.is_main and unfinished and not resume:  # --force: its checkpoints must not pass for the new run's
            clear_finished_run(run_dir, (), log, what="unfinished")
        clean_stale_temps(run_dir, log)
        state = read_checkpoint(run_dir / "checkpoint.pt", recipe, _warn) if resume else None
        return _build_locked(recipe, record, run_dir, device, ctx, log, state)


def previous_outputs(run_dir: Path) -> list[Path]:
    """What an earlier build and ``amalgam export`` wrote into ``run_dir`` (only amalgam's own names)."""
    names = {*STUDENT_FILES.values(), *PEER_FILES.values(), *RUN_FILES}
    return [run_dir / name for name in sorted(names) if (run_dir / name).exists()] + written_exports(run_dir)


def unfinished_progress(path: Path, recipe: Recipe) -> str:
    """How far the unfinished run whose checkpoint is ``path`` got: ``epoch E of N`` (E: finished
    epochs; N: its recipe's), or why that cannot be read."""
    try:  # mmap: only the few entries read are loaded, not the student and the optimiser
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file still blocks the plain rebuild
        return f"its checkpoint.pt does not read: {error_line(exc)}"
    if not isinstance(state, dict) or "epoch" not in state:
        return "its checkpoint.pt holds no epoch"
    epochs = (state.get("recipe") or {}).get("train", {}).get("epochs", recipe.train.epochs)
    partial = state.get("partial")
    stopped = f", stopped in epoch {partial['epoch']} after step {partial['step']}" if partial else ""
    return f"epoch {state['epoch']} of {epochs}{stopped}"


def clear_finished_run(run_dir: Path, keep: tuple[str, ...], log: Log, what: str = "finished") -> None:
    """Removes a finished run's outputs before ``--force`` trains over it (``keep``: names to leave);
    ``what`` is ``unfinished`` for a run with a checkpoint and no report.

    A stale export or sample grid beside the new student would pass for its; the lock, the teacher
    cache and any file amalgam does not write stay.
    """
    gone = [path for path in previous_outputs(run_dir) if path.name not in keep]
    for path in gone:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    kept = f", kept {', '.join(name for name in keep if (run_dir / name).exists())} for --resume" if keep else ""
    log(f"overwriting the {what} run in {run_dir} (--force): removed {len(gone)} of its files{kept}")


def _warn(message: str) -> None:
    print(f"amalgam: warning: {message}", file=sys.stderr)


def _build_locked(
    recipe: Recipe, record: dict, run_dir: Path, device: torch.device, ctx: DistContext, log: Log, state
) -> Run:
    """The build, once the run folder is held: peers, or the student (trained, saved, evaluated)."""
    if ctx.enabled:
        log(f"torchrun: {ctx.world} processes ({'nccl' if device.type == 'cuda' else 'gloo'}); rank 0 writes the run")
    if recipe.peers is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        report = train_peers(recipe, run_dir, device, log, resume=state)
        return Run(run_dir, "peers", report, _paths(run_dir, PEER_FILES), recipe)
    report = train_student(recipe, run_dir, device, log, ctx, state, record)
    if not report:
        return Run(run_dir, "student", {}, {}, recipe)
    return Run(run_dir, "student", report, _paths(run_dir, STUDENT_FILES), recipe)


def _paths(run_dir: Path, files: dict[str, str]) -> dict[str, Path]:
    return {role: run_dir / name for role, name in files.items()}


def say_plan(plan: Plan, log: Log) -> None:
    """What a build says before training that ``inspect`` prints in its own sections: look-alike unified classes
    (kept among the report's warnings), the distillation's settings and the schedule."""
    for line in look_alike_lines(plan):
        said_before_training(plan, log, line.removeprefix("warning: "))
    recipe = plan.recipe
    log(distillation_line(recipe.amalgamation))
    for line in [*schedule_lines(recipe.train, len(plan.sources), plan.dense_tasks), *source_repeats(plan)]:
        warning = line.lstrip()  # the schedule's lines are indented under its header
        if warning.startswith("warning: "):  # a trial's report blamed the distillation for a schedule said too short
            said_before_training(plan, log, warning.removeprefix("warning: "))
        else:
            log(line)


def train_student(
    recipe: Recipe, run_dir: Path, device: torch.device, log: Log, ctx: DistContext, state: Optional[dict], record: dict
) -> dict:
    """Trains, saves, evaluates and reports; returns the report (empty on ranks other than 0)."""
    plan = build_plan(recipe, log=log)
    stored = (state or {}).get("spec")  # absent in checkpoints written before it was stored
    if stored is not None and recipe.student.encoder == AUTO:
        plan.keep_rung(stored["encoder"], stored["decoder_channels"])
        log(f"resume: student.encoder auto keeps the checkpoint's {stored['encoder']} {stored['decoder_channels']}")
    elif recipe.student.encoder == AUTO and recipe.student.budget.latency_ms is not None:
        same_rung_everywhere(plan, ctx)
    plan.unflipped = run_flips(plan, state, ctx, log)
    choice = plan.encoder_choice()
    if choice is not None and recipe.student.branch_at != "auto":  # else the search says it, first
        log(choice.describe())
    found = searched_tree(plan, device, run_dir / "search", log, ctx) if recipe.student.branch_at == "auto" else None
    seed_everything(recipe.seed)
    student = new_student(  # each process's batch norm sees its own rows only
        plan, log, state is not None, found.branch_at if found else None, ctx.local_batch(recipe.train.batch_size)
    )
    if state is not None:
        same_student(state, student.spec)
    say_plan(plan, log)
    say_student(plan, student, device, log)
    run_dir.mkdir(parents=True, exist_ok=True)
    trial_scoring(plan, student, device, log)
    every = recipe.train.eval_every
    curve = [eval_callback(plan, device, every)] if every else []
    result = engine.train(plan, student, run_dir, device, log=log, ctx=ctx, resume=state, callbacks=curve)
    if not ctx.is_main:
        ctx.close()
        return {}
    with outputs_written(run_dir):
        listed = {name: dataset.listing() for name, dataset in plan.eval_sets.items()}
        # the teachers as training started (a file rewritten while it trained is not one it learnt from)
        save_student(
            student, plan.spaces, recipe.model_dump(mode="json"), run_dir / "student.pt", result.teachers, listed
        )
        evaluation = evaluate(plan, student, device, log=log)
        sizes = size_and_speed(plan, student, device)
        readings, before = teacher_readings(plan), plan.teacher_warnings
        report = build_report(recipe.name, evaluation, sizes, result, readings, before, plan.data_warnings)
        if result.warnings:  # first: a diverged student makes every ratio below it meaningless
            report["warnings"] = [*result.warnings, *report["warnings"]]
        if choice is not None:
            report["encoder_choice"] = choice.to_dict()
        if recipe.train.augment:  # the sources the flip left alone (none: {}): the mirror check's, or flip: false
            report["train"]["unflipped"] = dict(plan.unflipped)
        cpu_ms = latency_if_budgeted(recipe.student.budget, student, tuple(recipe.data.image_size))
        add_student_fields(report, recipe, cpu_ms)
        if has_branches(student.spec.type):
            report["tree"] = tree_section(student.spec, report, recipe.student.budget, found, cpu_ms)
        (run_dir / "run.json").write_text(json.dumps(record))
        render(run_dir, report, plan, student, plan.spaces, device, log=log)
        write_report(report, run_dir)  # last: report.json marks the run finished
    ctx.close()
    return report


def say_student(plan: Plan, student: nn.Module, device: torch.device, log: Log) -> None:
    """The student's kind, size against the teachers', device and budget lines."""
    recipe, teachers, params = plan.recipe, plan.teacher_params, count_params(student)
    share = f"{params / teachers:.0%} of the teachers'" if teachers else "the teachers have no parameters"
    log(
        f"student: {recipe.student.type} {student.spec.describe_encoder()}, {params:,} params "
        f"({share}), device {device}, {torch.get_num_threads()} threads"
    )
    latency = latency_if_budgeted(recipe.student.budget, student, tuple(recipe.data.image_size))
    for line in student_lines(student.spec, params, teachers, recipe.student.budget, latency):
        log(line)


@contextmanager
def outputs_written(run_dir: Path) -> Iterator[None]:
    """Turns a full disk while the trained student's files are written into one line: the training
    is kept in checkpoint.pt, and report.json, written last, is not there, so ``--resume`` ends the run."""
    try:
        yield
    except (OSError, RuntimeError, DiskFull) as exc:  # student.pt's atomic save says DiskFull (a trial: no way on)
        if not isinstance(exc, DiskFull) and not is_disk_full(exc):
            raise
        free = shutil.disk_usage(run_dir).free
        said = str(exc) if isinstance(exc, DiskFull) else error_line(exc)
        raise AmalgamError(
            f"disk full while writing the run's outputs into {run_dir} ({free:,} bytes free: {said}):"
            " the training is kept in checkpoint.pt; free space and run the same command with --resume"
        ) from None


def same_rung_everywhere(plan: Plan, ctx: DistContext) -> None:
    """Under torchrun, every rank takes rank 0's ``encoder: auto`` rung: a latency budget is timed, and
    timings differ between processes (ranks building different students could not train together)."""
    if not ctx.enabled:
        return

    def rung() -> Optional[tuple[str, list[int]]]:
        choice = plan.encoder_choice()
        return (choice.rung.encoder, list(choice.rung.decoder_channels)) if choice else None

    chosen = decided_on_main(ctx, rung)
    if not ctx.is_main and chosen is not None:
        plan.keep_rung(*chosen)


def searched_tree(plan: Plan, device: torch.device, out_dir: Path, log: Log, ctx: DistContext):
    """``branch_at: auto``'s tree, searched on rank 0 and taken by every rank: the choice rests on timings and
    on a warm-up's affinities, which differ between processes (ranks building different trees cannot train
    together), and rank 0 alone writes the search's files."""
    return decided_on_main(ctx, lambda: search_tree(plan, device, out_dir, log))


def add_student_fields(report: dict, recipe: Recipe, cpu_ms: Optional[float] = None) -> None:
    """report.json's ``student.budget`` (every student type's verdict, a latency limit judged on ``cpu_ms``)
    and ``student.init`` (what it started from, which only the build log said)."""
    report["student"]["budget"] = budget_section(report, recipe.student.budget, cpu_ms)
    if recipe.student.init is not None:
        report["student"]["init"] = str(recipe.resolve(recipe.student.init))


def run_flips(plan: Plan, state: Optional[dict], ctx: DistContext, log: Log) -> dict[str, str]:
    """The training sources the flip leaves alone: a resumed run's as its checkpoint holds them (one
    written before the decision was kept flips all but the recipe's ``flip: false``, as it began), else
    decided on rank 0 (:func:`unflipped_sources`) and shared, so every process flips alike."""
    if state is not None:
        stored = state.get("unflipped")
        if stored is None and plan.recipe.train.augment:
            stored = recipe_unflipped(plan.recipe)
            log("resume: the checkpoint keeps no mirror check: the flip goes on as the run began, on every source"
                " the recipe does not set flip: false")  # fmt: skip
        say_unflipped(stored or {}, log, plan.recipe)
        return dict(stored or {})
    return decided_on_main(ctx, lambda: unflipped_sources(plan, log), "the mirror check failed on rank 0: ")


def same_student(state: dict, spec) -> None:
    """Refuses to resume a checkpoint of another student (a guard: the recipe is checked unchanged,
    and ``encoder: auto`` keeps the checkpoint's rung), naming what differs."""
    stored = state.get("spec")  # absent in checkpoints written before it was stored
    differ = [] if stored is None else sorted(StudentSpec.differences(stored, spec.to_dict()))
    if not differ:
        return
    raise AmalgamError(f"cannot resume: the checkpoint holds another student (differs in {', '.join(differ)})")


def new_student(
    plan: Plan, log: Log, resumed: bool, branch_at: Optional[dict[str, int]] = None, batch: Optional[int] = None
) -> nn.Module:
    """The student of the plan, from ``student.init`` when the recipe names one (not on resume).

    ``branch_at`` is the search's tree when the recipe's is ``auto``; ``batch``, one process's training batch
    (default: ``train.batch_size``).
    """
    student = build_student(plan.student_spec(branch_at))
    check_student_runs(student, tuple(plan.recipe.data.image_size), batch or plan.recipe.train.batch_size)
    if not resumed:  # on resume the checkpoint's weights win
        start_weights(student, plan.recipe, plan.spaces, log)
    return student
