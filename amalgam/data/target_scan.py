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


def scan_dense_targets(dataset, log: Optional[Callable[[str], None]]) -> None:
    """Reads every label and depth map of a dense eval set once; warns or fails with counts.

    Args:
        dataset: a :class:`~amalgam.data.sources.DenseSet` (``files``, ``target_keys``, ``target_path``, ``classes``).
        log: where warnings go (one line each).

    Raises:
        AmalgamError: a map is missing, or no pixel of any map can be scored.
    """
    warn = log or (lambda msg: None)
    if "mask" in dataset.target_keys:
        _scan_masks(dataset, warn)
    if "depth" in dataset.target_keys:
        _scan_depth(dataset, warn)


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


def _scan_depth(dataset, warn: Callable[[str], None]) -> None:
    empty = [path for path in _paths(dataset, "depth") if not np.any(read_array(path))]
    if len(empty) == len(dataset.files):
        raise AmalgamError(f"every depth map is all zero (0 = invalid), e.g. {empty[0]}: nothing to score")
    if empty:
        warn(f"{len(empty)} of {len(dataset.files)} depth maps are all zero (invalid, e.g. {empty[0]}): not scored")
