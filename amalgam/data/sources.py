"""Image set types. Each yields ``{"image": [3, H, W] float in [0, 1], ...targets}``.

Training sources are read without targets (labels, if the set has any, are never read);
eval sets add ``label`` (int), ``mask`` (``[H, W]`` long, 255 = ignore) and/or ``depth``
(``[H, W]`` float metres, 0 = invalid), resized with nearest neighbour to the student's size, or
kept at their own resolution (``native_targets``, as the amalgamation scores them).
"""

from __future__ import annotations

import glob
import hashlib
import inspect
import os
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Optional

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from amalgam.config.label_entries import classes_by_value, read_names, rename_classes
from amalgam.config.schema import SourceConfig
from amalgam.data.coco import (
    absent_note,
    boxes_note,
    check_categories,
    check_masks,
    crowd_note,
    orphan_note,
    semantic_mask,
)
from amalgam.data.coco import class_names as coco_classes
from amalgam.data.file_checks import verify_files
from amalgam.data.images import (
    FLOAT_DEPTH,
    IMAGE_SUFFIXES,
    IN_SUBFOLDERS,
    OUTSIDE_CLASSES,
    hidden,
    list_images,
    pil_to_rgb,
    read_array,
    read_depth,
    read_rgb,
    skipped_note,
    to_tensor,
    verify_image,
)
from amalgam.data.target_scan import saturated, scan_dense_targets
from amalgam.data.torchvision_targets import (
    NAMES_BY_VALUE,
    check_needed_args,
    label_names,
    mask_array,
    mask_names,
    mask_names_rule,
    target_kind,
    unread_targets,
)
from amalgam.errors import AmalgamError, error_line
from amalgam.registry import Registry
from amalgam.training.progress import bar_for


class ImageSet(Dataset):
    """Base class: subclasses implement ``__len__`` and ``load(i) -> (rgb, targets)``.

    Attributes:
        classes: class names of the set's labels (index = class id), or None.
        target_keys: which targets the set can give ("label", "mask", "depth").
    """

    classes: Optional[list[str]] = None
    #: where the names of its label maps' values come from, when a rule of amalgam's gives them (said in the log)
    names_rule: Optional[str] = None
    target_keys: frozenset[str] = frozenset()
    originals: bool = False
    native_targets: bool = False

    def fingerprint(self) -> str:
        """A digest of which images the set holds (the teacher cache's key, ``--resume``'s check)."""
        return hashlib.sha256(f"{type(self).__name__} {len(self)}".encode()).hexdigest()

    def keep(self, limit: int) -> Optional[str]:
        """Keeps ``limit`` of its images (recipe ``limit``, fewer than it holds); returns the line
        saying which. A set that cannot choose keeps them all and returns None."""
        return None

    def image_keys(self) -> list[Hashable]:
        """One key per image that names the image itself, not the set, so two sets holding one image
        give it one key (the training/eval overlap check). Empty when a set cannot say."""
        return []

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
        # maps may be a scale of their image (the source check allows it): each is resized on its own
        self.transform = A.Compose([A.Resize(*image_size)], is_check_shapes=False)
        return self

    def load(self, index: int) -> tuple[np.ndarray, dict]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        rgb, targets = self.load(index)
        dense = {k: v for k, v in targets.items() if isinstance(v, np.ndarray)}
        resized = dense and not self.native_targets
        out = self.transform(image=rgb, masks=list(dense.values())) if resized else self.transform(image=rgb)
        sample = {"image": to_tensor(out["image"])}
        if self.originals:
            sample["original"] = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
        for key, value in zip(dense, out["masks"] if resized else dense.values()):
            # the resize may change dtypes: class maps go back to integers, the rest stays float
            integer = np.issubdtype(dense[key].dtype, np.integer)
            sample[key] = torch.as_tensor(np.asarray(value, dtype=np.int64 if integer else np.float32))
        for key, value in targets.items():
            if not isinstance(value, np.ndarray):
                sample[key] = value
        return sample


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
}
IMAGE_FILES = frozenset({"exif"})


#: ``type`` -> :class:`SourceType`
SOURCE_TYPES: Registry[SourceType] = Registry("source type")


class FolderSet(ImageSet):
    """Every image under a folder, recursively; unlabeled."""

    upright = True  # read by the EXIF orientation (recipe ``exif: upright``), or as stored

    def __init__(self, files: list[Path], skipped: Optional[Counter] = None):
        self.files = files
        self.skipped = skipped if skipped is not None else Counter()  # other files in its folders, by suffix

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> str:
        """SHA-256 of each file's path (relative to the files' common folder: a moved folder is the same
        set), size and modification time (a file rewritten in place changes it). Reading every image's
        bytes would cost as much as decoding them; size + mtime (ns) is what make and rsync trust."""
        root = os.path.commonpath([str(path.parent) for path in self.files]) if self.files else ""
        h = hashlib.sha256()
        for path in self.files:
            try:
                st = os.stat(path)
                h.update(f"{os.path.relpath(path, root)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{os.path.relpath(path, root)}\tmissing\n".encode())
        return h.hexdigest()

    def keep(self, limit: int) -> Optional[str]:
        """An even spread over the sorted files (:func:`spread`): class folders come one after
        another, so the first N kept the first classes only."""
        total = len(self.files)
        kept = spread(total, limit)
        for attr in ("files", "labels", "image_ids"):
            if hasattr(self, attr):
                setattr(self, attr, [getattr(self, attr)[i] for i in kept])
        return f"limit: {limit} of {total} images, spread evenly over the sorted file list{_classes_kept(self)}"

    def image_keys(self) -> list[Hashable]:
        """The file, reached through any folder link."""
        return _real_paths(self.files)

    def describe(self, index: int) -> str:
        return str(self.files[index])

    def load(self, index: int):
        return read_rgb(self.files[index], self.upright), {}

    def map_sizes(self, index: int, path: Path) -> list[tuple[object, tuple[int, int]]]:
        """(what, (width, height)) of each map drawn on image ``index`` at ``path``, which the file check
        (:mod:`amalgam.data.file_checks`) holds against the image's own size; none for a set without maps."""
        return []

    def target_notes(self) -> list[str]:
        """What the eval set's check says of its ground truth beyond the images (none by default)."""
        return []


class ImageFolderSet(FolderSet):
    """torchvision's ImageFolder layout: ``root/<class name>/*.png``."""

    target_keys = frozenset({"label"})

    def __init__(self, root: Path):
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not hidden(p))
        self.labels, files, skipped = [], [], Counter()
        if loose := sum(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not hidden(p) for p in root.iterdir()):
            skipped[OUTSIDE_CLASSES] = loose
        self.empty_classes: list[str] = []  # class folders without an image: said by the source check
        for idx, name in enumerate(self.classes):
            found = list_images(root / name, skipped=skipped)
            files += found
            self.labels += [idx] * len(found)
            self.empty_classes += [] if found else [name]
        super().__init__(files, skipped)

    def load(self, index: int):
        return read_rgb(self.files[index], self.upright), ({"label": self.labels[index]} if self.with_targets else {})

    def target_notes(self) -> list[str]:
        if not (empty := self.empty_classes):
            return []
        shown = ", ".join(f"{name}/" for name in empty[:8]) + (f" and {len(empty) - 8} more" if len(empty) > 8 else "")
        return [f"warning: {len(empty)} class folders hold no image, so those classes cannot be scored: {shown}"]


class DenseSet(FolderSet):
    """``images/*.png`` with optional ``labels/*.png`` (uint8), ``depth/*.png`` (uint16, ``depth_scale``
    values per metre: millimetres by default), ``classes.txt``. Images in subfolders of ``images/``
    are not read: they are counted in ``skipped``, so the source check says so."""

    def __init__(self, root: Path, depth_scale: float = 1000.0, depth_reading: str = "depth"):
        skipped = Counter()
        if not (root / "images").is_dir():  # a public set's own layout (VOC's JPEGImages/, Cityscapes' leftImg8bit/)
            folders = sorted(p.name + "/" for p in root.iterdir() if p.is_dir()) if root.is_dir() else None
            shown = ", ".join((folders or [])[:6]) or "no folder"
            held = "it is a file, not a folder" if folders is None else f"it holds {shown}"
            raise AmalgamError(
                f"image folder not found: {root / 'images'} ({held}): a dense set is <path>/images/ with"
                " labels/ (uint8 maps) and/or depth/ (uint16), each map named as its image with .png, and"
                " classes.txt; link or copy a public set's folders into that layout"
            )
        super().__init__(list_images(root / "images", recursive=False, skipped=skipped), skipped)
        if nested := sum(len(list_images(d)) for d in (root / "images").iterdir() if d.is_dir() and not hidden(d)):
            skipped[IN_SUBFOLDERS] = nested
        self.root = root
        self.depth_scale = depth_scale
        self.depth_reading = depth_reading  # "inverse": the PNGs hold depth_scale / metres (disparity)
        classes = root / "classes.txt"
        self.classes = read_names(classes, map_values=True) if classes.is_file() else None
        keys = set()
        if (root / "labels").is_dir():
            keys.add("mask")
        if (root / "depth").is_dir():
            keys.add("depth")
        self.target_keys = frozenset(keys)

    def target_path(self, key: str, index: int) -> Path:
        """``labels/<name>.png``; ``depth/<name>.png``, else its float map (:data:`FLOAT_DEPTH`) where one is there."""
        folder = "labels" if key == "mask" else "depth"
        path = self.root / folder / (self.files[index].stem + ".png")
        if key == "depth" and not path.is_file():
            return next((f for s in FLOAT_DEPTH if (f := path.with_suffix(s)).is_file()), path)
        return path

    def require_target(self, key: str, index: int) -> Path:
        """:meth:`target_path`, which must exist; when it does not, the error names the files there that
        share the image's name (``00000.PNG``, ``00000.jpg``): only ``<name>.png`` is read."""
        path = self.target_path(key, index)
        if path.is_file():
            return path
        near = sorted(p.name for p in path.parent.glob(glob.escape(path.stem) + ".*")) if path.parent.is_dir() else []
        fix = "rename it" if any(name.lower().endswith(".png") for name in near) else "save it as a PNG"
        floats = f" (or, a depth map, {'/'.join(FLOAT_DEPTH)} of float metres)" if key == "depth" else " only"
        hint = f": {path.parent.name}/ holds {', '.join(near)}; maps are read as <image name>.png{floats}: {fix}"
        hint = hint if near else _normalisation_hint(path)
        raise AmalgamError(f"missing {key} file {path} for image {self.files[index]}{hint}")

    def load(self, index: int):
        targets = {}
        if self.with_targets:
            for key in sorted(self.target_keys):
                path = self.require_target(key, index)
                array = read_depth(path) if key == "depth" else read_array(path)
                # class indices stay integers; depth PNGs hold depth_scale values a metre, samples give metres
                targets[key] = array.astype(np.int32) if key == "mask" else self.metres(array)
        return read_rgb(self.files[index], self.upright), targets

    def metres(self, array: np.ndarray) -> np.ndarray:
        """One of its depth maps in metres, as its ``depth_scale`` (integer PNGs) and ``depth_reading`` say."""
        return depth_metres(array, self.depth_scale, self.depth_reading == "inverse")

    def map_sizes(self, index: int, path: Path) -> list[tuple[object, tuple[int, int]]]:
        found = []
        for key in sorted(self.target_keys):
            target = self.require_target(key, index)
            if target.suffix == ".npy":  # not an image: its header says its size (its values are read by the scan)
                rows, cols = read_depth(target, header_only=True).shape
                found.append((target, (cols, rows)))
                continue
            modes, hint = MAP_FORMATS[key]
            if target.suffix != ".png":  # a float TIFF: metres
                modes = ("F",)
            found.append((target, verify_image(target, modes, f"{key} map", hint).stored))  # read as stored
        return found


def depth_metres(array: np.ndarray, depth_scale: float, inverse: bool = False) -> np.ndarray:
    """A depth map in metres: ``value / depth_scale``, with 0 and 65535 (the 16-bit maximum, read as
    uint16 or, by some Pillow versions, as int32) as 0 = invalid; ``inverse``: ``depth_scale / value``
    (a disparity map), 0 still invalid. A float map (``.npy``, a 32-bit TIFF) holds metres (or 1/metres)
    as they are: ``depth_scale`` is for integer PNGs; its values <= 0 or not finite are invalid."""
    scale = 1.0 if np.issubdtype(array.dtype, np.floating) else depth_scale
    values = array.astype(np.float32)
    valid = np.isfinite(values) & (values > 0) & ~saturated(array)
    safe = np.where(valid, values, 1.0)
    return np.where(valid, scale / safe if inverse else safe / scale, 0.0).astype(np.float32)


def _normalisation_hint(path: Path) -> str:
    """Where the folder holds the file under another Unicode normalisation of its name (``café`` as
    NFC and NFD look alike and differ, as macOS and Linux tools write them), the note that says so."""
    if not path.parent.is_dir():
        return ""
    wanted = unicodedata.normalize("NFC", path.name)
    for other in path.parent.iterdir():
        if other.name != path.name and unicodedata.normalize("NFC", other.name) == wanted:
            return (
                f": {path.parent.name}/ holds '{other.name}', the same name in another Unicode normalisation"
                " (NFC against NFD): save the image's and the map's names the same way"
            )
    return ""


def _refuse_shared_stems(files: list[Path], folder: str) -> None:
    """Maps are found by the image's name without its suffix: two images of one name (``00000.png``
    and ``00000.jpg``) would both be scored against one map, so the set stops, naming them."""
    seen: dict[str, Path] = {}
    pairs = [(seen[p.stem], p) for p in files if seen.setdefault(p.stem, p) is not p]
    if pairs:
        (first, second), more = pairs[0], len(pairs) - 1
        raise AmalgamError(
            f"images/{first.name} and images/{second.name} would share {folder}/{first.stem}.png"
            + (f" ({more} more images share a name with another)" if more else "")
            + ": maps are read as <image name>.png, so give each image a name of its own"
        )


class CocoSet(FolderSet):
    """An images folder plus a COCO instances JSON, turned into semantic masks by category name
    (the rules: :mod:`amalgam.data.coco`; crowd regions are 255, ignore)."""

    target_keys = frozenset({"mask"})

    def __init__(self, images: Path, annotations: Path):
        from pycocotools.coco import COCO

        if not annotations.is_file():
            raise AmalgamError(f"COCO annotations not found: {annotations}")
        try:
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                self.coco = COCO(str(annotations))
        except Exception as exc:  # noqa: BLE001 - malformed JSON of any kind
            raise AmalgamError(f"cannot read COCO annotations {annotations}: {exc}") from None
        self.cat_ids = sorted(self.coco.getCatIds())
        check_categories(self.coco, annotations)
        self.annotations = annotations
        self.classes = coco_classes(self.coco, self.cat_ids, annotations)
        self.image_ids = sorted(self.coco.getImgIds())
        super().__init__([images / self.coco.imgs[i]["file_name"] for i in self.image_ids])

    def load(self, index: int):
        rgb = read_rgb(self.files[index], self.upright)
        if not self.with_targets:
            return rgb, {}
        return rgb, {"mask": semantic_mask(self.coco, self.image_ids[index], self.cat_ids)}

    def map_sizes(self, index: int, path: Path) -> list[tuple[object, tuple[int, int]]]:
        return [(f"COCO image {self.image_ids[index]}'s annotations", self._image_size(index, path))]

    def _image_size(self, index: int, path: Path) -> tuple[int, int]:
        """A COCO image's (width, height), which its RLE masks must share (pycocotools draws them so)."""
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        w, h = info.get("width"), info.get("height")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() for v in (w, h)):
            raise AmalgamError(f"COCO image {image_id} ({path.name}) has no integer width and height")
        info["width"], info["height"] = int(w), int(h)  # 640.0 from some exporters
        for ann in self.coco.imgToAnns.get(image_id, []):
            seg = ann.get("segmentation")
            if isinstance(seg, dict) and list(seg.get("size", [])) != [info["height"], info["width"]]:
                raise AmalgamError(
                    f"COCO annotation {ann.get('id')} of image {image_id} has an RLE of size {seg.get('size')}"
                    f" (height, width) but the image is {info['height']}x{info['width']} in the JSON"
                )
        return info["width"], info["height"]

    def target_notes(self) -> list[str]:
        coco, images = self.coco, self.image_ids
        check_masks(coco, self.annotations)  # a box-only file is fine as a source of images
        found = (
            orphan_note(coco),
            crowd_note(coco, images),
            boxes_note(coco, images),
            absent_note(coco, self.cat_ids, images),
        )
        return [n for n in found if n]


class TorchvisionSet(ImageSet):
    """A torchvision dataset by name (e.g. FashionMNIST, VOCSegmentation); its targets, class labels
    or label maps (:mod:`amalgam.data.torchvision_targets`), are read only for evaluation."""

    target_keys = frozenset({"label"})

    def __init__(self, name: str, root: Path, split: str, download: bool, args: Optional[dict] = None):
        import torchvision.datasets as tvd

        cls = getattr(tvd, name, None)
        if not (isinstance(cls, type) and issubclass(cls, Dataset)):
            raise AmalgamError(f"unknown torchvision dataset '{name}'")
        check_needed_args(name, args or {})
        kwargs = _torchvision_kwargs(cls, name, root, split, download) | _extra_kwargs(cls, name, args or {})
        try:
            self.dataset = cls(**kwargs)
        except (RuntimeError, OSError) as exc:  # OSError: VOC opens its split's list without a check
            raise AmalgamError(
                f"torchvision {name} not found under {root} ({error_line(exc, every_line=True)});"
                " run tools/get_data.py or set download: true"
            ) from None
        except (TypeError, ValueError) as exc:  # a split it does not have, an argument it needs
            raise AmalgamError(f"torchvision {name}({', '.join(kwargs)}): {error_line(exc, every_line=True)}") from None
        self.classes = label_names(self.dataset)
        first = _first_target(self.dataset, name) if len(self.dataset) else 0
        kind = target_kind(first)
        #: why its targets cannot be scored (said when an eval set reads them; a source never does)
        self.target_problem = None if kind else unread_targets(first, name)
        self.masks = kind == "mask"
        if kind is None:
            self.target_keys = frozenset()
        elif self.masks:  # a segmentation set's classes attribute need not name its maps' values
            self.target_keys = frozenset({"mask"})
            self.classes = mask_names(name, self.dataset)
            self.names_rule = mask_names_rule(name, self.classes)
        elif self.classes is None:
            self.names_rule = f"its labels have no names (torchvision {name} has no classes): {NAMES_BY_VALUE}"
        #: which images these are (dataset, folder, split, args: VOC's year) and the dataset's indices kept
        self.identity = (name, str(root.resolve()), split + (f" {sorted((args or {}).items())}" if args else ""))
        self.kept: range | list[int] = range(len(self.dataset))

    def __len__(self) -> int:
        return len(self.dataset)

    def fingerprint(self) -> str:
        """The dataset, split and kept indices (not its folder: a moved copy is the same set)."""
        name, _, split = self.identity
        return hashlib.sha256(f"{name} {split} {list(self.kept)}".encode()).hexdigest()

    def keep(self, limit: int) -> Optional[str]:
        """The first ``limit`` when they hold every class its labels hold (the shuffled splits of
        MNIST, FashionMNIST, CIFAR), else an even spread."""
        total = len(self.dataset)
        first = _first_hold_every_class(self.dataset, limit)
        self.kept = range(limit) if first else spread(total, limit)
        self.dataset = torch.utils.data.Subset(self.dataset, self.kept)
        how = "the first ones, which hold every class of its labels" if first else "spread evenly over the dataset"
        return f"limit: {limit} of {total} images, {how}"

    def image_keys(self) -> list[Hashable]:
        """The dataset's folder, split and index."""
        return [(self.identity, index) for index in self.kept]

    def describe(self, index: int) -> str:
        name, _, split = self.identity
        return f"torchvision {name} split {split} index {self.kept[index]}"

    def load(self, index: int):
        img, target = self.dataset[index]
        if not self.with_targets:
            return pil_to_rgb(img), {}
        return pil_to_rgb(img), ({"mask": mask_array(target)} if self.masks else {"label": int(target)})


#: the splits of a torchvision dataset that takes ``train=`` (MNIST, FashionMNIST, CIFAR): any other
#: word (``trian``, ``val``, ``Train``) read the test split without a word, so it is refused
TRAIN_FLAG_SPLITS = ("train", "test")


def _torchvision_kwargs(cls: type, name: str, root: Path, split: str, download: bool) -> dict:
    """``root``, ``train``/``split`` and ``download`` as the dataset's own signature takes them
    (keyword arguments only: FakeData's first argument is a size). A dataset taking ``train=``
    accepts ``split: train`` or ``split: test`` only; one taking ``split=`` checks its own."""
    params = inspect.signature(cls).parameters
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())  # EMNIST, QMNIST
    kwargs: dict = {"root": str(root)} if "root" in params or open_kwargs else {}
    if "train" in params:
        if split not in TRAIN_FLAG_SPLITS:
            raise AmalgamError(
                f"split: '{split}' is not one of {', '.join(TRAIN_FLAG_SPLITS)} (torchvision {name} takes"
                " train=True or False)"
            )
        kwargs["train"] = split == "train"
    elif "split" in params:
        kwargs["split"] = split
    elif "image_set" in params:  # VOC, SBD: train, val, trainval
        kwargs["image_set"] = split
    elif split != "train":  # SUN397, Caltech101: one set, which would be read whatever the split said
        raise AmalgamError(f"torchvision {name} has no split (it is one set): drop split: {split}")
    # given through **kwargs only when asked for: ImageNet passes them to ImageFolder, which takes no download
    if "download" in params or (open_kwargs and download):
        kwargs["download"] = download
    elif download:
        raise AmalgamError(f"torchvision {name} cannot download: place its files under {root} and drop download")
    return kwargs


def _first_target(dataset: Dataset, name: str) -> object:
    """The first sample's target, which says what kind they are (its image is decoded too)."""
    try:
        return dataset[0][1]
    except Exception as exc:  # a split listed but not all there (Cityscapes without its gtFine maps)
        raise AmalgamError(f"torchvision {name}: its first sample cannot be read: {error_line(exc)}") from None


#: constructor arguments amalgam sets itself (``root``, ``split``, ``download``) or that would change the images
TORCHVISION_OWN_ARGS = (
    *("root", "split", "train", "image_set", "download"),
    *("transform", "target_transform", "transforms"),
)


def _extra_kwargs(cls: type, name: str, args: dict) -> dict:
    """A torchvision source's ``args``: further keyword arguments of the dataset (VOC's ``year``,
    Cityscapes' ``mode`` and ``target_type``), refused where amalgam sets them or the dataset takes none such."""
    own = [k for k in args if k in TORCHVISION_OWN_ARGS]
    if own:
        why = "set by amalgam (root, split, download) or not allowed (transforms)"
        raise AmalgamError(f"args: {', '.join(own)}: {why}")
    params = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in args if k not in params]
        if unknown:
            takes = ", ".join(k for k in params if k not in TORCHVISION_OWN_ARGS) or "nothing more"
            raise AmalgamError(f"args: torchvision {name} takes no {', '.join(unknown)} (it takes: {takes})")
    return dict(args)


def _require(cfg: SourceConfig, resolve, key: str) -> Path:
    path = resolve(getattr(cfg, key))
    if not path.exists():
        raise AmalgamError(f"{key}: not found: {path}")
    return path


def _plain_folder(cfg: SourceConfig, resolve: Callable[[Path], Path]) -> FolderSet:
    root = _require(cfg, resolve, "path")
    maps = [d for d in ("labels", "depth") if (root / "images").is_dir() and (root / d).is_dir()]
    if maps:  # its maps would train as images, without a word
        raise AmalgamError(
            f"{root} is laid out as a dense set (images/ beside {'/, '.join(maps)}/): point path at {root / 'images'},"
            " or use type: dense"
        )
    skipped = Counter()
    files = list_images(root, skipped=skipped)
    if maps := _map_folders(files, root):  # the same one level up or more: nested/train/{images,labels}
        roots = list(dict.fromkeys(str(m.parent.relative_to(root)) for m in maps))
        shown = ", ".join(roots[:3]) + (f" and {len(roots) - 3} more" if len(roots) > 3 else "")
        held = sum(any(m in f.parents for m in maps) for f in files)
        raise AmalgamError(
            f"{root} holds dense sets ({shown}: images/ beside labels/ or depth/), whose {held} label and depth maps"
            " would train as images: point path at an images/ folder (a source each), or move the maps out"
        )
    return FolderSet(files, skipped)


def _map_folders(files: list[Path], root: Path) -> list[Path]:
    """The ``labels/`` and ``depth/`` folders below ``root`` that sit beside an ``images/`` folder (a
    dense set's layout) and hold some of ``files``."""
    found: dict[Path, None] = {}
    for folder in dict.fromkeys(f.parent for f in files):
        for part in [folder, *folder.parents]:
            if part == root or root not in part.parents:
                break
            if part.name in ("labels", "depth") and (part.parent / "images").is_dir():
                found[part] = None
    return list(found)


SOURCE_TYPES.add("folder", SourceType(_plain_folder, options=IMAGE_FILES))
SOURCE_TYPES.add(
    "imagefolder",
    SourceType(lambda cfg, r: ImageFolderSet(_require(cfg, r, "path")), options=IMAGE_FILES | {"classes_file"}),
)
SOURCE_TYPES.add(
    "dense",
    SourceType(
        lambda cfg, r: DenseSet(_require(cfg, r, "path"), cfg.depth_scale, cfg.depth_reading),
        options=IMAGE_FILES | {"classes_file", "depth_scale", "depth_reading"},
    ),
)
SOURCE_TYPES.add(
    "coco",
    SourceType(
        lambda cfg, r: CocoSet(_require(cfg, r, "path"), r(cfg.annotations)), ("path", "annotations"), IMAGE_FILES
    ),
)
SOURCE_TYPES.add(
    "torchvision",
    SourceType(
        lambda cfg, r: TorchvisionSet(cfg.name, r(cfg.root), cfg.split, cfg.download, cfg.args),
        ("name", "root"),
        frozenset({"args", "classes_file"}),
    ),
)


def build_image_set(
    key: str,
    cfg: SourceConfig,
    resolve: Callable[[Path], Path],
    image_size: tuple[int, int],
    with_targets: bool,
    verify: bool = True,
    log: Optional[Callable[[str], None]] = None,
    originals: bool = False,
    native_targets: bool = False,
    targets: Optional[frozenset[str]] = None,
) -> ImageSet:
    """Builds and checks one source or eval set; errors are prefixed with its recipe key.

    Args:
        key: recipe key path, e.g. ``data.sources.scenes``.
        cfg: the set's recipe block.
        resolve: resolves recipe-relative paths.
        image_size: the student's input size.
        with_targets: read ground truth (eval sets only).
        verify: open every image file once so corrupt files fail now, not mid-training.
        originals, native_targets: see :meth:`ImageSet.configure`.
        targets: the ground truth to read (the target keys of the tasks scored on it; None: all it holds):
            a depth-only eval set's partial ``labels/`` (NYU's labelled subset) is neither read nor required.
    """
    builder = SOURCE_TYPES.get(cfg.type).build
    try:
        dataset = builder(cfg, resolve)
        if with_targets and (problem := getattr(dataset, "target_problem", None)):
            raise AmalgamError(problem)
        if targets is not None and (unused := dataset.target_keys - targets):
            dataset.target_keys = dataset.target_keys & targets
            if log:
                log(f"{key}: not read, no teacher scored on it uses them: its {', '.join(sorted(unused))} maps")
        _set_orientation(dataset, cfg.exif)
        said = (lambda line: log(f"{key}: {line}")) if log and with_targets else None  # a source's labels: unread
        _name_classes(dataset, cfg, resolve, said)
        if cfg.limit is not None and (kept := limit_set(dataset, cfg.limit)) and log:
            log(f"{key}: {kept}")
        if len(dataset) == 0:
            other = skipped_note(getattr(dataset, "skipped", Counter()))
            raise AmalgamError("contains no images" + (f": {other}" if other else ""))
        if verify and isinstance(dataset, FolderSet):
            bar = bar_for(log, len(dataset.files), f"checking {key}") if log else None
            notes = verify_files(dataset, bar, with_targets)
            for note in notes if log else []:
                log(f"{key}: {note}")
        if with_targets and isinstance(dataset, DenseSet) and dataset.target_keys:  # a source's maps are never read
            _refuse_shared_stems(dataset.files, "labels" if "mask" in dataset.target_keys else "depth")
        if verify and with_targets and isinstance(dataset, DenseSet):
            scan_dense_targets(
                dataset,
                (lambda msg: log(f"{key}: warning: {msg}")) if log else None,
                (lambda msg: log(f"{key}: {msg}")) if log else None,
            )
    except AmalgamError as exc:
        raise AmalgamError(f"{key}: {exc}") from None
    return dataset.configure(image_size, with_targets, originals, native_targets)


def _name_classes(dataset: ImageSet, cfg: SourceConfig, resolve, log: Optional[Callable[[str], None]]) -> None:
    """The set's class names through its ``classes_file``, else the rule that named them, said."""
    if cfg.classes_file is not None and dataset.classes:  # folder ids (e.g. WordNet) -> names
        dataset.classes = rename_classes(dataset.classes, resolve(cfg.classes_file))
    elif cfg.classes_file is not None:  # label maps' values (or a torchvision set's labels) -> names
        dataset.classes = classes_by_value(resolve(cfg.classes_file))
    elif dataset.names_rule and log:
        log(dataset.names_rule)


def _real_paths(files: list[Path]) -> list[tuple[str, str]]:
    """Each file as (its folder's real path, its name); each folder is resolved once."""
    folders: dict[Path, str] = {}
    real = []
    for path in files:
        if path.parent not in folders:
            folders[path.parent] = os.path.realpath(path.parent)
        real.append((folders[path.parent], path.name))
    return real


def _set_orientation(dataset: ImageSet, exif: str) -> None:
    if isinstance(dataset, FolderSet):
        dataset.upright = exif == "upright"
    elif exif != "upright":  # a dataset object decodes its own images
        raise AmalgamError("exif: applies to image files (folder, imagefolder, dense, coco), not to this type")


def spread(total: int, limit: int) -> list[int]:
    """``limit`` indices spread evenly over ``range(total)``: ``i * total // limit`` (every index when
    ``limit >= total``). Deterministic, and the first index is always 0."""
    if limit >= total:
        return list(range(total))
    return [i * total // limit for i in range(limit)]


def limit_set(dataset: ImageSet, limit: int) -> Optional[str]:
    """Keeps ``limit`` images of a set (recipe ``limit``, by the set's own :meth:`ImageSet.keep`);
    returns the line saying which, or None when it keeps them all."""
    return None if limit >= len(dataset) else dataset.keep(limit)


def _classes_kept(dataset: FolderSet) -> str:
    labels = getattr(dataset, "labels", None)
    if labels is None or not dataset.classes:
        return ""
    return f" ({len(set(labels))} of {len(dataset.classes)} classes)"


def _first_hold_every_class(dataset: Dataset, limit: int) -> bool:
    """Whether a torchvision dataset's first ``limit`` samples hold every class its labels
    (``targets``, ``labels`` or ``_labels``) hold; False when it shows no numeric labels."""
    for attr in ("targets", "labels", "_labels"):
        labels = getattr(dataset, attr, None)
        if labels is None or len(labels) != len(dataset):
            continue
        values = np.asarray(labels)
        if values.ndim == 1 and values.dtype.kind in "iub":
            return len(np.unique(values[:limit])) == len(np.unique(values))
    return False


#: the PIL modes a dense set's maps may have, and how to make one of a map that has another
MAP_FORMATS = {
    "mask": (
        ("L", "P", "I;16", "I;16B", "I;16L", "I"),  # 16-bit grey maps hold class indices too
        ": a label map holds each pixel's class index (0, 1, ..., 255 = ignore), not a colour: map each colour"
        " to its class index and save 8-bit grey (mode L)",
    ),
    "depth": (
        ("I;16", "I;16B", "I", "I;16L"),
        ": a depth map is a 16-bit PNG of depth_scale values a metre (0 = invalid): save"
        " round(metres x depth_scale) as uint16",
    ),
}
