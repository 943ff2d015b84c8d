"""Shared helpers for tests of tools/ (which is not a package, so it goes on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

from fake_fashion import fake_glyphs, write_fake_split  # noqa: E402


@pytest.fixture
def fake_fashion_root(tmp_path: Path) -> Path:
    """torchvision-style root whose train split has classes 0-4 and test split classes 5-9.

    Disjoint classes make any train/val leak visible in the label maps.
    """
    root = tmp_path / "fashion"
    raw = root / "FashionMNIST" / "raw"
    write_fake_split(raw, "train", fake_glyphs(40, 1), np.arange(40) % 5, gz=False)
    write_fake_split(raw, "t10k", fake_glyphs(20, 2), 5 + np.arange(20) % 5, gz=False)
    return root


DENSE_CLASSES = ["background", "disc", "square", "bar"]
ITEM_CLASSES = ["bird", "cat", "dog"]


@pytest.fixture
def tiny_dense(tmp_path: Path) -> Path:
    """A dense set of 8 random 32x32 scenes: images, labels over DENSE_CLASSES, uint16 depth in mm."""
    from PIL import Image

    root = tmp_path / "scenes"
    rng = np.random.default_rng(0)
    for sub in ("images", "labels", "depth"):
        (root / sub).mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(DENSE_CLASSES) + "\n")
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        labels = rng.integers(0, len(DENSE_CLASSES), (32, 32), dtype=np.uint8)
        Image.fromarray(labels).save(root / "labels" / f"{i}.png")
        Image.fromarray(rng.integers(500, 8000, (32, 32)).astype(np.uint16)).save(root / "depth" / f"{i}.png")
    return root


@pytest.fixture
def tiny_items(tmp_path: Path) -> Path:
    """An ImageFolder set (``root/<class>/*.png``) of 4 grey 28x28 images per class of ITEM_CLASSES."""
    from PIL import Image

    root = tmp_path / "items"
    rng = np.random.default_rng(1)
    for name in ITEM_CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root
