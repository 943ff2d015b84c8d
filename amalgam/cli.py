"""The ``amalgam`` command: argparse over :mod:`amalgam.api` (inspect, build, search, eval, report), export, tasks."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from amalgam import api
from amalgam.errors import AmalgamError
from amalgam.evaluation.export import ParityError, export
from amalgam.evaluation.report import to_markdown
from amalgam.io import check_writable, write_json
from amalgam.outstream import surviving_stdout
from amalgam.plugin_contract import contract_problem, mirror_note, plugin_error_line, plugin_label
from amalgam.students.tree import as_yaml
from amalgam.task import TASKS, name_problem, task_names
from amalgam.training.distributed import launched_world_size
from amalgam.training.interrupt import terminate_as_interrupt
from amalgam.training.progress import Console


def cmd_inspect(args) -> int:
    found = api.inspect(
        args.recipe, args.set, with_data=not args.no_data, quiet=args.quiet, suggest_labels=args.suggest_labels
    )
    print(found.summary())
    if found.suggestions is not None:
        print("\n" + "\n".join(found.suggestions))
    return 0


def json_destination(path: Path) -> None:
    """Raises one line where ``--json`` cannot be written: a folder, or a folder above it that is a file or
    read-only."""
    if path.is_dir():
        raise AmalgamError(f"--json {path}: a folder, not a file: name the file, e.g. {path / 'report.json'}")
    check_writable(path.parent, "--json folder")  # the file is replaced by a rename: its folder is what counts


def positive_int(text: str) -> int:
    """argparse's type of a count of 1 or more (``--suggest-labels 0`` divided by zero, ``-3`` sliced)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"a count of 1 or more, got {value}")
    return value


def cmd_build(args) -> int:
    run = api.build(args.recipe, args.set, output=args.output, force=args.force, resume=args.resume, quiet=args.quiet)
    if run.report:  # under torchrun only rank 0 writes and prints
        print(run.summary())
        print(f"wrote {run.run_dir}/{', '.join(path.name for path in run.paths.values())}")
    return 0


def cmd_eval(args) -> int:
    if (world := launched_world_size()) > 1:  # every rank scored it all, printed it and wrote one --json (a trial)
        raise AmalgamError(f"amalgam eval runs in one process, not under torchrun ({world} launched): run it plainly")
    if args.json:  # before the evaluation: a path it cannot write failed after all of it, in a traceback
        json_destination(Path(args.json))
    report = api.evaluate(args.recipe, args.student, args.set, quiet=args.quiet)
    if args.json:
        write_json(report, Path(args.json))
    print(to_markdown(report))
    return 0


def cmd_search(args) -> int:
    budget = parse_budget(args.budget or [])
    found = api.search(args.recipe, args.set, budget=budget, output=args.output, quiet=args.quiet)
    print("ranking (affinity kept, params, ~latency b1):")
    for i, c in enumerate(found.ranking[: args.top], 1):
        print(f"  {i:2d}. {as_yaml(c.branch_at)}  score {c.score:+.4f}  {c.params:,} params  ~{c.latency_ms:.1f} ms")
    print("\npaste under student:")
    if found.encoder_choice is not None:  # the tree was searched on auto's rung: pin it with the tree
        rung = found.encoder_choice.rung
        print(f"  encoder: {rung.encoder}\n  decoder_channels: {list(rung.decoder_channels)}")
    print(f"  branch_at: {as_yaml(found.branch_at)}")
    return 0


def parse_budget(items: list[str]) -> dict[str, float | None]:
    """``--budget params=0.4,latency_ms=20`` (a bare number is the params share; none lifts a limit)."""
    budget: dict[str, float | None] = {}
    for part in (p for item in items for p in item.split(",")):
        key, sep, value = part.partition("=")
        key, value = (key.strip(), value.strip()) if sep else ("params", key.strip())
        try:
            budget[key] = None if value in ("none", "null") else float(value)
        except ValueError:
            raise AmalgamError(f"--budget: {key} needs a number, got '{value}'") from None
    return budget


def cmd_report(args) -> int:
    print(f"wrote {api.render_report(args.run_dir, quiet=args.quiet, recipe=args.recipe)}")
    return 0


def cmd_export(args) -> int:
    try:
        export(Path(args.run_dir), args.format, args.task, args.output, Console(args.quiet), args.tolerance)
    except ParityError as exc:  # the export ran, and its file failed the check: 1, as a failed test
        print(f"amalgam: error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_tasks(args) -> int:
    """Each task found and where it came from (``name<TAB>origin``; ``--details`` adds how its outputs
    are mirrored); a plugin that breaks the contract is said on stderr, and the exit status is 2."""
    broken = 0
    for name in task_names():
        cls = TASKS.get(name)
        problem = contract_problem(cls) if isinstance(cls, type) else "not a class"
        if problem is None and (misnamed := name_problem(name, cls.name)):  # inspect and build stop on it
            broken += 1
            print(f"{name}\t{TASKS.origin(name)}" + ("\tbroken" if args.details else ""))
            print(f"amalgam: error: {misnamed}", file=sys.stderr)
            continue
        details = f"\t{mirror_note(cls()) if problem is None else 'broken'}" if args.details else ""
        print(f"{name}\t{TASKS.origin(name)}{details}")
        if problem is not None:
            broken += 1
            print(f"amalgam: error: {plugin_label(cls)}: {problem}", file=sys.stderr)
    for name, error in TASKS.broken().items():  # installed but not importable
        broken += 1
        print(f"{name}\t(failed to load)" + ("\tbroken" if args.details else ""))
        print(f"amalgam: error: {error}", file=sys.stderr)
    return 2 if broken else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amalgam", description="Merge task-specific teachers into one student.")
    parser.add_argument("--debug", dest="debug_all", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    debug = argparse.ArgumentParser(add_help=False)  # every command takes --debug after its name too
    debug.add_argument("--debug", action="store_true", help="show tracebacks")
    quiet = argparse.ArgumentParser(add_help=False)  # every command but tasks, whose output is the result
    quiet.add_argument("--quiet", action="store_true", help="print only the result")

    def command(name: str, help_: str, quiets: bool = True) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, parents=[debug, quiet] if quiets else [debug])

    def recipe_cmd(name: str, fn, help_: str) -> argparse.ArgumentParser:
        p = command(name, help_)
        p.add_argument("recipe", help="recipe YAML file")
        p.add_argument(
            "--set",
            action="append",
            metavar="KEY.PATH=VALUE",
            help="override a recipe key (repeatable); a mapping value merges key by key, as a base: variant's"
            " does; {} empties",
        )
        p.set_defaults(fn=fn)
        return p

    p = recipe_cmd("inspect", cmd_inspect, "show teachers, label spaces, sources and the student; no training")
    p.add_argument("--no-data", action="store_true", help="skip scanning the image sources")
    p.add_argument(
        "--suggest-labels",
        nargs="?",
        type=positive_int,
        const=512,
        metavar="IMAGES",
        help="propose label relations from the teachers' predictions on IMAGES source images (default 512)",
    )
    p = recipe_cmd("build", cmd_build, "train the student, evaluate it per task, write the report")
    p.add_argument("--output", help="run folder (default: the recipe's output)")
    p.add_argument("--force", action="store_true", help="overwrite a finished or unfinished run")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a stopped run where it saved last (a finished epoch, or mid-epoch after SIGTERM/SIGINT)",
    )
    p = recipe_cmd("eval", cmd_eval, "evaluate a saved student beside the teachers")
    p.add_argument("--student", required=True, help="student.pt of a run")
    p.add_argument("--json", help="also write the report as JSON here")
    p = recipe_cmd("search", cmd_search, "choose student.branch_at within student.budget from the teachers' affinities")
    p.add_argument(
        "--budget", action="append", metavar="params=SHARE,latency_ms=MS",
        help="laid over student.budget key by key (latency_ms=none lifts the recipe's latency limit)",
    )  # fmt: skip
    p.add_argument("--output", help="folder of search.json (default: the run folder's search/)")
    p.add_argument("--top", type=int, default=10, help="candidate trees to list")
    p = command("report", "regenerate report.html (curves, sample predictions) of a run")
    p.add_argument("run_dir", help="a finished build's folder")
    p.add_argument("--recipe", help="where the run's recipe file is now, if it moved (its relative paths with it)")
    p.set_defaults(fn=cmd_report)
    p = command("export", "export a run's student as TorchScript or ONNX, with a parity check")
    p.add_argument("run_dir", help="a finished build's folder (or its student.pt)")
    p.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript", help="default: torchscript")
    p.add_argument("--task", help="export only this task's path (shared trunk + its branch)")
    p.add_argument("--output", help="file to write (default: RUN_DIR/student[-TASK].ts|.onnx)")
    p.add_argument(
        "--tolerance",
        type=float,
        help="max difference allowed by the parity check: absolute, relative where the student answers beyond"
        " +-1 (default 1e-4; given, it must be checked)",
    )
    p.set_defaults(fn=cmd_export)
    p = command("tasks", "list the task plugins found", quiets=False)
    p.add_argument("--details", action="store_true", help="also say how each task mirrors its outputs")
    p.set_defaults(fn=cmd_tasks)
    return parser


#: commands whose product is their standard output (a lost one is their failure, not a build's)
PRINTED_ONLY = frozenset({"inspect", "eval", "search", "tasks"})


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for input errors, printed as one line)."""
    args = build_parser().parse_args(argv)
    try:
        with terminate_as_interrupt(), surviving_stdout() as stdout:
            code = args.fn(args)
        # a command whose product is what it prints failed with it (build, report and export write files)
        printed_only = args.command in PRINTED_ONLY and not getattr(args, "json", None)  # eval --json has a file
        return 1 if code == 0 and stdout.lost and printed_only else code
    except AmalgamError as exc:
        if args.debug or args.debug_all:
            traceback.print_exc()
        print(f"amalgam: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a task plugin's bug is named in one line; amalgam's own keeps its traceback
        if (line := plugin_error_line(exc)) is None:
            raise
        if args.debug or args.debug_all:
            traceback.print_exc()
        print(f"amalgam: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Stopped (after a saved Ctrl-C or SIGTERM) carries its exit code
        print(f"amalgam: interrupted{f' ({exc})' if str(exc) else ''}", file=sys.stderr)
        return getattr(exc, "exit_code", 130)


if __name__ == "__main__":
    raise SystemExit(main())
