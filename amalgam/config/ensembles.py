"""``amalgamation.ensemble``: which teachers it merges, in which label order, and its recipe checks.

The rule, shared by the recipe check, the build log (and ``amalgam inspect``) and the objective:
teachers of one labelled task with the same label *set* (in any order), background, label
relations and sources form one group and give one distillation term, named ``a+b``. Each member's
outputs are reordered into the first member's label order before they are merged.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Optional, Sequence, Union

from amalgam.config.label_entries import space_of
from amalgam.config.schema import Recipe
from amalgam.errors import AmalgamError, RecipeError, under_key
from amalgam.kd.logit_ensembles import LOGIT_ENSEMBLES, build_logit_ensemble
from amalgam.labels import LabelSpace
from amalgam.plugin_contract import ensemble_problem, plugin_label
from amalgam.task import Task, get_task


class Member(NamedTuple):
    """What grouping reads of one teacher."""

    name: str
    task: str
    space: Optional[LabelSpace]  # None: a task without labels (never merged)
    sources: Sequence[str]


def group_key(member: Member) -> Optional[tuple]:
    """The key teachers merge by (None: never merged): the label set, not its order."""
    space = member.space
    if space is None:
        return None
    relations = frozenset((n, space.covered(n)) for n in space.names)  # names and what each stands for
    return member.task, relations, space.background, frozenset(member.sources)


def same_label_groups(members: Iterable[Member]) -> list[list[str]]:
    """Groups of two or more teachers with one :func:`group_key`, in recipe order."""
    groups: dict[tuple, list[str]] = {}
    for m in members:
        key = group_key(m)
        if key is not None:
            groups.setdefault(key, []).append(m.name)
    return [g for g in groups.values() if len(g) > 1]


def label_order(first: LabelSpace, member: LabelSpace) -> Optional[list[int]]:
    """The indices that put ``member``'s outputs in ``first``'s label order (None: already in it)."""
    order = [member.names.index(n) for n in first.names]
    return None if order == list(range(len(order))) else order


def recipe_members(recipe: Recipe) -> list[Member]:
    """Every teacher of a checked recipe (``labels_file`` already read into ``labels``) as a :class:`Member`."""
    members = []
    for name, t in recipe.teachers.items():
        labelled = get_task(t.task).labelled and t.labels
        space = space_of(t.labels, t.background) if labelled else None
        members.append(Member(name, t.task, space, t.sources or list(recipe.data.sources)))
    return members


def recipe_groups(recipe: Recipe) -> list[list[str]]:
    """The groups ``amalgamation.ensemble`` merges in a checked recipe (none when it is not set)."""
    return same_label_groups(recipe_members(recipe)) if recipe.amalgamation.ensemble is not None else []


def check_ensemble(recipe: Recipe) -> None:
    """Each group's ensemble builds from the recipe's arguments, and ``task_weights`` gives a group one weight.

    Raises:
        RecipeError: naming ``amalgamation.ensemble.<argument>`` (or ``.task_weights.<teacher>``) and the group.
    """
    ens = recipe.amalgamation.ensemble
    if ens is None:
        return
    for group in recipe_groups(recipe):
        term = "+".join(group)
        if problem := own_merge_problem(get_task(recipe.teachers[group[0]].task), ens.type):
            key, message = problem
            raise RecipeError(key, f"{message} (for the group {term})")
        try:
            build_logit_ensemble(ens.type, len(group), in_features=1, **ens.kwargs())  # 1: the width is the student's
        except AmalgamError as exc:
            key, msg = under_key("amalgamation.ensemble", str(exc))
            raise RecipeError(key, f"{msg} (for the group {term})") from None
        group_weight(recipe.amalgamation.task_weights, group)


def own_merge_problem(task: Task, kind: str) -> Optional[tuple[str, str]]:
    """The key and reason ``amalgamation.ensemble`` of type ``kind`` cannot merge teachers of ``task``
    (None if it can). Its types weigh softmax distributions: right for :attr:`Task.exclusive_labels`
    tasks only; any other labelled task's group is merged by the task's own ``ensemble``, with equal
    weights (``type: mean``), or refused when it has none."""
    if task.exclusive_labels:
        return None
    if problem := ensemble_problem(task):
        return "amalgamation.ensemble", problem
    if kind != "mean":
        return "amalgamation.ensemble.type", (
            f"'{kind}' weighs softmax distributions, and {plugin_label(task)} does not declare exclusive_labels:"
            " use type: mean (its teachers are merged by its own ensemble)"
        )
    return None


def group_weight(spec: Union[str, dict[str, float]], group: list[str]) -> Optional[float]:
    """The fixed weight ``task_weights`` gives a group through any of its teachers (None: none names one).

    Raises:
        RecipeError: when two teachers of the group are given different weights.
    """
    if isinstance(spec, str):
        return None
    given = {n: spec[n] for n in group if n in spec}
    if len(set(given.values())) > 1:
        shown = ", ".join(f"{n}: {w}" for n, w in given.items())
        raise RecipeError(
            f"amalgamation.task_weights.{list(given)[1]}",
            f"amalgamation.ensemble merges {' and '.join(group)} into one term '{'+'.join(group)}': give one weight"
            f" (got {shown})",
        )
    return next(iter(given.values()), None)


def ensemble_lines(recipe: Recipe) -> list[str]:
    """The build log's (and ``amalgam inspect``'s) lines on ``amalgamation.ensemble``: what it merges,
    whose outputs it reorders, or that it has nothing to merge."""
    ens = recipe.amalgamation.ensemble
    if ens is None or ens.type not in LOGIT_ENSEMBLES:
        return []
    members = {m.name: m for m in recipe_members(recipe)}
    groups = same_label_groups(members.values())
    if not groups:
        return [
            f"amalgamation.ensemble ({ens.type}): nothing to merge (no two teachers of one task have the same"
            " labels, background and sources): every teacher keeps its own term"
        ]
    lines = []
    for group in groups:
        first = members[group[0]].space
        moved = [n for n in group[1:] if label_order(first, members[n].space) is not None]
        reorder = f"; {', '.join(moved)} reordered to {group[0]}'s label order" if moved else ""
        merged = f"{' and '.join(group)} merged into one term '{'+'.join(group)}'"
        task = get_task(members[group[0]].task)
        how = "" if task.exclusive_labels else f" by task {task.name}'s own ensemble"
        lines.append(f"amalgamation.ensemble ({ens.type}): {merged}{how}{reorder}")
    return lines
