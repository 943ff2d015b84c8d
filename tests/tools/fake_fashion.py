"""Fake Fashion-MNIST idx files for the tools/ tests (no network, no real data)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

RAW_NAMES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("t10k", "images"): "t10k-images-idx3-ubyte",
    ("t10k", "labels"): "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array in the idx format (magic 0x08 = uint8, then ndim, big-endian dims)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def fake_glyphs(count: int, seed: int, side: int = 28) -> np.ndarray:
    """Solid bright rectangles of random size: simple, fully masked items."""
    rng = np.random.default_rng(seed)
    glyphs = np.zeros((count, side, side), np.uint8)
    for glyph in glyphs:
        h, w = rng.integers(side // 2, side + 1), rng.integers(side // 3, side + 1)
        top, left = side - h, (side - w) // 2
        glyph[top:, left : left + w] = rng.integers(150, 256)
    return glyphs


def write_fake_split(folder: Path, prefix: str, glyphs: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    """Write one split's images/labels idx files (optionally gzipped) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind, array in (("images", glyphs), ("labels", labels.astype(np.uint8))):
        name = RAW_NAMES[(prefix, kind)]
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / name).write_bytes(data)
