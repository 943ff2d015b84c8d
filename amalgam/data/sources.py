"""The image set types of files on disk (a folder, an imagefolder tree, a dense set, COCO) and the
registration of every ``data.*.type``; :func:`build_image_set` builds and checks one source or eval set.

The base class and the registry are in :mod:`amalgam.data.image_set`, torchvision datasets in
:mod:`amalgam.data.torchvision_sets`, the check of every file in :mod:`amalgam.data.file_checks`.
"""

from __future__ import annotations

import glob
import hashlib
import os
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Callable, Hashable, Optional

import numpy as np

from amalgam.config.label_entries import classes_by_value, read_names, rename_classes
from amalgam.config.schema import SourceConfig
from amalgam.data.coco import (
    absent_note,
    boxes_note,
    check_categories,
    check_masks,
    check_pixel_coordinates,
    crowd_note,
    orphan_note,
    semantic_mask,
)
from amalgam.data.coco import class_names as coco_classes
from amalgam.data.file_checks import verify_files
from amalgam.data.image_set import (  # noqa: F401 - SET_OPTIONS: importable from here before the split
    IMAGE_FILES,
    SET_OPTIONS,
    SOURCE_TYPES,
    ImageSet,
    SourceType,
    spread,
)
from amalgam.data.images import (
    FLOAT_DEPTH,
    IMAGE_SUFFIXES,
    IN_SUBFOLDERS,
    OUTSIDE_CLASSES,
    hidden,
    is_pattern,
    list_images,
    read_array,
    read_depth,
    read_rgb,
    skipped_note,
    verify_image,
)
from amalgam.data.target_scan import saturated, scan_dense_targets
from amalgam.data.torchvision_sets import TorchvisionSet
from amalgam.errors import AmalgamError
from amalgam.labels.names import nfc
from amalgam.training.progress import bar_for


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
        return self._digest(times=True)

    def listing(self) -> str:
        return self._digest(times=False)

    def _digest(self, times: bool) -> str:
        root = os.path.commonpath([str(path.parent) for path in self.files]) if self.files else ""
        h = hashlib.sha256()
        for path in self.files:
            try:
                st = os.stat(path)
                when = f"\t{st.st_mtime_ns}" if times else ""
                h.update(f"{os.path.relpath(path, root)}\t{st.st_size}{when}\n".encode())
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
        return self.rgb(index), {}

    def rgb(self, index: int) -> np.ndarray:
        """Image ``index`` decoded (a training source's large JPEGs at a reduced scale: :attr:`least_side`)."""
        return read_rgb(self.files[index], self.upright, self.least_side)

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
        return self.rgb(index), ({"label": self.labels[index]} if self.with_targets else {})

    def image_labels(self) -> list[int]:
        return list(self.labels)

    def target_notes(self) -> list[str]:
        if not (empty := self.empty_classes):
            return []
        shown = ", ".join(f"{name}/" for name in empty[:8]) + (f" and {len(empty) - 8} more" if len(empty) > 8 else "")
        return [f"warning: {len(empty)} class folders hold no image, so those classes cannot be scored: {shown}"]


#: the folder beside ``images/`` where a dense set reads each target's maps
MAP_FOLDERS = {"mask": "labels", "depth": "depth"}

#: folders other tools keep a dense set's maps in, beside ``images/``, and the one a dense set reads instead
OTHER_MAP_FOLDERS = {
    "masks": "labels",
    "mask": "labels",
    "annotations": "labels",
    "gt": "labels",
    "groundtruth": "labels",
    "ground_truth": "labels",
    "segmentation": "labels",
    "segmentations": "labels",
    "depths": "depth",
    "depth_maps": "depth",
}


def map_folders_beside(root: Path) -> list[str]:
    """The folders beside ``root/images/`` that hold a dense set's maps: ``labels/`` and ``depth/``, and
    :data:`OTHER_MAP_FOLDERS` that hold images (an ``annotations/`` of JSON files is no map folder)."""
    if not (root / "images").is_dir():
        return []
    found = [d for d in MAP_FOLDERS.values() if (root / d).is_dir()]
    return found + [d for d in OTHER_MAP_FOLDERS if (root / d).is_dir() and _holds_images(root / d)]


def _holds_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


class DenseSet(FolderSet):
    """``images/*.png`` with optional ``labels/*.png`` (uint8), ``depth/*.png`` (uint16, ``depth_scale``
    values per metre: millimetres by default), ``classes.txt``. Images in subfolders of ``images/``
    are not read: they are counted in ``skipped``, so the source check says so."""

    def __init__(
        self, root: Path, depth_scale: float = 1000.0, depth_reading: str = "depth", scale_given: bool = False
    ):
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
        self.scale_given = scale_given  # written in the recipe, even at its default: said where float maps ignore it
        classes = root / "classes.txt"
        self.classes = read_names(classes, map_values=True) if classes.is_file() else None
        self.values_file = classes if classes.is_file() else None
        self.target_keys = frozenset(key for key, folder in MAP_FOLDERS.items() if (root / folder).is_dir())

    def missing_target_hint(self, key: str) -> str:
        """Where a dense set reads ``key``'s maps, and the folders it holds instead (a ``masks/`` read as none)."""
        folder = MAP_FOLDERS[key]
        others = [d for d in map_folders_beside(self.root) if OTHER_MAP_FOLDERS.get(d) == folder]
        held = ", ".join(sorted(p.name + "/" for p in self.root.iterdir() if p.is_dir() and not hidden(p)))
        rename = f": rename {others[0]}/ to {folder}/ if it holds them" if others else ""
        return f" (type: dense reads them from {self.root / folder}/; {self.root} holds {held}{rename})"

    def target_path(self, key: str, index: int) -> Path:
        """``labels/<name>.png``; ``depth/<name>.png``, else its float map (:data:`FLOAT_DEPTH`) where one is there."""
        folder = MAP_FOLDERS[key]
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
        jpeg = any(name.lower().endswith((".jpg", ".jpeg")) for name in near)
        fix = "rename it" if any(name.lower().endswith(".png") for name in near) else "save it as a PNG"
        # a JPEG's values are smeared along every edge: saved again as PNG, they score wrong without a word
        fix = (
            "JPEG is lossy, its values smeared along the edges: export the maps again from their source as PNG"
            if (jpeg and key == "mask")
            else fix
        )
        floats = f" (or, a depth map, {'/'.join(FLOAT_DEPTH)} of float metres)" if key == "depth" else " only"
        hint = f": {path.parent.name}/ holds {', '.join(near)}; maps are read as <image name>.png{floats}: {fix}"
        hint = hint if near else (_normalisation_hint(path) or _suffix_hint(path))
        raise AmalgamError(f"missing {key} file {path} for image {self.files[index]}{hint}")

    def load(self, index: int):
        targets = {}
        if self.with_targets:
            for key in sorted(self.target_keys):
                path = self.require_target(key, index)
                array = read_depth(path) if key == "depth" else read_array(path)
                # class indices stay integers; depth PNGs hold depth_scale values a metre, samples give metres
                targets[key] = array.astype(np.int32) if key == "mask" else self.metres(array)
        return self.rgb(index), targets

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


def _suffix_hint(path: Path) -> str:
    """Where the folder holds maps named by the image's name up to its last ``_`` part and another suffix
    (Cityscapes' ``x_leftImg8bit.png`` beside ``x_gtFine_labelTrainIds.png``), the note naming one and the rule."""
    if "_" not in path.stem or not path.parent.is_dir():
        return ""
    base = path.stem.rsplit("_", 1)[0]
    found = sorted(p.name for p in path.parent.glob(glob.escape(base) + "_*"))[:3]
    if not found:
        return ""
    return (
        f": {path.parent.name}/ holds {', '.join(found)}, named otherwise: maps are read as <image name>.png, so"
        " rename the maps (or the images) to share one name (Cityscapes' x_leftImg8bit.png and"
        " x_gtFine_labelTrainIds.png both to x.png), or read Cityscapes with type: torchvision"
    )


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
        rgb = self.rgb(index)
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
        check_pixel_coordinates(coco, self.annotations)
        found = (
            orphan_note(coco),
            crowd_note(coco, images),
            boxes_note(coco, images),
            absent_note(coco, self.cat_ids, images),
        )
        return [n for n in found if n]


def _require(cfg: SourceConfig, resolve, key: str) -> Path:
    path = resolve(getattr(cfg, key))
    if not path.exists():
        pattern = " (patterns are not expanded: give the folder)" if is_pattern(path) else ""
        raise AmalgamError(f"{key}: not found: {path}{pattern}")
    return path


def _plain_folder(cfg: SourceConfig, resolve: Callable[[Path], Path]) -> FolderSet:
    root = _require(cfg, resolve, "path")
    if maps := map_folders_beside(root):  # its maps would train as images, without a word
        renamed = [f"{d}/ to {OTHER_MAP_FOLDERS[d]}/" for d in maps if d in OTHER_MAP_FOLDERS]
        dense = f"or use type: dense (renaming {', '.join(renamed)})" if renamed else "or use type: dense"
        raise AmalgamError(
            f"{root} is laid out as a dense set (images/ beside {'/, '.join(maps)}/): point path at {root / 'images'},"
            f" {dense}"
        )
    skipped = Counter()
    files = list_images(root, skipped=skipped)
    if maps := _map_folders(files, root):  # the same one level up or more: nested/train/{images,labels}
        roots = list(dict.fromkeys(str(m.parent.relative_to(root)) for m in maps))
        shown = ", ".join(roots[:3]) + (f" and {len(roots) - 3} more" if len(roots) > 3 else "")
        held = sum(any(m in f.parents for m in maps) for f in files)
        names = [d for d in (*MAP_FOLDERS.values(), *OTHER_MAP_FOLDERS) if d in {m.name for m in maps}]
        raise AmalgamError(
            f"{root} holds dense sets ({shown}: images/ beside {'/ or '.join(names)}/), whose {held} label and depth"
            " maps would train as images: point path at an images/ folder (a source each), or move the maps out"
        )
    return FolderSet(files, skipped)


def _map_folders(files: list[Path], root: Path) -> list[Path]:
    """The ``labels/`` and ``depth/`` folders (and :data:`OTHER_MAP_FOLDERS`) below ``root`` that sit beside an
    ``images/`` folder (a dense set's layout) and hold some of ``files``."""
    found: dict[Path, None] = {}
    for folder in dict.fromkeys(f.parent for f in files):
        for part in [folder, *folder.parents]:
            if part == root or root not in part.parents:
                break
            if part.name in (*MAP_FOLDERS.values(), *OTHER_MAP_FOLDERS) and (part.parent / "images").is_dir():
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
        lambda cfg, r: DenseSet(
            _require(cfg, r, "path"), cfg.depth_scale, cfg.depth_reading, "depth_scale" in cfg.model_fields_set
        ),
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
        frozenset({"args", "classes_file", "split", "download"}),
    ),
)

#: the source types amalgam defines (plugins register theirs later)
BUILT_IN_TYPES = frozenset(SOURCE_TYPES.names())


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
    least_side: Optional[int] = None,
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
        least_side: a training source's JPEGs of twice this or more on their short side are decoded at a reduced
            scale keeping it (:func:`~amalgam.data.images.read_rgb`), said in the log; needs ``verify``.
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
        if dataset.classes:  # a macOS folder's 'café' (decomposed) is the recipe's 'café'
            dataset.classes = [nfc(c) if isinstance(c, str) else c for c in dataset.classes]
        if cfg.limit is not None and (kept := limit_set(dataset, cfg.limit)) and log:
            log(f"{key}: {kept}")
        if len(dataset) == 0:
            other = skipped_note(getattr(dataset, "skipped", Counter()))
            raise AmalgamError("contains no images" + (f": {other}" if other else ""))
        if verify and isinstance(dataset, FolderSet):
            dataset.least_side = None if with_targets else least_side  # an eval set's maps fit the whole image
            bar = bar_for(log, len(dataset.files), f"checking {key}") if log else None
            notes = verify_files(dataset, bar, with_targets, tuple(image_size))
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
    ids = list(dataset.classes or [])
    if cfg.classes_file is not None and dataset.classes:  # folder ids (e.g. WordNet) -> names
        dataset.classes = rename_classes(dataset.classes, resolve(cfg.classes_file))
    elif cfg.classes_file is not None:  # label maps' values (or a torchvision set's labels) -> names
        dataset.classes = classes_by_value(resolve(cfg.classes_file))
        ids = [str(value) for value in range(len(dataset.classes))]
    elif dataset.names_rule and log:
        log(dataset.names_rule)
    named_by = f"classes_file {cfg.classes_file}" if cfg.classes_file is not None else None
    if named_by is None and dataset.values_file is not None and dataset.classes:  # a dense set's classes.txt
        named_by, ids = str(dataset.values_file), [str(value) for value in range(len(dataset.classes))]
    if named_by is not None and log and (merged := merged_classes(ids, dataset.classes)):
        # a trial's classes.txt naming Sneaker twice: Ankle boot's pixels read as Sneaker's, said as absent only
        log(f"warning: {named_by} gives {merged}: their images are scored as one class")


def merged_classes(ids: list[str], names: list[str]) -> str:
    """The set's classes a classes file names alike, as a warning says them ('' where none): meant, two folders
    of one class; a slip, another class's images scored as it (a trial's Shirt folder named 'T-shirt/top' moved a
    teacher's top-1 0.96 -> 0.85 with no word)."""
    by_name: dict[str, list[str]] = {}
    for class_id, name in zip(ids, names):
        by_name.setdefault(name, []).append(class_id)
    groups = [f"{', '.join(map(repr, held))} one name, {name!r}" for name, held in by_name.items() if len(held) > 1]
    return "; ".join(groups)


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


def eval_limit(cfg: SourceConfig, max_eval_images: Optional[int]) -> SourceConfig:
    """An eval set's block with ``train.max_eval_images`` as its ``limit`` where that is smaller: only
    the images scored are checked, and they are the same even spread ``limit`` keeps (the first N
    of a sorted imagefolder set were its first classes only)."""
    if max_eval_images is None or (cfg.limit is not None and cfg.limit <= max_eval_images):
        return cfg
    return cfg.model_copy(update={"limit": max_eval_images})


def limit_set(dataset: ImageSet, limit: int) -> Optional[str]:
    """Keeps ``limit`` images of a set (recipe ``limit``, by the set's own :meth:`ImageSet.keep`);
    returns the line saying which, or None when it keeps them all."""
    if limit >= len(dataset):
        return None
    total = len(dataset)
    line = dataset.keep(limit)
    if line is not None:  # what a limit left out can then be told apart from what the set lacks
        dataset.total_images = total
    return line


def _classes_kept(dataset: FolderSet) -> str:
    labels = getattr(dataset, "labels", None)
    if labels is None or not dataset.classes:
        return ""
    return f" ({len(set(labels))} of {len(dataset.classes)} classes)"


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
