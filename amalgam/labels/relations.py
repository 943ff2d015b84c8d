"""Label relations of a recipe that likely do not say what was meant, said before any training.

A teacher's label may stand for other classes (``{footwear: [Sandal, Sneaker]}``). Two ways such a
relation silently splits or makes classes: another teacher's plain label of the same name is a class
of its own beside them (the student then names ``footwear`` for every shoe), and a relation whose
target no other teacher names makes that target a class of this teacher's alone (a typo, ``Cota``
for ``Coat``, took every coat of the other teachers).
"""

from __future__ import annotations

from typing import Iterable, Mapping

from amalgam.labels.algebra import LabelSpace


def relation_warnings(spaces: Mapping[str, LabelSpace], named: Iterable[str] = ()) -> list[str]:
    """Lines for the teachers (name -> label space) of one task: a plain label named as another
    teacher's relation, and a rename (a relation onto one class) whose target no other teacher and
    nothing of ``named`` (the task's catch-all, its eval sets' class names) names, with two teachers
    or more. A coarse label over classes only an eval set names is a class split nobody teaches, not
    a typo: not said here."""
    relations = {(t, n): s.covered(n) for t, s in spaces.items() for n in s.known() if s.covered(n) != (n,)}
    plain = {t: {n for n in s.known() if s.covered(n) == (n,)} for t, s in spaces.items()}
    lines = []
    for (owner, name), covers in relations.items():
        shown = ", ".join(covers)
        for other, names in plain.items():
            if other != owner and name in names and name not in covers:
                lines.append(
                    f"teachers.{other}.labels: '{name}' is a class of its own, while teacher {owner}'s '{name}'"
                    f" stands for {shown}: if they mean the same, write {{{name}: [{shown}]}} for {other} too"
                )
        if len(spaces) < 2 or len(covers) != 1:
            continue
        named_elsewhere = {c for t, s in spaces.items() if t != owner for n in s.known() for c in (n, *s.covered(n))}
        for target in covers:
            if target not in named_elsewhere and target not in set(named):
                lines.append(
                    f"teachers.{owner}.labels: '{name}' stands for '{target}', a class no other teacher names, so"
                    f" it becomes a class of {owner}'s alone: a typo of one of theirs?"
                )
    return [f"warning: {line}" for line in lines]
