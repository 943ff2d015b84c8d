"""What ``amalgam inspect`` says about label spaces: near-duplicate names and the relation matrix.

Labels of different teachers are one class only when the recipe says so (same name, or a
relation in ``labels``). Names that look alike but are not related become separate classes, which
trains a student that splits one concept in two; inspect warns about them before any training.
"""

from __future__ import annotations

from typing import Mapping, Optional

from amalgam.labels.algebra import LabelSpace, projection
from amalgam.labels.names import fold, shown, yaml_name

MATRIX_MAX_CLASSES = 24  # wider unified spaces are listed relation by relation


def normalise(name: str, alike: bool = True) -> str:
    """Lower case, no spaces or separators, no plural ``s``: ``TV Monitors`` -> ``tvmonitor`` (``alike``: as
    :func:`fold` reads look-alike letters, dashes and leading zeros)."""
    flat = fold(name, alike).replace(" ", "")  # the look-alike stop's folding, then words run together
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
    return _hidden(a, b) or _normalised_likeness(normalise(a), normalise(b))


def _hidden(a: str, b: str) -> Optional[str]:
    """Where two names read alike only through look-alike characters or leading zeros, that reason, else None."""
    if normalise(a) == normalise(b) and normalise(a, alike=False) != normalise(b, alike=False):
        return "the same name but for look-alike letters or dashes of another script, or leading zeros"
    return None


def _normalised_likeness(na: str, nb: str) -> Optional[str]:
    """:func:`likeness` of two names made alike by :func:`normalise` (the edit distance only where lengths allow it)."""
    if na == nb:
        return "the same name up to case, spacing and plural"
    if NUMBER_WORDS.get(na, na) == NUMBER_WORDS.get(nb, nb):
        return "the same number, in words and in digits"
    short, long = sorted((na, nb), key=len)
    if len(short) >= 2 and (long.startswith(short) or long.endswith(short)):
        return f"'{short}' begins or ends '{long}'"
    most = min(_edits_allowed(na), _edits_allowed(nb))  # none where either holds digits, whatever the order
    if not most or len(long) - len(short) > most:  # no edit distance of <= most edits can bridge it
        return None
    distance = edit_distance(na, nb)
    if distance <= most:
        return f"{distance} edit{'s' if distance > 1 else ''} apart"
    return None


def _edits_allowed(name: str) -> int:
    """Edits within which a name of this length is a misspelling of another: none for short names and
    for names holding digits (ids and numbered classes, 'class 1' and 'class 7', differ by one)."""
    if len(name) < 4 or any(c.isdigit() for c in name):
        return 0
    return 1 if len(name) < 8 else 2


def _deletions(name: str, depth: int) -> set[str]:
    """``name`` with up to ``depth`` characters deleted: two names within that many edits share one."""
    found, frontier = {name}, {name}
    for _ in range(depth):
        frontier = {w[:i] + w[i + 1 :] for w in frontier for i in range(len(w))}
        found |= frontier
    return found


def _candidates(normed: list[str]) -> set[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, that :func:`_normalised_likeness` may relate, found through
    indexes instead of every pair (a 21,000-class space has 220 million): equal names or numbers, a
    name that begins or ends another, names sharing a deletion variant within their allowed edits."""
    pairs: set[tuple[int, int]] = set()
    by_value: dict[str, list[int]] = {}  # 'four' and '4' under one key
    by_name: dict[str, list[int]] = {}  # as spelt: 'one' begins 'onesie'
    for i, name in enumerate(normed):
        by_value.setdefault(NUMBER_WORDS.get(name, name), []).append(i)
        by_name.setdefault(name, []).append(i)
    for group in by_value.values():
        pairs |= {(a, b) for a in group for b in group if a < b}
    for j, name in enumerate(normed):
        for cut in range(2, len(name)):  # its beginnings and endings that are another name
            for part in (name[:cut], name[-cut:]):
                pairs |= {(min(i, j), max(i, j)) for i in by_name.get(part, ()) if i != j}
    variants: dict[str, list[int]] = {}
    for i, name in enumerate(normed):
        for variant in _deletions(name, _edits_allowed(name)) if _edits_allowed(name) else ():
            variants.setdefault(variant, []).append(i)
    for group in variants.values():
        pairs |= {(a, b) for a in group for b in group if a < b}
    return pairs


#: look-alike warnings said per task; the rest are counted (two label files of one 1000-class set in
#: other spellings give hundreds: --suggest-labels relates them from the teachers' predictions)
MAX_LOOK_ALIKE_LINES = 30


def _renamed(spaces: Mapping[str, LabelSpace], cls: str, to: str) -> str:
    """The labels entry that makes unified class ``cls`` read as ``to``, and whose labels take it: the first
    teacher's own label ``cls`` renamed, or the relation that brings ``cls`` in with ``to`` in its place (a
    trial's coarse teacher was told to write ``{Yellow: yellow}``, a 4th label for 3 outputs, where its
    ``{warm: [red, orange, Yellow]}`` was the line to change)."""
    for teacher, space in spaces.items():
        if cls in space.known() and space.covered(cls) == (cls,):
            return f"{{{yaml_name(cls)}: {yaml_name(to)}}} in the labels of {teacher}"
    for teacher, space in spaces.items():
        for label in space.known():
            covers = space.covered(label)
            if cls in covers:
                members = [to if c == cls else c for c in covers]
                target = ", ".join(map(yaml_name, members))
                target = target if len(members) == 1 else f"[{target}]"
                return f"{{{yaml_name(label)}: {target}}} in the labels of {teacher}"
    return f"{{{yaml_name(cls)}: {yaml_name(to)}}}"


def near_duplicates(spaces: Mapping[str, LabelSpace], unified: LabelSpace) -> list[str]:
    """Warnings for pairs of unified classes (of one task) whose names look alike.

    Classes that one teacher tells apart (two of its labels, or two classes it names) are distinct by
    its own outputs and never paired: among a thousand ImageNet names, 'goldfish' and 'goldfinch' of
    one teacher gave 158 warnings whose fix the recipe check refuses.

    Args:
        spaces: teacher name -> its label space (teachers of one task).
        unified: the task's unified label space.
    """
    origin: dict[str, list[str]] = {}
    teachers_of: dict[str, set[str]] = {}
    for teacher, space in spaces.items():
        for label in space.known():
            for cls in space.covered(label):
                origin.setdefault(cls, []).append(teacher if label == cls else f"{teacher} as '{label}'")
                teachers_of.setdefault(cls, set()).add(teacher)
    classes = unified.known()
    normed = [normalise(c) for c in classes]
    found = []
    for i, j in sorted(_candidates(normed)):
        a, b = classes[i], classes[j]
        if teachers_of.get(a, set()) & teachers_of.get(b, set()):
            continue
        if why := _hidden(a, b) or _normalised_likeness(normed[i], normed[j]):
            # either side: a teacher whose labels come from a labels_file (plain names) cannot take the relation
            found.append(
                f"warning: unified classes {shown(a)} ({', '.join(origin.get(a, []))}) and {shown(b)} "
                f"({', '.join(origin.get(b, []))}) look alike: {why}; if they are one class, write "
                f"{_renamed(spaces, a, b)}, or {_renamed(spaces, b, a).replace(' in the labels of ', ' in those of ')}"
            )
    if len(found) > MAX_LOOK_ALIKE_LINES:
        more = len(found) - MAX_LOOK_ALIKE_LINES
        found = found[:MAX_LOOK_ALIKE_LINES] + [
            f"warning: and {more} more pairs of look-alike unified classes: relate them in the teachers' labels, or"
            " let amalgam inspect --suggest-labels propose relations from the teachers' predictions"
        ]
    return found


def _shown(name: str) -> str:
    """A label as the matrix shows it: quoted where spaces at its ends would be invisible ('dog ')."""
    return f"'{name}'" if name != name.strip() else name


def relation_lines(spaces: Mapping[str, LabelSpace], unified: LabelSpace) -> list[str]:
    """The projection matrix of one task as text: rows are teachers' labels, columns unified classes.

    Wide spaces (over :data:`MATRIX_MAX_CLASSES` classes) are listed as the relations that are not
    one label to the class of its name.
    """
    if len(unified) <= MATRIX_MAX_CLASSES:
        lines = ["    columns: " + ", ".join(f"{k} {_shown(n)}" for k, n in enumerate(unified.names))]
        width = max(len(f"{t}.{_shown(n)}") for t, s in spaces.items() for n in s.names)
        for teacher, space in spaces.items():
            matrix = projection(space, unified)
            for j, label in enumerate(space.names):
                marks = " ".join("x" if v else "." for v in matrix[j].tolist())
                lines.append(f"    {f'{teacher}.{_shown(label)}':<{width}}  {marks}")
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
    for task, space, members in _by_task(spaces, unified):
        lines += near_duplicates(members, space)
        lines.append(f"  {task} (rows: teachers' labels; x: the label covers that unified class)")
        lines += relation_lines(members, space)
    return lines


def look_alikes_by_task(
    spaces: Mapping[str, tuple[str, LabelSpace]], unified: Mapping[str, Optional[LabelSpace]]
) -> list[str]:
    """Every task's :func:`near_duplicates` warnings (``spaces`` and ``unified`` as :func:`label_report`'s)."""
    return [line for _, space, members in _by_task(spaces, unified) for line in near_duplicates(members, space)]


def _by_task(spaces: Mapping[str, tuple[str, LabelSpace]], unified: Mapping[str, Optional[LabelSpace]]):
    """``(task, its unified space, {teacher: its space})`` for each labelled task."""
    for task, space in unified.items():
        if space is not None:
            yield task, space, {t: s for t, (k, s) in spaces.items() if k == task}
