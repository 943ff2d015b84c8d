"""Ground truth checked when an eval set is scanned, so a bad label or depth map stops the build
before training, not after it.

Label values that name no class (>= the number of classes, other than 255 = ignore) and depth
maps that are all zero (0 = invalid; 65535, the uint16 maximum, is no data too) would be left out
of the metrics without a word; they are counted and reported in one line, and when nothing at all
is left to score the build stops.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from amalgam.data.images import read_depth, read_map
from amalgam.errors import AmalgamError
from amalgam.labels import IGNORE

#: a 16-bit depth map's no-data value besides 0, where sensors and tools saturate (read as 0 = invalid)
NO_DEPTH_16 = 65535


def saturated(raw: np.ndarray) -> np.ndarray:
    """Where a depth map holds the 16-bit maximum, no data like 0 (an integer map: uint16, or int32 as
    some Pillow versions read 16-bit PNGs); the one rule reading (sources) and the scan both follow."""
    return raw == NO_DEPTH_16 if np.issubdtype(raw.dtype, np.integer) else np.zeros(raw.shape, bool)


def scan_dense_targets(
    dataset, log: Optional[Callable[[str], None]], say: Optional[Callable[[str], None]] = None
) -> None:
    """Reads every label and depth map of a dense eval set once; warns or fails with counts.

    Args:
        dataset: a :class:`~amalgam.data.sources.DenseSet` (``files``, ``target_keys``, ``target_path``,
            ``classes``, ``depth_scale``).
        log: where warnings go (one line each).
        say: where the share of ignore (255) label pixels and the depth maps' range in metres (read
            with the set's ``depth_scale``) go.

    Raises:
        AmalgamError: a map is missing, no pixel of any map can be scored, or the label maps hold only
            background (0) and ignore (255), as binary masks saved as 0/255 do.
    """
    warn = log or (lambda msg: None)
    say = say or (lambda msg: None)
    if "mask" in dataset.target_keys:
        _scan_masks(dataset, warn, say)
    if "depth" in dataset.target_keys:
        _scan_depth(dataset, warn, say)


def _paths(dataset, key: str) -> list[Path]:
    return [dataset.require_target(key, index) for index in range(len(dataset.files))]


def _scan_masks(dataset, warn: Callable[[str], None], say: Callable[[str], None]) -> None:
    classes = len(dataset.classes) if dataset.classes else None
    counts = np.zeros(IGNORE + 1, dtype=np.int64)  # pixels of each value, over every map
    bad_maps: list[Path] = []
    colours: dict[int, tuple[bytes, Path]] = {}  # a palette map's index -> its colour, and the first map
    clash: Optional[tuple[int, Path, Path]] = None
    smear = np.zeros(3, dtype=np.int64)  # smeared, scored and region-inside interior pixels of the first maps
    ramps = np.zeros(2, dtype=np.int64)  # in-between pixels and class changes across a pixel (rows and columns)
    for count, path in enumerate(_paths(dataset, "mask")):
        array, palette = read_map(path)
        smear += _smeared_pixels(array) if count < SMEAR_MAPS else 0
        ramps += _ramp_pixels(array) if count < SMEAR_MAPS else 0
        if array.size and (array.min() < 0 or array.max() > IGNORE):  # a 16- or 32-bit grey map's other values
            low, high = int(array.min()), int(array.max())
            raise AmalgamError(
                f"label map {path} holds values {low}-{high}: class indices are 0-{IGNORE - 1} with {IGNORE} ="
                f" ignore (a 16-bit map's 65535 void, say, must be saved as {IGNORE})"
                + _scaled_hint(np.unique(array), classes)
            )
        values = np.bincount(array.ravel(), minlength=IGNORE + 1)
        if palette is not None and clash is None:
            clash = _palette_clash(colours, palette, np.flatnonzero(values), path)
        if classes is not None and values[classes:IGNORE].any():
            bad_maps.append(path)
        counts += values
    if clash is not None:
        index, first, second = clash
        warn(
            f"index {index} of the label maps has one colour in {first.name}'s palette and another in {second.name}'s:"
            " indices are read as class ids whatever colour a palette gives them; maps quantized file by file"
            " number the classes differently in each, so map each colour to its class index first"
        )
    # judged on maps made of regions only: on per-pixel noise (a test world's) no value is a smear
    regions = smear[1] and smear[2] >= REGION_SHARE * smear[1]
    # the smear share reads all pixels, which a large map's few edges dilute; the ramp share reads class changes
    if regions and (smear[0] > SMEAR_SHARE * smear[1] or ramps[0] > RAMP_SHARE * ramps[1]):
        warn(
            f"{ramps[0] / max(ramps[1], 1):.1%} of the label maps' class changes along rows and columns pass through"
            f" two values between the two classes, and {smear[0] / smear[1]:.2%} of their pixels differ from all eight"
            f" neighbours with a value between theirs (the first {min(SMEAR_MAPS, len(dataset.files))} maps; clean"
            f" maps: under {RAMP_SHARE:.0%} and {SMEAR_SHARE:.1%}): maps of a lossy save (a JPEG saved again as PNG?)"
            " or resized with an interpolating filter (bilinear, bicubic) hold in-between values along the edges,"
            " scored as other classes; export the maps again from their source as PNG, resized with nearest"
        )
    known = classes if classes is not None else IGNORE
    scored = int(counts[:known].sum())
    if counts[IGNORE]:
        say(f"label maps: {counts[IGNORE] / counts.sum():.1%} of pixels are {IGNORE} (ignore): not scored")
    if bad_maps and len(bad_maps) * 2 > len(dataset.files):  # most maps: not class indices at all
        beyond = int(np.flatnonzero(counts[classes:IGNORE]).max()) + classes
        raise AmalgamError(
            f"{len(bad_maps)} of {len(dataset.files)} label maps hold values beyond the {classes} classes (up to"
            f" {beyond}, e.g. {bad_maps[0]}): a label map holds each pixel's class index (0-{classes - 1}, 255 ="
            " ignore); colour masks, or palettes quantized per file, must be mapped to those indices first"
            + _beyond_hint(counts, classes)
        )
    if bad_maps:
        beyond = np.flatnonzero(counts[classes:IGNORE]) + classes
        warn(
            f"{len(bad_maps)} of {len(dataset.files)} label maps hold values beyond the {classes} classes "
            f"({int(counts[beyond].sum()):,} pixels, up to {int(beyond.max())}, e.g. {bad_maps[0]}): "
            "those pixels are not scored" + _beyond_hint(counts, classes)
        )
    if scored == 0:
        raise AmalgamError(
            f"no label pixel can be scored: every one is {IGNORE} (ignore)"
            + (f" or beyond the {classes} classes" if classes is not None else "")
        )
    _check_classes_present(dataset, counts[:known], counts[IGNORE], warn)


def _beyond_hint(counts: np.ndarray, classes: int) -> str:
    """What values beyond the classes point at: one beyond only, maps numbered from 1 (ADE20K's 0 = other);
    far beyond, sparse ids, another id convention than the class list's (Cityscapes' labelIds for trainIds)."""
    used = np.flatnonzero(counts[:IGNORE])
    top = int(used.max()) if used.size else 0
    if scaled := _scaled_hint(used, classes):
        return scaled
    if top == classes:
        return (
            f"; the maps reach {classes} exactly, one beyond the list: numbered from 1, with 0 = other or ignore"
            " (as ADE20K's)? classes.txt then names value 0 first (line i = value i)"
        )
    # half as many values as classes or more, a sparse subset of ids reaching up to 3x the list: a richer scheme
    if classes < top <= 3 * classes and classes / 2 <= used.size < 0.8 * (top + 1):
        return (
            f"; they use {used.size} values up to {top}: ids of another convention than the class list's (Cityscapes'"
            " labelIds 0-33 against trainIds 0-18?); classes.txt names every value the maps hold (line i = value i)"
        )
    return ""


def _scaled_hint(values: np.ndarray, classes: Optional[int]) -> str:
    """Where every value a set's maps hold is a multiple of one number k > 1 and dividing by it gives class
    indices: maps scaled for viewing (class * 25, * 1000), said with the fix ("" otherwise)."""
    nonzero = [int(v) for v in values if 0 < v < 65535 and v != IGNORE]
    k = int(np.gcd.reduce(nonzero)) if len(nonzero) > 1 else 1
    if k < 2 or (classes is not None and max(nonzero) // k >= classes):
        return ""
    return f"; every value is a multiple of {k}: maps scaled for viewing? divide them by {k} (class = value / {k})"


#: share of a set's scored interior label pixels that look smeared (:func:`_smeared_pixels`) above which its maps
#: are said to come from a lossy save: clean sets (demo scenes; VOC-, Cityscapes- and ADE-like; resized with
#: nearest; 1-px wires; single-pixel objects) 0.000-0.13%, JPEG-saved 0.23% (quality 100) to 1.6%
SMEAR_SHARE = 0.002
#: share of the pixels inside a region (like all eight neighbours) a set's maps need to be judged: JPEG-smeared
#: annotations keep most of theirs, per-pixel random maps have almost none
REGION_SHARE = 0.25
#: maps the smear check reads (the first ones): a lossy export smears every map alike
SMEAR_MAPS = 200


def _smeared_pixels(array: np.ndarray) -> np.ndarray:
    """``[smeared, scored, inside]`` interior pixels of a 2-D label map. Smeared: unlike all eight neighbours
    and strictly between the least and the greatest of them (ignore left out), as a lossy save leaves values
    between two classes along their edge; a single-pixel object or a 1-px line is neither. Inside: like all
    eight (a region's inside), which per-pixel noise has almost none of."""
    if array.ndim != 2 or min(array.shape) < 3:
        return np.zeros(3, dtype=np.int64)
    a, (h, w) = array.astype(np.int16), array.shape
    inner = a[1:-1, 1:-1]
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    around = np.stack([a[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx] for dy, dx in shifts])
    known = around != IGNORE
    low, high = np.where(known, around, IGNORE + 1).min(0), np.where(known, around, -1).max(0)
    scored = inner != IGNORE
    smeared = scored & (around != inner).all(0) & (low < inner) & (inner < high)
    inside = (around == inner).all(0)
    return np.array([int(smeared.sum()), int(scored.sum()), int(inside.sum())], dtype=np.int64)


#: share of a set's class changes along rows and columns through two in-between values (:func:`_ramp_pixels`) above
#: which its maps are said to be interpolated or lossy: clean (demo scenes at 1x, 2x and 4x with nearest, VOC- and
#: Cityscapes-like, downscaled with nearest) 0.000%, bilinear-resized 12-29%, JPEG-saved 4x at quality 90 5.8%
RAMP_SHARE = 0.01


def _ramp_pixels(array: np.ndarray) -> np.ndarray:
    """``[ramps, changes]`` of a 2-D label map, along rows and columns: of the runs of four pixels whose ends
    differ (ignore left out), those rising or falling strictly through two values between the ends, as a bilinear
    resize or a lossy save leaves a ramp from one class to the other; a 1-px class between two others (a cell's
    contour between background and inside) is one value, not a ramp. Counted against the class changes, not all
    pixels, so a large map's few edges are judged as a small one's (a 4x bilinear map's 3% of wrong pixels were
    0.09% of all)."""
    if array.ndim != 2:
        return np.zeros(2, dtype=np.int64)
    a, found = array.astype(np.int16), np.zeros(2, dtype=np.int64)
    for lines in (a, a.T):
        first, second, third, last = lines[:, :-3], lines[:, 1:-2], lines[:, 2:-1], lines[:, 3:]
        known = (first != IGNORE) & (second != IGNORE) & (third != IGNORE) & (last != IGNORE)
        change = known & (first != last)
        rising = (first < second) & (second < third) & (third < last)
        falling = (first > second) & (second > third) & (third > last)
        found += [int((change & (rising | falling)).sum()), int(change.sum())]
    return found


def _palette_clash(
    colours: dict[int, tuple[bytes, Path]], palette: bytes, used: np.ndarray, path: Path
) -> Optional[tuple[int, Path, Path]]:
    """The first index ``path`` uses whose palette colour differs from an earlier map's, or None;
    records the colours of the indices it uses (palettes trimmed to the used entries still agree)."""
    for index in used.tolist():
        colour = palette[3 * index : 3 * index + 3]
        first = colours.setdefault(index, (colour, path))
        if first[0] != colour:
            return index, first[1], path
    return None


def _check_classes_present(dataset, counts: np.ndarray, ignored: int, warn: Callable[[str], None]) -> None:
    """Stops on maps that hold only background and ignore (binary masks saved as 0/255 read so);
    warns on the classes of the label list no map holds (they cannot be scored)."""
    names = dataset.classes or [str(i) for i in range(len(counts))]
    if ignored and len(counts) > 1 and not counts[1:].any():
        objects = ", ".join(names[1:4]) + (" ..." if len(names) > 4 else "")
        raise AmalgamError(
            f"every label map holds only background (0) and ignore ({IGNORE}): binary masks saved as 0/{IGNORE}? "
            f"save each object pixel as its class index (1 = {names[1]}), or, if {IGNORE} does mean ignore, "
            f"the set has no pixel of {objects} to score"
        )
    if dataset.classes and (absent := [name for name, n in zip(names, counts) if n == 0]):
        shown = ", ".join(absent[:8]) + (f" and {len(absent) - 8} more" if len(absent) > 8 else "")
        warn(f"{len(absent)} of {len(names)} classes have no pixel in any label map, so they cannot be scored: {shown}")


#: valid depth values kept per map for the range said (every map's share, strided) ...
RANGE_SAMPLES = 4096
#: ... and in all: a set of 20,000 maps kept 75 KB each (2.5 GB at inspect)
RANGE_TOTAL = 1 << 20


#: ``depth_scale``'s default (millimetres), which a set of float maps leaves as it is
DEFAULT_DEPTH_SCALE = 1000.0


def _scan_depth(dataset, warn: Callable[[str], None], say: Callable[[str], None]) -> None:
    empty, values, saturated_pixels, pixels, floats = [], [], 0, 0, 0
    unscored = Counter()  # the other pixels that are no depth, by kind: said, not only left out
    per_map = max(16, min(RANGE_SAMPLES, RANGE_TOTAL // max(1, len(dataset.files))))
    for path in _paths(dataset, "depth"):
        raw = read_depth(path)
        pixels += raw.size
        no_data = saturated(raw)
        saturated_pixels += int(no_data.sum())
        nan = np.isnan(raw) if np.issubdtype(raw.dtype, np.floating) else np.zeros(raw.shape, bool)
        inf = np.isinf(raw) if np.issubdtype(raw.dtype, np.floating) else np.zeros(raw.shape, bool)
        unscored.update(
            {
                "0": int((raw == 0).sum()),
                "NaN": int(nan.sum()),
                "infinite": int(inf.sum()),
                "below 0": int((raw < 0).sum()),
            }
        )
        valid = raw[(raw > 0) & ~no_data & ~inf]  # as the metrics score: +inf (sky, no return) is no depth
        if valid.size == 0:
            empty.append(path)
        floats += np.issubdtype(raw.dtype, np.floating)
        # each map in metres by its own kind (a float map is metres, a PNG depth_scale values a metre)
        values.append(np.asarray(dataset.metres(valid[:: max(1, valid.size // per_map)]), dtype=np.float32))
    if 0 < floats < len(dataset.files):
        say(
            f"depth maps: {floats} of {len(dataset.files)} are float maps (.npy/.tiff, read as metres as they are),"
            " the others integer PNGs (depth_scale applies to them only)"
        )
    if saturated_pixels:
        share = saturated_pixels / pixels
        say(f"depth maps: {share:.1%} of pixels are {NO_DEPTH_16} (the uint16 maximum): no data, not scored")
    if kinds := [f"{n / pixels:.1%} are {kind}" for kind, n in unscored.items() if n]:
        say(f"depth maps: of the pixels, {', '.join(kinds)}: no depth, not scored")
    if len(empty) == len(dataset.files):
        raise AmalgamError(
            f"every depth map holds no depth (all 0, NaN or infinite), e.g. {empty[0]}: nothing to score"
        )
    if empty:
        warn(
            f"{len(empty)} of {len(dataset.files)} depth maps hold no depth (all 0, NaN or infinite; e.g. {empty[0]}):"
            " not scored"
        )
    # a unit the user did not mean (KITTI stores 256 a metre) shows as a range no scene has
    low, mid, high = np.percentile(np.concatenate(values).astype(np.float64), [5, 50, 95])
    unit = f"at {dataset.depth_scale:g} values a metre (depth_scale)"
    if dataset.depth_reading == "inverse":
        unit = f"as inverse depth, metres = {dataset.depth_scale:g} / value (depth_reading: inverse)"
    if floats == len(dataset.files):  # depth_scale is for integer PNGs only
        unit = "as metres, as float maps are" + (
            " (inverse depth: metres = 1 / value)" if dataset.depth_reading == "inverse" else ""
        )
        if dataset.depth_scale != DEFAULT_DEPTH_SCALE or getattr(dataset, "scale_given", False):
            warn(
                f"depth_scale {dataset.depth_scale:g} is not applied: every depth map is a float map (.npy/.tiff),"
                " read as metres; save them in metres"
            )
    say(f"depth maps read {unit}: {low:.3g}-{high:.3g} m (5th-95th percentile), median {mid:.3g} m")
