"""Tree-shaped branched students: where each task leaves the shared encoder.

``student.branch_at`` is one number (every task shares the first N stages) or a mapping from task
to its branch point, e.g. ``{classification: 2, segmentation: 4, depth: 4}``. Stage ``k`` (1-based)
is shared by every task whose branch point is ``k`` or more; a task with a lower branch point runs
its own copy. Because the sharing sets only shrink as ``k`` grows, the shared stages form one
spine: tasks leave it at their branch points.

Rule (said in the log and in ``amalgam inspect``): a stage only one task would run is that task's
own, so with two or more tasks a branch point above every other task's is lowered to the next
highest (``{cls: 2, seg: 3, depth: 4}`` is built as ``{cls: 2, seg: 3, depth: 3}``: the same
network, the same parameters).
"""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence, Union

from amalgam.errors import AmalgamError

STAGES = 5  # the student's encoder has five stages
BranchAt = Union[int, Mapping[str, int]]


def branch_points(branch_at: BranchAt, tasks: Sequence[str]) -> dict[str, int]:
    """Each task's effective branch point (see the module's rule), in ``tasks`` order.

    Raises:
        AmalgamError: a mapping that misses a task or names an unknown one, or a point outside 0-5.
    """
    if isinstance(branch_at, int):
        points = {t: branch_at for t in tasks}
    else:
        missing = [t for t in tasks if t not in branch_at]
        unknown = [t for t in branch_at if t not in tasks]
        if missing or unknown:
            problem = f"misses {missing}" if missing else f"names unknown tasks {unknown}"
            raise AmalgamError(f"the branch_at mapping {problem}; it needs one point per task: {', '.join(tasks)}")
        points = {t: int(branch_at[t]) for t in tasks}
    bad = {t: p for t, p in points.items() if not 0 <= p <= STAGES}
    if bad:
        raise AmalgamError(f"the branch points must lie in 0-{STAGES}, got {bad}")
    if len(points) < 2:
        return points
    second = sorted(points.values())[-2]
    return {t: min(p, second) for t, p in points.items()}


def spine_depth(points: Mapping[str, int]) -> int:
    """Number of stages in the shared spine (the deepest branch point)."""
    return max(points.values(), default=0)


def is_uniform(points: Mapping[str, int]) -> bool:
    """True when every task branches at the same stage (today's single-number ``branch_at``)."""
    return len(set(points.values())) <= 1


def sharing(points: Mapping[str, int]) -> list[tuple[int, list[str]]]:
    """``(stage, tasks sharing it)`` for each spine stage, 1-based."""
    return [(k, [t for t, p in points.items() if p >= k]) for k in range(1, spine_depth(points) + 1)]


def describe(branch_at: BranchAt, tasks: Sequence[str]) -> list[str]:
    """Lines for the log and ``inspect``: who shares which stages, and any lowered branch point."""
    points = branch_points(branch_at, tasks)
    lines = []
    for group, run in itertools.groupby(sharing(points), key=lambda s: tuple(s[1])):
        stages = [k for k, _ in run]
        span = f"stage {stages[0]}" if len(stages) == 1 else f"stages {stages[0]}-{stages[-1]}"
        lines.append(f"{span} shared by {' + '.join(group)}")
    for task, p in points.items():
        own = f"{p + 1}-{STAGES}" if p < STAGES - 1 else str(STAGES) if p == STAGES - 1 else "none"
        lines.append(f"{task}: branches at {p}, own encoder stages {own}")
    if not isinstance(branch_at, int):
        for task, p in points.items():
            if branch_at[task] != p:
                span = f"stage {p + 1}" if branch_at[task] == p + 1 else f"stages {p + 1}-{branch_at[task]}"
                lines.append(
                    f"{task}: branch_at {branch_at[task]} is built as {p}: no other task runs {span} "
                    "(same network, same parameters)"
                )
    return lines


def as_yaml(points: Mapping[str, int]) -> str:
    """``{task: point, ...}`` ready to paste under ``student.branch_at``."""
    return "{" + ", ".join(f"{t}: {p}" for t, p in points.items()) + "}"


def all_trees(tasks: Sequence[str]) -> list[dict[str, int]]:
    """Every distinct tree over ``tasks`` (branch points already in their effective form), in a fixed order."""
    seen, trees = set(), []
    for combo in itertools.product(range(STAGES + 1), repeat=len(tasks)):
        points = branch_points(dict(zip(tasks, combo)), tasks)
        key = tuple(points.values())
        if key not in seen:
            seen.add(key)
            trees.append(points)
    return trees
