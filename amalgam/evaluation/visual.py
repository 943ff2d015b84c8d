"""What people look at: ``report.html`` with the per-task table, training curves and sample predictions.

``amalgam build`` writes it next to ``report.md``; ``amalgam report RUN_DIR`` regenerates it.
Pictures are matplotlib PNGs: ``curves.png`` (every loss term per epoch) and ``samples.png`` (per
dense teacher: input | teacher | student | ground truth; segmentation with a colour legend over
that teacher's labels, depth with a colour bar).
"""

from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from amalgam.data.views import BatchViews, collate
from amalgam.distill.plan import Plan
from amalgam.evaluation.figures import pyplot
from amalgam.evaluation.report import RELATIVE_NOTE, TASK_COLUMNS, relative
from amalgam.evaluation.tree_report import plot_tree
from amalgam.labels import IGNORE, apply_lookup, lookup, projection
from amalgam.teachers.inputs import answer_views

SKIP = {"epoch", "seconds", "lr", "loss", "cache_hit_rate"}


def plot_curves(log_csv: Path, out: Path) -> Optional[Path]:
    """Every loss term of ``train_log.csv`` against the epoch (one panel per term)."""
    if not log_csv.is_file():
        return None
    with open(log_csv) as f:
        rows = list(csv.DictReader(f))
    terms = [k for k in rows[0] if k not in SKIP and not k.startswith("time_")] if rows else []
    if not terms:
        return None
    plt = pyplot()
    cols = min(3, len(terms))
    rows_n = -(-len(terms) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4 * cols, 2.8 * rows_n), squeeze=False)
    epochs = [int(r["epoch"]) for r in rows]
    for ax, term in zip(axes.flat, terms):
        ax.plot(epochs, [float(r[term]) if r.get(term) not in (None, "") else float("nan") for r in rows], "o-")
        ax.set_title(term)
        ax.set_xlabel("epoch")
    for ax in list(axes.flat)[len(terms) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


@torch.no_grad()
def sample_grid(plan: Plan, student: nn.Module, spaces: dict, device: torch.device, out: Path, count: int = 3):
    """Input | teacher | student | ground truth for the first ``count`` images of each dense teacher."""
    dense = [t for t in plan.teachers.values() if t.task.dense and t.eval_name in plan.eval_sets]
    if not dense:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(len(dense) * count, 4, figsize=(10, 2.6 * len(dense) * count), squeeze=False)
    student.eval().to(device)
    for block, teacher in enumerate(dense):
        teacher.to(device)
        dataset = plan.eval_sets[teacher.eval_name]
        space = spaces[teacher.task.name]
        proj = projection(teacher.space, space).to(device) if teacher.space else None
        for i in range(min(count, len(dataset))):
            sample = collate([dataset[i]])  # one at a time: label maps keep their own sizes
            images = sample["image"].to(device)
            target = torch.as_tensor(sample[teacher.task.target_key]).to(device)
            size = tuple(target.shape[-2:])
            views = BatchViews(images, plan.student_view, sample.get("original"))
            t_out, _ = answer_views(teacher, views, torch.tensor([0]), size, augmented=False, wrapped=False)
            t_pred = teacher.task.predict(t_out, size)
            s_pred = teacher.task.predict(student(images)[teacher.task.name], size, proj)
            if teacher.space is not None:
                target = apply_lookup(
                    target.long(), lookup(dataset.classes, teacher.space, plan.extents(teacher.task.name))
                )
            row = axes[block * count + i]
            row[0].imshow(images[0].permute(1, 2, 0).cpu().numpy())
            _show(row[1:], teacher, [t_pred[0], s_pred[0], target[0]], fig, legend=i == 0)
            for ax, title in zip(row, ["input", f"teacher {teacher.name}", "student", "ground truth"]):
                ax.set_title(title if i == 0 else "", fontsize=9)
                ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def _show(axes, teacher, maps: list[torch.Tensor], fig, legend: bool) -> None:
    if teacher.space is not None:  # class maps: one colour per label of the teacher
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
    valid = maps[-1] > 0  # depth: one colour scale per row, from the valid ground truth
    ref = maps[-1][valid] if valid.any() else maps[0].flatten()
    lo, hi = float(ref.min()), float(ref.max())
    im = None
    for ax, m in zip(axes, maps):
        im = ax.imshow(m.float().cpu().numpy(), cmap="magma_r", vmin=lo, vmax=hi)
    fig.colorbar(im, ax=axes[-1], fraction=0.046, pad=0.04, label="m")


def _per_class_html(row: dict, cell) -> str:
    """One teacher's per-class table (teacher vs student)."""
    body = "".join(
        f"<tr><td>{html.escape(c['class'])}</td>"
        + "".join(f"<td>{'n/a' if c[k] is None else cell(c[k])}</td>" for k in ("teacher", "student", "ratio"))
        + "</tr>"
        for c in row["per_class"]
    )
    title = f"{html.escape(row['teacher'])}: {html.escape(row['per_class_metric'])} per class"
    return f"<h2>{title}</h2><table><tr><th>class</th><th>teacher</th><th>student</th><th>ratio</th></tr>{body}</table>"


def write_html(run_dir: Path, report: dict) -> Path:
    """``report.html``: the table of ``report.json`` plus the PNGs present in ``run_dir``."""

    def cell(v) -> str:
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{cell(r[k])}</td>" for k in ("teacher", "task", "eval", "metric", "teacher_value", "student_value")
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
    per_class = "".join(_per_class_html(r, cell) for r in report.get("tasks", []) if r.get("per_class"))
    pictures = "".join(
        f'<h2>{title}</h2><img src="{name}" style="max-width:100%">'
        for name, title in (
            ("curves.png", "Training curves"),
            ("samples.png", "Sample predictions"),
            ("tree.png", "Student tree and task affinities"),
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
<table style="margin-top:1em"><tr><th>model</th><th>params</th><th>ms/img b1</th><th>ms/img b32</th></tr>
{size_rows}</table>
{per_class}
{pictures}</body></html>
"""
    path = run_dir / "report.html"
    path.write_text(page)
    return path


def render(run_dir: Path, report: dict, plan: Optional[Plan], student, spaces, device) -> Path:
    """Curves, sample grid (when the plan and student are given) and ``report.html``."""
    plot_curves(run_dir / "train_log.csv", run_dir / "curves.png")
    if plan is not None and student is not None:
        sample_grid(plan, student, spaces, device, run_dir / "samples.png")
    if report.get("tree"):
        plot_tree(report["tree"], run_dir / "tree.png")
    return write_html(run_dir, report)
