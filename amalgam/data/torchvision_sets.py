"""Torchvision datasets as image sets, by name (FashionMNIST, VOCSegmentation, ...): built with the
arguments their signature takes; their targets (:mod:`amalgam.data.torchvision_targets`) read only
for evaluation; a ``limit`` keeps the first images when they hold every class."""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Hashable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from amalgam.data.image_set import ImageSet, spread
from amalgam.data.images import pil_to_rgb
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
            said = f"{error_line(exc, every_line=True)}){_root_hint(name, root)}"
            raise AmalgamError(
                f"torchvision {name} not found under {root} ({said}; run tools/get_data.py or set download: true"
                " (it needs the internet)"
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

    def image_labels(self) -> Optional[list[int]]:
        if self.masks or not self.target_keys:
            return None
        base = self.dataset.dataset if isinstance(self.dataset, torch.utils.data.Subset) else self.dataset
        values = numeric_labels(base)
        return None if values is None else [int(values[i]) for i in self.kept]

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


def split_left_out(name: Optional[str]) -> None:
    """Refuses an eval set of a torchvision dataset with splits that leaves ``split`` out: it read the training
    split, the images the teachers likely trained on (a trial's classifier: 0.96 there, 0.915 on test). A
    dataset of one set (FakeData, Caltech101) has none to name."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, str(name), None)
    if not isinstance(cls, type):
        return  # unknown: the set's build names it
    params = inspect.signature(cls).parameters
    if "train" in params:
        choices = "split: test"
    elif "split" in params or "image_set" in params:
        choices = "split: val or test, as the dataset names its held-out split"
    else:
        return
    raise AmalgamError(
        f"split: left out, it reads the training split, likely the teachers' own images: name it ({choices};"
        " split: train to score the training images on purpose)"
    )


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


def _first_hold_every_class(dataset: Dataset, limit: int) -> bool:
    """Whether a torchvision dataset's first ``limit`` samples hold every class its labels hold; False when it
    shows no numeric labels."""
    values = numeric_labels(dataset)
    return values is not None and len(np.unique(values[:limit])) == len(np.unique(values))


def numeric_labels(dataset: Dataset) -> Optional[np.ndarray]:
    """A torchvision dataset's per-sample class indices (``targets``, ``labels`` or ``_labels``), None where it
    shows none."""
    for attr in ("targets", "labels", "_labels"):
        labels = getattr(dataset, attr, None)
        if labels is None or len(labels) != len(dataset):
            continue
        values = np.asarray(labels)
        if values.ndim == 1 and values.dtype.kind in "iub":
            return values
    return None


#: torchvision sets that read ``<root>/<name>/raw/``
MNIST_STYLE = frozenset({"MNIST", "FashionMNIST", "KMNIST", "EMNIST", "QMNIST"})


def _root_hint(name: str, root: Path) -> str:
    """What a wrong ``root`` holds: torchvision reads its own layout under it (MNIST-style sets:
    ``<root>/<name>/raw/``), so the folder of the files themselves, or the set's own folder, is not it."""
    if not root.is_dir():
        return ""
    held = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    shown = ", ".join(held[:6]) + (f" and {len(held) - 6} more" if len(held) > 6 else "") if held else "nothing"
    above = f"; root is the folder above {name}/, here {root.parent}" if root.name == name else ""
    layout = f" (torchvision's MNIST-style sets read <root>/{name}/raw/)" if name in MNIST_STYLE else ""
    return f"; root holds {shown}{above}{layout}"
