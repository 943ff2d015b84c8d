"""What a torchvision dataset's targets are: a class label (int) or a label map (an image), and the
names of a label map's values for the datasets whose names torchvision does not carry as such.

A segmentation dataset's ``classes`` attribute, where it has one, is not read as its maps' names
(OxfordIIITPet's are breeds, its trimap's values are 1-3): only the sets named in
:data:`MASK_NAMES` are; any other needs ``classes_file`` (``<value> <name>`` lines).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch
from PIL import Image

from amalgam.errors import AmalgamError

#: PASCAL VOC's label-map values 0-20 (VOCSegmentation, SBDataset); 255 marks object borders, not scored
VOC_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def _voc_names(dataset: Any) -> list[str]:
    return list(VOC_NAMES)


def _cityscapes_names(dataset: Any) -> list[str]:
    """Names by label id (``*_labelIds.png``: 0 unlabeled ... 33 bicycle), which is what its
    ``semantic`` maps hold; a teacher of the 19 train ids is scored on the ids its label names
    match, the others (void, ``ignore_in_eval``) falling to its background or unscored."""
    by_id = {c.id: c.name for c in dataset.classes if c.id >= 0}
    return [by_id.get(i, f"id {i}") for i in range(max(by_id) + 1)]


#: torchvision dataset name -> the names of its label maps' values (index = value)
MASK_NAMES: dict[str, Callable[[Any], list[str]]] = {
    "VOCSegmentation": _voc_names,
    "SBDataset": _voc_names,
    "Cityscapes": _cityscapes_names,
}


#: torchvision dataset name -> the ``args`` it needs to give class maps (Cityscapes' default target is instance ids)
NEEDED_ARGS: dict[str, dict[str, Any]] = {"Cityscapes": {"target_type": "semantic"}}


def check_needed_args(name: str, args: dict[str, Any]) -> None:
    """Refuses, in one line, a dataset of :data:`NEEDED_ARGS` without the arguments it needs."""
    needed = NEEDED_ARGS.get(name, {})
    wrong = {k: v for k, v in needed.items() if args.get(k) not in (v, [v])}
    if wrong:
        shown = ", ".join(f"{k}: {v}" for k, v in needed.items())
        given = ", ".join(f"{k}: {args[k]}" for k in wrong if k in args) or "its defaults"
        raise AmalgamError(f"torchvision {name} gives class maps with args: {{{shown}}} (given: {given})")


def target_kind(target: Any) -> Optional[str]:
    """``"label"`` for a class index, ``"mask"`` for a label map (a PIL image, a 2-D array or tensor),
    None for any other target (boxes, captions, attribute vectors, several targets at once)."""
    if isinstance(target, Image.Image) or (isinstance(target, (np.ndarray, torch.Tensor)) and target.ndim == 2):
        return "mask"
    if isinstance(target, (int, np.integer)) or (isinstance(target, (np.ndarray, torch.Tensor)) and target.ndim == 0):
        return "label"
    return None


def unread_targets(target: Any, name: str) -> str:
    """Why an eval set cannot score targets of another kind (a training source never reads them)."""
    shown = type(target).__name__ + (f" of {len(target)}" if isinstance(target, (tuple, list, dict)) else "")
    return (
        f"torchvision {name} gives targets of type {shown}: an eval set needs a class label (an int) or a label"
        " map (an image), one target type (args may choose it, e.g. OxfordIIITPet's target_types: segmentation);"
        " as a training source its targets are never read"
    )


def mask_names(name: str, dataset: Any) -> Optional[list[str]]:
    """The names of a segmentation dataset's map values where amalgam knows them, else None."""
    names = MASK_NAMES.get(name)
    return names(dataset) if names else None


#: how a set without names for its label values gets them
NAMES_BY_VALUE = "give classes_file, '<value> <name>' lines"


def label_names(dataset: Any) -> Optional[list[str]]:
    """A classification set's names by label: its ``classes`` (ImageNet's tuples of synonyms,
    ``('tench', 'Tinca tinca')``, named by their first), else its ``categories`` (Caltech101/256), else None."""
    names = getattr(dataset, "classes", None) or getattr(dataset, "categories", None) or []
    return [c[0] if isinstance(c, (tuple, list)) and c else c for c in names] or None


def mask_names_rule(name: str, names: Optional[list[str]]) -> str:
    """The log's line on where a torchvision set's map values get their names."""
    if names is None:
        return (
            f"its label maps' values have no names amalgam knows (torchvision {name}'s classes attribute, if any,"
            f" is not read as them): {NAMES_BY_VALUE}"
        )
    return (
        f"label map values 0-{len(names) - 1} named as torchvision {name}'s classes ({names[0]}, {names[1]}, ...,"
        f" {names[-1]}); other values (VOC's 255 borders) are not scored; classes_file renames them"
    )


def mask_array(target: Any) -> np.ndarray:
    """A label map as int32 values: a palette image's indices, a grey image's values."""
    if isinstance(target, torch.Tensor):
        target = target.numpy()
    return np.asarray(target).astype(np.int32)
