"""Data-side faults an audit found: each read wrong without a word before its fix.

Every test here failed on the code before the fix; each writes a set of a few tiny files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_faults import build, save_rgb, write_coco

from amalgam.config.recipe import SourceConfig
from amalgam.data import build_image_set
from amalgam.errors import AmalgamError


def build_said(cfg: dict, with_targets: bool = True, size=(4, 4)) -> tuple[object, list[str]]:
    """The set built with its source check, and the lines that check logged."""
    said: list[str] = []
    dataset = build_image_set("data.eval.x", SourceConfig(**cfg), lambda p: p, size, with_targets, log=said.append)
    return dataset, said


def dense_set(root: Path, maps: list[np.ndarray], classes: str) -> dict:
    for i, labels in enumerate(maps):
        save_rgb(root / "images" / f"{i}.png", size=labels.shape)
        (root / "labels").mkdir(exist_ok=True)
        Image.fromarray(labels.astype(np.uint8)).save(root / "labels" / f"{i}.png")
    (root / "classes.txt").write_text(classes)
    return {"type": "dense", "path": root}


# 1. binary masks saved as 0/255 -------------------------------------------------------------------


def test_binary_masks_saved_as_0_255_stop_and_unscorable_classes_are_said(tmp_path):
    # every object pixel read as ignore: the report showed a ratio of nothing, without a word
    disc = np.zeros((4, 4), np.uint8)
    disc[1:3, 1:3] = 255
    cfg = dense_set(tmp_path / "a", [disc, disc], "background\ndisc\n")
    said: list[str] = []
    with pytest.raises(AmalgamError, match=r"every label map holds only background \(0\) and ignore \(255\): binary"):
        build_image_set("data.eval.x", SourceConfig(**cfg), lambda p: p, (4, 4), True, log=said.append)
    assert "data.eval.x: label maps: 25.0% of pixels are 255 (ignore): not scored" in said, said
    disc[1:3, 1:3] = 1  # saved as the class index; a class of the list no map holds cannot be scored
    cfg = dense_set(tmp_path / "b", [disc], "background\ndisc\nsquare\n")
    _, said = build_said(cfg)
    assert (
        "data.eval.x: warning: 1 of 3 classes have no pixel in any label map, so they cannot be scored: square" in said
    ), said
    assert not any("of pixels are 255" in line for line in said)


# 2. COCO crowd regions and category names ------------------------------------------------------------


def coco_with(tmp_path: Path, edit) -> dict:
    save_rgb(tmp_path / "images" / "a.jpg", size=(4, 8))
    path = write_coco(tmp_path, width=8, height=4)  # one instance of 'shirt' on the top half
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    return {"type": "coco", "path": tmp_path / "images", "annotations": path}


def add_crowd(raw: dict) -> None:
    raw["annotations"].append(
        {**raw["annotations"][0], "id": 2, "iscrowd": 1, "segmentation": [[0, 0, 8, 0, 8, 4, 0, 4]]}
    )  # the whole image, after the instance in the file


def test_coco_crowd_regions_are_ignore_under_their_instances_and_counted(tmp_path):
    dataset, said = build_said(coco_with(tmp_path, add_crowd), size=(4, 8))
    mask = dataset[0]["mask"]
    assert (mask[:2] == 1).all() and (mask[2:] == 255).all(), mask  # painted as 'shirt' everywhere before
    assert any(line.startswith("data.eval.x: 1 of 2 COCO annotations are crowd regions (iscrowd: 1)") for line in said)
    _, said = build_said(coco_with(tmp_path, add_crowd), with_targets=False, size=(4, 8))
    assert not any("crowd" in line for line in said)  # a training source's annotations are never read


@pytest.mark.parametrize(
    "no_mask",
    [{"segmentation": []}, {"segmentation": [[]]}, {"segmentation": [[1, 2, 5, 2]]}, {}],
    ids=["empty", "empty-polygon", "two-points", "no-key"],
)
def test_coco_annotations_without_a_mask_are_ignore_boxes_counted_not_a_crash(tmp_path, no_mask):
    # box-only annotations (detection exports) crashed in pycocotools at evaluation, after training
    def box_only(raw):
        ann = {k: v for k, v in raw["annotations"][0].items() if k != "segmentation"}
        raw["annotations"].append({**ann, "id": 2, "bbox": [5, 2, 2, 2], **no_mask})

    dataset, said = build_said(coco_with(tmp_path, box_only), size=(4, 8))
    mask = dataset[0]["mask"]
    assert (mask[:2] == 1).all() and (mask[2:, 5:7] == 255).all(), mask  # its box: ignore, not background
    assert (mask[2:, :5] == 0).all() and (mask[2:, 7:] == 0).all(), mask
    assert any(line.startswith("data.eval.x: 1 of 2 COCO annotations have no mask") for line in said), said


def test_a_coco_file_without_any_mask_stops_as_a_detection_file(tmp_path):
    def detection(raw):
        raw["annotations"][0]["segmentation"] = []

    with pytest.raises(AmalgamError, match=r"none of its 1 annotations has a mask .*: a box-only \(detection\) file"):
        build_said(coco_with(tmp_path, detection), size=(4, 8))
    dataset, _ = build_said(coco_with(tmp_path, detection), with_targets=False, size=(4, 8))
    assert len(dataset) == 1  # as a source of training images its annotations are never read: fine


def test_degenerate_polygons_are_dropped_and_the_rest_drawn(tmp_path):
    def mixed(raw):
        ann = raw["annotations"][0]
        ann["segmentation"] = [[0, 0, 3, 0, 3, 1, 0, 1], [6, 3, 7, 3]]  # a rectangle and a two-point line

    dataset, said = build_said(coco_with(tmp_path, mixed), size=(4, 8))
    mask = dataset[0]["mask"]
    assert mask[0, 1] == 1 and (mask[2:] == 0).all(), mask
    assert not any("have no mask" in line for line in said), said


def test_coco_categories_no_image_holds_are_said(tmp_path):
    # like a label map's absent classes: a category nothing annotates has no IoU to score
    def categories(raw):
        raw["categories"] += [{"id": 5, "name": "dress"}, {"id": 6, "name": "coat"}]
        raw["annotations"].append({**raw["annotations"][0], "id": 2, "category_id": 6, "iscrowd": 1})

    _, said = build_said(coco_with(tmp_path, categories), size=(4, 8))
    assert any(
        line.startswith("data.eval.x: 2 of 3 COCO categories have no annotation in its images, so cannot be scored:")
        and line.endswith("dress, coat")
        for line in said
    ), said


def test_coco_categories_sharing_a_name_or_named_background_stop(tmp_path):
    def categories(raw):
        raw["categories"] += [{"id": 5, "name": "shirt"}, {"id": 7, "name": "background"}]

    with pytest.raises(
        AmalgamError,
        match=r"COCO categories \[7\] are named 'background', the name of class 0 .*; categories \[1, 5\] share the"
        r" name 'shirt'",
    ):
        build(coco_with(tmp_path, categories))


# 3. dense layouts ----------------------------------------------------------------------------------


def test_images_in_subfolders_of_a_dense_sets_images_are_counted(tmp_path):
    # a Cityscapes-like images/<city>/*.png: those images were dropped without a word
    save_rgb(tmp_path / "images" / "a.png")
    save_rgb(tmp_path / "images" / "cityA" / "b.png")
    save_rgb(tmp_path / "images" / "cityA" / "deeper" / "c.jpg")
    _, said = build_said({"type": "dense", "path": tmp_path}, with_targets=False)
    assert any(line.startswith("data.eval.x: 2 images in subfolders of images/ are not read") for line in said), said
    (tmp_path / "images" / "a.png").unlink()
    with pytest.raises(AmalgamError, match=r"contains no images: 2 images in subfolders of images/ are not read"):
        build({"type": "dense", "path": tmp_path})


def test_a_map_whose_suffix_differs_in_case_is_named_in_the_error(tmp_path):
    save_rgb(tmp_path / "images" / "00000.png", size=(4, 4))
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "labels" / "00000.PNG", format="PNG")
    with pytest.raises(AmalgamError, match=r"missing mask file .*00000\.png for image .*: labels/ holds 00000\.PNG;"):
        build({"type": "dense", "path": tmp_path}, with_targets=True)


def test_a_cut_short_label_map_is_named_with_the_fix_as_images_are(tmp_path):
    # a trial: a truncated mask stopped with "corrupt mask map ...: Truncated File Read" and no word of what to do
    cfg = dense_set(tmp_path, [np.zeros((8, 8)), np.ones((8, 8))], "background\nthing\n")
    cut = tmp_path / "labels" / "1.png"
    cut.write_bytes(cut.read_bytes()[:40])
    fix = r"labels/1\.png.*; remove it from the set \(or replace it with whole copies\)"
    with pytest.raises(AmalgamError, match=fix):
        build_said(cfg, size=(8, 8))


# 4. 32-bit images -------------------------------------------------------------------------------------


def test_a_32_bit_float_image_stops_at_the_source_check(tmp_path):
    # it passed the check and failed only when training drew it
    save_rgb(tmp_path / "a.png")
    Image.fromarray(np.random.default_rng(0).random((4, 4)).astype(np.float32)).save(tmp_path / "b.tif")
    with pytest.raises(AmalgamError, match=r"image .*b\.tif has F pixels \(32-bit\): save it as 8- or 16-bit"):
        build({"type": "folder", "path": tmp_path}, key="data.sources.x")


# 3. the formats of public sets: classes_file without classes.txt, torchvision ImageNet ------------------


def test_a_dense_sets_classes_file_names_its_map_values_without_a_classes_txt(tmp_path):
    # it was ignored, and the error then asked for a classes_file
    disc = np.zeros((4, 4), np.uint8)
    disc[1:3, 1:3] = 2
    cfg = dense_set(tmp_path, [disc], "")
    (tmp_path / "classes.txt").unlink()
    (tmp_path / "names.txt").write_text("1 aeroplane\n0 background\n2 bicycle\n")  # VOC-style, any order
    dataset, _ = build_said({**cfg, "classes_file": tmp_path / "names.txt"})
    assert dataset.classes == ["background", "aeroplane", "bicycle"]
    # a '255 void' line (Cityscapes trainIds, VOC) names the ignore value, as in classes.txt (it was refused)
    (tmp_path / "names.txt").write_text("1 aeroplane\n0 background\n255 void\n2 bicycle\n")
    dataset, _ = build_said({**cfg, "classes_file": tmp_path / "names.txt"})
    assert dataset.classes == ["background", "aeroplane", "bicycle"]
    (tmp_path / "names.txt").write_text("1 aeroplane\n2 bicycle\n")  # no value 0: refused, not shifted
    with pytest.raises(AmalgamError, match=r"reads it as '<map value> <name>' lines, the values 0 to N-1"):
        build_said({**cfg, "classes_file": tmp_path / "names.txt"})


def test_a_torchvision_set_taking_open_kwargs_gets_no_download_it_was_not_asked_for(tmp_path, monkeypatch):
    import torchvision.datasets as tvd
    from torch.utils.data import Dataset

    class FolderLike(Dataset):  # ImageNet: **kwargs handed to ImageFolder, which takes no download
        def __init__(self, root, split="train", **kwargs):
            if "download" in kwargs:
                raise TypeError("__init__() got an unexpected keyword argument 'download'")
            self.classes = [("tench", "Tinca tinca"), ("goldfish", "Carassius auratus")]
            self.samples = [(str(tmp_path / "a.png"), 0)]

        def __len__(self):
            return 1

        def __getitem__(self, index):
            return Image.new("RGB", (8, 8)), 0

    monkeypatch.setattr(tvd, "FolderLike", FolderLike, raising=False)
    from amalgam.data.sources import TorchvisionSet

    dataset = TorchvisionSet("FolderLike", tmp_path, "val", download=False)
    assert dataset.classes == ["tench", "goldfish"]  # a tuple of synonyms is named by its first


def test_a_public_sets_own_layout_is_told_the_layout_a_dense_set_has(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "SegmentationClass").mkdir()
    with pytest.raises(
        AmalgamError,
        match=r"image folder not found: .*images \(it holds JPEGImages/, SegmentationClass/\): a dense set",
    ):
        build({"type": "dense", "path": tmp_path})
    (tmp_path / "set.txt").write_text("")
    with pytest.raises(AmalgamError, match=r"image folder not found: .* \(it is a file, not a folder\)"):
        build({"type": "dense", "path": tmp_path / "set.txt"})


def test_an_empty_class_folder_of_an_eval_set_is_said(tmp_path):
    # a missing folder was said ("absent from the set"), an empty one not: its recall came out null
    for name in ("cat", "dog", "fish"):
        (tmp_path / name).mkdir()
    for name in ("cat", "dog"):
        save_rgb(tmp_path / name / "a.png", size=(4, 4))
    _, said = build_said({"type": "imagefolder", "path": tmp_path})
    assert "data.eval.x: warning: 1 class folders hold no image, so those classes cannot be scored: fish/" in said, said


def test_a_classes_txt_numbered_from_1_asks_for_value_0s_name_not_a_renumbering(tmp_path):
    # "number from 0" (a teacher's advice) shifted every class of ADE20K's objectInfo150 by one
    disc = np.zeros((4, 4), np.uint8)
    disc[1:3, 1:3] = 2
    cfg = dense_set(tmp_path, [disc], "1 wall\n2 building\n")
    with pytest.raises(
        AmalgamError,
        match=r"every value from 0 to 2 needs its line; missing: 0; value 0: '0 background' where it is background",
    ):
        build_said(cfg)


def test_a_classes_txt_naming_the_ignore_value_255_is_read_without_it():
    # a trial: VOC-style files end in '255 void'; it was refused as not running 0 to 5, asking for value 0
    import tempfile
    from pathlib import Path

    from amalgam.config.label_entries import read_names

    with tempfile.TemporaryDirectory() as root:
        path = Path(root) / "classes.txt"
        path.write_text("0 background\n1 disc\n2 square\n255 void\n")
        assert read_names(path, map_values=True) == ["background", "disc", "square"]
        path.write_text("0 background\n1 disc\n255 void\n3 square\n")  # a gap stays refused
        with pytest.raises(AmalgamError, match="do not run 0 to 2"):
            read_names(path, map_values=True)
        # a trial's Cityscapes-like ids with value 0 listed were told to add value 0: the missing ones are named
        path.write_text("0 unlabeled\n7 road\n24 person\n")
        with pytest.raises(
            AmalgamError, match=r"every value from 0 to 24 needs its line; missing: 1, 2, 3, 4, 5, 6, 8,"
        ):
            read_names(path, map_values=True)


def test_a_file_link_to_another_image_of_the_set_is_said(tmp_path):
    # folder links were de-duplicated, a file link read the same image twice without a word
    save_rgb(tmp_path / "a.png", size=(4, 4))
    save_rgb(tmp_path / "b.png", size=(4, 4), seed=1)
    (tmp_path / "c.png").symlink_to(tmp_path / "a.png")
    dataset, said = build_said({"type": "folder", "path": tmp_path}, with_targets=False)
    assert len(dataset) == 3
    said_as = "1 images are the same file as another image of the set (hard links, or links to one file)"
    assert any(said_as in line for line in said), said
    # hard links, and links from two folders to one file outside the set, are the same file too
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    save_rgb(outside / "x.png", size=(4, 4), seed=2)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "hard.png").hardlink_to(tmp_path / "b.png")
    (tmp_path / "sub" / "x1.png").symlink_to(outside / "x.png")
    (tmp_path / "sub" / "x2.png").symlink_to(outside / "x.png")
    dataset, said = build_said({"type": "folder", "path": tmp_path}, with_targets=False)
    assert len(dataset) == 6
    assert any("3 images are the same file as another image of the set" in line for line in said), said
