"""The report's ``tree`` section: where each task branches, the budget and (``auto``) the search."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from amalgam.evaluation.figures import pyplot
from amalgam.students.budget import resolve_budget
from amalgam.students.tree import STAGES, as_yaml, branch_points, describe


def tree_section(spec, report: dict, budget_cfg, found=None, cpu_ms: Optional[float] = None) -> dict:
    """``report["tree"]``: branch points, who shares what, the budget and the search (or None).

    Args:
        spec: the student's :class:`~amalgam.students.build.StudentSpec` (branched).
        report: the report so far (its ``student`` and ``teachers`` sizes are read).
        budget_cfg: the recipe's ``student.budget``.
        found: the :class:`~amalgam.distill.tree_search.SearchResult` of ``branch_at: auto``.
        cpu_ms: the student's batch-1 CPU latency as the budget measures it (``latency_if_budgeted``).
    """
    tasks = list(spec.heads)
    search = None
    if found is not None:
        search = {k: v for k, v in found.to_dict().items() if k != "ranking"}
        search["ranking"] = [
            {"branch_at": c.branch_at, "score": round(c.score, 6), "params": c.params} for c in found.ranking[:10]
        ]
    limits = budget_section(report, budget_cfg, cpu_ms)
    return {
        "branch_at": branch_points(spec.branch_at, tasks),
        "structure": describe(spec.branch_at, tasks),
        "budget": {k: limits[k] for k in ("params", "latency_ms", "share", "cpu_b1_ms") if k in limits},
        "over_budget": limits["over"],
        "search": search,
    }


def budget_section(report: dict, budget_cfg, cpu_ms: Optional[float] = None) -> dict:
    """``report["student"]["budget"]``, for a student of any type: the limits set (``student.budget``) and
    what the student exceeds (``over``: empty when within; a compact student's was said in the log only).

    A latency limit is judged on ``cpu_ms``, the batch-1 CPU latency measured as the build log and the
    search measure it (the fastest of several runs), and kept as ``cpu_b1_ms``; without it, on the
    report's batch-1 latency (the median, on the device the report was scored on)."""
    budget = resolve_budget(budget_cfg, report["teachers"]["params"])
    params = report["student"]["params"]
    ms = cpu_ms if cpu_ms is not None else report["student"]["latency_ms"]["b1"]
    limits = {"params": budget.params, "latency_ms": budget.latency_ms, "share": budget.share}
    measured = {"cpu_b1_ms": round(cpu_ms, 3)} if cpu_ms is not None else {}
    return limits | measured | {"over": budget.excess(params, ms)}


def budget_markdown(budget: dict) -> list[str]:
    """The report's budget line (a tree's section says it with the tree)."""
    over = budget["over"]
    return ["", f"Budget: {'over: ' + '; '.join(over) if over else 'within'} ({_budget_text(budget)}).", ""]


def tree_markdown(tree: dict) -> list[str]:
    """Markdown lines for the report."""
    lines = ["", f"Student tree: `branch_at: {as_yaml(tree['branch_at'])}`", ""]
    lines += [f"- {line}" for line in tree["structure"]]
    lines += budget_markdown(tree["budget"] | {"over": tree["over_budget"]})[:-1]
    search = tree.get("search")
    if search:
        aff, cost = search["affinity"], search["cost"]
        tasks = aff["tasks"]
        lines += ["", f"Chosen by `branch_at: auto`: {cost['steps']} warm-up steps, {cost['lookaheads']} lookaheads, "
                  f"{cost['seconds']} s, {cost['images']:,} student images.", "",
                  "| pair | " + " | ".join(f"stage {k}" for k in range(1, STAGES + 1)) + " |",
                  "|---|" + "---|" * STAGES]  # fmt: skip
        for i, a in enumerate(tasks):
            for j in range(i + 1, len(tasks)):
                vals = [0.5 * (aff["table"][k][i][j] + aff["table"][k][j][i]) for k in range(STAGES)]
                lines.append(f"| {a} + {tasks[j]} | " + " | ".join(f"{v:+.4f}" for v in vals) + " |")
    return lines + [""]


def plot_tree(tree: dict, out: Path) -> Optional[Path]:
    """``tree.png``: which stages each task shares (left) and the pair affinities per stage (right)."""
    plt = pyplot()
    points = tree["branch_at"]
    tasks = list(points)
    search = tree.get("search")
    fig, axes = plt.subplots(1, 2 if search else 1, figsize=(9 if search else 4.5, 0.6 * len(tasks) + 1.6))
    ax = axes[0] if search else axes
    for row, task in enumerate(tasks):
        for k in range(1, STAGES + 1):
            shared = [t for t in tasks if points[t] >= k] if points[task] >= k else [task]
            ax.add_patch(
                plt.Rectangle(
                    (k - 0.45, row - 0.4), 0.9, 0.8, color=plt.cm.Blues(0.25 + 0.7 * len(shared) / len(tasks))
                )
            )
            if len(shared) > 1:
                ax.text(k, row, str(len(shared)), ha="center", va="center", fontsize=8)
    ax.set(xlim=(0.5, STAGES + 0.5), ylim=(len(tasks) - 0.5, -0.5), xticks=range(1, STAGES + 1),
           yticks=range(len(tasks)), yticklabels=tasks, xlabel="encoder stage (number: tasks sharing it)",
           title=f"branch_at {as_yaml(points)}")  # fmt: skip
    ax.title.set_fontsize(8)
    if search:
        aff = search["affinity"]
        names = aff["tasks"]
        pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
        grid = [[0.5 * (aff["table"][k][i][j] + aff["table"][k][j][i]) for k in range(STAGES)] for i, j in pairs]
        bound = max(1e-9, max(abs(v) for row in grid for v in row))
        image = axes[1].imshow(grid, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
        axes[1].set(xticks=range(STAGES), xticklabels=range(1, STAGES + 1), yticks=range(len(pairs)),
                    yticklabels=[f"{names[i]}+{names[j]}" for i, j in pairs], xlabel="encoder stage",
                    title="lookahead affinity (blue: helps)")  # fmt: skip
        fig.colorbar(image, ax=axes[1])
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _budget_text(budget: dict) -> str:
    """``params at most 966,332 (65% of the teachers'), latency at most 2.1 ms``: the limits that are set (the share as
    the build log says it)."""
    parts = []
    if budget.get("params") is not None:
        share = f" ({budget['share']:.0%} of the teachers')" if budget.get("share") is not None else ""
        parts.append(f"params at most {budget['params']:,}{share}")  # the limit: not read as the student's size
    if budget.get("latency_ms") is not None:
        measured = (
            f", measured {budget['cpu_b1_ms']:.2f} ms on a CPU (the fastest of 7 runs)"
            if budget.get("cpu_b1_ms") is not None
            else ""
        )
        parts.append(f"latency at most {budget['latency_ms']:g} ms{measured}")
    return ", ".join(parts) or "no limit"
