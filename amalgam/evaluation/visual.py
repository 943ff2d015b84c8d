"""What people look at: ``report.html`` with the per-task table, training curves and sample predictions.

``amalgam build`` writes it next to ``report.md``; ``amalgam report RUN_DIR`` regenerates it.
Pictures are matplotlib PNGs: ``curves.png`` (every loss term per epoch) and ``samples.png`` (per
dense teacher: input | teacher | student | ground truth; segmentation with a colour legend over
that teacher's labels, other tasks as their ``Task.visualize`` draws them: depth with a colour bar
in metres, a plugin's map in grey with a colour bar in its unit).
"""

from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from amalgam.data.views import BatchViews, collate
from amalgam.distill.plan import Plan
from amalgam.errors import error_line
from amalgam.evaluation.figures import pyplot
from amalgam.evaluation.report import (
    RELATIVE_NOTE,
    TASK_COLUMNS,
    eval_cell,
    metric_cell,
    per_class_tables,
    relative,
    table_cell,
    teacher_cell,
)
from amalgam.evaluation.tree_report import plot_tree
from amalgam.io import is_disk_full
from amalgam.labels import IGNORE, lookup, projection
from amalgam.students.serialize import run_student
from amalgam.task import Task, map_size
from amalgam.teachers.inputs import answer_views

SKIP = {"epoch", "seconds", "lr", "cache_hit_rate"}


def curve_label(column: str) -> str:
    """The y-axis of a ``train_log.csv`` column's panel: what its values are (a trial read the unweighted terms
    as the loss the log prints, which was not drawn)."""
    if column == "loss":
        return "loss, weighted (as the log prints it)"
    if column == "loss_unweighted":
        return "sum of the terms, unweighted"
    if column.startswith("ratio_"):
        return "student / teacher"
    if column.startswith("eval_"):
        return "metric on the eval set"
    return "term, unweighted"


def plot_curves(log_csv: Path, out: Path) -> Optional[Path]:
    """Every loss term of ``train_log.csv`` against the epoch (one panel per term, the weighted loss first)."""
    if not log_csv.is_file():
        return None
    with open(log_csv) as f:
        rows = list(csv.DictReader(f))
    terms = [k for k in rows[0] if k not in SKIP and not k.startswith("time_")] if rows else []
    if not terms or terms == ["loss"]:
        return None
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator  # matplotlib loads with its first picture

    cols = min(3, len(terms))
    rows_n = -(-len(terms) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4 * cols, 2.8 * rows_n), squeeze=False)
    epochs = [int(r["epoch"]) for r in rows]
    for ax, term in zip(axes.flat, terms):
        ax.plot(epochs, [float(r[term]) if r.get(term) not in (None, "") else float("nan") for r in rows], "o-")
        ax.set_title(term)
        ax.set_xlabel("epoch")
        ax.set_ylabel(curve_label(term), fontsize=8)
        if len(epochs) <= 12:  # epochs, not 1.2, 1.4 (nor 0.95-1.05 for one)
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in list(axes.flat)[len(terms) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


@torch.no_grad()
def sample_grid(
    plan: Plan,
    student: nn.Module,
    spaces: dict,
    device: torch.device,
    out: Path,
    count: int = 3,
    log: Callable[[str], None] = print,
):
    """Input | teacher | student | ground truth for the first ``count`` images of each dense teacher.

    A teacher whose panels cannot be drawn (a plugin's output matplotlib cannot show) is left blank
    with one line in ``log``: a picture never fails a build whose report is written."""
    dense = [t for t in plan.teachers.values() if t.task.dense and t.eval_name in plan.eval_sets]
    if not dense:  # said: the README's report promises a grid
        log("samples.png: not drawn (the grid shows dense answers: no dense teacher has an eval set)")
        return None
    plt = pyplot()
    fig, axes = plt.subplots(len(dense) * count, 4, figsize=(10, 2.6 * len(dense) * count), squeeze=False)
    student.eval().to(device)
    for block, teacher in enumerate(dense):
        rows = axes[block * count : (block + 1) * count]
        try:
            _teacher_rows(plan, student, spaces, device, teacher, rows, fig)
        except Exception as exc:  # noqa: BLE001 - a plugin's picture: said, never fatal
            log(f"samples.png: teacher '{teacher.name}' ({teacher.task.name}) not drawn: {error_line(exc)}")
            for ax in rows.flat:
                ax.clear()
                ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def _teacher_rows(plan: Plan, student: nn.Module, spaces: dict, device: torch.device, teacher, rows, fig) -> None:
    """One dense teacher's rows of the grid: input | teacher | student | ground truth per image."""
    teacher.to(device)
    dataset = plan.eval_sets[teacher.eval_name]
    space = spaces[teacher.task.name]
    proj = projection(teacher.space, space).to(device) if teacher.space else None
    for i in range(min(len(rows), len(dataset))):
        sample = collate([dataset[i]])  # one at a time: label maps keep their own sizes
        images = sample["image"].to(device)
        target = torch.as_tensor(sample[teacher.task.target_key]).to(device)
        size = map_size(target)  # a map of several channels comes channels last
        views = BatchViews(images, plan.student_view, sample.get("original"))
        t_out, _ = answer_views(teacher, views, torch.tensor([0]), size, augmented=False, wrapped=False)
        t_pred = teacher.task.predict(t_out, size)
        s_pred = teacher.task.predict(run_student(student, images)[teacher.task.name], size, proj)
        if teacher.space is not None:
            lut = lookup(dataset.classes, teacher.space, plan.extents(teacher.task.name))
            target = teacher.task.map_target(target.long(), lut, len(teacher.space))
        # drawn as scored: a relative depth teacher's answers (and the student's beside it) fitted per image
        t_pred, s_pred = (teacher.task.as_scored(p, target, teacher.output_kind) for p in (t_pred, s_pred))
        row = rows[i]
        row[0].imshow(images[0].permute(1, 2, 0).cpu().numpy())
        truth = target[0].permute(2, 0, 1) if target.dim() == 4 else target[0]  # drawn as predictions: channels first
        _show(row[1:], teacher, [t_pred[0], s_pred[0], truth], fig, legend=i == 0)
        for ax, title in zip(row, ["input", f"teacher {teacher.name}", "student", "ground truth"]):
            ax.set_title(title if i == 0 else "", fontsize=9)
            ax.axis("off")


def _show(axes, teacher, maps: list[torch.Tensor], fig, legend: bool) -> None:
    if teacher.space is not None and all(m.dim() == 2 for m in maps):  # class maps: one colour per label
        plt = pyplot()
        cmap = plt.get_cmap("tab20", max(len(teacher.space), 2))
        for ax, m in zip(axes, maps):
            m = m.float().cpu().masked_fill(m.cpu() == IGNORE, float("nan"))
            ax.imshow(m.numpy(), cmap=cmap, vmin=-0.5, vmax=len(teacher.space) - 0.5, interpolation="nearest")
        if legend:
            from matplotlib.patches import Patch

            handles = [Patch(color=cmap(k), label=n) for k, n in enumerate(teacher.space.names)]
            axes[-1].legend(handles=handles, fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
        return
    _show_values(axes, teacher.task, maps, fig)


def _show_values(axes, task: Task, maps: list[torch.Tensor], fig) -> None:
    """Teacher, student and ground truth as the task draws them (:meth:`Task.visualize`): maps on one
    colour scale, with a colour bar in the task's unit; RGB pictures as they are. The ground truth is drawn
    only in its predictions' shape (a normals task scored against depth has none to show) or where the task
    draws it."""
    pictures = [task.visualize(m.detach().cpu()) for m in maps]
    if maps[-1].shape != maps[0].shape and type(task).visualize is Task.visualize:
        pictures[-1] = None
    lo, hi, extend = colour_range([p for p in pictures if p is not None and p.dim() == 2])
    im = None
    for ax, picture in zip(axes, pictures):
        if picture is None:
            continue
        if picture.dim() == 2:
            im = ax.imshow(picture.float().numpy(), cmap=task.picture_cmap, vmin=lo, vmax=hi)
        else:  # [H, W, 3] RGB in [0, 1]
            ax.imshow(picture.float().clamp(0, 1).numpy())
    if im is not None:
        fig.colorbar(im, ax=axes[-1], fraction=0.046, pad=0.04, label=task.picture_unit, extend=extend)


#: share of the drawn values left beyond each end of the colour scale (a student wildly off must not flatten the
#: truth's scale), marked by the colour bar's arrows
COLOUR_TAILS = 0.01


def colour_range(maps: list[torch.Tensor]) -> tuple[float, float, str]:
    """``(low, high, extend)`` of one colour scale over every drawn map (teacher, student, truth): their finite
    values' :data:`COLOUR_TAILS` and 1 - :data:`COLOUR_TAILS` quantiles, and which ends clip (matplotlib's
    ``extend``). Scaled by the truth alone, a trial's student beyond it on 47% of its pixels was drawn as right."""
    values = [m[torch.isfinite(m)].float() for m in maps]
    values = [v for v in values if v.numel()]
    ref = torch.cat(values) if values else torch.zeros(1)
    ref = ref[torch.randperm(ref.numel(), generator=torch.Generator().manual_seed(0))[: 2**20]]  # quantile's limit
    lo, hi = (float(q) for q in torch.quantile(ref, torch.tensor([COLOUR_TAILS, 1 - COLOUR_TAILS])))
    if hi <= lo:  # one value everywhere
        lo, hi = lo - 0.5, hi + 0.5
    below, above = bool((ref < lo).any()), bool((ref > hi).any())
    return lo, hi, {(True, True): "both", (True, False): "min", (False, True): "max"}.get((below, above), "neither")


def _per_class_html(table: tuple[str, list[str], list[list], str]) -> str:
    """One per-class table (:func:`~amalgam.evaluation.report.per_class_tables`)."""
    title, header, rows, left_out = table
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{html.escape(table_cell(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<h2>{html.escape(title)}</h2><table>{head}{body}</table>" + (
        f"<p>{html.escape(left_out)}</p>" if left_out else ""
    )


#: the size table's latency columns, with their estimator as report.md names it
LATENCY_HEADERS = "<th>ms/img b1 (median of 5)</th><th>ms/img b32 (median of 5)</th>"
#: the headline cells report.md and report.html say alike
CELLS = {"teacher": teacher_cell, "eval": eval_cell, "metric": metric_cell}


def write_html(run_dir: Path, report: dict) -> Path:
    """``report.html``: the table of ``report.json`` plus the PNGs present in ``run_dir``."""

    def cell(v) -> str:
        return html.escape(table_cell(v) if v is None or isinstance(v, float) else str(v))

    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{cell(CELLS[k](r) if k in CELLS else r[k])}</td>"  # as report.md says them
            for k in ("teacher", "task", "eval", "metric", "teacher_value", "student_value")
        )
        + f"<td>{cell(r['ratio'])}</td><td><b>{cell(relative(r))}</b></td></tr>"
        for r in report.get("tasks", [])
    )
    header = "".join(f"<th>{html.escape(c)}</th>" for c in TASK_COLUMNS)
    size_rows = "".join(
        f"<tr><td>{k}</td><td>{report[k]['params']:,}</td><td>{report[k]['latency_ms']['b1']}</td>"
        f"<td>{report[k]['latency_ms']['b32']}</td></tr>"
        for k in ("student", "teachers")
        if isinstance(report.get(k), dict)
    )
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in report.get("warnings", []))
    warnings = f'<h2>Warnings</h2><ul style="color:#b00">{warnings}</ul>' if warnings else ""
    per_class = "".join(_per_class_html(t) for t in per_class_tables(report))
    unified = "".join(
        f"<tr><td>{html.escape(u['task'])}</td><td>{html.escape(u['eval'])}</td><td>"
        + ", ".join(f"{html.escape(k)} {cell(v)}" for k, v in u["metrics"].items() if not isinstance(v, list))
        + (f" (scored as {html.escape(u['scored_as'])})" if u.get("scored_as") else "")
        + "</td></tr>"
        for u in report.get("unified", [])
    )
    if unified:  # as report.md has it
        unified = (
            "<h2>Student over its whole unified label space</h2><table><tr><th>task</th><th>eval set</th>"
            f"<th>metrics</th></tr>{unified}</table>"
        ) + "".join(_per_class_html(t) for t in per_class_tables(report, unified=True))
    pictures = "".join(
        f'<h2>{title}</h2><img src="{name}" style="max-width:100%">'
        for name, title in (
            ("curves.png", "Training curves"),
            ("samples.png", "Sample predictions"),
            ("tree.png", "Student tree" + (" and task affinities" if (report.get("tree") or {}).get("search") else "")),
        )
        if (run_dir / name).exists()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>amalgam: {html.escape(report["name"])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head><body>
<h1>amalgam report: {html.escape(report["name"])}</h1>
{warnings}
<p>On the teacher's own labels and eval set. {html.escape(RELATIVE_NOTE)}</p>
<table><tr>{header}</tr>
{rows}</table>
<table style="margin-top:1em"><tr><th>model</th><th>params</th>{LATENCY_HEADERS}</tr>
{size_rows}</table>
{per_class}
{unified}
{pictures}</body></html>
"""
    path = run_dir / "report.html"
    path.write_text(page)
    return path


def render(
    run_dir: Path, report: dict, plan: Optional[Plan], student, spaces, device, log: Callable[[str], None] = print
) -> Path:
    """Curves, sample grid (when the plan and student are given) and ``report.html``; a picture that
    cannot be drawn is said in ``log`` and left out (a full disk stops: the run is not finished)."""
    drawn(lambda: plot_curves(run_dir / "train_log.csv", run_dir / "curves.png"), "curves.png", log)
    if plan is not None and student is not None:
        drawn(lambda: sample_grid(plan, student, spaces, device, run_dir / "samples.png", log=log), "samples.png", log)
    if report.get("tree"):
        drawn(lambda: plot_tree(report["tree"], run_dir / "tree.png"), "tree.png", log)
    return write_html(run_dir, report)


def drawn(draw: Callable[[], object], name: str, log: Callable[[str], None]) -> None:
    """Runs ``draw``; a picture it fails to draw is one line (a report must not be lost to a plot),
    except for a full disk, which the build says and ``--resume`` mends."""
    try:
        draw()
    except Exception as exc:  # noqa: BLE001 - any plotting failure
        if is_disk_full(exc):
            raise
        log(f"{name} not drawn: {error_line(exc)}")
