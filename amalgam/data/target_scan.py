"""Ground truth checked when an eval set is scanned, so a bad label or depth map stops the build
before training, not after it.

Label values that name no class (>= the number of classes, other than 255 = ignore) and depth
maps that are all zero (0 = invalid) would be left out of the metrics without a word; they are
counted and reported in one line, and when nothing at all is left to score the build stops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np

from amalgam.data.images import read_array
from amalgam.errors import AmalgamError

IGNORE = 255


def scan_dense_targets(
    dataset, log: Optional[Callable[[str], None]], say: Optional[Callable[[str], None]] = None
) -> None:
    """Reads every label and depth map of a dense eval set once; warns or fails with counts.

    Args:
        dataset: a :class:`~amalgam.data.sources.DenseSet` (``files``, ``target_keys``, ``target_path``,
            ``classes``, ``depth_scale``).
        log: where warnings go (one line each).
        say: where the depth maps' range in metres goes, read with the set's ``depth_scale``.

    Raises:
        AmalgamError: a map is missing, or no pixel of any map can be scored.
    """
    warn = log or (lambda msg: None)
    if "mask" in dataset.target_keys:
        _scan_masks(dataset, warn)
    if "depth" in dataset.target_keys:
        _scan_depth(dataset, warn, say or (lambda msg: None))


def _paths(dataset, key: str) -> list[Path]:
    paths = []
    for index, image in enumerate(dataset.files):
        path = dataset.target_path(key, index)
        if not path.is_file():
            raise AmalgamError(f"missing {key} file {path} for image {image}")
        paths.append(path)
    return paths


def _scan_masks(dataset, warn: Callable[[str], None]) -> None:
    classes = len(dataset.classes) if dataset.classes else None
    scored = bad_pixels = 0
    bad_maps: list[Path] = []
    top = 0
    for path in _paths(dataset, "mask"):
        labels = read_array(path)
        valid = labels != IGNORE
        if classes is not None:
            beyond = valid & (labels >= classes)
            if beyond.any():
                bad_maps.append(path)
                bad_pixels += int(beyond.sum())
                top = max(top, int(labels[beyond].max()))
                valid &= ~beyond
        scored += int(valid.sum())
    if bad_maps:
        warn(
            f"{len(bad_maps)} of {len(dataset.files)} label maps hold values beyond the {classes} classes "
            f"({bad_pixels:,} pixels, up to {top}, e.g. {bad_maps[0]}): those pixels are not scored"
        )
    if scored == 0:
        raise AmalgamError(
            f"no label pixel can be scored: every one is {IGNORE} (ignore)"
            + (f" or beyond the {classes} classes" if classes is not None else "")
        )


#: valid depth values kept per map for the range said (every map's share, strided)
RANGE_SAMPLES = 4096


def _scan_depth(dataset, warn: Callable[[str], None], say: Callable[[str], None]) -> None:
    empty, values = [], []
    for path in _paths(dataset, "depth"):
        raw = read_array(path)
        valid = raw[raw > 0]
        if valid.size == 0:
            empty.append(path)
        values.append(valid[:: max(1, valid.size // RANGE_SAMPLES)])
    if len(empty) == len(dataset.files):
        raise AmalgamError(f"every depth map is all zero (0 = invalid), e.g. {empty[0]}: nothing to score")
    if empty:
        warn(f"{len(empty)} of {len(dataset.files)} depth maps are all zero (invalid, e.g. {empty[0]}): not scored")
    # a unit the user did not mean (KITTI stores 256 a metre) shows as a range no scene has
    low, mid, high = np.percentile(np.concatenate(values).astype(np.float64) / dataset.depth_scale, [5, 50, 95])
    say(
        f"depth maps read at {dataset.depth_scale:g} values a metre (depth_scale): {low:.3g}-{high:.3g} m"
        f" (5th-95th percentile), median {mid:.3g} m"
    )
