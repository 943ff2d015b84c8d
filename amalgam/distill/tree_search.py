"""``branch_at: auto`` and ``amalgam search``: the tree of most affinity within the budget.

A tree's score is the affinity it keeps: the sum, over the spine's stages, of the symmetric
affinity of every pair of tasks sharing that stage (:mod:`amalgam.distill.affinity`). Every tree
over the tasks is priced exactly (:mod:`amalgam.students.budget`); those over ``student.budget``
are out; the rest are ranked by score, fewer parameters first on ties. The result, with the
affinity table and the search's cost, goes to ``<run>/search/search.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

import torch
from pydantic import ValidationError

from amalgam.config.schema import BudgetConfig
from amalgam.distill.affinity import Affinity, measure_affinity, search_key
from amalgam.distill.plan import Plan
from amalgam.errors import AmalgamError
from amalgam.evaluation.evaluate import latency_ms
from amalgam.io import write_json
from amalgam.students.budget import Budget, TreeCosts, measure_costs, resolve_budget, unmeetable
from amalgam.students.build import build_student
from amalgam.students.sizing import EncoderChoice
from amalgam.students.tree import STAGES, all_trees, as_yaml, sharing


@dataclass
class Candidate:
    """One tree of the ranking."""

    branch_at: dict[str, int]
    score: float
    params: int
    latency_ms: float  # estimated from its parts


@dataclass
class SearchResult:
    """The chosen tree, the ranking of the trees within budget, the affinities and the cost."""

    branch_at: dict[str, int]
    ranking: list[Candidate]
    affinity: Affinity
    budget: Budget
    measured_latency_ms: float | None  # the chosen tree's, when a latency budget is set
    encoder_choice: EncoderChoice | None = None  # student.encoder: auto's rung, the searched student's

    def to_dict(self) -> dict:
        return {
            "branch_at": self.branch_at,
            "paste": f"branch_at: {as_yaml(self.branch_at)}",
            "encoder_choice": self.encoder_choice.to_dict() if self.encoder_choice else None,
            "budget": {"params": self.budget.params, "share": self.budget.share, "latency_ms": self.budget.latency_ms,
                       "teacher_params": self.budget.teacher_params},
            "chosen": asdict(self.ranking[0]) | {"measured_latency_ms": self.measured_latency_ms},
            "ranking": [asdict(c) for c in self.ranking],
            "affinity": self.affinity.to_dict(),
            "cost": {"seconds": round(self.affinity.seconds, 2), "images": self.affinity.images,
                     "steps": self.affinity.steps, "lookaheads": self.affinity.measurements},
        }  # fmt: skip


def with_budget(cfg: BudgetConfig, changes: Mapping[str, Optional[float]]) -> BudgetConfig:
    """``student.budget`` with some keys replaced (``amalgam search --budget``).

    Raises:
        AmalgamError: naming an unknown key or a value the schema refuses.
    """
    values = cfg.model_dump()
    for key, value in changes.items():
        if key not in values:
            raise AmalgamError(f"--budget: unknown key '{key}' (expected one of: {', '.join(values)})")
        values[key] = value
    try:
        return BudgetConfig(**values)
    except ValidationError as exc:
        raise AmalgamError(f"--budget: {exc.errors()[0]['msg']} ({dict(changes)})") from None


def tree_score(points: Mapping[str, int], affinity: Affinity) -> float:
    """The affinity a tree keeps: over its shared stages, the pairs of tasks that share them."""
    total = 0.0
    for stage, group in sharing(points):
        total += sum(affinity.pair(stage, a, b) for i, a in enumerate(group) for b in group[i + 1 :])
    return total


def rank_trees(tasks: list[str], affinity: Affinity, costs: TreeCosts, budget: Budget) -> list[Candidate]:
    """Every tree within ``budget``, best first (ties: fewer parameters, then a fixed order)."""
    ranking = []
    for points in all_trees(tasks):
        params, ms = costs.params(points), costs.latency_ms(points)
        if not budget.excess(params, ms):
            ranking.append(Candidate(points, tree_score(points, affinity), params, ms))
    ranking.sort(key=lambda c: (-round(c.score, 12), c.params))
    return ranking


def affinity_lines(affinity: Affinity) -> list[str]:
    """The symmetric affinity of each pair of tasks per stage, as a small table."""
    pairs = [(a, b) for i, a in enumerate(affinity.tasks) for b in affinity.tasks[i + 1 :]]
    head = "  pair" + "".join(f" | stage {k}" for k in range(1, STAGES + 1))
    rows = [
        f"  {a} + {b}" + "".join(f" | {affinity.pair(k, a, b):+.4f}" for k in range(1, STAGES + 1)) for a, b in pairs
    ]
    return [head, *rows]


def check_some_tree_fits(plan: Plan, timed: bool = True) -> tuple[Budget, TreeCosts]:
    """The budget and the priced parts of the plan's trees, once some tree fits ``student.budget`` (the
    search and ``amalgam inspect`` check it alike: inspect passed a budget the build then refused).
    ``timed=False`` times the parts only where the budget limits latency (``inspect``: a second or more
    for a big encoder at a big size).

    Raises:
        RecipeError: when none fits, naming the smallest tree's size.
    """
    tasks = list(plan.tasks)
    budget = resolve_budget(plan.recipe.student.budget, plan.teacher_params)
    needs_ms = timed or budget.latency_ms is not None
    costs = measure_costs(plan.student_spec(STAGES), tuple(plan.recipe.data.image_size), timed=needs_ms)
    if all(budget.excess(costs.params(t), costs.latency_ms(t)) for t in all_trees(tasks)):
        raise unmeetable(budget, costs, tasks)
    return budget, costs


def search_tree(plan: Plan, device: torch.device, out_dir: Path, log: Callable[[str], None] = print) -> SearchResult:
    """Chooses ``branch_at`` for the plan's tasks within ``student.budget`` (see the module's doc).

    Raises:
        RecipeError: when no tree fits the budget, naming the smallest tree's size.
    """
    recipe = plan.recipe
    tasks = list(plan.tasks)
    choice = plan.encoder_choice()
    if choice is not None:  # student.encoder: auto: the searched student is a rung of the ladder
        log(choice.describe())
    budget, costs = check_some_tree_fits(plan)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(tasks) == 1:  # one path through the student whatever the tree: a warm-up would measure nothing
        log(f"search: one task ({tasks[0]}): every tree is the same network, nothing to measure; budget checked")
        affinity = Affinity(tasks, [[[0.0]] for _ in range(STAGES)], 0, 0, 0.0, 0)
    else:
        log(f"search: {len(all_trees(tasks))} trees over {', '.join(tasks)}; budget {budget.describe()}")
        affinity = _stored_affinity(out_dir / "search.json", recipe) or measure_affinity(
            plan, device, out_dir / "warmup.pt", log
        )
    ranking = rank_trees(tasks, affinity, costs, budget)
    measured = None
    if budget.latency_ms is not None:  # the estimate is a sum of parts: check the real network
        ranking, measured = _measured_fit(plan, ranking, budget, log)
    result = SearchResult(ranking[0].branch_at, ranking, affinity, budget, measured, choice)
    write_json(result.to_dict() | {"key": search_key(recipe)}, out_dir / "search.json")
    for line in ["search: affinity (1 - L_j after / before a step on task i, symmetric)", *affinity_lines(affinity)]:
        log(line)
    best = ranking[0]
    log(f"search: chose branch_at: {as_yaml(best.branch_at)} ({best.params:,} params, ~{best.latency_ms:.1f} ms b1)")
    return result


def _stored_affinity(path: Path, recipe) -> Affinity | None:
    """A finished search's affinities, when it was run with the same settings."""
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    if stored.get("key") != json.loads(json.dumps(search_key(recipe))):
        return None
    return Affinity(
        **{k: stored["affinity"][k] for k in ("tasks", "table", "measurements", "steps", "seconds", "images")}
    )


def _measured_fit(plan: Plan, ranking: list[Candidate], budget: Budget, log, tries: int = 5):
    """Drops leading candidates whose measured batch-1 latency is over budget; after ``tries`` of them, the
    smallest tree (every stage shared) is measured too: the part-sum estimates run 15-40% low, so the
    leading ones can all miss a budget the smallest meets (a trial was told no tree fits)."""
    h, w = plan.recipe.data.image_size

    def measured(cand: Candidate) -> float:
        student = build_student(plan.student_spec(cand.branch_at)).eval()
        with torch.no_grad():
            return latency_ms(student, (1, 3, h, w), torch.device("cpu"), repeats=7)

    for i, cand in enumerate(ranking[:tries]):
        ms = measured(cand)
        if ms <= budget.latency_ms:
            return ranking[i:], ms
        log(f"search: {as_yaml(cand.branch_at)} measures {ms:.1f} ms > {budget.latency_ms:g} ms: next candidate")
    smallest = {t: STAGES for t in plan.tasks}
    last = next((i for i, c in enumerate(ranking) if c.branch_at == smallest), None)
    ms = measured(ranking[last]) if last is not None and last >= tries else None
    if ms is not None and ms <= budget.latency_ms:
        log(f"search: the smallest tree, {as_yaml(smallest)}, measures {ms:.1f} ms: within the budget, chosen")
        return ranking[last:], ms
    raise unmeetable(budget, measure_costs(plan.student_spec(STAGES), (h, w)), list(plan.tasks), ms)
