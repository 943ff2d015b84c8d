"""torchvision segmentation datasets as eval sets: their label maps read as masks, named by a rule
said in the log (VOC's 21 classes, Cityscapes' label ids), or by ``classes_file``; never by a
``classes`` attribute that names something else (OxfordIIITPet's breeds for its trimap)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets as tvd
from PIL import Image
from torch.utils.data import Dataset

from amalgam.config.schema import SourceConfig
from amalgam.data.sources import build_image_set
from amalgam.data.torchvision_targets import VOC_NAMES
from amalgam.errors import AmalgamError


def write_voc(root: Path, count: int = 3) -> None:
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    names = [f"2007_{i:06d}" for i in range(count)]
    for i, name in enumerate(names):
        Image.fromarray(np.full((20, 24, 3), 60 * i, np.uint8)).save(base / "JPEGImages" / f"{name}.jpg")
        mask = np.zeros((20, 24), np.uint8)
        mask[5:15, 5:15] = 12  # dog
        mask[4, :] = 255  # the border VOC draws around objects
        palette = Image.fromarray(mask, "P")
        palette.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
        palette.save(base / "SegmentationClass" / f"{name}.png")
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names) + "\n")


def write_cityscapes(root: Path) -> None:
    images, maps = root / "leftImg8bit" / "val" / "aachen", root / "gtFine" / "val" / "aachen"
    images.mkdir(parents=True)
    maps.mkdir(parents=True)
    Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(images / "aachen_000000_000019_leftImg8bit.png")
    ids = np.full((16, 32), 7, np.uint8)  # road
    ids[:4] = 23  # sky
    ids[-2:, :3] = 1  # ego vehicle: void
    Image.fromarray(ids).save(maps / "aachen_000000_000019_gtFine_labelIds.png")


def eval_set(cfg: dict, tmp_path: Path) -> tuple[object, list[str]]:
    said: list[str] = []
    dataset = build_image_set(
        "data.eval.val", SourceConfig(**cfg), lambda p: tmp_path / p, (16, 16), True, log=said.append,
        native_targets=True,
    )  # fmt: skip
    return dataset, said


def test_voc_segmentation_reads_palette_maps_as_voc_classes_and_says_so(tmp_path):
    write_voc(tmp_path / "voc")
    cfg = {"type": "torchvision", "name": "VOCSegmentation", "root": "voc", "split": "val"}
    dataset, said = eval_set(cfg, tmp_path)
    assert dataset.target_keys == {"mask"} and dataset.classes == list(VOC_NAMES)
    mask = dataset[0]["mask"]
    assert mask.shape == (20, 24) and set(mask.unique().tolist()) == {0, 12, 255}  # at its own size, border kept
    rule = "named as torchvision VOCSegmentation's classes (background, aeroplane, ..., tvmonitor)"
    assert any(rule in line for line in said)


def test_voc_split_is_its_image_set_and_a_missing_one_is_said_in_one_line(tmp_path):
    write_voc(tmp_path / "voc")
    with pytest.raises(AmalgamError, match=r"torchvision VOCSegmentation not found under .*train\.txt"):
        eval_set({"type": "torchvision", "name": "VOCSegmentation", "root": "voc"}, tmp_path)  # split: train


def test_cityscapes_needs_semantic_maps_and_names_them_by_label_id(tmp_path):
    write_cityscapes(tmp_path / "cs")
    base = {"type": "torchvision", "name": "Cityscapes", "root": "cs", "split": "val"}
    with pytest.raises(AmalgamError, match=r"Cityscapes gives class maps with args: \{target_type: semantic\}"):
        eval_set(base, tmp_path)  # its default target is instance ids
    dataset, _ = eval_set(base | {"args": {"mode": "fine", "target_type": "semantic"}}, tmp_path)
    assert dataset.classes[7] == "road" and dataset.classes[23] == "sky" and dataset.classes[1] == "ego vehicle"
    assert set(dataset[0]["mask"].unique().tolist()) == {1, 7, 23}


class TrimapPets(Dataset):
    """OxfordIIITPet's shape: ``classes`` are breeds, the targets trimaps of values 1-3."""

    classes = ["Abyssinian", "Bengal", "Birman"]

    def __init__(self, root: str, split: str = "trainval"):
        self.split = split

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        trimap = np.ones((8, 8), np.uint8)
        trimap[2:6, 2:6] = 2
        return Image.new("RGB", (8, 8)), Image.fromarray(trimap)


class PetsAndBoxes(TrimapPets):
    def __getitem__(self, index: int):
        image, trimap = super().__getitem__(index)
        return image, (1, trimap)


def test_a_mask_sets_classes_attribute_is_not_read_as_its_map_values(tmp_path, monkeypatch):
    monkeypatch.setattr(tvd, "TrimapPets", TrimapPets, raising=False)
    cfg = {"type": "torchvision", "name": "TrimapPets", "root": ".", "split": "test"}
    dataset, said = eval_set(cfg, tmp_path)
    assert dataset.target_keys == {"mask"} and dataset.classes is None  # not the breeds
    assert any("have no names amalgam knows" in s and "give classes_file" in s for s in said)
    (tmp_path / "trimap.txt").write_text("0 unused\n1 pet\n2 background\n3 border\n")
    named, _ = eval_set(cfg | {"classes_file": "trimap.txt"}, tmp_path)
    assert named.classes == ["unused", "pet", "background", "border"]


def test_targets_of_another_kind_are_refused_for_an_eval_set_and_never_read_for_a_source(tmp_path, monkeypatch):
    # a detection or attribute set (VOCDetection, CelebA) is a fine source of images: its targets are never read
    monkeypatch.setattr(tvd, "PetsAndBoxes", PetsAndBoxes, raising=False)
    cfg = {"type": "torchvision", "name": "PetsAndBoxes", "root": ".", "split": "test"}
    with pytest.raises(AmalgamError, match=r"gives targets of type tuple of 2: an eval set needs a class label"):
        eval_set(cfg, tmp_path)
    source = build_image_set("data.sources.x", SourceConfig(**cfg), lambda p: tmp_path / p, (8, 8), False)
    assert len(source) == 2 and source[0]["image"].shape == (3, 8, 8)


def test_two_voc_years_are_two_sets_of_images(tmp_path):
    write_voc(tmp_path / "voc")
    base = {"type": "torchvision", "name": "VOCSegmentation", "root": "voc", "split": "val"}
    plain, _ = eval_set(base, tmp_path)
    dated, _ = eval_set(base | {"args": {"year": "2012"}}, tmp_path)
    assert plain.fingerprint() != dated.fingerprint() and not set(plain.image_keys()) & set(dated.image_keys())


def test_cityscapes_takes_its_target_type_as_a_list_too(tmp_path):
    write_cityscapes(tmp_path / "cs")
    cfg = {"type": "torchvision", "name": "Cityscapes", "root": "cs", "split": "val"}
    dataset, _ = eval_set(cfg | {"args": {"target_type": ["semantic"]}}, tmp_path)
    assert dataset.classes[7] == "road"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ({"split": "val"}, r"args: split: set by amalgam"),
        ({"transform": None}, r"args: transform: set by amalgam \(root, split, download\) or not allowed"),
        ({"year": "2007"}, r"args: torchvision TrimapPets takes no year \(it takes: nothing more\)"),
    ],
)
def test_args_amalgam_sets_or_the_dataset_lacks_are_refused(tmp_path, monkeypatch, args, said):
    monkeypatch.setattr(tvd, "TrimapPets", TrimapPets, raising=False)
    with pytest.raises(AmalgamError, match=said):
        eval_set({"type": "torchvision", "name": "TrimapPets", "root": ".", "split": "test", "args": args}, tmp_path)


def test_args_are_refused_on_other_set_types():
    from amalgam.config.checks import check_set_options
    from amalgam.errors import RecipeError

    with pytest.raises(RecipeError, match=r"only for torchvision sets \(keyword arguments of the dataset\)"):
        check_set_options("data.eval.val", SourceConfig(type="dense", path=Path("x"), args={"year": "2007"}))


def test_a_segmenter_is_planned_against_voc_segmentation(tmp_path):
    import yaml

    from amalgam.config.recipe import load_recipe
    from amalgam.distill.plan import build_plan

    write_voc(tmp_path / "voc")
    (tmp_path / "models.py").write_text(
        "from torch import nn\n\n\ndef seg(classes):\n    return nn.Conv2d(3, classes, 1)\n"
    )
    recipe = {
        "name": "voc",
        "device": "cpu",
        "data": {
            "image_size": [32, 32],
            "sources": {"train": {"type": "folder", "path": "voc/VOCdevkit/VOC2012/JPEGImages"}},
            "eval": {"val": {"type": "torchvision", "name": "VOCSegmentation", "root": "voc", "split": "val"}},
        },
        "teachers": {
            "seg": {
                "task": "segmentation",
                "model": {"from": "python", "factory": "models:seg", "classes": 21},
                "labels": list(VOC_NAMES),
                "background": "background",
                "eval": "val",
            }
        },
        "student": {"encoder": "tu-test_resnet"},
        "train": {"workers": 0},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    said: list[str] = []
    plan = build_plan(load_recipe(tmp_path / "recipe.yaml"), log=said.append)
    assert plan.eval_sets["val"].classes == list(VOC_NAMES)
    assert not [line for line in said if "scored on" in line and "of its 21 labels" in line]  # every label is VOC's


class Digits(Dataset):
    """SVHN's shape: int labels, no ``classes`` attribute."""

    def __init__(self, root: str, split: str = "train"):
        self.split = split

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        return Image.new("RGB", (8, 8)), index


class Categories(Digits):
    """Caltech101's shape: its names are ``categories``."""

    categories = ["accordion", "airplanes"]


def test_a_classification_set_without_classes_is_named_by_classes_file_or_said(tmp_path, monkeypatch):
    monkeypatch.setattr(tvd, "Digits", Digits, raising=False)
    monkeypatch.setattr(tvd, "Categories", Categories, raising=False)
    cfg = {"type": "torchvision", "name": "Digits", "root": ".", "split": "test"}
    dataset, said = eval_set(cfg, tmp_path)
    assert dataset.target_keys == {"label"} and dataset.classes is None
    assert any("its labels have no names (torchvision Digits has no classes): give classes_file" in s for s in said)
    (tmp_path / "digits.txt").write_text("1 one\n0 zero\n")
    named, _ = eval_set(cfg | {"classes_file": "digits.txt"}, tmp_path)
    assert named.classes == ["zero", "one"]
    caltech, _ = eval_set(cfg | {"name": "Categories"}, tmp_path)
    assert caltech.classes == ["accordion", "airplanes"]
