"""report.json and report.md: per-task student vs teacher, size, latency, training time."""

from __future__ import annotations

import math
from pathlib import Path

from amalgam.evaluation.evaluate import Evaluation, relative_to_teacher
from amalgam.evaluation.per_class import headline_note, scored_rows
from amalgam.io import atomic_save, write_json
from amalgam.training.result import TrainResult, weights_text


def teacher_readings(plan) -> dict[str, dict[str, str]]:
    """How each teacher was read, as the build log and ``inspect`` say it: its input and its output."""
    return {
        name: {"input": teacher.input_line(), "output": teacher.output_note()}
        for name, teacher in plan.teachers.items()
    }


def build_report(
    name: str,
    evaluation: Evaluation,
    sizes: dict,
    train: TrainResult | None,
    readings: dict | None = None,
    before: list[str] | None = None,
    data: list[str] | None = None,
) -> dict:
    """The report dict; its field names are a public contract (extend, never rename).

    ``readings`` (:func:`teacher_readings`) goes under ``teachers.reading``; ``data``, the sets' warnings
    (``Plan.data_warnings``: classes a set cannot score), come first, then ``before``, the teacher checks'
    warnings before training (``Plan.teacher_warnings``), then the evaluation's, in a build and in ``amalgam eval``.
    """
    report = {
        "name": name,
        "student": sizes["student"],
        "teachers": sizes["teachers"],
        "tasks": [r.row() for r in evaluation.tasks],
        "unified": evaluation.unified,
        # before training first: a teacher fed wrong there is the cause of the per-class losses evaluation
        # says after (a trial's report put the cause 10th of 10)
        "warnings": [*(data or []), *before_training(before or []), *evaluation.warnings()],
        "train": {
            "epochs": train.epochs if train else 0,
            "seconds": round(train.seconds, 2) if train else 0.0,
            "images_per_second": round(train.images_per_second, 2) if train else 0.0,
        },
    }
    if readings:
        report["teachers"] = {**report["teachers"], "reading": readings}
    if train:
        report["train"]["precision"] = train.precision
        report["train"]["processes"] = train.processes  # torchrun's count: images_per_second is all of theirs
    if train and train.task_weights:
        report["train"]["task_weighting"] = train.task_weighting
        # significant figures: a starved weight (exp(-10)) must not print as 0
        report["train"]["task_weights"] = {term: float(f"{w:.4g}") for term, w in train.task_weights.items()}
    return report


#: the headline table's columns (report.md; report.html shows the same)
TASK_COLUMNS = ("teacher", "task", "eval set", "metric", "teacher's", "student's", "ratio", "vs teacher")
RELATIVE_NOTE = (
    "ratio = student / teacher; vs teacher = the same with lower-is-better metrics turned over "
    "(teacher / student): 1 is as good as the teacher, and higher is better for every metric. A labelled"
    " teacher's row scores the student's answer among that teacher's labels only; the student over all its"
    " labels, as it answers when deployed, is the whole-label-space table."
)


def eval_cell(row: dict) -> str:
    """A headline row's eval set with the images it scored (``scenes-val (60 images)``; a report of before the
    count: the name)."""
    count = row.get("images")
    return f"{row['eval']} ({count:,} image{'s' if count != 1 else ''})" if count else row["eval"]


def metric_cell(row: dict) -> str:
    """A headline row's metric with its direction: ``rmse (lower is better)``."""
    return f"{row['metric']} ({'higher' if row['higher_is_better'] else 'lower'} is better)"


def relative(row: dict) -> float:
    """A ``tasks[]`` row's ``relative`` (computed for a report.json written before it existed)."""
    if "relative" in row:
        return row["relative"]
    return relative_to_teacher(row["teacher_value"], row["student_value"], row["higher_is_better"])


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def before_training(lines: list[str]) -> list[str]:
    """The teacher checks' warnings before training, as report.json says them: ``before training: ...``.
    A task's warning that evaluation says again from the whole set is not among them
    (:attr:`amalgam.task.EvalReading.repeated`)."""
    return [f"before training: {line}" for line in lines]


def to_markdown(report: dict) -> str:
    """The report as Markdown tables."""
    lines = [f"# amalgam report: {report['name']}", ""]
    if report.get("warnings"):  # first: they make a mean ratio untrustworthy
        lines += ["**Warnings** (a mean ratio hides these):", ""]
        lines += [f"- {w}" for w in report["warnings"]] + [""]
    lines += [f"| {' | '.join(TASK_COLUMNS)} |", "|---" * len(TASK_COLUMNS) + "|"]
    for r in report["tasks"]:
        lines.append(
            f"| {teacher_cell(r)} | {r['task']} | {eval_cell(r)} | {metric_cell(r)} | "
            f"{_fmt(r['teacher_value'])} | {_fmt(r['student_value'])} | {_fmt(r['ratio'])} | {_fmt(relative(r))} |"
        )
    lines += ["", RELATIVE_NOTE]
    wrapped = [f"{r['teacher']} ({r['teacher_wrap']})" for r in report["tasks"] if r.get("teacher_wrap")]
    if wrapped:
        lines += [
            "",
            f"Teachers are scored as the plain models; the wraps of {', '.join(wrapped)}"
            " shaped the training targets only.",
        ]
    lines += _per_class_markdown(report)
    lines += _unified_markdown(report)
    lines += _per_class_markdown(report, unified=True)
    s, t = report["student"], report["teachers"]
    share = s["params"] / t["params"] if t["params"] else float("nan")
    lines += [
        "",
        # two estimators, named: this table is the median of 5 on the scoring device, the budget line the
        # fastest of 7 on a CPU, which differ on a loaded machine (a trial read them as a contradiction)
        "| model | params | latency b1 (ms/img, median of 5) | latency b32 (ms/img, median of 5) |",
        "|---|---|---|---|",
        f"| student | {s['params']:,} ({share:.0%} of teachers) | {s['latency_ms']['b1']} | {s['latency_ms']['b32']} |",
        f"| all teachers | {t['params']:,} | {t['latency_ms']['b1']} | {t['latency_ms']['b32']} |",
        "",
    ]
    if s.get("encoder"):
        lines += [f"Student encoder: {s['encoder']}", ""]
    if s.get("decoders"):
        widths = ", ".join(f"{t} {w}" for t, w in s["decoders"].items())
        if s.get("decoder_shared"):  # a compact student: one decoder, not one a task
            widths = f"one, shared by {', '.join(s['decoders'])}: {next(iter(s['decoders'].values()))}"
        lines += [f"Student decoders: {widths}", ""]
    if report.get("encoder_choice"):  # the student was sized by student.encoder: auto
        lines += [f"Student: {report['encoder_choice']['line']}", ""]
    lines += _student_shape_markdown(report)
    for teacher, reading in t.get("reading", {}).items():
        lines += [f"Teacher {teacher}: {reading['input']}; distilling {reading['output']}.", ""]
    train = report["train"]
    if train["epochs"]:  # `amalgam eval` trains nothing: no training line
        speed = train["images_per_second"]
        precision = f", {train['precision']}" if "precision" in train else ""  # reports before it have none
        epochs = f"{train['epochs']} epoch{'s' if train['epochs'] != 1 else ''}"
        lines += [f"Training: {epochs}, {train['seconds']} s, {speed} images/s{precision}.", ""]
        if train.get("task_weights"):  # a term starved by its weight shows here
            text = weights_text(train["task_weighting"], train["task_weights"])
            lines += [text[0].upper() + text[1:] + ".", ""]  # not capitalize(): it lowers teachers' names
    return "\n".join(lines)


def _unified_markdown(report: dict) -> list[str]:
    """The whole-label-space table: each task's row over the student's unified labels."""
    lines = ["", "Student over its whole unified label space:", "", "| task | eval set | metrics |", "|---|---|---|"]
    for u in report["unified"]:
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in u["metrics"].items() if not isinstance(v, list))
        if u.get("scored_as"):  # its teachers read otherwise: the rule chosen, said beside the numbers
            shown += f" (scored as {u['scored_as']})"
        lines.append(f"| {u['task']} | {u['eval']} | {shown} |")
    return lines


def _student_shape_markdown(report: dict) -> list[str]:
    """The tree (a branched student) with its budget, or the budget alone (a compact one: its verdict was
    said in the build log only)."""
    from amalgam.evaluation.tree_report import budget_markdown, tree_markdown

    if report.get("tree"):
        return tree_markdown(report["tree"])
    budget = report["student"].get("budget")
    return budget_markdown(budget) if budget else []


def teacher_cell(row: dict) -> str:
    """A headline row's teacher: its name, and what its per-class verdicts warn of."""
    return row["teacher"] + headline_note(row.get("per_class_verdicts") or {})


def per_class_tables(report: dict, unified: bool = False) -> list[tuple[str, list[str], list[list], str]]:
    """The report's per-class tables as ``(title, header, rows of values, line of classes left out)``:
    each teacher's (teacher vs student on its labels; the student over all its labels where that
    differs, and each class's ground truth), or with ``unified`` the student's over all its labels per
    whole-label-space row. report.md and report.html draw the same tables."""
    if unified:
        return _unified_tables(report)
    tables = []
    for r in report["tasks"]:
        if not r.get("per_class"):
            continue
        kept, left_out = scored_rows(r["per_class"])
        keys = ["class", "teacher", "student", "ratio"]
        keys += [k for k in ("student_all_labels", "support") if any(k in c for c in kept)]
        rows = [[c.get(k) for k in keys] for c in kept]
        title = f"{r['teacher']}: {r['per_class_metric']} per class"
        tables.append((title, [COLUMN_NAMES.get(k, k) for k in keys], rows, left_out))
    return tables


def _unified_tables(report: dict) -> list[tuple[str, list[str], list[list], str]]:
    metrics = {r["task"]: r["per_class_metric"] for r in report["tasks"] if r.get("per_class_metric")}
    tables = []
    for u in report["unified"]:
        metric = metrics.get(u["task"])
        values = u["metrics"].get(metric) if metric else None
        if not u.get("classes") or not isinstance(values, list):
            continue
        kept, left_out = scored_rows([{"class": name, "student": v} for name, v in zip(u["classes"], values)])
        title = f"Student over all its labels on '{u['eval']}': {metric} per class"
        tables.append((title, ["class", "student"], [[c["class"], c["student"]] for c in kept], left_out))
    return tables


#: per-class table headers of row keys that are not their own name
COLUMN_NAMES = {"student_all_labels": "student, all its labels", "support": "ground truth"}


def _per_class_markdown(report: dict, unified: bool = False) -> list[str]:
    lines = []
    for title, header, rows, left_out in per_class_tables(report, unified):
        lines += ["", title, "", f"| {' | '.join(header)} |", "|---" * len(header) + "|"]
        lines += [f"| {' | '.join(table_cell(v) for v in row)} |" for row in rows]
        lines += ["", left_out] if left_out else []
    return lines


def table_cell(value) -> str:
    """A per-class table's cell: a count with thousands marks, a score to 4 decimals, n/a for none."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return _fmt(value)


def write_report(report: dict, run_dir: Path) -> None:
    """Writes report.md, then report.json into the run folder: report.json marks a finished run, so
    it is written last (a build that stops between them is resumed, not taken as finished)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_save(report, run_dir / "report.md", lambda r, tmp: Path(tmp).write_text(to_markdown(r)))
    write_json(report, run_dir / "report.json")
