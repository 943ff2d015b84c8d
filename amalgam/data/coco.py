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
An annotation without a mask (no ``segmentation``, an empty one, or polygons of fewer than 3 points, as
box-only exports write) marks its box 255 (ignore), as a crowd region does: its object is somewhere
in it, so neither its class nor background can be scored there; its polygons of 3 points or more are
drawn. A file with no mask at all is a detection file: it stops, it cannot score segmentation.
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


def drawable(ann: dict) -> dict | None:
    """``ann`` with only the polygons pycocotools can draw (3 points or more), or an RLE as it is;
    None when it has no mask (box-only: no or an empty ``segmentation``, degenerate polygons)."""
    seg = ann.get("segmentation")
    if isinstance(seg, dict):
        return ann if seg.get("counts") is not None and seg.get("size") else None
    if not isinstance(seg, list):
        return None
    polygons = [p for p in seg if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
    return None if not polygons else (ann if len(polygons) == len(seg) else {**ann, "segmentation": polygons})


def box_of(ann: dict, height: int, width: int) -> tuple[slice, slice] | None:
    """The pixels of an annotation's ``bbox`` (x, y, w, h) inside the image, or None without one."""
    box = ann.get("bbox")
    if not (isinstance(box, list) and len(box) == 4):
        return None
    x, y, w, h = (float(v) for v in box)
    x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
    x1, y1 = min(width, int(np.ceil(x + w))), min(height, int(np.ceil(y + h)))
    return (slice(y0, y1), slice(x0, x1)) if x1 > x0 and y1 > y0 else None


def semantic_mask(coco, image_id: int | str, cat_ids: Sequence[int]) -> np.ndarray:
    """The ``H x W`` int32 class map of one image: crowd regions and the boxes of annotations without
    a mask first as :data:`IGNORE`, then each instance in annotation order (a later one over an
    earlier one). Categories were checked by :func:`check_categories` and :func:`check_count`;
    ``image_id`` may be an ``int`` or a ``str``."""
    info = coco.imgs[image_id]
    height, width = info["height"], info["width"]
    mask = np.zeros((height, width), dtype=np.int32)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
    for ann in sorted(anns, key=lambda a: not a.get("iscrowd")):  # stable: crowds first, order kept
        if (drawn := drawable(ann)) is None:
            if (box := box_of(ann, height, width)) is not None:
                mask[box] = np.where(mask[box] == 0, IGNORE, mask[box])  # over background only
            continue
        value = IGNORE if ann.get("iscrowd") else cat_ids.index(ann["category_id"]) + 1
        mask[coco.annToMask(drawn) > 0] = value
    return mask


def check_masks(coco, annotations: Path) -> None:
    """Stops in one line on a file none of whose annotations has a mask (a detection file)."""
    anns = coco.dataset.get("annotations", [])
    if anns and not any(drawable(ann) for ann in anns):
        raise AmalgamError(
            f"COCO {annotations}: none of its {len(anns)} annotations has a mask (segmentation polygons or RLE):"
            " a box-only (detection) file cannot score segmentation"
        )


def check_pixel_coordinates(coco, annotations: Path) -> None:
    """Stops in one line on polygons whose every coordinate lies in [0, 1] on images wider than a few
    pixels: fractions of the image (some exporters write them so), which pycocotools draws as a pixel or
    two in the top-left corner. Its scores would read a competent teacher as blind."""
    points = [
        v for ann in coco.dataset.get("annotations", []) if isinstance(ann.get("segmentation"), list)
        for poly in ann["segmentation"] if isinstance(poly, list) for v in poly
    ]  # fmt: skip
    sizes = [min(info.get("width") or 0, info.get("height") or 0) for info in coco.imgs.values()]
    if not points or not sizes or min(sizes) <= 4 or not all(isinstance(v, (int, float)) for v in points):
        return
    if 0 <= min(points) and max(points) <= 1:
        raise AmalgamError(
            f"COCO {annotations}: every polygon coordinate is between 0 and 1 on images of {min(sizes)} pixels or"
            " more: they look normalised (fractions of the image), and COCO's are pixels: multiply each x by the"
            " image's width and each y by its height (the boxes too)"
        )


def boxes_note(coco, image_ids: Sequence[int]) -> str | None:
    """The line saying how many of the images' annotations have no mask and were read as ignore boxes."""
    anns = [ann for i in image_ids for ann in coco.imgToAnns.get(i, [])]
    if not (boxes := sum(drawable(ann) is None for ann in anns)):
        return None
    return (
        f"{boxes} of {len(anns)} COCO annotations have no mask (no or an empty segmentation, polygons of under"
        f" 3 points): their boxes read as {IGNORE} (ignore), not scored, except where an instance is drawn over them"
    )


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


def orphan_note(coco) -> str | None:
    """The line counting annotations whose ``image_id`` names no image of the file (not drawn); or None.
    A warning when every annotation's image_id one lower or higher names an image: images numbered
    from 0 and annotations from 1 (or the reverse) put every mask on the wrong image. It is no
    proof (a file that dropped its last image and has a negative first image looks the same), so
    it warns rather than stops."""
    anns = coco.dataset.get("annotations", [])
    orphans = [ann["image_id"] for ann in anns if ann.get("image_id") not in coco.imgs]
    if not orphans:
        return None
    line = (
        f"{len(orphans)} of {len(anns)} COCO annotations name an image_id the file lists no image for (e.g."
        f" {orphans[0]}): not drawn"
    )
    for shift in (-1, 1):
        if all(isinstance(i, int) and i + shift in coco.imgs for i in (ann["image_id"] for ann in anns)):
            return (
                f"warning: {line}; and every annotation's image_id {shift:+d} names an image: if its images are"
                " numbered from 0 and its annotations from 1 (or the reverse), every mask is drawn on the wrong"
                " image (look at one); renumber one of them"
            )
    return line
