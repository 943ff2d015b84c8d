"""The ``amalgam`` command: inspect, build, eval, tasks."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import Callable

from amalgam.errors import AmalgamError


def _log(quiet: bool) -> Callable[[str], None]:
    from amalgam.training.progress import Console

    return Console(quiet)


def _load(args) -> "Recipe":  # noqa: F821
    from amalgam.config.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.set or [])
    if getattr(args, "output", None):
        recipe.output = Path(args.output).resolve()
    return recipe


def cmd_inspect(args) -> int:
    from amalgam.distill.plan import prepare
    from amalgam.students.build import build_student, count_params

    recipe = _load(args)
    if recipe.peers is not None:
        from amalgam.training.peer_training import build_peers

        p = recipe.peers
        params = sum(x.numel() for x in build_peers(p, recipe.base_dir).parameters())
        print(f"recipe '{recipe.name}' -> {recipe.output_dir()}")
        print(f"peers: {p.strategy}, {p.count} x {p.model.source} model ({params:,} params in all)")
        print(f"  labels: {p.labels}\n  trained on '{p.source}' with labels, eval {p.eval or '-'}")
        return 0
    plan = prepare(recipe, with_data=not args.no_data, log=_log(args.quiet))
    print(f"recipe '{recipe.name}' -> {recipe.output_dir()}")
    print("\nteachers:")
    for name, t in plan.teachers.items():
        cfg = recipe.teachers[name]
        print(
            f"  {name}: {t.task.name}, {cfg.model.source} model, {t.num_params():,} params, "
            f"input {list(t.size)}x{t.channels}ch, sources {t.source_names}, eval {t.eval_name or '-'}"
        )
        print(f"    distils: {t.output_note()}")
        if t.space:
            bg = f" (background: {t.space.background})" if t.space.background else ""
            print(f"    labels: {list(t.space.names)}{bg}")
    print("\nunified label spaces:")
    for task, space in plan.spaces.items():
        print(f"  {task}: {list(space.names) if space else '(no labels)'}")
    if plan.sources is not None:
        print("\nsources:")
        for s, name in zip(plan.sources.sets, plan.sources.names):
            cfg = recipe.data.sources[name]
            print(f"  {name}: {cfg.type}, {len(s):,} images, weight {cfg.weight}")
        for name, ds in plan.eval_sets.items():
            print(f"  eval {name}: {recipe.data.eval[name].type}, {len(ds):,} images, targets {sorted(ds.target_keys)}")
    spec = plan.student_spec()
    student = build_student(spec)
    teachers = sum(t.num_params() for t in plan.teachers.values())
    params = count_params(student)
    print(f"\nstudent: {spec.type}, encoder {spec.encoder}, heads {spec.heads}")
    print(f"  {params:,} params = {params / teachers:.0%} of the teachers' {teachers:,}")
    if params > teachers:
        print(
            f"  warning: the student has more parameters than all teachers together ({params:,} > {teachers:,}):"
            " amalgamation is meant to compress; a smaller student.encoder or decoder_channels fits the usual aim"
        )
    return 0


def cmd_build(args) -> int:
    import torch

    from amalgam.distill.plan import prepare
    from amalgam.evaluation.evaluate import evaluate, size_and_speed
    from amalgam.evaluation.report import build_report, to_markdown, write_report
    from amalgam.students.build import build_student, count_params
    from amalgam.students.serialize import init_student, save_student
    from amalgam.training.distributed import init_distributed
    from amalgam.training.engine import read_checkpoint, resolve_device, seed_everything, train

    recipe = _load(args)
    run_dir = recipe.output_dir()
    if (run_dir / "report.json").exists() and not args.force:
        raise AmalgamError(f"{run_dir} already holds a finished run: pass --force to overwrite it")
    resume = read_checkpoint(run_dir / "checkpoint.pt", recipe) if args.resume else None
    device = resolve_device(recipe.device)
    ctx = init_distributed(device.type)  # torchrun: one process per device, rank 0 writes
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    log = _log(args.quiet or not ctx.is_main)
    if ctx.enabled:
        log(f"torchrun: {ctx.world} processes ({'nccl' if device.type == 'cuda' else 'gloo'}); rank 0 writes the run")
    if recipe.peers is not None:
        from amalgam.training.peer_training import to_markdown, train_peers

        run_dir.mkdir(parents=True, exist_ok=True)
        print(to_markdown(train_peers(recipe, run_dir, device, log)))
        print(f"wrote {run_dir}/peers.pt, report.json, report.md, train_log.csv")
        return 0
    plan = prepare(recipe, log=log)
    seed_everything(recipe.seed)
    student = build_student(plan.student_spec())
    if recipe.student.init is not None and resume is None:  # on resume the checkpoint's weights win
        init = recipe.resolve(recipe.student.init)
        init_student(student, plan.spaces, init)
        log(f"student: starting from {init}")
    teachers = sum(t.num_params() for t in plan.teachers.values())
    log(
        f"student: {recipe.student.type} {recipe.student.encoder}, {count_params(student):,} params "
        f"({count_params(student) / teachers:.0%} of the teachers'), device {device}, {torch.get_num_threads()} threads"
    )
    if resume is None and (run_dir / "checkpoint.pt").exists():
        log(f"{run_dir} holds an unfinished run: starting over (--resume continues it)")
    run_dir.mkdir(parents=True, exist_ok=True)
    result = train(plan, student, run_dir, device, log=log, ctx=ctx, resume=resume)
    if not ctx.is_main:
        ctx.close()
        return 0
    save_student(student, plan.spaces, recipe.model_dump(mode="json"), run_dir / "student.pt")
    evaluation = evaluate(plan, student, device, log=log)
    report = build_report(recipe.name, evaluation, size_and_speed(plan, student, device), result)
    write_report(report, run_dir)
    (run_dir / "run.json").write_text(json.dumps({"recipe": str(Path(args.recipe).resolve()), "set": args.set or []}))
    from amalgam.evaluation.visual import render

    render(run_dir, report, plan, student, plan.spaces, device)
    print(to_markdown(report))
    print(f"wrote {run_dir}/student.pt, report.json, report.md, report.html, train_log.csv")
    ctx.close()
    return 0


def cmd_eval(args) -> int:
    from amalgam.distill.plan import prepare
    from amalgam.evaluation.evaluate import evaluate, size_and_speed
    from amalgam.evaluation.report import build_report, to_markdown
    from amalgam.io import write_json
    from amalgam.students.serialize import load_student
    from amalgam.training.engine import resolve_device

    recipe = _load(args)
    if recipe.peers is not None:
        raise AmalgamError("eval: a peers recipe has no student to evaluate; `amalgam build` scores the peers")
    device = resolve_device(recipe.device)
    student, spaces = load_student(args.student)
    plan = prepare(recipe, log=_log(args.quiet))
    if set(spaces) != set(plan.spaces):
        raise AmalgamError(
            f"student {args.student} has tasks {sorted(spaces)}, the recipe's teachers {sorted(plan.spaces)}"
        )
    evaluation = evaluate(plan, student, device, spaces=spaces, log=_log(args.quiet))
    report = build_report(recipe.name, evaluation, size_and_speed(plan, student, device), None)
    if args.json:
        write_json(report, Path(args.json))
    print(to_markdown(report))
    return 0


def cmd_report(args) -> int:
    from amalgam.config.recipe import load_recipe
    from amalgam.distill.plan import prepare
    from amalgam.evaluation.visual import render
    from amalgam.students.serialize import load_student
    from amalgam.training.engine import resolve_device

    run_dir = Path(args.run_dir)
    for name in ("report.json", "run.json", "student.pt"):
        if not (run_dir / name).is_file():
            raise AmalgamError(f"{run_dir} is not a finished run: no {name}")
    run = json.loads((run_dir / "run.json").read_text())
    recipe = load_recipe(run["recipe"], run["set"])
    student, spaces = load_student(run_dir / "student.pt")
    plan = prepare(recipe, log=_log(args.quiet))
    path = render(run_dir, json.loads((run_dir / "report.json").read_text()), plan, student, spaces,
                  resolve_device(recipe.device))  # fmt: skip
    print(f"wrote {path}")
    return 0


def cmd_export(args) -> int:
    from amalgam.evaluation.export import export

    path, diff = export(Path(args.run_dir), args.format, args.task, args.output, log=_log(args.quiet))
    if diff is not None and diff > args.tolerance:
        print(
            f"amalgam: error: {path} differs from the PyTorch student by {diff:.2e} > {args.tolerance}", file=sys.stderr
        )
        return 1
    return 0


def cmd_tasks(args) -> int:
    from amalgam.task import TASKS, task_names

    for name in task_names():
        print(f"{name}\t{TASKS.origin(name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amalgam", description="Merge task-specific teachers into one student.")
    parser.add_argument("--debug", dest="debug_all", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    def recipe_cmd(name: str, fn, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("recipe", help="recipe YAML file")
        p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a recipe key (repeatable)")
        p.add_argument("--quiet", action="store_true", help="print only the result")
        p.add_argument("--debug", action="store_true", help="show tracebacks")
        p.set_defaults(fn=fn)
        return p

    p = recipe_cmd("inspect", cmd_inspect, "show teachers, label spaces, sources and the student; no training")
    p.add_argument("--no-data", action="store_true", help="skip scanning the image sources")
    p = recipe_cmd("build", cmd_build, "train the student, evaluate it per task, write the report")
    p.add_argument("--output", help="run folder (default: the recipe's output)")
    p.add_argument("--force", action="store_true", help="overwrite a finished run")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last finished epoch")
    p = recipe_cmd("eval", cmd_eval, "evaluate a saved student beside the teachers")
    p.add_argument("--student", required=True, help="student.pt of a run")
    p.add_argument("--json", help="also write the report as JSON here")
    p = sub.add_parser("report", help="regenerate report.html (curves, sample predictions) of a run")
    p.add_argument("run_dir", help="a finished build's folder")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_report, debug=False)
    p = sub.add_parser("export", help="export a run's student as TorchScript or ONNX, with a parity check")
    p.add_argument("run_dir", help="a finished build's folder")
    p.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript")
    p.add_argument("--task", help="export only this task's path (shared trunk + its branch)")
    p.add_argument("--output", help="file to write (default: RUN_DIR/student[-TASK].ts|.onnx)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max abs diff allowed by the parity check")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_export, debug=False)
    p = sub.add_parser("tasks", help="list the task plugins found")
    p.set_defaults(fn=cmd_tasks, debug=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for input errors, printed as one line)."""
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except AmalgamError as exc:
        if args.debug or args.debug_all:
            traceback.print_exc()
        print(f"amalgam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("amalgam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
