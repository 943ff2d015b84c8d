"""COCO instances turned into semantic label maps: the rules :class:`~amalgam.data.sources.CocoSet` follows.

Class 0 is ``background`` (pixels no annotation covers); category ``k`` of the sorted ids is class
``k + 1``. Crowd regions (``iscrowd: 1``: a group of objects outlined as one, not every pixel of
which is the class) are 255 (ignore), amalgam's rule, said in the log; the instances drawn over
them keep their class.
Category names must be unique and differ from ``background``: teachers are matched by name, so two
categories of one name (or one named as class 0) would be merged without a word.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from amalgam.data.target_scan import IGNORE
from amalgam.errors import AmalgamError

BACKGROUND = "background"


def class_names(coco, cat_ids: Sequence[int], annotations: Path) -> list[str]:
    """``background`` then each category's name; stops in one line on a name given twice."""
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


def semantic_mask(coco, image_id: int, cat_ids: Sequence[int]) -> np.ndarray:
    """The ``H x W`` class map of one image: crowd regions first as 255, then each instance in
    annotation order (a later one over an earlier one)."""
    info = coco.imgs[image_id]
    mask = np.zeros((info["height"], info["width"]), dtype=np.int32)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None))
    for ann in sorted(anns, key=lambda a: not a.get("iscrowd")):  # stable: crowds first, order kept
        if ann["category_id"] not in cat_ids:
            raise AmalgamError(f"COCO annotation {ann['id']} has unknown category {ann['category_id']}")
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
