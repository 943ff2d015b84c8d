"""The source check's pass over a folder set's files: every image (and an eval set's maps) opened once.

Unreadable files are gathered in one pass and named together; each map must cover its image (the same
shape, or a scale of it, as read upright or as stored); what reading does beyond decoding (EXIF
orientation, transparency, grey and 16-bit images, maps at a scale) is returned as lines to say.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Optional, Protocol

from amalgam.data.images import ImageFacts, UnreadableImage, grey_peak, size_text, skipped_note, verify_image
from amalgam.errors import AmalgamError


class CheckedSet(Protocol):
    """What the check reads of a set of files (:class:`amalgam.data.sources.FolderSet` and its kinds)."""

    files: list[Path]
    skipped: Counter  # other files in its folders, by suffix
    upright: bool  # read by the EXIF orientation, or as stored
    least_side: Optional[int]  # a training source's large JPEGs decoded keeping this short side (None: whole)

    def map_sizes(self, index: int, path: Path) -> list[tuple[object, tuple[int, int]]]: ...

    def target_notes(self) -> list[str]: ...


def verify_files(
    dataset: CheckedSet, bar=None, with_targets: bool = True, size: Optional[tuple[int, int]] = None
) -> list[str]:
    """Opens every image (and, for eval sets, map) once; returns what reading them does beyond
    decoding, to say (with ``size``, the student's, how many images are far smaller than it). A
    training source's maps are never read, so they are not checked."""
    tally: Counter = Counter()
    unreadable: list[AmalgamError] = []
    for index, path in enumerate(dataset.files):
        if bar is not None:
            bar.update(1)
        try:
            facts = verify_image(path)
        except AmalgamError as exc:  # every bad file is found in one pass, not one per run
            unreadable.append(exc)
            if len(unreadable) == UNREADABLE_ENOUGH:  # a folder of no images at all need not be walked whole
                break
            continue
        tally.update(rotated=int(facts.rotated), alpha=int(facts.alpha), cmyk=int(facts.mode == "CMYK"))
        _tally_grey(tally, index, path, facts)
        _tally_tiny(tally, index, facts, size)
        _tally_reduced(tally, index, facts, dataset.least_side)
        try:
            maps = dataset.map_sizes(index, path) if with_targets else []
        except UnreadableImage as exc:  # a cut-short label or depth map: found with the images, said with the fix
            unreadable.append(exc)
            continue
        for target, target_size in maps:
            _check_fit(path, facts, dataset.upright, target, target_size)
            tally["scaled"] += int(target_size != (facts.size if dataset.upright else facts.stored))
        # turned 180 degrees, mirrored or square: both readings have one size, so no map can tell them apart
        tally["either"] += int(bool(facts.rotated and maps and facts.size == facts.stored))
    if bar is not None:
        bar.close()
    if unreadable:
        raise _unreadable_error(unreadable, len(dataset.files))
    if with_targets:  # the teacher checks name exif: stored where these images read upright may be why one fails
        dataset.exif_either = tally["either"] if dataset.upright else 0
    if not tally["reduced"]:  # nothing to decode at a reduced scale: read as before (the teacher cache's key too)
        dataset.least_side = None
    notes = _notes(dataset, tally, with_targets) + _tiny_notes(tally, dataset.files, size)
    return notes + _reduced_notes(tally, dataset)


def _tally_reduced(tally: Counter, index: int, facts: ImageFacts, least_side: Optional[int]) -> None:
    """Counts the JPEGs a reduced-scale decode keeping ``least_side`` shrinks (``reduced``: twice it or more on the
    short side), and keeps the first one's index + 1 (``reduced_first``)."""
    if least_side is not None and facts.format == "JPEG" and min(facts.stored) >= 2 * least_side:
        tally["reduced"] += 1
        tally["reduced_first"] = tally["reduced_first"] or index + 1


def _reduced_notes(tally: Counter, dataset: CheckedSet) -> list[str]:
    if not tally["reduced"]:
        return []
    first = dataset.files[tally["reduced_first"] - 1].name
    return [
        f"{tally['reduced']} JPEG images (the first: {first}) are decoded at 1/2, 1/4 or 1/8 of their size in training,"
        f" keeping at least {dataset.least_side} px on the short side: twice the largest input the student or a"
        " teacher is fed, so every view is still made by shrinking; evaluation reads its images whole"
    ]


#: an image below this share of the student's size on a side is said: stretched up to it, it is a few pixels
TINY_SHARE = 0.25


def _tally_tiny(tally: Counter, index: int, facts: ImageFacts, size: Optional[tuple[int, int]]) -> None:
    """Counts the images under :data:`TINY_SHARE` of ``size`` (height, width) on a side (``tiny``), and
    keeps the first one's index + 1 (``tiny_first``)."""
    width, height = facts.size
    if size is not None and (height < TINY_SHARE * size[0] or width < TINY_SHARE * size[1]):
        tally["tiny"] += 1
        tally["tiny_first"] = tally["tiny_first"] or index + 1


def _tiny_notes(tally: Counter, files: list[Path], size: Optional[tuple[int, int]]) -> list[str]:
    if not tally["tiny"] or size is None:
        return []
    return [
        f"{tally['tiny']} images are under a quarter of the student's {size[0]}x{size[1]} on a side (the first:"
        f" {files[tally['tiny_first'] - 1].name}): stretched up to it, a few pixels each (icons, thumbnails?)"
    ]


def _listed(unreadable: list[AmalgamError]) -> Path:
    """A text file listing every unreadable image, one a line with why (a temporary file: the run folder
    may not exist yet)."""
    fd, name = tempfile.mkstemp(prefix="amalgam-unreadable-", suffix=".txt")
    lines = [f"{e.path}\t{e.reason}" if isinstance(e, UnreadableImage) else str(e) for e in unreadable]
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    return Path(name)


#: unreadable images after which a source's check stops counting
UNREADABLE_ENOUGH = 1000


def _unreadable_error(unreadable: list[AmalgamError], total: int) -> AmalgamError:
    """The unreadable images in one line: the first few, each with why, and what to do."""
    fix = UNREADABLE_FIX.format(them="it" if len(unreadable) == 1 else "them")
    if len(unreadable) == 1:
        return AmalgamError(f"{unreadable[0]}{'; ' + fix if isinstance(unreadable[0], UnreadableImage) else ''}")
    root = _common_folder([e.path for e in unreadable if isinstance(e, UnreadableImage)])
    shown = "; ".join(
        f"{e.path.relative_to(root) if root else e.path} ({e.reason})" if isinstance(e, UnreadableImage) else str(e)
        for e in unreadable[:UNREADABLE_SHOWN]
    )
    more = ""
    if len(unreadable) > UNREADABLE_SHOWN:  # the whole list in a file: named five at a time, 100 took 20 runs
        more = f"; and {len(unreadable) - UNREADABLE_SHOWN} more (all of them: {_listed(unreadable)})"
    where = f" under {root}" if root else ""
    count = f"at least {len(unreadable):,}" if len(unreadable) == UNREADABLE_ENOUGH else f"{len(unreadable)}"
    return AmalgamError(
        f"{count} of {total} images cannot be read{where}: {shown}{more}; {_found_above(unreadable)}{fix}"
    )


def _found_above(unreadable: list[AmalgamError]) -> str:
    """Where the first image not found is a folder or two up (COCO ``file_name`` s that repeat the folder
    ``path`` names: ``images/im0.jpg`` under ``images/``): said with the fix, not "remove them"."""
    missing = next((e.path for e in unreadable if isinstance(e, UnreadableImage) and e.reason == "not found"), None)
    if missing is None:
        return ""
    for up in missing.parents[1:3]:
        if (up / missing.name).is_file():
            repeated = missing.parent.relative_to(up).parts
            fix = "take the folder out of the names"
            if up.parts[-len(repeated) :] == repeated:  # path .../images with names images/im0.jpg
                fix = f"point path at {up.parents[len(repeated) - 1]} (or take the folder out of the names)"
            folder = "/".join(repeated)
            return f"{missing.name} is at {up / missing.name}: the names repeat the folder {folder}/: {fix}; or "
    return ""


def _common_folder(paths: list[Path]) -> Optional[Path]:
    """The folder every path lies under (None: none to name, e.g. relative and absolute paths mixed)."""
    try:
        root = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else None
    except ValueError:  # relative and absolute paths, or two drives
        return None
    return root if root and str(root) != "." else None


#: unreadable images a source's error names, each with why
UNREADABLE_SHOWN = 5
#: what to do: a build never trains on a set with files it silently left out
UNREADABLE_FIX = "remove {them} from the set (or replace {them} with whole copies): amalgam leaves no image out unsaid"


#: the largest value 12-bit data holds: a 16-bit image at or below it reads nearly black
TWELVE_BIT_MAX = 4095
#: how many 16-bit images of a source are decoded to look for 12-bit data (the first ones)
TWELVE_BIT_SAMPLE = 64


def _tally_grey(tally: Counter, index: int, path: Path, facts: ImageFacts) -> None:
    """Counts grey images by mode (``grey:<mode>``) and 16-bit ones; of the first
    :data:`TWELVE_BIT_SAMPLE` 16-bit ones (a second decode each), those at or below 12 bits
    (``low16``, the largest value among them ``peak``, the first one's index + 1 ``low16_first``)."""
    if not facts.grey:
        return
    tally[f"grey:{facts.mode}"] += 1
    if facts.grey16:
        tally["grey16"] += 1
        if tally["grey16"] <= TWELVE_BIT_SAMPLE and (peak := grey_peak(path)) <= TWELVE_BIT_MAX:
            tally["low16"] += 1
            tally["peak"] = max(tally["peak"], peak)
            tally["low16_first"] = tally["low16_first"] or index + 1


def _grey_notes(tally: Counter, files: list[Path]) -> list[str]:
    """The lines saying how many images were grey (and 16-bit), and a warning on 12-bit-looking data."""
    modes = {key.split(":", 1)[1]: n for key, n in tally.items() if key.startswith("grey:")}
    if not modes:
        return []
    kinds = ", ".join(f"{mode}: {n}" for mode, n in sorted(modes.items()))
    notes = [f"{sum(modes.values())} images are grey (PIL mode {kinds}): converted to 3 channels (R = G = B = grey)"]
    if deep := tally["grey16"]:
        notes[0] += f"; {deep} of them are 16-bit, read on the full 0-65535 scale (value / 257)"
    if low := tally["low16"]:
        checked, first = min(deep, TWELVE_BIT_SAMPLE), files[tally["low16_first"] - 1].name
        which = (
            "every 16-bit image holds"
            if low == deep
            else f"{low} of the {checked} 16-bit images checked (the first: {first}) hold"
        )
        notes.append(
            f"warning: {which} values up to {tally['peak']} only: 12-bit data (0-{TWELVE_BIT_MAX}) read on a 16-bit"
            f" scale? they read nearly black (at most {tally['peak'] / 257:.0f} of 255): scale them to 0-65535 (x16)"
            " or save them as 8-bit"
        )
    return notes


def _notes(dataset: CheckedSet, tally: Counter, with_targets: bool) -> list[str]:
    notes = [note] if (note := skipped_note(dataset.skipped)) else []
    if with_targets:
        notes += dataset.target_notes()
    if tally["rotated"]:
        notes.append(_orientation_note(tally["rotated"], dataset.upright))
    if tally["either"]:
        notes.append(
            f"{tally['either']} of them (turned 180 degrees, mirrored, or square) fit their maps either way: the"
            " size check cannot tell which reading the maps were drawn on; look at one, and set exif: if need be"
        )
    if tally["scaled"]:
        notes.append(f"{tally['scaled']} maps are at a scale of their image's size: each is read as covering it")
    if tally["alpha"]:
        notes.append(
            f"{tally['alpha']} images carry an alpha channel or a transparent colour (not read: they may be opaque):"
            " it is dropped (as torchvision's RGB decoding does), so teachers see the colour stored under any"
            " transparent pixels"
        )
    if tally["cmyk"]:  # print-ready files: their ICC profile holds the colours a viewer shows
        notes.append(
            f"{tally['cmyk']} images are CMYK: converted to RGB by PIL's plain formula, any colour profile they"
            " carry not applied (colours may differ from a viewer's); convert them to RGB yourself where that matters"
        )
    return notes + _grey_notes(tally, dataset.files)


def _orientation_note(rotated: int, upright: bool) -> str:
    if upright:
        return (
            f"{rotated} images carry an EXIF orientation: read upright, as viewers show them (maps must be drawn so;"
            " exif: stored reads the stored pixels)"
        )
    return f"{rotated} images carry an EXIF orientation: read as stored (exif: stored), not as viewers show them"


def _fits(size: tuple[int, int], target_size: tuple[int, int]) -> bool:
    (w, h), (tw, th) = size, target_size
    return abs(tw * h - th * w) <= max(w, h)  # the same shape, or a scale of it (1 px of rounding)


def _check_fit(image: Path, facts: ImageFacts, upright: bool, target: object, target_size: tuple[int, int]) -> None:
    """A map must have its image's shape as read (upright or stored), or a scale of it."""
    size = facts.size if upright else facts.stored
    (w, h), (tw, th) = size, target_size
    how = "as shown (after its EXIF orientation)" if upright else "as stored (exif: stored)"
    other = facts.stored if upright else facts.size
    # from 8 px on, a map of another scale differs by more than a pixel: one this close is a crop or a pad,
    # unless it is the image in its other orientation (the EXIF hint below says that)
    turned = facts.rotated and tuple(other) == tuple(target_size) != tuple(size)
    if size != target_size and min(w, h) >= 8 and abs(tw - w) <= 1 and abs(th - h) <= 1 and not turned:
        raise AmalgamError(
            f"{target} is {size_text(th, tw)} but its image {image} is {size_text(h, w)} {how}: a pixel cropped or"
            " padded, not a scale"
            " (it would be stretched over the image, each label shifted): a map at full resolution must match its"
            " image exactly"
        )
    if _fits(size, target_size) and not turned:
        return
    hint = (
        f": it fits the image {'as stored: set exif: stored' if upright else 'as shown: remove exif: stored'}"
        " on this source"
        if facts.rotated and _fits(other, target_size)
        else ": a map must cover its image (same shape, or a scale of it)"
    )
    raise AmalgamError(f"{target} is {size_text(th, tw)} but its image {image} is {size_text(h, w)} {how}{hint}")
