"""Per-class truth behind a mean: teacher vs student on every class, and warnings a mean would hide.

A segmenter's mIoU or a classifier's top-1 can look fine while the teacher is blind on a class
(nothing to distil) or the student drops a class the teacher has. Both are said in the build log,
in report.md/html, in ``amalgam eval`` and in report.json (``warnings``).
"""

from __future__ import annotations

from typing import Optional

#: key of a labelled task's metrics: per class, the other class taking most of its predictions, or None
MOSTLY = "mostly_predicted_as"
#: a teacher below this per-class score (IoU or recall) is called near-blind on that class
BLIND_BELOW = 0.1
#: a student below this share of the teacher's per-class score has lost that class
LOST_BELOW = 0.5


def per_class_rows(
    classes: list[str],
    teacher: list,
    student: list,
    deployed: Optional[dict[str, float]] = None,
    support: Optional[list] = None,
) -> list[dict]:
    """``[{"class", "teacher", "student", "ratio"}]``, one per class; None where a class was never scored.

    Args:
        classes: the teacher's label names, in output order.
        teacher: the teacher's per-class scores (None: absent from targets and predictions).
        student: the student's per-class scores on the teacher's labels.
        deployed: the student's per-class scores over its whole label space, by class, where they
            differ from the row's (a teacher of part of the space): a row's ``student_all_labels``.
        support: the ground truth of each class in the images scored (the meter's ``support``), a
            row's ``support``.
    """
    rows = []
    for i, (name, t, s) in enumerate(zip(classes, teacher, student)):
        ratio = s / t if t and s is not None else None
        rows.append({"class": name, "teacher": t, "student": s, "ratio": ratio})
        if support is not None and i < len(support):
            rows[-1]["support"] = support[i]
        if deployed is not None and name in deployed:
            rows[-1]["student_all_labels"] = deployed[name]
    return rows


def class_verdicts(
    rows: list[dict],
    blind_below: float = BLIND_BELOW,
    lost_below: float = LOST_BELOW,
    floor: tuple[str, int] = ("items", 0),
) -> dict[str, list[dict]]:
    """The rows by verdict: ``near_blind`` (the teacher under ``blind_below``), ``lost`` (the student
    under ``lost_below`` times the teacher) and ``thin`` (less ground truth than ``floor``'s count: not
    judged); rows not scored or judged fine are in none. ``floor`` is the unit of a row's ``support`` and
    the least a class needs."""
    found: dict[str, list[dict]] = {"near_blind": [], "lost": [], "thin": []}
    for r in rows:
        t, s = r["teacher"], r["student"]
        if t is None:
            continue
        if r.get("support") is not None and r["support"] < floor[1]:
            found["thin"].append(r)
        elif t < blind_below:
            found["near_blind"].append(r)
        elif s is None or s < lost_below * t:
            found["lost"].append(r)
    return found


def verdict_counts(verdicts: dict[str, list[dict]]) -> dict[str, list[str]]:
    """The class names of each verdict that has any (report.json's ``per_class_verdicts``)."""
    return {kind: [r["class"] for r in rows] for kind, rows in verdicts.items() if rows}


def class_warnings(
    teacher: str,
    metric: str,
    rows: list[dict],
    blind_below: float = BLIND_BELOW,
    lost_below: float = LOST_BELOW,
    floor: tuple[str, int] = ("items", 0),
    counts: bool = False,
) -> list[str]:
    """One line per class where the teacher is near-blind, or the student lost what the teacher has;
    classes with less ground truth than ``floor`` are not judged, and named in one line.

    Args:
        teacher: the teacher's name (for the message).
        metric: the per-class metric's name ("iou", "recall").
        rows: from :func:`per_class_rows`.
        blind_below: teacher score under which it is near-blind on the class.
        lost_below: student/teacher ratio under which the student has lost the class.
        floor: the unit of a row's ``support`` and the least a class needs to be judged.
        counts: the metric times ``support`` counts the items named right (``Task.per_class_counts``): a lost
            class's line says when its gap can be chance.
    """
    found = class_verdicts(rows, blind_below, lost_below, floor)
    lines = [
        f"teacher {teacher} is near-blind on '{r['class']}' ({metric} {r['teacher']:.3f} < {blind_below}): "
        "the student cannot learn that class from it"
        for r in found["near_blind"]
    ]
    lines += [_lost_line(teacher, metric, r, lost_below, floor[0] if counts else None) for r in found["lost"]]
    if thin := [f"'{r['class']}' ({r['support']:,} {floor[0]})" for r in found["thin"]]:
        lines.append(
            f"teacher {teacher}: {len(thin)} class{'es' if len(thin) > 1 else ''} of its eval set too thin to judge"
            f" per class (under {floor[1]:,} {floor[0]} of ground truth each): {', '.join(thin[:8])}"
            + (f" and {len(thin) - 8} more" if len(thin) > 8 else "")
            + "; their scores are noise and the mean carries them (a larger eval set scores them)"
        )
    return lines


def _lost_line(teacher: str, metric: str, r: dict, lost_below: float, unit: Optional[str] = None) -> str:
    """``unit``: what ``support`` counts where the metric times it counts the items named right, else None (an
    IoU's product is no count, and pixels of one image are not independent draws)."""
    t, s = r["teacher"], r["student"]
    shown = "n/a" if s is None else f"{s:.3f}"
    chance = _chance_note(t, s, r.get("support"), unit) if s is not None and unit is not None else ""
    deployed = r.get("student_all_labels")
    also = (  # the row sums the student into the teacher's labels: its background may outweigh the class
        f"; over all its labels, as deployed, {deployed:.3f}"
        if deployed is not None and (s is None or abs(deployed - s) >= 0.0005)
        else ""
    )
    return (
        f"student lost '{r['class']}' of teacher {teacher}: {metric} {shown} vs the teacher's {t:.3f} "
        f"(< {lost_below:g}x){also}{chance}"
    )


#: a gap under this many standard deviations of two counts' difference can be chance (the Poisson
#: approximation, two-sided about 5%; the counts share their images, so it is the cautious side)
CHANCE_SIGMAS = 2.0


def _chance_note(teacher: float, student: float, support: Optional[int], unit: str) -> str:
    """Where the class holds so little ground truth that the gap can be chance, the counts behind the scores
    ('' otherwise): a "lost" verdict on a class of 30 images turned on a few of them (a trial)."""
    if not support:
        return ""
    right_t, right_s = teacher * support, student * support  # recall: the items named right
    if right_t - right_s >= CHANCE_SIGMAS * (right_t + right_s) ** 0.5:
        return ""
    return (
        f"; about {right_s:.0f} of {support:,} {unit} right against the teacher's {right_t:.0f}: a gap this size"
        " on so little ground truth can be chance, a larger eval set tells"
    )


def headline_note(verdicts: dict[str, list[str]]) -> str:
    """What a teacher's headline row carries of its ``per_class_verdicts`` ("" when none): a mean ratio
    read alone hid a teacher blind on a class."""
    words = {"near_blind": "teacher near-blind on", "lost": "student lost", "thin": "too thin to judge:"}
    parts = [f"{words[k]} {len(v)} class{'es' if len(v) > 1 else ''}" for k, v in verdicts.items() if k in words]
    return f" (warned: {'; '.join(parts)})" if parts else ""


def label_order_warning(teacher: str, classes: list[str], mostly: Optional[list]) -> Optional[str]:
    """One line when the teacher names most items of two or more classes as one other class each:
    the order of its ``labels`` (or of the eval set's class names) likely does not match its outputs.

    Args:
        teacher: the teacher's name.
        classes: its label names, in output order.
        mostly: per class, the index of the other class that takes most of its predictions, or None
            (the meter's ``mostly_predicted_as``).
    """
    swaps = [(classes[c], classes[j]) for c, j in enumerate(mostly or []) if j is not None]
    if len({named for _, named in swaps}) < 2:  # one class named for all: a collapsed teacher, not an order
        return None
    more = f" and {len(swaps) - 4} more" if len(swaps) > 4 else ""
    shown = ", ".join(f"'{a}' as '{b}'" for a, b in swaps[:4]) + more
    return (
        f"teacher {teacher} names most of {len(swaps)} classes as one other class ({shown}): are its labels"
        " (and the eval set's class names) in the order of its outputs, and is it fed as it was trained"
        f" (teachers.{teacher}.input: size, mean/std, channel order)?" + _order_fix(teacher, classes, mostly or [])
    )


def _order_fix(teacher: str, classes: list[str], mostly: list) -> str:
    """The fix a trial could not find: every judged class named as the next output (a background unit first,
    a 1001-output net given unused_outputs: [1000]), or the labels one reordering away (a labels file sorted by
    name): said, ready to write; "" when the pattern is neither."""
    judged = [(c, j) for c, j in enumerate(mostly) if j is not None]
    if len(judged) >= 3 and all(j == c + 1 for c, j in judged):
        return (
            " Every class is named as the next output: its outputs sit one above its labels, as with a background"
            f" unit first (teachers.{teacher}.unused_outputs: [0], not the last)"
        )
    if len(judged) >= 3 and all(j == c - 1 for c, j in judged):  # the mirror: the first output dropped, not the spare
        return (
            " Every class is named as the previous output: the eval set's class list one line off, or its outputs"
            f" one below its labels, as when teachers.{teacher}.unused_outputs drops output 0 of a net whose unused"
            f" output is the last ([{len(classes)}], not [0])"
        )
    if len({j for _, j in judged}) != len(judged):  # two classes named as one: no reordering explains it
        return ""
    order = list(classes)
    for c, j in judged:  # output j answers for class c
        order[j] = classes[c]
    if len(set(order)) != len(order) or order == classes or len(classes) > 30:
        return ""
    return f" If its labels are the cause, in the order of its outputs they are {order} (teachers.{teacher}.labels)"


def scored_rows(rows: list[dict]) -> tuple[list[dict], str]:
    """The per-class rows that hold a score, and a line naming the others (labels of which the eval set
    holds nothing: a 1000-class teacher's table was 991 rows of n/a), "" when none is left out."""
    kept = [r for r in rows if any(r.get(k) is not None for k in ("teacher", "student", "ratio"))]
    empty = [r["class"] for r in rows if r not in kept]
    if not empty:
        return kept, ""
    shown = ", ".join(empty[:8]) + (f" and {len(empty) - 8} more" if len(empty) > 8 else "")
    labels = "1 label" if len(empty) == 1 else f"{len(empty)} labels"
    return kept, f"{labels} without ground truth in the images scored not listed (report.json has them): {shown}"
