"""COCO instances turned into semantic label maps: the rules :class:`~amalgam.data.sources.CocoSet` follows.

Class 0 is ``background`` (pixels no annotation covers); category ``k`` of the sorted ids is class
``k + 1``. Crowd regions (``iscrowd: 1``: a group of objects outlined as one, not every pixel of
which is the class) are 255 (:data:`~amalgam.labels.IGNORE`), amalgam's rule, said in the log; the
instances drawn over them keep their class. 255 is therefore no class: a file of 255 or more categories
stops (the engine's metrics and lookup tables skip 255 wherever it stands).
Image ids reach pycocotools wrapped in a list: it reads a bare ``str`` id (``"12"``) as the ids ``"1"``
and ``"2"``.
Category names must be unique and differ from ``background``: teachers are matched by name, so two
categories of one name (or one named as class 0) would be merged without a word.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from amalgam.errors import AmalgamError
from amalgam.labels import IGNORE

BACKGROUND = "background"


def check_count(cat_ids: Sequence[int], annotations: Path) -> None:
    """Stops in one line when a category would be class :data:`IGNORE` (255), where crowd regions are."""
    if len(cat_ids) >= IGNORE:
        raise AmalgamError(
            f"COCO {annotations} has {len(cat_ids)} categories, at most {IGNORE - 1} can be read: category k is"
            f" class k + 1 and {IGNORE} is ignore (crowd regions, never scored): drop or merge categories"
        )


def class_names(coco, cat_ids: Sequence[int], annotations: Path) -> list[str]:
    """``background`` then each category's name; stops in one line on a name given twice, or on
    too many categories (:func:`check_count`)."""
    check_count(cat_ids, annotations)
    ids_of: dict[str, list[int]] = {BACKGROUND: []}
    for cat in cat_ids:
        ids_of.setdefault(coco.cats[cat]["name"], []).append(cat)
    problems = [
        f"categories {ids} are named '{BACKGROUND}', the name of class 0 (pixels no annotation covers)"
        if name == BACKGROUND
        else f"categories {ids} share the name '{name}'"
        for name, ids in ids_of.items()
        if len(ids) > (0 if name == BACKGROUND else 1)
    ]
    if problems:
        raise AmalgamError(
            f"COCO {'; '.join(problems)} in {annotations}: teachers are matched by name, so they would be merged"
            " without a word: rename them apart, or drop them (and their annotations)"
        )
    return [BACKGROUND] + [coco.cats[c]["name"] for c in cat_ids]


def check_categories(coco, annotations: Path) -> None:
    """Stops in one line on an annotation whose category the file does not list."""
    for ann in coco.dataset.get("annotations", []):
        if ann.get("category_id") not in coco.cats:
            raise AmalgamError(
                f"COCO annotation {ann.get('id')} in {annotations} has unknown category {ann.get('category_id')}"
                f" (categories: {sorted(coco.cats)})"
            )


def semantic_mask(coco, image_id: int | str, cat_ids: Sequence[int]) -> np.ndarray:
    """The ``H x W`` int32 class map of one image: crowd regions first as :data:`IGNORE`, then each
    instance in annotation order (a later one over an earlier one). Categories were checked by
    :func:`check_categories` and :func:`check_count`; ``image_id`` may be an ``int`` or a ``str``."""
    info = coco.imgs[image_id]
    mask = np.zeros((info["height"], info["width"]), dtype=np.int32)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
    for ann in sorted(anns, key=lambda a: not a.get("iscrowd")):  # stable: crowds first, order kept
        value = IGNORE if ann.get("iscrowd") else cat_ids.index(ann["category_id"]) + 1
        mask[coco.annToMask(ann) > 0] = value
    return mask


def crowd_note(coco, image_ids: Sequence[int]) -> str | None:
    """The line saying how many of the images' annotations are crowd regions, read as ignore; or None."""
    anns = [ann for i in image_ids for ann in coco.imgToAnns.get(i, [])]
    if not (crowds := sum(bool(ann.get("iscrowd")) for ann in anns)):
        return None
    return (
        f"{crowds} of {len(anns)} COCO annotations are crowd regions (iscrowd: 1): read as {IGNORE} (ignore), not"
        " scored, except where an instance is drawn over them"
    )


def absent_note(coco, cat_ids: Sequence[int], image_ids: Sequence[int]) -> str | None:
    """The line naming the categories no (non-crowd) annotation of these images has: they cannot be scored."""
    present = {ann["category_id"] for i in image_ids for ann in coco.imgToAnns.get(i, []) if not ann.get("iscrowd")}
    if not (absent := [coco.cats[c]["name"] for c in cat_ids if c not in present]):
        return None
    shown = ", ".join(absent[:8]) + (f" and {len(absent) - 8} more" if len(absent) > 8 else "")
    head = f"{len(absent)} of {len(cat_ids)} COCO categories have no annotation in its images"
    return f"{head}, so cannot be scored: {shown}"
