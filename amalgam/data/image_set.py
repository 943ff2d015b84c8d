"""What every image set is: :class:`ImageSet` (``{"image": [3, H, W] float in [0, 1], ...targets}``), the
registry of source types (``data.*.type``) and the even spread a ``limit`` keeps.

Training sources are read without targets (labels, if the set has any, are never read); eval sets add
``label`` (int), ``mask`` (``[H, W]`` long, 255 = ignore) and/or ``depth`` (``[H, W]`` float metres,
0 = invalid), resized with nearest neighbour to the student's size, or kept at their own resolution
(``native_targets``, as the amalgamation scores them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Optional

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from amalgam.data.views import ViewSpec, make_view
from amalgam.errors import AmalgamError
from amalgam.registry import Registry


class ImageSet(Dataset):
    """Base class: subclasses implement ``__len__`` and ``load(i) -> (rgb, targets)``.

    Attributes:
        classes: class names of the set's labels (index = class id), or None.
        target_keys: which targets the set can give ("label", "mask", "depth").
    """

    classes: Optional[list[str]] = None
    #: where the names of its label maps' values come from, when a rule of amalgam's gives them (said in the log)
    names_rule: Optional[str] = None
    #: the file of its own that names its label maps' values (a dense set's classes.txt), None where none does
    values_file: Optional[Path] = None
    target_keys: frozenset[str] = frozenset()
    originals: bool = False
    native_targets: bool = False
    #: its EXIF-turned images that fit their maps either way (turned 180 degrees, square), read upright: set by
    #: the file check (``verify_files``), read by the teacher checks (``exif_doubt``)
    exif_either: int = 0
    #: its large JPEGs are decoded at a reduced scale keeping this short side (None: whole): a training source's,
    #: set by ``build_image_set`` where its check found such images; read by the loads and the teacher cache's key
    least_side: Optional[int] = None
    #: the images it held before a ``limit`` kept some (None: not cut)
    total_images: Optional[int] = None

    def missing_target_hint(self, key: str) -> str:
        """Where a set of its kind reads ``key``'s ground truth and what it holds instead ("" when it cannot say),
        for the error of an eval set without it."""
        return ""

    def fingerprint(self) -> str:
        """A digest of which images the set holds (the teacher cache's key, ``--resume``'s check)."""
        return hashlib.sha256(f"{type(self).__name__} {len(self)}".encode()).hexdigest()

    def listing(self) -> str:
        """A digest of which images the set holds by name and size, not when they were written (a copied folder
        is the same set): what a ``student.pt`` records of its eval sets. Default: :meth:`fingerprint`."""
        return self.fingerprint()

    def keep(self, limit: int) -> Optional[str]:
        """Keeps ``limit`` of its images (recipe ``limit``, fewer than it holds); returns the line
        saying which. A set that cannot choose keeps them all and returns None."""
        return None

    def image_keys(self) -> list[Hashable]:
        """One key per image that names the image itself, not the set, so two sets holding one image
        give it one key (the training/eval overlap check). Empty when a set cannot say."""
        return []

    def image_labels(self) -> Optional[list[int]]:
        """Each image's class index (into ``classes``) where the set knows it without decoding (a class folder,
        a torchvision set's targets), else None."""
        return None

    def describe(self, index: int) -> str:
        """Image ``index`` as a log line names it."""
        return f"image {index}"

    def configure(
        self, image_size: tuple[int, int], with_targets: bool, originals: bool = False, native_targets: bool = False
    ) -> "ImageSet":
        """Sets the output size and whether targets are read.

        Random augmentation happens on whole batches in the training loop (seeded torch RNG),
        so runs stay reproducible whatever the number of loader workers.

        Args:
            image_size: the student's input size (``image``).
            with_targets: read ground truth (eval sets).
            originals: also give the decoded image as ``original`` (``[3, H, W]`` uint8), from
                which teachers' views are made (see amalgam/data/views.py).
            native_targets: dense ground truth stays at its own resolution (scored there).
        """
        self.with_targets = with_targets
        self.originals = originals
        self.native_targets = native_targets
        self.image_size = tuple(image_size)
        # maps may be a scale of their image (the source check allows it): each is resized on its own
        self.transform = A.Compose([A.Resize(*image_size)], is_check_shapes=False)
        return self

    def load(self, index: int) -> tuple[np.ndarray, dict]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        rgb, targets = self.load(index)
        dense = {k: v for k, v in targets.items() if is_map(v)}
        for key, value in dense.items():  # resized as [H, W, C]: a channels-first map would be cut across
            if value.ndim == 3 and value.shape[1:] == rgb.shape[:2] and value.shape[:2] != rgb.shape[:2]:
                raise AmalgamError(
                    f"{self.describe(index)}: target '{key}' is a [C, H, W] map {list(value.shape)}: give maps"
                    f" channels last, [H, W, C] (np.moveaxis(m, 0, -1)), as the image is"
                )
        resized = dense and not self.native_targets
        out = self.transform(image=rgb, masks=list(dense.values())) if resized else {}
        # [3, H, W] over the decoded pixels, channels last: the 8-bit resize's fastest layout (a decoder's
        # read-only array is copied as it is, not transposed, which cost more than the resize)
        pixels = np.ascontiguousarray(rgb) if rgb.flags.writeable else np.array(rgb, order="C")
        original = torch.from_numpy(pixels).permute(2, 0, 1)
        # the student's image is its view, made as every teacher's is: a teacher fed the student's image where
        # their views agree then sees what it would beside a student of any other size
        sample = {"image": make_view(original, ViewSpec(self.image_size))[0]}
        if self.originals:
            sample["original"] = original
        for key, value in zip(dense, out["masks"] if resized else dense.values()):
            # the resize may change dtypes: class maps go back to integers, the rest stays float
            integer = np.issubdtype(dense[key].dtype, np.integer)
            sample[key] = torch.as_tensor(np.asarray(value, dtype=np.int64 if integer else np.float32))
        for key, value in targets.items():
            if key not in dense:  # a per-image target: a class index, a multi-hot vector, as numpy or torch
                sample[key] = _as_value(value) if isinstance(value, np.ndarray) else value
        return sample


def _as_value(array: np.ndarray) -> torch.Tensor:
    """A per-image numpy target as maps come out: integers (and bools) int64, the rest float32."""
    integer = np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_
    return torch.as_tensor(np.asarray(array, dtype=np.int64 if integer else np.float32))


def is_map(target: object) -> bool:
    """Whether a target of ``load`` is a map over the image (resized with it): a numpy array of two or
    more dimensions. A 0-d or 1-d array is one image's value (a multi-hot vector was resized as a map)."""
    return isinstance(target, np.ndarray) and target.ndim >= 2


@dataclass(frozen=True)
class SourceType:
    """A registered ``data.*.type``: how to build its image set, and the keys it requires."""

    build: Callable[..., ImageSet]  # (cfg, resolve) -> ImageSet
    required: tuple[str, ...] = ("path",)
    #: optional recipe keys it honours beyond the common ones (others, set away from their default, are refused)
    options: frozenset[str] = frozenset()


#: optional source keys only some types honour: their default, and the refusal's wording
SET_OPTIONS = {
    "classes_file": (None, "only for {kinds} sets, not '{type}'"),
    "depth_scale": (1000.0, "only for {kinds} sets (their depth PNGs), not '{type}'"),
    "depth_reading": ("depth", "only for {kinds} sets (their depth PNGs), not '{type}'"),
    "exif": ("upright", "applies to image files ({kinds} sets), not to '{type}', which decodes its own"),
    "args": ({}, "only for {kinds} sets (keyword arguments of the dataset), not '{type}'"),
    # a trial's folder source with `split: test` and `root:` read its folder, every image, without a word
    "path": (None, "only for {kinds} sets, not '{type}' (it reads no folder of its own)"),
    "annotations": (None, "only for {kinds} sets, not '{type}'"),
    "name": (None, "only for {kinds} sets (the dataset's class name), not '{type}'"),
    "root": (None, "only for {kinds} sets (the dataset's folder), not '{type}': give its folder as path"),
    "split": ("train", "only for {kinds} sets, not '{type}', which reads every image of its folder"),
    "download": (False, "only for {kinds} sets, not '{type}'"),
}
IMAGE_FILES = frozenset({"exif"})
#: keys every source config has, which a plugin's own source type may read as it likes: checked on amalgam's types only
COMMON_KEYS = frozenset({"path", "annotations", "name", "root", "split", "download"})


#: ``type`` -> :class:`SourceType`
SOURCE_TYPES: Registry[SourceType] = Registry("source type")


def spread(total: int, limit: int) -> list[int]:
    """``limit`` indices spread evenly over ``range(total)``: ``i * total // limit`` (every index when
    ``limit >= total``). Deterministic, and the first index is always 0."""
    if limit >= total:
        return list(range(total))
    return [i * total // limit for i in range(limit)]
