"""Image set types on files written here, integrity errors, and source mixing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from amalgam.config.recipe import SourceConfig
from amalgam.data import MixedSources, build_image_set, mixing_sampler
from amalgam.errors import AmalgamError
from amalgam.labels import IGNORE


def build(cfg: dict, size=(32, 32), with_targets=False, key="data.eval.x"):
    return build_image_set(key, SourceConfig(**cfg), lambda p: p, size, with_targets)


def save_rgb(path: Path, size=(10, 12), value=None, seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (*size, 3), dtype=np.uint8) if value is None else np.full((*size, 3), value, np.uint8)
    Image.fromarray(arr).save(path)


def test_folder_is_recursive_sorted_and_resized(tmp_path):
    save_rgb(tmp_path / "b.png")
    save_rgb(tmp_path / "a" / "deep" / "c.jpg")
    save_rgb(tmp_path / "a" / "d.png")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = build({"type": "folder", "path": tmp_path}, size=(64, 32))
    assert [p.relative_to(tmp_path).as_posix() for p in ds.files] == ["a/d.png", "a/deep/c.jpg", "b.png"]
    sample = ds[0]
    assert set(sample) == {"image"}
    assert sample["image"].shape == (3, 64, 32) and sample["image"].dtype == torch.float32
    assert 0.0 <= sample["image"].min() and sample["image"].max() <= 1.0


def test_grey_images_become_three_equal_channels(tmp_path):
    Image.fromarray(np.full((8, 8), 51, np.uint8)).save(tmp_path / "grey.png")
    image = build({"type": "folder", "path": tmp_path})[0]["image"]
    assert image.shape == (3, 32, 32)
    assert torch.allclose(image, torch.full_like(image, 51 / 255))


def test_limit_keeps_an_even_spread_of_the_sorted_images(tmp_path):
    for i in range(5):
        save_rgb(tmp_path / f"{i}.png", seed=i)
    ds = build({"type": "folder", "path": tmp_path, "limit": 2})
    assert [p.name for p in ds.files] == ["0.png", "2.png"]  # files i * 5 // 2


def test_imagefolder_classes_and_labels(tmp_path):
    for name, count in (("dog", 2), ("cat", 1)):
        for i in range(count):
            save_rgb(tmp_path / name / f"{i}.png", seed=i)
    ds = build({"type": "imagefolder", "path": tmp_path}, with_targets=True)
    assert ds.classes == ["cat", "dog"] and ds.target_keys == {"label"}
    assert [ds[i]["label"] for i in range(3)] == [0, 1, 1]
    unlabelled = build({"type": "imagefolder", "path": tmp_path}, with_targets=False)
    assert "label" not in unlabelled[0]


def write_dense_sample(root: Path, labels: np.ndarray, depth_mm: np.ndarray, name="000") -> None:
    for sub in ("images", "labels", "depth"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    save_rgb(root / "images" / f"{name}.png", size=labels.shape)
    Image.fromarray(labels.astype(np.uint8)).save(root / "labels" / f"{name}.png")
    Image.fromarray(depth_mm.astype(np.uint16)).save(root / "depth" / f"{name}.png")


def test_dense_set_gives_long_masks_and_metric_depth(tmp_path):
    labels = np.zeros((16, 16), np.uint8)
    labels[:8] = 2
    labels[8:, :8] = IGNORE
    depth = np.full((16, 16), 1500, np.uint16)
    depth[:, 8:] = 0  # invalid
    write_dense_sample(tmp_path, labels, depth)
    (tmp_path / "classes.txt").write_text("background\ndisc\nsquare\n\n")
    ds = build({"type": "dense", "path": tmp_path}, size=(32, 32), with_targets=True)
    assert ds.classes == ["background", "disc", "square"]
    assert ds.target_keys == {"mask", "depth"}
    sample = ds[0]
    mask, metres = sample["mask"], sample["depth"]
    assert mask.dtype == torch.long and mask.shape == (32, 32)
    assert metres.dtype == torch.float32 and metres.shape == (32, 32)
    # nearest-neighbour resize x2 keeps the values and the layout
    assert (mask[:16] == 2).all() and (mask[16:, :16] == IGNORE).all() and (mask[16:, 16:] == 0).all()
    assert torch.allclose(metres[:, :16], torch.full((32, 16), 1.5)) and (metres[:, 16:] == 0).all()
    # as a training source the targets are never read
    assert set(build({"type": "dense", "path": tmp_path}, with_targets=False)[0]) == {"image"}


def test_depth_scale_reads_other_units_and_the_range_is_said(tmp_path):
    labels = np.zeros((4, 4), np.uint8)
    write_dense_sample(tmp_path, labels, np.full((4, 4), 2560, np.uint16))  # KITTI: 256 values a metre
    said = []
    cfg = SourceConfig(type="dense", path=tmp_path, depth_scale=256)
    ds = build_image_set("data.eval.k", cfg, lambda p: p, (4, 4), True, log=said.append)
    assert torch.allclose(ds[0]["depth"], torch.full((4, 4), 10.0))
    assert (
        "data.eval.k: depth maps read at 256 values a metre (depth_scale): 10-10 m (5th-95th percentile), median 10 m"
        in said
    )
    assert torch.allclose(
        build({"type": "dense", "path": tmp_path}, with_targets=True)[0]["depth"], torch.full((32, 32), 2.56)
    )


def test_coco_set_builds_semantic_masks_by_category(tmp_path):
    from pycocotools import mask as mask_utils

    save_rgb(tmp_path / "images" / "a.png", size=(8, 10))
    save_rgb(tmp_path / "images" / "b.png", size=(8, 10), seed=1)
    cat = np.zeros((8, 10), np.uint8)
    cat[:4, :5] = 1
    dog = np.zeros((8, 10), np.uint8)
    dog[4:, 5:] = 1

    def rle(m):
        encoded = mask_utils.encode(np.asfortranarray(m))
        return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}

    instances = {
        "images": [
            {"id": 2, "file_name": "b.png", "height": 8, "width": 10},
            {"id": 1, "file_name": "a.png", "height": 8, "width": 10},
        ],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 3,
                "segmentation": rle(cat),
                "area": 20,
                "bbox": [0, 0, 5, 4],
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 7,
                "segmentation": rle(dog),
                "area": 20,
                "bbox": [5, 4, 5, 4],
                "iscrowd": 0,  # an RLE instance; crowd regions are read as ignore (test_faults_data.py)
            },
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    cfg = {"type": "coco", "path": tmp_path / "images", "annotations": tmp_path / "instances.json"}
    ds = build(cfg, size=(8, 10), with_targets=True)
    assert ds.classes == ["background", "cat", "dog"]  # category ids sorted: 3, 7
    assert [p.name for p in ds.files] == ["a.png", "b.png"]  # image ids sorted: 1, 2
    expected = cat.astype(np.int64) * 1 + dog.astype(np.int64) * 2
    assert torch.equal(ds[0]["mask"], torch.from_numpy(expected))
    assert (ds[1]["mask"] == 0).all()


def test_coco_missing_annotations_named(tmp_path):
    save_rgb(tmp_path / "images" / "a.png")
    cfg = {"type": "coco", "path": tmp_path / "images", "annotations": tmp_path / "none.json"}
    with pytest.raises(AmalgamError, match=r"^data.eval.x: COCO annotations not found: .*none.json"):
        build(cfg)


HALF = [[0, 0, 8, 0, 8, 2, 0, 2]]  # a polygon over the top half of a 4x8 image
WHOLE = [[0, 0, 8, 0, 8, 4, 0, 4]]


def write_coco_set(root: Path, images: list, categories: list[str], anns: list[tuple]) -> dict:
    """4x8 images ``images`` (ids) as ``<id>.png``; categories ``1..n``; ``anns`` of
    ``(image id, category id, polygon, iscrowd)`` in file order. Gives the source's config."""
    for i in images:
        save_rgb(root / "images" / f"{i}.png", size=(4, 8))
    instances = {
        "images": [{"id": i, "file_name": f"{i}.png", "height": 4, "width": 8} for i in images],
        "categories": [{"id": k + 1, "name": name} for k, name in enumerate(categories)],
        "annotations": [
            {"id": n + 1, "image_id": i, "category_id": c, "segmentation": poly, "area": 16, "bbox": [0, 0, 8, 4]}
            | {"iscrowd": crowd}
            for n, (i, c, poly, crowd) in enumerate(anns)
        ],
    }
    (root / "instances.json").write_text(json.dumps(instances))
    return {"type": "coco", "path": root / "images", "annotations": root / "instances.json"}


def test_coco_categories_reaching_the_ignore_value_stop_and_crowds_are_not_scored(tmp_path):
    # the 255th category was class 255, the ignore value of crowd regions: crowd pixels were scored as it
    from amalgam.evaluation.metrics import ConfusionMatrix
    from amalgam.labels import apply_lookup

    anns = [(1, 2, WHOLE, 1), (1, 1, HALF, 0)]  # a crowd of 'extra1' under a 'shirt' on the top half
    names = ["shirt"] + [f"extra{k}" for k in range(1, 255)]
    with pytest.raises(AmalgamError, match=r"^data\.eval\.x: COCO .* has 255 categories, at most 254 can be read"):
        build(write_coco_set(tmp_path / "a", [1], names, anns), with_targets=True)
    dataset = build(write_coco_set(tmp_path / "b", [1], names[:-1], anns), size=(4, 8), with_targets=True)
    mask = dataset[0]["mask"]
    assert len(dataset.classes) == 255 and mask.dtype == torch.int64
    assert (mask[:2] == 1).all() and (mask[2:] == IGNORE).all(), mask
    scored = ConfusionMatrix(len(dataset.classes))
    scored.update(torch.zeros_like(mask), apply_lookup(mask, torch.arange(len(dataset.classes))))
    assert scored.matrix.sum() == 16 and scored.matrix[1, 0] == 16  # the shirt half only: crowds are not scored


def test_coco_string_image_ids_read_their_own_annotations(tmp_path):
    # pycocotools read imgIds="12" as ["1", "2"]: image "12" was drawn with images 1's and 2's annotations
    anns = [("1", 1, HALF, 0), ("2", 2, WHOLE, 0), ("12", 1, HALF, 0)]
    dataset = build(write_coco_set(tmp_path, ["1", "2", "12"], ["shirt", "coat"], anns), size=(4, 8), with_targets=True)
    mask = dataset[dataset.image_ids.index("12")]["mask"]
    assert (mask[:2] == 1).all() and (mask[2:] == 0).all(), mask
    assert (dataset[dataset.image_ids.index("2")]["mask"] == 2).all()


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def test_torchvision_set_reads_idx_files(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.zeros((6, 28, 28), np.uint8)
    images[:, 10:20, 10:20] = 200
    for prefix, labels in (("train", np.arange(6) % 3), ("t10k", np.arange(6) % 2 + 5)):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(images))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels.astype(np.uint8)))
    cfg = {"type": "torchvision", "name": "FashionMNIST", "root": tmp_path, "split": "test"}
    ds = build(cfg, with_targets=True)
    assert len(ds) == 6 and len(ds.classes) == 10
    sample = ds[1]
    assert sample["image"].shape == (3, 32, 32) and sample["label"] == 6  # the test split, not train
    assert build({**cfg, "split": "train"}, with_targets=True)[1]["label"] == 1


def test_torchvision_missing_files_explain_how_to_get_them(tmp_path):
    cfg = {"type": "torchvision", "name": "FashionMNIST", "root": tmp_path}
    with pytest.raises(AmalgamError, match=r"^data.eval.x: torchvision FashionMNIST not found under .*get_data"):
        build(cfg)
    with pytest.raises(AmalgamError, match=r"unknown torchvision dataset 'NoSuchSet'"):
        build({**cfg, "name": "NoSuchSet"})


def test_empty_folder_names_the_key(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AmalgamError, match=r"^data.sources.scenes: contains no images$"):
        build({"type": "folder", "path": tmp_path / "empty"}, key="data.sources.scenes")


def test_missing_folder_names_the_key(tmp_path):
    with pytest.raises(AmalgamError, match=r"^data.sources.scenes: path: not found: .*absent"):
        build({"type": "folder", "path": tmp_path / "absent"}, key="data.sources.scenes")


def test_a_list_file_or_a_pattern_given_as_a_folder_says_what_it_is(tmp_path):
    # both said only "not found", of a file that is there
    (tmp_path / "list.txt").write_text("a.png\n")
    with pytest.raises(AmalgamError, match=r"image folder not found: .*list\.txt \(a file: .*lists of paths are not"):
        build({"type": "folder", "path": tmp_path / "list.txt"}, key="data.sources.scenes")
    with pytest.raises(AmalgamError, match=r"path: not found: .*000\*\.png \(patterns are not expanded"):
        build({"type": "folder", "path": tmp_path / "000*.png"}, key="data.sources.scenes")


def test_a_torchvision_root_that_is_not_it_says_what_it_holds(tmp_path):
    from amalgam.data.torchvision_sets import TorchvisionSet

    (tmp_path / "FashionMNIST" / "raw").mkdir(parents=True)
    (tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(AmalgamError, match=r"root holds raw; root is the folder above FashionMNIST/, here "):
        TorchvisionSet("FashionMNIST", tmp_path / "FashionMNIST", "test", False)
    with pytest.raises(AmalgamError) as info:  # CIFAR's layout is its own: no MNIST-style hint
        TorchvisionSet("CIFAR10", tmp_path, "test", False)
    assert "root holds FashionMNIST" in str(info.value) and "MNIST-style" not in str(info.value)


def test_corrupt_png_is_named(tmp_path):
    save_rgb(tmp_path / "good.png")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "bad.png").write_bytes(data[:40])
    with pytest.raises(AmalgamError) as info:
        build({"type": "folder", "path": tmp_path}, key="data.sources.s")
    assert str(info.value).startswith(f"data.sources.s: corrupt image {tmp_path / 'bad.png'}")


def test_depth_png_of_the_wrong_dtype_is_rejected(tmp_path):
    write_dense_sample(tmp_path, np.zeros((8, 8)), np.full((8, 8), 1000))
    Image.fromarray(np.full((8, 8), 10, np.uint8)).save(tmp_path / "depth" / "000.png")  # 8-bit: not millimetres
    with pytest.raises(AmalgamError) as info:
        build({"type": "dense", "path": tmp_path}, with_targets=True)
    assert f"depth map {tmp_path / 'depth' / '000.png'} has PIL mode L" in str(info.value)


def test_missing_label_file_is_named_when_scanned_and_when_read(tmp_path):
    write_dense_sample(tmp_path, np.zeros((8, 8)), np.full((8, 8), 1000))
    save_rgb(tmp_path / "images" / "001.png", size=(8, 8))
    with pytest.raises(AmalgamError, match=r"^data\.eval\.x: missing (mask|depth) file .*001.png"):  # before training
        build({"type": "dense", "path": tmp_path}, with_targets=True)
    unchecked = build_image_set(
        "data.eval.x", SourceConfig(type="dense", path=tmp_path), lambda p: p, (32, 32), True, verify=False
    )
    with pytest.raises(AmalgamError, match=r"missing depth file .*001.png"):
        unchecked[1]


def folder_source(root: Path, count: int, size=(32, 32)):
    for i in range(count):
        save_rgb(root / f"{i}.png", size=(4, 4), seed=i)
    return build({"type": "folder", "path": root}, size=size)


def test_mixed_sources_tag_samples_with_their_source(tmp_path):
    mixed = MixedSources([folder_source(tmp_path / "a", 2), folder_source(tmp_path / "b", 3)], ["a", "b"])
    assert len(mixed) == 5
    assert [mixed[i]["source"] for i in range(5)] == [0, 0, 1, 1, 1]
    assert mixed[3]["image"].shape == (3, 32, 32)


def test_mixing_sampler_respects_weights(tmp_path):
    # a small source with weight 3 and a large one with weight 1: 3:1 whatever their sizes
    mixed = MixedSources([folder_source(tmp_path / "a", 2), folder_source(tmp_path / "b", 6)], ["a", "b"])
    indices = torch.tensor(list(mixing_sampler(mixed, [3.0, 1.0], 4000, seed=0)))
    share = (indices < 2).double().mean().item()
    assert abs(share - 0.75) < 0.03  # binomial std is ~0.007
    # reproducible for one seed, different for another
    assert list(mixing_sampler(mixed, [3.0, 1.0], 50, seed=0)) == list(mixing_sampler(mixed, [3.0, 1.0], 50, seed=0))
    assert list(mixing_sampler(mixed, [3.0, 1.0], 50, seed=0)) != list(mixing_sampler(mixed, [3.0, 1.0], 50, seed=1))
    # every image of the large source gets drawn with equal chance
    counts = torch.bincount(indices[indices >= 2] - 2, minlength=6).double()
    assert (counts / counts.sum() - 1 / 6).abs().max() < 0.04


def test_coco_annotations_of_no_listed_image_are_counted_and_an_off_by_one_file_is_warned_about(tmp_path):
    # an image_id naming no image was dropped without a word; numbered from 1 against images from 0,
    # every mask landed on the wrong image and the report blamed the teacher as blind, without a word
    said: list[str] = []
    cfg = write_coco_set(tmp_path / "a", [0, 1], ["shirt"], [(0, 1, HALF, 0), (4242, 1, HALF, 0)])
    build_image_set("data.eval.x", SourceConfig(**cfg), lambda p: p, (4, 8), True, log=said.append)
    assert any("1 of 2 COCO annotations name an image_id the file lists no image for (e.g. 4242)" in s for s in said)
    cfg = write_coco_set(tmp_path / "b", [0, 1], ["shirt"], [(1, 1, HALF, 0), (2, 1, WHOLE, 0)])
    said = []  # no proof (a dropped last image beside a negative first one looks the same): a warning
    build_image_set("data.eval.x", SourceConfig(**cfg), lambda p: p, (4, 8), True, log=said.append)
    line = "data.eval.x: warning: 1 of 2 COCO annotations name an image_id the file lists no image for (e.g. 2)"
    assert any(
        s.startswith(line) and "image_id -1 names an image: if its images are numbered from 0" in s for s in said
    )


def test_coco_polygons_in_fractions_of_the_image_stop_before_a_teacher_reads_as_blind(tmp_path):
    # some exporters write 0-1 coordinates: pycocotools drew 21 pixels of 37,172, every class near-empty
    def coco_at(root, scale):
        cfg = write_coco_set(root, [1], ["shirt"], [(1, 1, [[v * scale for v in HALF[0]]], 0)])
        save_rgb(root / "images" / "1.png", size=(32, 64))
        data = json.loads((root / "instances.json").read_text())
        data["images"][0] |= {"height": 32, "width": 64}
        (root / "instances.json").write_text(json.dumps(data))
        return cfg

    with pytest.raises(AmalgamError, match=r"every polygon coordinate is between 0 and 1 on images of 32 pixels"):
        build(coco_at(tmp_path / "a", 1 / 8), size=(32, 64), with_targets=True)
    mask = build(coco_at(tmp_path / "b", 8), size=(32, 64), with_targets=True)[0]["mask"]  # pixels: drawn
    assert (mask[:16] == 1).all() and (mask[16:] == 0).all()


def write_blobs(root: Path, count: int = 6, jpeg_quality: int | None = None, suffix: str = ".png") -> None:
    """A dense set of 48x48 scenes holding rectangles of classes 20, 40, 60 on 0 (of 61 classes, as a large
    label set's ids jump between neighbours); ``jpeg_quality``: each map saved through JPEG first (its values
    smeared), then as ``suffix``."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(count):
        labels = np.zeros((48, 48), np.uint8)
        for _ in range(3):
            y, x = rng.integers(0, 36, 2)
            labels[y : y + 12, x : x + 12] = 20 * rng.integers(1, 4)
        Image.fromarray(np.stack([labels * 4] * 3, -1)).save(root / "images" / f"{i}.png")
        mask = Image.fromarray(labels)
        if jpeg_quality:  # the class ids through JPEG, as a map exported so and saved again as PNG
            mask.save(root / "tmp.jpg", quality=jpeg_quality)
            mask = Image.fromarray(np.clip(np.asarray(Image.open(root / "tmp.jpg")), 0, 60).astype(np.uint8))
        mask.save(root / "labels" / f"{i}{suffix}", format="PNG" if suffix == ".png" else "JPEG")
    (root / "tmp.jpg").unlink(missing_ok=True)
    (root / "classes.txt").write_text("".join(f"c{k}\n" for k in range(61)))


def scanned(root: Path) -> list[str]:
    said: list[str] = []
    build_image_set("data.eval.v", SourceConfig(type="dense", path=root), lambda p: p, (48, 48), True, log=said.append)
    return said


def test_label_maps_smeared_by_a_lossy_save_are_warned_about(tmp_path):
    # a trial: maps saved through JPEG, then as PNG, scored 8% of their pixels as other classes with no word
    write_blobs(tmp_path / "clean")
    assert not [line for line in scanned(tmp_path / "clean") if "lossy" in line]
    write_blobs(tmp_path / "smeared", jpeg_quality=75)
    (line,) = [line for line in scanned(tmp_path / "smeared") if "lossy" in line]
    assert line.startswith("data.eval.v: warning: ") and "differ from all eight neighbours with a value between" in line


@pytest.mark.parametrize("filter_", ["bilinear", "nearest"])
def test_label_maps_resized_with_an_interpolating_filter_are_warned_about(tmp_path, filter_):
    # a trial: maps stretched 4x with bilinear scored mIoU 0.56 against 0.65 with no word; their in-between values
    # were 0.09% of the pixels, under the smear check's share, as a large map's edges are few
    write_blobs(tmp_path / "v")
    for path in (tmp_path / "v" / "labels").iterdir():
        resample = Image.Resampling.BILINEAR if filter_ == "bilinear" else Image.Resampling.NEAREST
        near = Image.fromarray(np.asarray(Image.open(path)) // 20)  # classes 0-3: a ramp holds a value or two
        near.resize((192, 192), resample).save(path)
    if filter_ == "bilinear":  # too few pixels unlike all eight neighbours for the smear check alone
        from amalgam.data.target_scan import SMEAR_SHARE, _smeared_pixels

        smeared, scored, _ = sum(
            _smeared_pixels(np.asarray(Image.open(p))) for p in (tmp_path / "v" / "labels").iterdir()
        )
        assert smeared < SMEAR_SHARE * scored
    said = [line for line in scanned(tmp_path / "v") if "resized with an interpolating filter" in line]
    if filter_ == "nearest":
        assert not said
        return
    (line,) = said
    assert line.startswith("data.eval.v: warning: ") and line.endswith("as PNG, resized with nearest")
    assert "of the label maps' class changes along rows and columns pass through two values between" in line


def test_a_one_pixel_class_between_two_others_is_no_ramp():
    # a review: a cell's 1-px contour class between background and inside (0 | 1 | 2) read as a 33% ramp
    from amalgam.data.target_scan import RAMP_SHARE, _ramp_pixels

    cells = np.zeros((64, 64), np.uint8)
    cells[:, 31] = 1  # the contour
    cells[:, 32:] = 2  # the inside
    ramps, changes = _ramp_pixels(cells)
    assert changes and ramps <= RAMP_SHARE * changes
    ramp = np.zeros((8, 8), np.uint8)
    ramp[:, 3:] = 40
    ramp[:, 3], ramp[:, 4] = 10, 25  # two values between the classes in a row: a bilinear ramp
    assert _ramp_pixels(ramp)[0] > 0


def test_a_jpeg_label_map_is_refused_whatever_its_name(tmp_path):
    write_blobs(tmp_path / "named_png", count=2, suffix=".jpg")
    for f in (tmp_path / "named_png" / "labels").iterdir():
        f.rename(f.with_suffix(".png"))  # JPEG bytes under a .png name
    with pytest.raises(AmalgamError, match=r"is a JPEG file \(whatever its name\): JPEG is lossy"):
        scanned(tmp_path / "named_png")
    write_blobs(tmp_path / "jpg", count=2, suffix=".jpg")  # told "save it as a PNG", it would have been smeared
    with pytest.raises(AmalgamError, match=r"JPEG is lossy, its values smeared along the edges: export the maps"):
        scanned(tmp_path / "jpg")


def test_an_eval_sets_scan_warnings_reach_the_report():
    # a trial: "maps hold values beyond the classes" was in the log only, not in report.json's warnings
    from types import SimpleNamespace

    from amalgam.distill.plan import _kept

    plan, said = SimpleNamespace(data_warnings=[]), []
    _kept(plan, said.append, "data.eval.v: warning: 3 of 9 label maps hold values beyond the 4 classes")
    _kept(plan, said.append, "data.eval.v: 9 images")
    assert plan.data_warnings == ["data.eval.v: 3 of 9 label maps hold values beyond the 4 classes"] and len(said) == 2


def test_values_beyond_the_classes_name_the_likely_convention():
    # a trial: ADE20K maps numbered from 1 and Cityscapes labelIds under a trainId list got no word of either
    from amalgam.data.target_scan import _beyond_hint

    counts = np.zeros(IGNORE + 1, np.int64)
    counts[1:12] = 100  # values 1-11 for 11 classes: one beyond, 0 unused
    assert "numbered from 1, with 0 = other or ignore (as ADE20K's)?" in _beyond_hint(counts, 11)
    counts[:] = 0
    counts[[0, 7, 8, 11, 12, 17, 19, 21, 23, 24, 25, 26]] = 100  # sparse ids up to 26 for 11 classes (a trial's)
    assert "they use 12 values up to 26: ids of another convention" in _beyond_hint(counts, 11)
    counts[:] = 0  # Cityscapes' labelIds of a street scene under the 19-name trainId list (a review: 33 < 2 x 19)
    counts[[0, 1, 4, 7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 33]] = 100
    assert "they use 18 values up to 33: ids of another convention" in _beyond_hint(counts, 19)
    counts[:] = 0
    counts[[0, 9, 14]] = 100  # per-file palette indices: a few values far beyond, no id scheme to name
    assert _beyond_hint(counts, 3) == ""
    counts[:] = 0
    counts[:14] = 100  # a few beyond, dense: no convention to name
    assert _beyond_hint(counts, 11) == ""
    counts[:] = 0  # a trial's maps saved as class * 25 for viewing were told of colour masks only
    counts[[0, 25, 50, 100, 250]] = 100
    assert _beyond_hint(counts, 11).endswith(
        "every value is a multiple of 25: maps scaled for viewing? divide them by 25 (class = value / 25)"
    )
    counts[:] = 0
    counts[[0, 20, 40, 60]] = 100  # multiples of 20 whose quotients are no class indices of 3: no such hint
    assert "multiple" not in _beyond_hint(counts, 3)


def test_the_smear_check_spares_legitimate_fine_structure():
    # a review: VOC borders downscaled with nearest, 1-px wires, isolated ignore pixels and single-pixel objects
    # crossed the first rule (pixels unlike their 4 neighbours) and would have been told they were lossy
    from amalgam.data.target_scan import SMEAR_SHARE, _smeared_pixels

    wires = np.full((64, 64), 10, np.uint8)
    for k in range(0, 64, 8):
        np.fill_diagonal(wires[:, k:], 5)  # 1-px 45-degree lines
    dots = np.zeros((16, 16), np.uint8)
    dots[3, 4], dots[9, 9], dots[12, 2] = 3, 1, 4  # single-pixel objects
    speckled = np.zeros((32, 32), np.uint8)
    speckled[::5, ::7] = IGNORE  # isolated ignore pixels
    speckled[16:, :] = 2
    for clean in (wires, dots, speckled):
        smeared, scored, _ = _smeared_pixels(clean)
        assert smeared <= SMEAR_SHARE * scored, clean
    edge = np.zeros((8, 8), np.uint8)
    edge[:, 4:] = 40
    edge[3, 3] = 17  # a value between the two classes, unlike every neighbour: what JPEG leaves
    assert _smeared_pixels(edge)[0] == 1


def test_per_pixel_noise_maps_are_not_judged_smeared():
    # the test world's i.i.d. random maps read 4.8% "smeared": noise has no regions, so no value of it is a smear
    from amalgam.data.target_scan import REGION_SHARE, _smeared_pixels

    noise = np.random.default_rng(0).integers(0, 4, (64, 64)).astype(np.uint8)
    smeared, scored, inside = _smeared_pixels(noise)
    assert smeared > 0.002 * scored and inside < REGION_SHARE * scored  # it would fire, and is not judged


def test_a_torchvision_sets_image_labels_follow_its_kept_images():
    # inspect reads them to name eval classes too thin to judge, before any image is decoded
    from torch.utils.data import Dataset, Subset

    from amalgam.data.torchvision_sets import TorchvisionSet

    class Labelled(Dataset):
        targets = [0, 1, 2, 0, 1, 2, 2]

        def __len__(self):
            return len(self.targets)

    ds = TorchvisionSet.__new__(TorchvisionSet)
    ds.masks, ds.target_keys, ds.kept = False, frozenset({"label"}), [1, 2, 6]
    ds.dataset = Subset(Labelled(), ds.kept)
    assert ds.image_labels() == [1, 2, 2]
    ds.masks = True  # label maps: no per-image class
    assert ds.image_labels() is None


def test_a_classes_file_naming_two_folders_alike_is_said(tmp_path):
    # a trial: a classes_file line naming the Shirt folder 'T-shirt/top' scored shirts as T-shirts (a teacher's
    # top-1 0.96 -> 0.85) with no word; two folders of one class are meant at times, so it is a warning
    from PIL import Image

    from amalgam.config.schema import SourceConfig
    from amalgam.data import build_image_set

    for folder in ("0", "6", "8"):
        (tmp_path / "val" / folder).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "val" / folder / "a.png")
    (tmp_path / "names.txt").write_text("0 T-shirt/top\n6 T-shirt/top\n8 Bag\n")
    cfg = SourceConfig(type="imagefolder", path=tmp_path / "val", classes_file=tmp_path / "names.txt")
    said: list[str] = []
    dataset = build_image_set("data.eval.val", cfg, lambda p: p, (8, 8), True, log=said.append)
    assert dataset.classes == ["T-shirt/top", "T-shirt/top", "Bag"]
    (line,) = [s for s in said if "one name" in s]
    assert line.endswith("gives '0', '6' one name, 'T-shirt/top': their images are scored as one class")


def test_a_dense_sets_own_classes_txt_naming_two_values_alike_is_said(tmp_path):
    # a trial: a classes.txt whose Ankle boot line read 'Sneaker' again scored the teacher's right Ankle boot
    # answers as Sneaker misses, and the log called Ankle boot absent from the set, nothing more
    from amalgam.config.schema import SourceConfig
    from amalgam.data import build_image_set
    from tests.world import CLASSES, write_dense

    write_dense(tmp_path / "val", 2)
    names = list(CLASSES)
    (tmp_path / "val" / "classes.txt").write_text("\n".join([*names[:-1], names[1]]) + "\n")
    cfg = SourceConfig(type="dense", path=tmp_path / "val")
    said: list[str] = []
    build_image_set("data.eval.val", cfg, lambda p: p, (32, 32), True, log=said.append)
    (line,) = [s for s in said if "one name" in s]
    last = len(names) - 1
    assert f"classes.txt gives '1', '{last}' one name, '{names[1]}': their images are scored as one class" in line
