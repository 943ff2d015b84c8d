"""A second, differently made world: generated shapes on cluttered backgrounds (no downloads).

Scenes (``dense`` layout: ``images/``, ``labels/``, ``classes.txt``) hold 1-4 filled shapes of
six classes at random sizes, colours and positions, later ones occluding earlier ones, on a
background of colour gradients, noise and thin random lines (lines are background: they share
colours with shapes but have no area). Objects cover about 20% of the pixels (2-5% per class),
the regime in which a pixel-mean distillation loss is dominated by background. Tiles (``imagefolder`` layout:
``<class>/*.png``) hold one centred shape each, for a classifier. Everything is a pure function of
``--seed``.

Usage::

    python tools/make_shapes.py --out data/shapes --train 3000 --val 300 --tiles 3000 --size 64 --seed 0
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "cross", "ring", "diamond")
SPLIT_SEEDS = {"train": 0, "val": 1, "tiles": 2, "tiles-val": 3}


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Corners of a polygonal shape of half-size ``r``, rotated by ``angle``."""
    if kind == "square":
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        pts = [(x * 0.8, y * 0.8) for x, y in pts]
    elif kind == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    elif kind == "diamond":
        pts = [(0, -1), (0.6, 0), (0, 1), (-0.6, 0)]
    else:  # cross: a plus of arms 1/3 wide
        t = 1 / 3
        pts = [
            (-t, -1),
            (t, -1),
            (t, -t),
            (1, -t),
            (1, t),
            (t, t),
            (t, 1),
            (-t, 1),
            (-t, t),
            (-1, t),
            (-1, -t),
            (-t, -t),
        ]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def draw_shape(mask: Image.Image, kind: str, cx: float, cy: float, r: float, angle: float) -> None:
    """Draws one shape with value 255 into an ``L`` image."""
    d = ImageDraw.Draw(mask)
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif kind == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        q = r * 0.5
        d.ellipse([cx - q, cy - q, cx + q, cy + q], fill=0)
    else:
        d.polygon(_polygon(kind, cx, cy, r, angle), fill=255)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Float RGB ``[size, size, 3]`` in [0, 1]: a two-colour gradient, noise and a few thin lines."""
    a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    t = np.linspace(0, 1, size)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None] + 1) / 2
    img = a * (1 - ramp[..., None]) + b * ramp[..., None]
    img = img + rng.normal(0, 0.06, (size, size, 3))
    lines = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(lines)
    colours = []
    for _ in range(rng.integers(0, 4)):
        d.line([tuple(rng.uniform(0, size, 2)), tuple(rng.uniform(0, size, 2))], fill=len(colours) + 1, width=1)
        colours.append(rng.uniform(0, 1, 3))
    ids = np.asarray(lines)
    for k, colour in enumerate(colours, start=1):
        img[ids == k] = colour
    return img


def scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: ``uint8`` RGB ``[size, size, 3]`` and its class map (0 = background, k = CLASSES[k-1])."""
    img = background(rng, size)
    label = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, 5)):
        k = int(rng.integers(len(CLASSES)))
        r = rng.uniform(0.14, 0.26) * size  # half-size: 9-17 px at 64, visible at stride 4
        cx, cy = rng.uniform(r * 0.5, size - r * 0.5, 2)
        mask = Image.new("L", (size, size), 0)
        draw_shape(mask, CLASSES[k], cx, cy, r, rng.uniform(0, 2 * math.pi))
        inside = np.asarray(mask) > 127
        colour = rng.uniform(0, 1, 3)
        shade = 1 + rng.normal(0, 0.05, (size, size, 1))  # a little texture on the shape
        img[inside] = (colour * shade)[inside]
        label[inside] = k + 1
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), label


def tile(rng: np.random.Generator, size: int, k: int) -> np.ndarray:
    """A ``size`` x ``size`` tile with one shape of class ``k`` near its centre."""
    img = background(rng, size)
    r = rng.uniform(0.25, 0.4) * size
    cx, cy = size / 2 + rng.uniform(-0.1, 0.1, 2) * size
    mask = Image.new("L", (size, size), 0)
    draw_shape(mask, CLASSES[k], cx, cy, r, rng.uniform(0, 2 * math.pi))
    img[np.asarray(mask) > 127] = rng.uniform(0, 1, 3)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def write_scenes(out: Path, count: int, size: int, seed: int) -> None:
    """``count`` scenes in the dense layout under ``out``."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(exist_ok=True)
    (out / "classes.txt").write_text("\n".join(("background", *CLASSES)) + "\n")
    rng = np.random.default_rng(seed)
    for i in range(count):
        img, label = scene(rng, size)
        Image.fromarray(img).save(out / "images" / f"{i:05d}.png")
        Image.fromarray(label).save(out / "labels" / f"{i:05d}.png")


def write_tiles(out: Path, count: int, size: int, seed: int) -> None:
    """``count`` tiles, classes in turn, in the imagefolder layout under ``out``."""
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        (out / name).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        k = i % len(CLASSES)
        Image.fromarray(tile(rng, size, k)).save(out / CLASSES[k] / f"{i:05d}.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("data/shapes"))
    p.add_argument("--train", type=int, default=3000)
    p.add_argument("--val", type=int, default=300)
    p.add_argument("--tiles", type=int, default=3000, help="classifier tiles (a sixth of it again for its val)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--tile-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    write_scenes(a.out / "train", a.train, a.size, a.seed * 10 + SPLIT_SEEDS["train"])
    write_scenes(a.out / "val", a.val, a.size, a.seed * 10 + SPLIT_SEEDS["val"])
    write_tiles(a.out / "tiles", a.tiles, a.tile_size, a.seed * 10 + SPLIT_SEEDS["tiles"])
    write_tiles(
        a.out / "tiles-val", max(a.tiles // 6, len(CLASSES)), a.tile_size, a.seed * 10 + SPLIT_SEEDS["tiles-val"]
    )
    print(f"wrote {a.train} + {a.val} scenes and {a.tiles} tiles to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
