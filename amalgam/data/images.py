"""Image files: discovery, integrity checks, decoding and conversion to tensors."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import BinaryIO, NamedTuple, Optional

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from amalgam.errors import AmalgamError, error_line

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(folder: Path, recursive: bool = True, skipped: Optional[Counter] = None) -> list[Path]:
    """Image files under ``folder``, sorted (so sample order never depends on the file system).

    Hidden files and folders (names starting with '.') are left out. Symlinked folders are
    followed; a folder reached a second time (a link loop, or two links to one folder) is not
    entered again, so no image is counted twice and no walk is endless. ``skipped`` counts the
    other files by suffix (a folder of ``.heic`` photos is said, not lost), hidden images, and
    links to nothing (a moved folder of images is said too).
    """
    if not folder.is_dir():
        raise AmalgamError(f"image folder not found: {folder}{_not_a_folder(folder)}")
    if not recursive:
        files = _files(list(folder.iterdir()), skipped)
        return sorted(p for p in _visible(files, skipped) if p.suffix.lower() in IMAGE_SUFFIXES)
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []  # already walked through another path
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files = _files([Path(root) / f for f in files], skipped)
        found += [p for p in _visible(files, skipped) if p.suffix.lower() in IMAGE_SUFFIXES]
    if skipped is not None:
        skipped[LINKED_TWICE] += _same_files(found)
    return sorted(found)


def _same_files(files: list[Path]) -> int:
    """How many of ``files`` are the same file on disk as another of them: hard links, or links to one file
    (inside the set or not). Each is read as an image of its own; a folder of 200,000 hard links to 8,000
    images read as 200,000 images without a word."""
    seen, again = set(), 0
    for path in sorted(files):
        try:
            st = os.stat(path)  # follows links
        except OSError:  # gone since it was listed: the file checks say so
            continue
        key = (st.st_dev, st.st_ino)
        again += key in seen
        seen.add(key)
    return again


def _visible(files: list[Path], skipped: Optional[Counter]) -> list[Path]:
    """``files`` but hidden ones; hidden images are counted (a Mac's ._ copy stopped a build as corrupt)."""
    if skipped is not None:
        skipped[HIDDEN] += sum(hidden(p) and p.suffix.lower() in IMAGE_SUFFIXES for p in files)
    return [p for p in files if not hidden(p)]


#: files a folder of images commonly holds beside them, not worth a word
QUIET_FILES = {".txt", ".json", ".csv", ".md", ".ds_store", ".db", ".ini"}


#: keys of a ``skipped`` counter that are not suffixes: links whose target is gone, an
#: imagefolder's images outside its class folders, and images in subfolders of a dense set's images/
BROKEN_LINK, OUTSIDE_CLASSES, IN_SUBFOLDERS = "(broken link)", "(outside class folders)", "(in subfolders)"
HIDDEN = "(hidden)"  # names starting with '.': macOS ._ copies, .ipynb_checkpoints, editors' files
LINKED_TWICE = "(links to listed images)"  # read, each as an image of its own: said, not skipped
NOT_SUFFIXES = (BROKEN_LINK, OUTSIDE_CLASSES, IN_SUBFOLDERS, HIDDEN, LINKED_TWICE)


def hidden(path: Path) -> bool:
    """A file or folder whose name starts with '.', which no source reads."""
    return path.name.startswith(".")


def _files(entries: list[Path], skipped: Optional[Counter]) -> list[Path]:
    """The plain files among ``entries`` (links followed); counts the rest of what is skipped."""
    files = [p for p in entries if p.is_file()]
    if skipped is None:
        return files
    if broken := sum(p.is_symlink() and not p.exists() for p in entries):
        skipped[BROKEN_LINK] += broken
    for p in files:
        suffix = p.suffix.lower()
        if suffix not in IMAGE_SUFFIXES and suffix not in QUIET_FILES and not p.name.startswith("."):
            skipped[suffix or "(no suffix)"] += 1
    return files


def skipped_note(skipped: Counter) -> Optional[str]:
    """The line saying which files a source left out (by suffix), links to nothing and loose images, or None."""
    others = Counter({k: n for k, n in skipped.items() if k not in NOT_SUFFIXES})
    parts = []
    if others:
        kinds = ", ".join(f"{n} {suffix}" for suffix, n in others.most_common(5))
        known = ", ".join(sorted(IMAGE_SUFFIXES))
        parts.append(f"{sum(others.values())} files are not read as images ({kinds}): the types read are {known}")
    if skipped.get(HIDDEN):
        parts.append(f"{skipped[HIDDEN]} hidden images (names starting with '.', as macOS's ._ copies) are not read")
    if skipped.get(BROKEN_LINK):
        parts.append(f"{skipped[BROKEN_LINK]} links point to nothing")
    if skipped.get(LINKED_TWICE):
        parts.append(
            f"{skipped[LINKED_TWICE]} images are the same file as another image of the set (hard links, or links to"
            " one file): each is read as its own, so those images weigh more"
        )
    if skipped.get(OUTSIDE_CLASSES):
        parts.append(f"{skipped[OUTSIDE_CLASSES]} images lie outside the class folders (read: <root>/<class>/*)")
    if skipped.get(IN_SUBFOLDERS):
        parts.append(
            f"{skipped[IN_SUBFOLDERS]} images in subfolders of images/ are not read (a dense set reads images/* beside"
            " labels/<name>.png): move them and their maps up, or make each subfolder a dense set of its own"
        )
    return "; ".join(parts) or None


#: the EXIF tag of how a camera held the image; values 5-8 turn it a quarter
EXIF_ORIENTATION = 0x0112


class ImageFacts(NamedTuple):
    """What the source check learns of an image file without decoding it."""

    size: tuple[int, int]  # (width, height) as viewers show it: after its EXIF orientation
    stored: tuple[int, int]  # (width, height) of the pixels as stored
    mode: str
    rotated: bool  # an EXIF orientation other than upright, which reading applies
    alpha: bool  # transparency, which reading drops (as torchvision's RGB decoding does)
    grey: bool = False  # one grey channel (1, L, LA, 16-bit), which reading repeats into R, G and B
    grey16: bool = False  # 16-bit grey, which reading scales by 1/257 (0-65535 -> 0-255)
    format: str = ""  # PIL's name of the file format ("JPEG", "PNG")


def _orientation(img: Image.Image, verified: bool = False) -> int:
    if verified:  # after verify() only the EXIF block read at open is left (getexif() would load more)
        exif = Image.Exif()
        if raw := img.info.get("exif"):
            exif.load(raw)
    else:
        exif = img.getexif()
    value = exif.get(EXIF_ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1  # a damaged tag: as stored


def _facts(img: Image.Image) -> ImageFacts:
    """The facts of an image verify() has checked."""
    orientation = _orientation(img, verified=True)
    size = (img.height, img.width) if orientation >= 5 else (img.width, img.height)
    alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    grey16 = img.mode in GREY16 or (img.mode == "I" and img.format == "PNG")  # as _is_grey16 reads them
    grey = grey16 or img.mode in GREY8
    return ImageFacts(size, (img.width, img.height), img.mode, orientation != 1, alpha, grey, grey16, img.format or "")


class UnreadableImage(AmalgamError):
    """A file that is not a readable image: ``reason`` says why, without the path (a list names many)."""

    def __init__(self, what: str, path: Path, reason: str, message: str = ""):
        self.path, self.reason = path, reason
        super().__init__(message or f"corrupt {what} {path}: {reason}")


def verify_image(path: Path, modes: tuple[str, ...] | None = None, what: str = "image", hint: str = "") -> ImageFacts:
    """Fails with the file's name if it is not a readable image (or not of one of ``modes``, saying
    ``hint`` then: how to make one)."""
    try:
        if path.stat().st_size == 0:
            raise UnreadableImage(what, path, "the file is empty (0 bytes)")
        with open(path, "rb") as f, Image.open(f) as img:  # one open: every image of a source is checked
            mode, fmt = img.mode, img.format
            img.verify()
            facts = _facts(img)
            if not (fmt in VERIFIED_WHOLE or (fmt == "JPEG" and _ends_with(f, JPEG_EOI))):
                _decode(f)  # verify() leaves the image unusable: decode it afresh from the same handle
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(what, path, f"too large: {exc}", f"{what} {path} is too large to decode: {exc}") from None
    except FileNotFoundError:  # a COCO file_name with no file, a link to nowhere
        raise UnreadableImage(what, path, "not found", f"{what} not found: {path}") from None
    except UnidentifiedImageError:  # PIL's own words name a file handle, not the file
        raise UnreadableImage(what, path, "not an image PIL can read (another kind of file named as one?)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImage(what, path, str(exc)) from None
    if modes is not None and mode not in modes:
        raise AmalgamError(f"{what} {path} has PIL mode {mode}, expected one of {', '.join(modes)}{hint}")
    if modes is None:  # an image: reading's own check, so a 32-bit one stops here, not when training draws it
        _is_grey16(mode, fmt, path)
    return facts


#: the marker a whole JPEG ends with. verify() reads the whole file for PNG (every chunk's CRC) and
#: WebP; for JPEG, BMP and TIFF it reads the headers, so a download cut short passed it and failed
#: mid-training: a JPEG without this marker, and every image of the other formats, is decoded once
JPEG_EOI = b"\xff\xd9"
VERIFIED_WHOLE = frozenset({"PNG", "WEBP"})


def _ends_with(f: BinaryIO, marker: bytes) -> bool:
    f.seek(0, os.SEEK_END)
    if f.tell() < len(marker):
        return False
    f.seek(-len(marker), os.SEEK_END)
    return f.read(len(marker)) == marker


def _decode(f: BinaryIO) -> None:
    """Decodes the image once (raising OSError if it is cut short): for a JPEG without its end
    marker, which is either truncated or carries data after it (motion photos append a video), and
    for the formats whose verify() does not read the pixel data."""
    f.seek(0)
    with Image.open(f) as img:
        img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))  # JPEG: decode at 1/8 scale
        img.load()


def read_rgb(path: Path, upright: bool = True, least_side: Optional[int] = None) -> np.ndarray:
    """``H x W x 3`` uint8 RGB array, upright by its EXIF orientation as viewers show it, or as
    stored (``upright=False``); grey and palette images are converted, 16-bit grey by its bit
    depth, and transparency is dropped. ``least_side``: a JPEG of twice that or more on its short side
    is decoded at 1/2, 1/4 or 1/8 of its size (PIL's draft, in the DCT: a 24 MP photo 5x faster), keeping
    that side at least ``least_side``."""
    try:
        with Image.open(path) as img:
            if least_side is not None:
                img.draft(img.mode, (least_side, least_side))  # its own mode: only the scale changes
            return to_rgb8(_upright(img) if upright else img, path)
    except Image.DecompressionBombError as exc:
        raise AmalgamError(f"image {path} is too large to decode: {exc}") from None
    except FileNotFoundError:  # removed after the source check
        raise AmalgamError(f"image not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise AmalgamError(f"corrupt image {path}: {exc}") from None


def _upright(img: Image.Image) -> Image.Image:
    # a phone photo is stored sideways with an orientation tag; its label map was drawn upright
    if _orientation(img) == 1:
        return img
    upright = ImageOps.exif_transpose(img)
    upright.format = img.format  # to_rgb8 reads a PNG's 16-bit grey by it
    return upright


#: PIL modes of 16-bit grey pixels; PIL's own convert("RGB") clips them at 255 (nearly white)
GREY16 = ("I;16", "I;16B", "I;16L", "I;16N")
#: PIL modes of 1- and 8-bit grey pixels (with or without alpha): read with the grey value in R, G and B
GREY8 = ("1", "L", "LA", "La")


def to_rgb8(img: Image.Image, path: Path) -> np.ndarray:
    """A PIL image as ``H x W x 3`` uint8, scaling 16-bit grey (0..65535) to 0..255."""
    if _is_grey16(img.mode, img.format, path):
        grey = np.asarray(img, dtype=np.float64) if img.mode == "I" else np.asarray(img).astype(np.float64)
        grey8 = np.clip(np.rint(grey / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey8[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"))


def _is_grey16(mode: str, fmt: Optional[str], path: Path) -> bool:
    """Whether an image's pixels are 16-bit grey (scaled by bit depth); 32-bit pixels stop, naming the file.
    The source check (:func:`verify_image`) and reading (:func:`to_rgb8`) both ask it."""
    if mode in GREY16 or (mode == "I" and fmt == "PNG"):  # a PNG's "I" holds 16-bit grey
        return True
    if mode in ("I", "F"):
        raise AmalgamError(f"image {path} has {mode} pixels (32-bit): save it as 8- or 16-bit")
    return False


def grey_peak(path: Path) -> int:
    """The largest pixel value of a 16-bit grey image (decoded once; the source check asks it of
    16-bit images only, to tell 12-bit data stored on a 16-bit scale)."""
    try:
        with Image.open(path) as img:
            return int(np.asarray(img).max(initial=0))
    except (OSError, ValueError) as exc:
        raise AmalgamError(f"corrupt image {path}: {exc}") from None


def read_array(path: Path) -> np.ndarray:
    """The raw pixel values of a single-channel PNG (uint8 labels, uint16 depth)."""
    with Image.open(path) as img:
        return np.array(img)


#: the float depth maps a dense set reads where ``depth/<name>.png`` is not there: metres as they are
FLOAT_DEPTH = (".npy", ".tiff", ".tif")


def read_depth(path: Path, header_only: bool = False) -> np.ndarray:
    """A depth map's raw values: a 16-bit PNG's integers, or a float map's metres (``.npy``, 32-bit TIFF);
    ``header_only``: an ``.npy`` memory-mapped, for its shape and dtype without reading its values."""
    if path.suffix == ".npy":
        try:
            array = np.load(path, mmap_mode="r" if header_only else None, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
            raise AmalgamError(f"corrupt depth map {path}: {error_line(exc)}") from None
        if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):  # [1, H, W] or [H, W, 1]: one map
            array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:2])
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
            raise AmalgamError(
                f"depth map {path} holds {array.dtype} {list(array.shape)}: expected a 2-D float array"
                " ([H, W]; [1, H, W] and [H, W, 1] are read as one)"
            )
        return array
    return read_array(path)


def read_map(path: Path) -> tuple[np.ndarray, Optional[bytes]]:
    """A label map's raw values (:func:`read_array`) and, for a palette (P) image, its palette's bytes."""
    with Image.open(path) as img:
        if img.format == "JPEG":  # named .png: its values are smeared along every edge, and score wrong
            raise AmalgamError(
                f"label map {path} is a JPEG file (whatever its name): JPEG is lossy, its class values smeared along"
                " the edges; export the maps again from their source as PNG"
            )
        palette = img.palette.tobytes() if img.mode == "P" and img.palette is not None else None
        return np.array(img), palette


def pil_to_rgb(img) -> np.ndarray:
    """A PIL image (or array) from a third-party dataset as ``H x W x 3`` uint8."""
    if isinstance(img, torch.Tensor):
        img = img.numpy()
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    return np.asarray(img.convert("RGB"))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` uint8 -> ``[3, H, W]`` float in [0, 1]."""
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float().div_(255.0)


def is_pattern(path: Path) -> bool:
    """Whether a path holds shell wildcards (``*?[``): amalgam reads folders, never expands patterns."""
    return any(c in str(path) for c in "*?[")


def _not_a_folder(path: Path) -> str:
    """Why a path given as an image folder is none: a file (a list of paths is not read), or a pattern."""
    if path.is_file():
        return " (a file: a folder source reads the images under a folder; lists of paths are not read)"
    if is_pattern(path):
        return " (patterns are not expanded: give the folder, whose images are all read)"
    return ""


def size_text(height: int, width: int) -> str:
    """``64x64``, or ``48 high x 96 wide`` where the order matters (amalgam's sizes are [height, width], PIL's
    and OpenCV's (width, height): a log line of ``48x96`` confirmed a recipe written in the other order)."""
    return f"{height}x{width}" if height == width else f"{height} high x {width} wide"
