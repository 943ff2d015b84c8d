"""Synthetic "fashion scenes" for semantic segmentation and monocular depth.

Real Fashion-MNIST items stand as billboards on a floor in front of a wall,
seen by a pinhole camera at height ``h``. With horizon row ``y_h`` and focal
length ``f`` (pixels), a floor pixel in row ``y`` has depth
``z = f*h/(y - y_h)``; the wall, at depth ``Z_wall``, covers the rows above
``y_w = y_h + f*h/Z_wall``. An item whose bottom row is ``y_b`` has depth
``f*h/(y_b - y_h)`` and its longer side spans ``f*S/z`` pixels for physical
size ``S``. Items stand in the near part of the floor, so at 64x64 they are
about 20-50 px: big enough to tell a shirt from a T-shirt. Floor and wall are
muted, low-contrast textures (planks, tiles, wallpaper stripes) and items are
vivid tints of their glyph, so the background never imitates an item.
Train scenes only use train-split items and val scenes only test-split items.

Usage::

    python tools/make_scenes.py --fashion-root data/fashion --out data/scenes \
        --train 8000 --val 1000 --size 64 --seed 0 [--preview docs/scenes.png]
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# Same spelling as torchvision.datasets.FashionMNIST.classes (checked in tests).
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SPLIT_CODES = {"train": 0, "val": 1}
# Written to <out>/<split>/world.txt; bump it whenever the same seed renders different scenes, so
# `make data` knows that scenes on disk are stale (and shipped teachers need retraining).
WORLD_VERSION = "fashion-scenes 2"
CAMERA_HEIGHT_M = 1.0
FOCAL_PER_PIXEL = 1.5  # f = 1.5 * size: a 1 m item 2-3.5 m away is 27-48 px at 64.
HORIZON_FRACTION = 0.25
WALL_DEPTH_M = (4.5, 8.0)
ITEM_DEPTH_M = 3.5  # items stand between the nearest visible floor row and this depth
ITEM_SIZE_M = (0.75, 1.05)  # the longer side of the item itself (not of its 28x28 frame)
ITEMS_PER_SCENE = (1, 3)
MASK_THRESHOLD = 0.04  # Fashion-MNIST backgrounds are 0; dark garments have bodies of 5-15%


@dataclass(frozen=True)
class ItemPool:
    """Glyphs that can be placed in scenes (one split of Fashion-MNIST, or fakes).

    Attributes:
        glyphs: (N, h, w) uint8 grey images, bright object on black.
        labels: (N,) class ids in 0..9.
    """

    glyphs: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Camera:
    """Pinhole camera over a floor with a wall behind (lengths in metres, rows in pixels)."""

    focal: float
    height: float
    horizon: float
    wall_depth: float

    @property
    def wall_row(self) -> float:
        """Row of the floor/wall junction; rows >= it show floor."""
        return self.horizon + self.focal * self.height / self.wall_depth


@dataclass
class Instance:
    """One placed item: pool index, class, billboard depth, full and visible masks."""

    index: int
    class_id: int
    depth: float
    mask: np.ndarray
    visible: np.ndarray


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Return the generator of one scene, so any scene can be re-rendered alone."""
    return np.random.default_rng([seed, SPLIT_CODES[split], index])


def sample_camera(rng: np.random.Generator, size: int) -> Camera:
    """Draw a camera with a jittered horizon and a random wall distance."""
    # A small jitter: plain walls give no vanishing point, so the wall depth is only as
    # certain as the horizon row is.
    horizon = size * (HORIZON_FRACTION + rng.uniform(-0.02, 0.02))
    wall = rng.uniform(*WALL_DEPTH_M)
    return Camera(FOCAL_PER_PIXEL * size, CAMERA_HEIGHT_M, horizon, wall)


def background_depth(camera: Camera, size: int) -> np.ndarray:
    """Depth (m) of floor and wall, without items, as a (size, size) float64 map."""
    rows = np.arange(size, dtype=np.float64)
    # Rows above the junction are wall; the clamp only avoids dividing by <= 0 there.
    floor = camera.focal * camera.height / np.maximum(rows - camera.horizon, 1e-6)
    column = np.where(rows >= camera.wall_row, floor, camera.wall_depth)
    return np.repeat(column[:, None], size, axis=1)


def _muted_colours(rng: np.random.Generator) -> np.ndarray:
    """Two close, desaturated colours (rows): a texture's base and its low-contrast partner."""
    grey = rng.uniform(0.3, 0.7)
    base = np.clip(grey + rng.uniform(-0.07, 0.07, size=3), 0.0, 1.0)
    partner = np.clip(base + rng.choice([-1.0, 1.0]) * rng.uniform(0.04, 0.1), 0.0, 1.0)
    return np.stack([base, partner])


def _texture(rng: np.random.Generator, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Muted plain / stripes / tiles in world coordinates (a, b), as (H, W, 3) floats.

    Contrast stays at most 0.1 so that no background edge is as strong as an item's.
    """
    kind = rng.integers(3)
    cell = rng.uniform(0.3, 0.8)
    colours = _muted_colours(rng)
    ia, ib = np.floor(a / cell).astype(np.int64), np.floor(b / cell).astype(np.int64)
    if kind == 0:
        t = np.zeros(a.shape)
    elif kind == 1:
        t = ((ia if rng.random() < 0.5 else ib) % 2).astype(np.float64)
    else:
        t = ((ia + ib) % 2).astype(np.float64)
    return colours[0] * (1.0 - t[..., None]) + colours[1] * t[..., None]


def render_background(camera: Camera, rng: np.random.Generator, size: int) -> np.ndarray:
    """Textured floor and wall as (size, size, 3) floats in [0, 1]."""
    depth = background_depth(camera, size)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    lateral = (xs - size / 2) * depth / camera.focal
    # Texturing in world coordinates gives perspective cues (tiles shrink with depth).
    floor = _texture(rng, lateral, depth)
    up = camera.height - (ys - camera.horizon) * camera.wall_depth / camera.focal
    wall = _texture(rng, lateral, up)
    image = np.where((ys >= camera.wall_row)[..., None], floor, wall)
    return np.clip(image + rng.normal(0.0, 0.02, size=image.shape), 0.0, 1.0)


def item_colour(rng: np.random.Generator) -> np.ndarray:
    """A vivid tint (saturated, bright), unlike the muted floor and wall."""
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.55, 1.0), rng.uniform(0.75, 1.0)))


def item_sprite(glyph: np.ndarray, side_px: int) -> np.ndarray:
    """Crop a glyph to its object and scale it so the object's longer side is ``side_px``.

    Intensities are first stretched so the brightest pixel is 1. The crop makes
    the object stand on its bottom row instead of floating above the floor;
    scaling the object (not its 28x28 frame) keeps flat items such as sneakers
    as visible as tall ones.

    Args:
        glyph: (h, w) uint8 image.
        side_px: Pixel length of the object's longer side.

    Returns:
        (h', w') float32 intensities in [0, 1], max(h', w') == ``side_px``.
    """
    # Stretch dark garments to full range, or most of a black coat would fall under the threshold.
    glyph = glyph.astype(np.float32) * (255.0 / max(float(glyph.max()), 1.0))
    on = glyph > MASK_THRESHOLD * 255
    if on.any():
        rows, cols = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
        glyph = glyph[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = side_px / max(glyph.shape)
    shape = (max(1, round(glyph.shape[1] * scale)), max(1, round(glyph.shape[0] * scale)))
    sprite = Image.fromarray(glyph / 255.0)
    return np.asarray(sprite.resize(shape, Image.Resampling.BILINEAR))


def render_scene(
    items: ItemPool, rng: np.random.Generator, size: int, camera: Camera | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Instance]]:
    """Render one scene with 1-3 items.

    Args:
        items: Glyphs to draw from.
        rng: Source of all randomness (same state -> same scene).
        size: Image side in pixels.
        camera: Fixed camera; sampled from ``rng`` when None.

    Returns:
        RGB uint8 (size, size, 3); labels uint8 (0 = background, k+1 = class k);
        depth float32 metres; instances sorted far to near (drawing order).
    """
    camera = camera if camera is not None else sample_camera(rng, size)
    image = render_background(camera, rng, size)
    depth = background_depth(camera, size)
    labels = np.zeros((size, size), np.uint8)
    owner = np.full((size, size), -1, np.int64)
    count = min(int(rng.integers(ITEMS_PER_SCENE[0], ITEMS_PER_SCENE[1] + 1)), len(items.labels))
    # Feet between the bottom row and the row at ITEM_DEPTH_M (never above the floor/wall junction).
    lowest = max(math.ceil(camera.wall_row), math.ceil(camera.horizon + camera.focal * camera.height / ITEM_DEPTH_M))
    lowest = min(lowest, size - 1)
    placed = []
    for index in rng.choice(len(items.labels), size=count, replace=False):
        bottom = int(rng.integers(lowest, size))
        z = camera.focal * camera.height / (bottom - camera.horizon)
        side_px = max(2, round(camera.focal * rng.uniform(*ITEM_SIZE_M) / z))
        sprite = item_sprite(items.glyphs[index], side_px)
        width = sprite.shape[1]
        left = int(rng.integers(-(width // 6), size - (5 * width) // 6 + 1))
        colour = item_colour(rng)
        placed.append((z, int(index), sprite, bottom - sprite.shape[0] + 1, left, colour))
    placed.sort(key=lambda p: -p[0])  # Far to near, so nearer items overwrite farther ones.
    instances = []
    for slot, (z, index, sprite, top, left, colour) in enumerate(placed):
        mask = np.zeros((size, size), bool)
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + sprite.shape[0], size), min(left + sprite.shape[1], size)
        patch = sprite[y0 - top : y1 - top, x0 - left : x1 - left]
        mask[y0:y1, x0:x1] = patch > MASK_THRESHOLD
        intensity = np.zeros((size, size), np.float64)
        intensity[y0:y1, x0:x1] = patch
        # Keeps the glyph's shading but never goes as dark as black: the item stays a vivid tint.
        image[mask] = (0.35 + 0.65 * intensity[mask])[:, None] * colour
        labels[mask] = int(items.labels[index]) + 1
        depth[mask] = z
        owner[mask] = slot
        instances.append(Instance(index, int(items.labels[index]), z, mask, mask))
    for slot, inst in enumerate(instances):
        inst.visible = owner == slot
    rgb = np.round(image * 255.0).astype(np.uint8)
    return rgb, labels, depth.astype(np.float32), instances


def load_item_pool(fashion_root: Path, train: bool) -> ItemPool:
    """Load one Fashion-MNIST split through torchvision (no download)."""
    from torchvision.datasets import FashionMNIST  # Lazy: tests of rendering do not need it.

    data = FashionMNIST(str(fashion_root), train=train, download=False)
    return ItemPool(data.data.numpy(), data.targets.numpy())


def _annotation(mask: np.ndarray, ann_id: int, image_id: int, category: int) -> dict:
    """COCO annotation with an RLE of ``mask``."""
    from pycocotools import mask as mask_utils  # Lazy: only needed when writing files.

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category,
        "iscrowd": 0,
        "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
        "area": float(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
    }


def make_scenes(
    fashion_root: Path,
    out: Path,
    split: str,
    count: int,
    size: int,
    seed: int,
    items: ItemPool | None = None,
) -> dict:
    """Write ``count`` scenes of ``split`` in the dense layout plus COCO instances.

    Args:
        fashion_root: torchvision root holding ``FashionMNIST/raw``.
        out: Output root; files go to ``out/split/``.
        split: ``"train"`` (train-split items) or ``"val"`` (test-split items).
        count: Number of scenes.
        size: Image side in pixels.
        seed: Base seed; scene i uses ``scene_rng(seed, split, i)``.
        items: Item pool to use instead of loading ``fashion_root`` (tests).

    Returns:
        Stats: split, source split, scenes, annotations, pool size and the set of
        item (pool) indices used.
    """
    if split not in SPLIT_CODES:
        raise ValueError(f"split must be one of {sorted(SPLIT_CODES)}, got {split!r}")
    pool = items if items is not None else load_item_pool(fashion_root, train=split == "train")
    base = Path(out) / split
    for sub in ("images", "labels", "depth"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    images, annotations, used = [], [], set()
    for i in range(count):
        rgb, labels, depth, instances = render_scene(pool, scene_rng(seed, split, i), size)
        name = f"{i:05d}.png"
        Image.fromarray(rgb).save(base / "images" / name)
        Image.fromarray(labels).save(base / "labels" / name)
        Image.fromarray(np.round(depth * 1000.0).astype(np.uint16)).save(base / "depth" / name)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for inst in instances:
            used.add(inst.index)
            if inst.visible.any():
                annotations.append(_annotation(inst.visible, len(annotations) + 1, i + 1, inst.class_id + 1))
    (base / "classes.txt").write_text("\n".join(("background",) + CLASSES) + "\n")
    (base / "world.txt").write_text(f"{WORLD_VERSION}\nscenes {count} size {size} seed {seed}\n")
    categories = [{"id": k + 1, "name": name, "supercategory": "fashion"} for k, name in enumerate(CLASSES)]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (base / "instances.json").write_text(json.dumps(coco))
    return {
        "split": split,
        "source": "train" if split == "train" else "t10k",
        "scenes": count,
        "annotations": len(annotations),
        "pool_size": len(pool.labels),
        "item_indices": used,
    }


def write_preview(items: ItemPool, path: Path, size: int, seed: int, count: int = 4) -> None:
    """Save a figure of ``count`` val scenes: image | labels (legend) | depth (colour bar)."""
    import matplotlib

    matplotlib.use("Agg")  # Headless: only writes a file.
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colours = ["#000000"] + list(plt.get_cmap("tab10").colors)
    cmap = ListedColormap(colours)
    fig, axes = plt.subplots(count, 3, figsize=(9, 2.6 * count + 0.8), squeeze=False)
    for row in range(count):
        rgb, labels, depth, _ = render_scene(items, scene_rng(seed, "val", row), size)
        axes[row, 0].imshow(rgb)
        axes[row, 1].imshow(labels, cmap=cmap, vmin=-0.5, vmax=10.5, interpolation="nearest")
        shown = axes[row, 2].imshow(depth, cmap="magma_r")
        fig.colorbar(shown, ax=axes[row, 2], fraction=0.046, pad=0.04, label="depth [m]")
        for col, title in enumerate(("image", "labels", "depth")):
            axes[row, col].set_title(f"val {row:05d} {title}", fontsize=8)
            axes[row, col].axis("off")
    handles = [Patch(color=c, label=n) for c, n in zip(colours, ("background",) + CLASSES)]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fashion-root", type=Path, default=Path("data/fashion"))
    parser.add_argument("--out", type=Path, default=Path("data/scenes"))
    parser.add_argument("--train", type=int, default=8000, help="number of train scenes")
    parser.add_argument("--val", type=int, default=1000, help="number of val scenes")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preview", type=Path, default=None, help="write a figure of 4 val scenes here")
    args = parser.parse_args(argv)
    for split, count in (("train", args.train), ("val", args.val)):
        if count <= 0:  # Avoids loading a split (seconds) and writing an empty folder.
            continue
        start = time.perf_counter()
        stats = make_scenes(args.fashion_root, args.out, split, count, args.size, args.seed)
        print(
            f"{split}: {stats['scenes']} scenes, {stats['annotations']} instances, "
            f"{len(stats['item_indices'])} distinct {stats['source']} items "
            f"-> {args.out / split} ({time.perf_counter() - start:.1f} s)"
        )
    if args.preview is not None:
        write_preview(load_item_pool(args.fashion_root, train=False), args.preview, args.size, args.seed)
        print(f"preview -> {args.preview}")


if __name__ == "__main__":
    main()
