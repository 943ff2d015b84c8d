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
    classes: list[str], teacher: list, student: list, deployed: Optional[dict[str, float]] = None
) -> list[dict]:
    """``[{"class", "teacher", "student", "ratio"}]``, one per class; None where a class was never scored.

    Args:
        classes: the teacher's label names, in output order.
        teacher: the teacher's per-class scores (None: absent from targets and predictions).
        student: the student's per-class scores on the teacher's labels.
        deployed: the student's per-class scores over its whole label space, by class, where they
            differ from the row's (a teacher of part of the space): a row's ``student_all_labels``.
    """
    rows = []
    for name, t, s in zip(classes, teacher, student):
        ratio = s / t if t and s is not None else None
        rows.append({"class": name, "teacher": t, "student": s, "ratio": ratio})
        if deployed is not None and name in deployed:
            rows[-1]["student_all_labels"] = deployed[name]
    return rows


def class_warnings(
    teacher: str, metric: str, rows: list[dict], blind_below: float = BLIND_BELOW, lost_below: float = LOST_BELOW
) -> list[str]:
    """One line per class where the teacher is near-blind, or the student lost what the teacher has.

    Args:
        teacher: the teacher's name (for the message).
        metric: the per-class metric's name ("iou", "recall").
        rows: from :func:`per_class_rows`.
        blind_below: teacher score under which it is near-blind on the class.
        lost_below: student/teacher ratio under which the student has lost the class.
    """
    lines = []
    for r in rows:
        t, s = r["teacher"], r["student"]
        if t is None:
            continue
        if t < blind_below:
            lines.append(
                f"teacher {teacher} is near-blind on '{r['class']}' ({metric} {t:.3f} < {blind_below}): "
                "the student cannot learn that class from it"
            )
        elif s is None or s < lost_below * t:
            shown = "n/a" if s is None else f"{s:.3f}"
            deployed = r.get("student_all_labels")
            also = (  # the row sums the student into the teacher's labels: its background may outweigh the class
                f"; over all its labels, as deployed, {deployed:.3f}"
                if deployed is not None and (s is None or abs(deployed - s) >= 0.0005)
                else ""
            )
            lines.append(
                f"student lost '{r['class']}' of teacher {teacher}: {metric} {shown} vs the teacher's {t:.3f} "
                f"(< {lost_below:g}x){also}"
            )
    return lines


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
        f" (teachers.{teacher}.input: size, mean/std, channel order)?"
    )


def scored_rows(rows: list[dict]) -> tuple[list[dict], str]:
    """The per-class rows that hold a score, and a line naming the others (labels of which the eval set
    holds nothing: a 1000-class teacher's table was 991 rows of n/a), "" when none is left out."""
    kept = [r for r in rows if any(r.get(k) is not None for k in ("teacher", "student", "ratio"))]
    empty = [r["class"] for r in rows if r not in kept]
    if not empty:
        return kept, ""
    shown = ", ".join(empty[:8]) + (f" and {len(empty) - 8} more" if len(empty) > 8 else "")
    return kept, f"{len(empty)} labels the eval set holds nothing of are not listed (report.json has them): {shown}"
