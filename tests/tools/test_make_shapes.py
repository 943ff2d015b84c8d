"""The shapes world generator: deterministic, labels consistent with what is drawn."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import make_shapes  # noqa: E402


@pytest.mark.parametrize(
    "kind, area",
    [
        ("circle", math.pi),
        ("ring", math.pi * 0.75),
        ("square", 1.6**2),
        ("triangle", 3 * math.sqrt(3) / 4),
        ("diamond", 1.2),
    ],
)
def test_drawn_area_matches_the_shape(kind, area):
    r = 40.0
    mask = Image.new("L", (128, 128), 0)
    make_shapes.draw_shape(mask, kind, 64, 64, r, 0.0)
    drawn = (np.asarray(mask) > 127).sum()
    assert drawn == pytest.approx(area * r * r, rel=0.05)


def test_scenes_are_deterministic_and_labelled(tmp_path):
    make_shapes.write_scenes(tmp_path / "a", 6, 32, seed=3)
    make_shapes.write_scenes(tmp_path / "b", 6, 32, seed=3)
    make_shapes.write_scenes(tmp_path / "c", 6, 32, seed=4)
    assert (tmp_path / "a" / "classes.txt").read_text().split() == ["background", *make_shapes.CLASSES]
    files = sorted((tmp_path / "a" / "labels").iterdir())
    assert len(files) == 6
    same = [
        (tmp_path / "a" / d / f.name).read_bytes() == (tmp_path / "b" / d / f.name).read_bytes()
        for d in ("images", "labels")
        for f in files
    ]
    assert all(same)
    other = [
        (tmp_path / "a" / "images" / f.name).read_bytes() != (tmp_path / "c" / "images" / f.name).read_bytes()
        for f in files
    ]
    assert all(other)
    for f in files:
        label = np.asarray(Image.open(f))
        assert label.max() <= len(make_shapes.CLASSES) and (label > 0).any()  # every scene has an object


def test_a_shape_pixel_has_the_shape_colour():
    rng = np.random.default_rng(0)
    img, label = make_shapes.scene(rng, 64)
    for k in np.unique(label[label > 0]):
        pixels = img[label == k].astype(float)
        # one colour per shape (5% shading): far tighter than the background's gradient and noise
        assert pixels.std(0).max() < 40


def test_tiles_hold_each_class_in_turn(tmp_path):
    make_shapes.write_tiles(tmp_path, 12, 32, seed=0)
    counts = {name: len(list((tmp_path / name).iterdir())) for name in make_shapes.CLASSES}
    assert counts == dict.fromkeys(make_shapes.CLASSES, 2)
