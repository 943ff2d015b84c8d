"""Label relations of a recipe that likely do not say what was meant, said before any training.

A teacher's label may stand for other classes (``{footwear: [Sandal, Sneaker]}``). Two ways such a
relation silently splits or makes classes: another teacher's plain label of the same name is a class
of its own beside them (the student then names ``footwear`` for every shoe), and a relation whose
target no other teacher names makes that target a class of this teacher's alone (a typo, ``Cota``
for ``Coat``, took every coat of the other teachers).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional

from amalgam.labels.algebra import LabelSpace
from amalgam.labels.names import yaml_name


def relation_warnings(spaces: Mapping[str, LabelSpace], named: Iterable[str] = ()) -> list[str]:
    """Lines for the teachers (name -> label space) of one task: a plain label named as another
    teacher's relation, and a rename (a relation onto one class) whose target no other teacher and
    nothing of ``named`` (the task's catch-all, its eval sets' class names) names, with two teachers
    or more. A coarse label over classes only an eval set names is a class split nobody teaches, not
    a typo: not said here."""
    relations = {(t, n): s.covered(n) for t, s in spaces.items() for n in s.known() if s.covered(n) != (n,)}
    plain = {t: {n for n in s.known() if s.covered(n) == (n,)} for t, s in spaces.items()}
    lines = []
    fresh: dict[str, list[tuple[str, str]]] = {}  # teacher -> its renames onto classes nobody else names
    for (owner, name), covers in relations.items():
        shown = ", ".join(covers)
        for other, names in plain.items():
            if other != owner and name in names and name not in covers:
                lines.append(
                    f"teachers.{other}.labels: '{name}' is a class of its own, while teacher {owner}'s '{name}'"
                    f" stands for {shown}: if they mean the same, write {{{name}: [{shown}]}} for {other} too"
                )
        if len(spaces) < 2:
            continue
        if len(covers) > 1:  # a group: a member nothing else names is a class nobody teaches apart (a typo?)
            lines += _unnamed_members(owner, name, covers, spaces, set(named))
            continue
        groups = {(t, n): c for (t, n), c in relations.items() if t != owner and n == covers[0] and n not in c}
        for (other, label), members in groups.items():  # a rename onto another teacher's group label
            lines.append(
                f"teachers.{owner}.labels: '{name}' stands for '{label}', which teacher {other}'s labels make a"
                f" group of {', '.join(members)}, not a class: so '{label}' becomes a class of {owner}'s alone, beside"
                f" them; if it is that group, write {{{yaml_name(name)}: [{', '.join(map(yaml_name, members))}]}}"
            )
        named_elsewhere = {c for t, s in spaces.items() if t != owner for n in s.known() for c in (n, *s.covered(n))}
        fresh.setdefault(owner, []).extend(
            (name, t) for t in covers if t not in named_elsewhere and t not in set(named)
        )
    lines += [line for owner, renames in fresh.items() for line in _fresh_lines(owner, renames)]
    return [f"warning: {line}" for line in lines]


def _unnamed_members(
    owner: str, name: str, covers: tuple[str, ...], spaces: Mapping[str, LabelSpace], named: set[str]
) -> list[str]:
    """The line for a group label's members that no other teacher and no eval set names (a trial's
    ``{warm: [red, orange, amber]}``, ``amber`` a typo of another teacher's ``yellow``)."""
    others = {c for t, s in spaces.items() if t != owner for n in s.known() for c in (n, *s.covered(n))}
    lost = [c for c in covers if c not in others and c not in named]
    if not lost or len(lost) == len(covers):  # none of it named anywhere: a split only an eval set could show
        return []
    return [
        f"teachers.{owner}.labels: '{name}' stands for {', '.join(covers)}, of which {', '.join(lost)} no other"
        f" teacher and no eval set names: a class nobody teaches apart; a typo of one of theirs?"
    ]


#: renames of one teacher onto classes nobody else names from which they read as a deliberate renaming
#: (digits named anew), said in one line, not one typo question each
FRESH_MANY = 3


def _fresh_lines(owner: str, renames: list[tuple[str, str]]) -> list[str]:
    """The lines for a teacher's renames onto classes no other teacher names: each a class of its alone."""
    if len(renames) < FRESH_MANY:
        return [
            f"teachers.{owner}.labels: '{name}' stands for '{target}', a class no other teacher names, so it becomes"
            f" a class of {owner}'s alone: a typo of one of theirs?"
            for name, target in renames
        ]
    shown = ", ".join(f"'{n}' for '{t}'" for n, t in renames[:8]) + (" ..." if len(renames) > 8 else "")
    return [
        f"teachers.{owner}.labels: {len(renames)} renames onto classes no other teacher names ({shown}): each becomes"
        f" a class of {owner}'s alone; if one was meant as another teacher's class, it is a typo of its name"
    ]


#: share of an eval class's images (or pixels) a teacher must answer with one of its labels the set does
#: not name, for that label to be said to be perhaps that class under another name
UNNAMED_SHARE = 0.6


def unnamed_label_lines(
    teacher: str,
    space: LabelSpace,
    classes: list[str],
    matrix,
    least: int,
    unit: str,
    where: str,
    extent: Optional[Mapping[str, frozenset[str]]] = None,
) -> list[str]:
    """Lines for labels of a teacher that its eval set does not name but that it answers on most of
    the set's images of a class it has no label for: one class under two names (``tshirt`` and
    ``T-shirt/top``, ``4`` and ``Coat``) is two classes of the student, and the teacher's own answers
    there go unscored. ``matrix``: the set's classes (rows, ``classes`` order) x the teacher's labels,
    counts of ``unit`` (images or pixels); a class needs ``least`` of them to be judged.

    A closed-set teacher also answers its nearest label on classes it lacks, so several candidates for
    one label are named together, never one picked."""
    extent = extent or {}
    stands = {name: set(extent.get(name, (name,))) for name in classes}  # a set class's unified classes
    knows = {c for n in space.known() for c in (n, *space.covered(n))}
    lacking = [c for c, n in enumerate(classes) if not stands[n] & knows and n != space.background]
    totals = matrix.sum(1).tolist()
    lines = []
    for label in space.known():
        if any(stands[name] & {label, *space.covered(label)} for name in classes):
            continue  # the set names it (or a class it stands for): scored, not a question of names
        k = space.names.index(label)
        found = [
            (classes[c], int(matrix[c, k]), int(totals[c]))
            for c in lacking
            if totals[c] >= least and matrix[c, k] >= UNNAMED_SHARE * totals[c]
        ]
        if not found:
            continue
        found.sort(key=lambda f: -f[1] / f[2])
        shown = ", ".join(f"'{name}' ({n} of {total})" for name, n, total in found[:5])
        if len(found) == 1:
            lines.append(
                f"teacher {teacher} answers '{label}', a label the set does not name, on most {unit} of its class"
                f" {shown}, which it has no label for {where}: if they are one class, write"
                f" {{{yaml_name(label)}: {yaml_name(found[0][0])}}} in teachers.{teacher}.labels (two names are two"
                " classes of the student)"
            )
        else:
            lines.append(
                f"teacher {teacher} answers '{label}', a label the set does not name, on most {unit} of its classes"
                f" (by share) {shown}, none of which it has a label for {where}: if '{label}' is one of them, write"
                f" {{{yaml_name(label)}: <that class>}} in teachers.{teacher}.labels (a teacher also answers its"
                " nearest label on classes it lacks)"
            )
    return lines
