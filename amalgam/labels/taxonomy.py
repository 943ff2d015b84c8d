"""What ``amalgam inspect`` says about label spaces: near-duplicate names and the relation matrix.

Labels of different teachers are one class only when the recipe says so (same name, or a
relation in ``labels``). Names that look alike but are not related become separate classes, which
trains a student that splits one concept in two; inspect warns about them before any training.
"""

from __future__ import annotations

from typing import Mapping, Optional

from amalgam.labels.algebra import LabelSpace, projection
from amalgam.labels.names import fold

MATRIX_MAX_CLASSES = 24  # wider unified spaces are listed relation by relation


def normalise(name: str) -> str:
    """Lower case, no spaces or separators, no plural ``s``: ``TV Monitors`` -> ``tvmonitor``."""
    flat = fold(name).replace(" ", "")  # the look-alike stop's folding, then words run together
    if flat.endswith("es") and len(flat) > 4 and flat[-3] in "sxz":
        return flat[:-2]
    return flat[:-1] if flat.endswith("s") and not flat.endswith("ss") and len(flat) > 3 else flat


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


#: number words a label set may spell where another writes the digits ("four" and "4": one class, 13 for 10)
NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
        " seventeen eighteen nineteen twenty".split()
    )
}


def likeness(a: str, b: str) -> Optional[str]:
    """Why two different names may be one class, or None."""
    na, nb = normalise(a), normalise(b)
    if na == nb:
        return "the same name up to case, spacing and plural"
    if NUMBER_WORDS.get(na, na) == NUMBER_WORDS.get(nb, nb):
        return "the same number, in words and in digits"
    short, long = sorted((na, nb), key=len)
    if len(short) >= 2 and (long.startswith(short) or long.endswith(short)):
        return f"'{short}' begins or ends '{long}'"
    distance = edit_distance(na, nb)
    if distance <= (1 if len(short) < 8 else 2) and len(short) >= 4:
        return f"{distance} edit{'s' if distance > 1 else ''} apart"
    return None


def near_duplicates(spaces: Mapping[str, LabelSpace], unified: LabelSpace) -> list[str]:
    """Warnings for pairs of unified classes (of one task) whose names look alike.

    Args:
        spaces: teacher name -> its label space (teachers of one task).
        unified: the task's unified label space.
    """
    origin: dict[str, list[str]] = {}
    for teacher, space in spaces.items():
        for label in space.known():
            for cls in space.covered(label):
                origin.setdefault(cls, []).append(teacher if label == cls else f"{teacher} as '{label}'")
    classes = unified.known()
    found = []
    for i, a in enumerate(classes):
        for b in classes[i + 1 :]:
            why = likeness(a, b)
            if why:
                found.append(
                    f"warning: unified classes '{a}' ({', '.join(origin.get(a, []))}) and '{b}' "
                    f"({', '.join(origin.get(b, []))}) look alike: {why}; if they are one class, write "
                    f"{{{a}: {b}}} in the labels of {origin.get(a, ['?'])[0].split(' ')[0]}"
                )
    return found


def relation_lines(spaces: Mapping[str, LabelSpace], unified: LabelSpace) -> list[str]:
    """The projection matrix of one task as text: rows are teachers' labels, columns unified classes.

    Wide spaces (over :data:`MATRIX_MAX_CLASSES` classes) are listed as the relations that are not
    one label to the class of its name.
    """
    if len(unified) <= MATRIX_MAX_CLASSES:
        lines = ["    columns: " + ", ".join(f"{k} {n}" for k, n in enumerate(unified.names))]
        width = max(len(f"{t}.{n}") for t, s in spaces.items() for n in s.names)
        for teacher, space in spaces.items():
            matrix = projection(space, unified)
            for j, label in enumerate(space.names):
                marks = " ".join("x" if v else "." for v in matrix[j].tolist())
                lines.append(f"    {f'{teacher}.{label}':<{width}}  {marks}")
        return lines
    lines = []
    for teacher, space in spaces.items():
        matrix = projection(space, unified)
        for label, covers in space.relations().items():
            lines.append(f"    {teacher}.{label} -> {', '.join(covers)}")
        if space.background is not None:
            count = int(matrix[space.background_index].sum()) - (unified.background is not None)
            lines.append(f"    {teacher}.{space.background} -> the unified background and {count} classes it lacks")
        same = len(space.known()) - len(space.relations())
        lines.append(f"    {teacher}: {same} labels are the unified class of their name")
    return lines


def label_report(
    spaces: Mapping[str, tuple[str, LabelSpace]], unified: Mapping[str, Optional[LabelSpace]]
) -> list[str]:
    """Every task's near-duplicate warnings and relation matrix, as ``amalgam inspect`` prints them.

    Args:
        spaces: teacher name -> (task name, its label space), labelled teachers only.
        unified: task name -> unified label space (None for unlabelled tasks).
    """
    lines: list[str] = []
    for task, space in unified.items():
        if space is None:
            continue
        members = {t: s for t, (k, s) in spaces.items() if k == task}
        lines += near_duplicates(members, space)
        lines.append(f"  {task} (rows: teachers' labels; x: the label covers that unified class)")
        lines += relation_lines(members, space)
    return lines
