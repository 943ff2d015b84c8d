"""Tests for tools/make_scenes.py on tiny synthetic glyphs (real data only where marked)."""

from __future__ import annotations

from pathlib import Path

import get_data
import make_scenes as ms
import numpy as np
import pytest
from fake_fashion import fake_glyphs
from PIL import Image
from pycocotools.coco import COCO

SIZE = 48


@pytest.fixture(scope="module")
def pool() -> ms.ItemPool:
    """Thirty solid rectangles over all ten classes."""
    return ms.ItemPool(fake_glyphs(30, 0), np.arange(30) % 10)


def _render(pool: ms.ItemPool, seed: int, size: int = SIZE):
    rng = np.random.default_rng(seed)
    camera = ms.sample_camera(rng, size)
    return camera, ms.render_scene(pool, rng, size, camera)


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


def test_classes_match_torchvision() -> None:
    from torchvision.datasets import FashionMNIST

    assert list(ms.CLASSES) == list(FashionMNIST.classes)


def test_render_is_deterministic(pool: ms.ItemPool) -> None:
    for seed in range(5):
        first = ms.render_scene(pool, np.random.default_rng(seed), SIZE)
        second = ms.render_scene(pool, np.random.default_rng(seed), SIZE)
        for a, b in zip(first[:3], second[:3]):
            np.testing.assert_array_equal(a, b)
        assert [(i.index, i.depth) for i in first[3]] == [(i.index, i.depth) for i in second[3]]
    other = ms.render_scene(pool, np.random.default_rng(99), SIZE)
    assert not np.array_equal(first[0], other[0])


def test_labels_depth_and_occlusion_agree(pool: ms.ItemPool) -> None:
    overlaps = 0
    for seed in range(100):
        camera, (image, labels, depth, instances) = _render(pool, seed)
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        assert np.isfinite(depth).all() and (depth > 0).all()
        background = ms.background_depth(camera, SIZE)
        union = np.zeros_like(labels, dtype=bool)
        for inst in instances:
            assert not (inst.visible & ~inst.mask).any()
            assert (labels[inst.visible] == inst.class_id + 1).all()
            assert (depth[inst.visible] == np.float32(inst.depth)).all()
            # A billboard stands on the floor, so it is never behind the floor/wall it covers.
            assert (inst.depth <= background[inst.mask] + 1e-9).all()
            union |= inst.visible
        np.testing.assert_array_equal(labels > 0, union)
        for a in instances:
            for b in instances:
                shared = a.mask & b.mask & a.visible
                if a is not b and shared.any():
                    overlaps += 1
                    assert a.depth <= b.depth  # The visible one of two overlapping items is nearer.
    assert overlaps > 0, "no overlapping items drawn; occlusion untested"


def test_floor_depth_follows_pinhole_model(pool: ms.ItemPool) -> None:
    camera = ms.Camera(ms.FOCAL_PER_PIXEL * SIZE, ms.CAMERA_HEIGHT_M, ms.HORIZON_FRACTION * SIZE, wall_depth=6.0)
    checked = 0
    for seed in range(3):
        _, labels, depth, _ = ms.render_scene(pool, np.random.default_rng(seed), SIZE, camera)
        for y in np.flatnonzero(~(labels > 0).any(axis=1)):
            expected = camera.focal * camera.height / (y - camera.horizon) if y >= camera.wall_row else 6.0
            np.testing.assert_allclose(depth[y], expected, rtol=1e-6)
            checked += y >= camera.wall_row
        # Rows that hold items still show floor or wall, at their own depth, beside the items.
        np.testing.assert_allclose(depth[labels == 0], ms.background_depth(camera, SIZE)[labels == 0], rtol=1e-6)
    assert checked > 0


def test_items_stand_where_their_depth_says(pool: ms.ItemPool) -> None:
    """An item's depth is the floor depth of its foot row, and its size shrinks with depth."""
    for seed in range(60):
        camera, (_, _, depth, instances) = _render(pool, seed)
        for inst in instances:
            rows, cols = np.flatnonzero(inst.mask.any(1)), np.flatnonzero(inst.mask.any(0))
            foot = rows[-1]
            assert foot >= camera.wall_row  # stands on the floor, never on the wall
            np.testing.assert_allclose(inst.depth, camera.focal * camera.height / (foot - camera.horizon), rtol=1e-6)
            np.testing.assert_allclose(inst.depth, ms.background_depth(camera, SIZE)[foot, 0], rtol=1e-6)
            assert inst.depth <= ms.ITEM_DEPTH_M + 1e-9
            # The longer side is f*S/z for S in ITEM_SIZE_M (crop/clip at the frame edge aside).
            side = max(len(rows), len(cols))
            low, high = camera.focal * np.array(ms.ITEM_SIZE_M) / inst.depth
            assert side <= high + 1
            clipped = rows[0] == 0 or cols[0] == 0 or cols[-1] == SIZE - 1
            assert side >= low - 1 or clipped


def test_items_are_big_and_unlike_the_background(pool: ms.ItemPool) -> None:
    """At 64x64 items span >= 20 px; the floor and wall are muted, items vivid."""
    sides, item_chroma, background_chroma = [], [], []
    for seed in range(40):
        camera, (image, labels, _, instances) = _render(pool, seed, 64)
        chroma = (image.max(-1).astype(int) - image.min(-1)) / 255.0
        item_chroma.append(chroma[labels > 0])
        background_chroma.append(chroma[labels == 0])
        for inst in instances:
            rows, cols = np.flatnonzero(inst.mask.any(1)), np.flatnonzero(inst.mask.any(0))
            sides.append(max(len(rows), len(cols)))
    assert min(sides) >= 20
    assert np.percentile(np.concatenate(background_chroma), 99) < 0.3
    assert np.median(np.concatenate(item_chroma)) > 0.35


def test_train_and_val_use_their_own_split(fake_fashion_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "scenes"
    train = ms.make_scenes(fake_fashion_root, out, "train", 12, 32, 0)
    val = ms.make_scenes(fake_fashion_root, out, "val", 8, 32, 0)
    assert (train["source"], train["pool_size"]) == ("train", 40)
    assert (val["source"], val["pool_size"]) == ("t10k", 20)
    assert train["item_indices"] and train["item_indices"] <= set(range(40))
    assert val["item_indices"] and val["item_indices"] <= set(range(20))
    # The fake train split only has classes 0-4 and the test split only 5-9.
    train_values = set(np.unique([_read(p) for p in (out / "train" / "labels").glob("*.png")]))
    val_values = set(np.unique([_read(p) for p in (out / "val" / "labels").glob("*.png")]))
    assert train_values <= set(range(6)) and val_values <= {0, 6, 7, 8, 9, 10}
    assert len(train_values) > 1 and len(val_values) > 1


def test_dense_files_round_trip(fake_fashion_root: Path, tmp_path: Path) -> None:
    ms.make_scenes(fake_fashion_root, tmp_path, "val", 5, 32, 3)
    items = ms.load_item_pool(fake_fashion_root, train=False)
    base = tmp_path / "val"
    lines = (base / "classes.txt").read_text().splitlines()
    assert lines == ["background", *ms.CLASSES] and len(lines) == 11
    for i in range(5):
        image, labels, depth, _ = ms.render_scene(items, ms.scene_rng(3, "val", i), 32)
        np.testing.assert_array_equal(_read(base / "images" / f"{i:05d}.png"), image)
        np.testing.assert_array_equal(_read(base / "labels" / f"{i:05d}.png"), labels)
        depth_mm = _read(base / "depth" / f"{i:05d}.png")
        assert depth_mm.dtype == np.uint16 and (depth_mm > 0).all()
        assert np.abs(depth_mm / 1000.0 - depth).max() <= 1e-3


def test_coco_masks_equal_visible_instances(fake_fashion_root: Path, tmp_path: Path) -> None:
    ms.make_scenes(fake_fashion_root, tmp_path, "train", 6, 32, 5)
    items = ms.load_item_pool(fake_fashion_root, train=True)
    coco = COCO(str(tmp_path / "train" / "instances.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(ms.CLASSES)
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        _, labels, _, instances = ms.render_scene(items, ms.scene_rng(5, "train", image_id - 1), 32)
        np.testing.assert_array_equal(_read(tmp_path / "train" / "labels" / info["file_name"]), labels)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        visible = [inst for inst in instances if inst.visible.any()]
        assert len(anns) == len(visible)
        for ann, inst in zip(anns, visible):
            mask = coco.annToMask(ann).astype(bool)
            np.testing.assert_array_equal(mask, inst.visible)
            assert ann["category_id"] == inst.class_id + 1 and ann["area"] == mask.sum()
            assert (labels[mask] == ann["category_id"]).all()
        for category in range(1, 11):
            union = np.zeros_like(labels, dtype=bool)
            for ann in anns:
                if ann["category_id"] == category:
                    union |= coco.annToMask(ann).astype(bool)
            np.testing.assert_array_equal(union, labels == category)


def test_same_seed_gives_identical_files(fake_fashion_root: Path, tmp_path: Path) -> None:
    def snapshot(seed: int, name: str) -> dict[str, bytes]:
        ms.make_scenes(fake_fashion_root, tmp_path / name, "val", 4, 32, seed)
        base = tmp_path / name
        return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}

    first, again, other = snapshot(7, "a"), snapshot(7, "b"), snapshot(8, "c")
    assert first == again
    assert first.keys() == other.keys() and first != other


@pytest.mark.skipif(not get_data.DEBIAN_SOURCE.is_dir(), reason="Debian fashion-mnist package not installed")
def test_real_fashion_mnist(tmp_path: Path) -> None:
    get_data.ensure_fashion_mnist(tmp_path / "fashion")
    stats = ms.make_scenes(tmp_path / "fashion", tmp_path / "scenes", "val", 3, 64, 0)
    assert stats["pool_size"] == 10000 and stats["annotations"] > 0
    assert stats["item_indices"] <= set(range(10000))
    assert (tmp_path / "scenes" / "val" / "images" / "00002.png").is_file()
