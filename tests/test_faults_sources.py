"""Source faults a user trial found (trial B): each read wrong without a word before its fix.

Every test here failed on the code before the fix; each writes a few tiny files (or a fake
torchvision dataset), or edits the tiny world (tests/world.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets as tvd
from PIL import Image
from test_data import save_rgb
from test_faults import edit_recipe, inspect_lines
from torch.utils.data import Dataset

from amalgam.config.recipe import SourceConfig, load_recipe
from amalgam.data import build_image_set
from amalgam.distill.plan import build_plan
from amalgam.errors import AmalgamError


def build_said(cfg: dict, with_targets: bool = False) -> tuple[object, list[str]]:
    """The set built with its source check, and the lines that check logged."""
    said: list[str] = []
    dataset = build_image_set("data.sources.x", SourceConfig(**cfg), lambda p: p, (4, 4), with_targets, log=said.append)
    return dataset, said


class _Fake(Dataset):
    """A torchvision-like dataset taking ``train=`` whose labels are ``LABELS`` (set per test)."""

    LABELS: list[int] = []
    NAMES: list[str] = []

    def __init__(self, root: str, train: bool = True, download: bool = False):
        self.targets = list(self.LABELS)
        self.classes = list(self.NAMES) or [str(c) for c in sorted(set(self.LABELS))]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return Image.new("L", (4, 4), index), self.targets[index]


@pytest.fixture
def fake_torchvision(monkeypatch, tmp_path):
    """Registers :class:`_Fake` as ``torchvision.datasets.Fake``; returns a recipe block of it."""

    def with_labels(labels: list[int], names: tuple[str, ...] = (), **cfg) -> dict:
        fake = type("Fake", (_Fake,), {"LABELS": labels, "NAMES": list(names)})
        monkeypatch.setattr(tvd, "Fake", fake, raising=False)
        return {"type": "torchvision", "name": "Fake", "root": tmp_path, **cfg}

    return with_labels


# 1. a torchvision split other than train or test ---------------------------------------------------


@pytest.mark.parametrize("split", ["trian", "val", "Train"])
def test_a_train_flag_datasets_split_other_than_train_or_test_is_refused(split, fake_torchvision):
    # FashionMNIST takes train=: every word but "train" read its test split, the eval set, without a word
    with pytest.raises(AmalgamError, match=rf"^data.sources.x: split: '{split}' is not one of train, test \("):
        build_said(fake_torchvision([0, 1], split=split))
    assert len(build_said(fake_torchvision([0, 1], split="test"))[0]) == 2


def test_a_split_datasets_own_refusal_is_one_line(monkeypatch, tmp_path):
    class Multi(Dataset):
        def __init__(self, root: str, split: str = "train"):
            raise ValueError(f"Unknown value '{split}' for argument split.\n  Valid values are train, extra.")

    monkeypatch.setattr(tvd, "Multi", Multi, raising=False)
    cfg = {"type": "torchvision", "name": "Multi", "root": tmp_path, "split": "trian"}
    with pytest.raises(AmalgamError) as caught:
        build_said(cfg)
    assert "\n" not in str(caught.value) and "Valid values are train, extra." in str(caught.value), caught.value


# 2. limit: an even spread, so every class stays --------------------------------------------------


def write_classes(root: Path, classes: int = 3, per_class: int = 4) -> None:
    for c in range(classes):
        for i in range(per_class):
            save_rgb(root / f"class{c}" / f"{i}.png", size=(4, 4), seed=c * per_class + i)


def test_limit_on_an_imagefolder_set_keeps_every_class(tmp_path):
    write_classes(tmp_path)
    dataset, said = build_said({"type": "imagefolder", "path": tmp_path, "limit": 3}, with_targets=True)
    assert dataset.labels == [0, 1, 2], dataset.files  # the first 3 were all class0
    assert [p.name for p in dataset.files] == ["0.png"] * 3
    line = "data.sources.x: limit: 3 of 12 images, spread evenly over the sorted file list (3 of 3 classes)"
    assert line in said, said


def test_limit_on_a_folder_source_keeps_every_subfolder(tmp_path):
    write_classes(tmp_path, classes=4, per_class=5)
    dataset, _ = build_said({"type": "folder", "path": tmp_path, "limit": 8})
    assert sorted({p.parent.name for p in dataset.files}) == ["class0", "class1", "class2", "class3"]
    assert len(dataset.files) == len(set(dataset.files)) == 8


def test_limit_on_a_torchvision_set_keeps_its_first_images_only_when_they_hold_every_class(fake_torchvision):
    shuffled, said = build_said(fake_torchvision([1, 0, 2, 1, 0, 2, 0, 1, 2]))
    assert len(shuffled) == 9 and not said
    shuffled, said = build_said(fake_torchvision([1, 0, 2, 1, 0, 2, 0, 1, 2], limit=3))
    assert list(shuffled.dataset.indices) == [0, 1, 2]  # FashionMNIST-like: as before, the first N
    assert "data.sources.x: limit: 3 of 9 images, the first ones, which hold every class of its labels" in said
    grouped, said = build_said(fake_torchvision([0, 0, 0, 1, 1, 1, 2, 2, 2], limit=3))
    assert list(grouped.dataset.indices) == [0, 3, 6], said  # stored class by class: a spread


def test_max_eval_images_scores_a_spread_of_each_eval_set(fresh_world):
    recipe = load_recipe(fresh_world)
    recipe.train.max_eval_images = 3
    said: list[str] = []
    plan = build_plan(recipe, log=said.append)
    items = plan.eval_sets["items-val"]  # 3 classes of 4 images: the first 3 were one class
    assert len(items) == 3 and items.labels == [0, 1, 2], items.files
    assert "data.eval.items-val: train.max_eval_images 3 is its limit here" in said


# 3. two images of one name share one map -----------------------------------------------------------


def test_two_images_of_one_name_in_a_dense_set_stop_naming_both(tmp_path):
    for suffix, seed in ((".png", 0), (".jpg", 1), (".bmp", 2)):
        save_rgb(tmp_path / "images" / f"0{suffix}", size=(4, 4), seed=seed)
    save_rgb(tmp_path / "images" / "1.png", size=(4, 4))
    (tmp_path / "labels").mkdir()
    for name in ("0", "1"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "labels" / f"{name}.png")
    (tmp_path / "classes.txt").write_text("background\n")
    with pytest.raises(AmalgamError) as caught:
        build_said({"type": "dense", "path": tmp_path}, with_targets=True)
    message = str(caught.value)
    assert message.startswith("data.sources.x: images/0.bmp and images/0.jpg would share labels/0.png (1 more"), message
    assert "\n" not in message
    dataset, _ = build_said({"type": "dense", "path": tmp_path})  # a training source: its maps are never read
    assert len(dataset) == 4


# 4. a training source that is an eval set -----------------------------------------------------------


def test_a_source_holding_an_eval_sets_images_is_warned_about(fresh_world, capsys):
    code, out, err = inspect_lines(fresh_world, capsys)
    assert code == 0 and not any("are also in eval set" in line for line in out), err
    edit_recipe(fresh_world, lambda r: r["data"]["sources"]["scenes"].update(path="scenes/val/images"))
    code, out, err = inspect_lines(fresh_world, capsys)
    warned = [line for line in out if "are also in eval set" in line]
    assert code == 0 and len(warned) == 1, (err, out)
    assert warned[0].startswith("data.sources.scenes: warning: 6 of its 6 images are also in eval set 'scenes-val'")


def test_a_source_holding_copies_of_an_eval_sets_images_is_warned_about(fresh_world, capsys):
    # byte-identical copies pooled with the training images were not found (only the same files were)
    import shutil

    pool = fresh_world.parent / "pool"
    shutil.copytree(fresh_world.parent / "scenes" / "train" / "images", pool)
    for path in sorted((fresh_world.parent / "scenes" / "val" / "images").iterdir())[:2]:
        shutil.copy(path, pool / f"copy_{path.name}")
    edit_recipe(fresh_world, lambda r: r["data"]["sources"]["scenes"].update(path="pool"))
    code, out, err = inspect_lines(fresh_world, capsys)
    warned = [line for line in out if "are also in eval set" in line]
    assert code == 0 and len(warned) == 1, (err, out)
    assert warned[0].startswith("data.sources.scenes: warning: 2 of its ")
    assert "copy_" in warned[0]


def test_a_source_holding_eval_images_is_a_warning_of_the_report_too(fresh_world, tmp_path):
    # said only in the build log: report.json's warnings, which a user reads beside the ratios, were []
    import json

    from world import TINY_BUILD

    from amalgam.cli import main

    edit_recipe(fresh_world, lambda r: r["data"]["sources"]["scenes"].update(path="scenes/val/images"))
    assert main(["build", str(fresh_world), "--output", str(tmp_path / "run"), *TINY_BUILD]) == 0
    warnings = json.loads((tmp_path / "run" / "report.json").read_text())["warnings"]
    said = "data.sources.scenes: 6 of its 6 images are also in eval set 'scenes-val'"
    assert any(w.startswith(said) for w in warnings), warnings


def test_a_torchvision_source_reading_an_eval_sets_split_is_warned_about(fresh_world, fake_torchvision, capsys):
    block = fake_torchvision([1, 0, 1, 0], names=("cat", "dog"))

    def edit(raw: dict) -> None:
        raw["data"]["sources"]["items"] = {**block, "root": str(block["root"]), "split": "test"}
        raw["data"]["eval"]["items-val"] = {**block, "root": str(block["root"]), "split": "test", "limit": 2}

    edit_recipe(fresh_world, edit)
    code, out, err = inspect_lines(fresh_world, capsys)
    line = "data.sources.items: warning: 2 of its 4 images are also in eval set 'items-val' (e.g. torchvision Fake"
    assert code == 0 and any(x.startswith(line) for x in out), (err, out)


def test_a_plugin_image_set_takes_part_in_limit_and_the_overlap_check_through_its_own_methods():
    from amalgam.data.copies import shared_images
    from amalgam.data.sources import ImageSet, limit_set

    class Numbered(ImageSet):  # a user's source type: images named by number
        def __init__(self, numbers: list[int]):
            self.numbers = numbers

        def __len__(self) -> int:
            return len(self.numbers)

    plain = Numbered([0, 1, 2, 3])
    assert limit_set(plain, 2) is None and len(plain) == 4  # a set that cannot choose keeps them all
    assert shared_images(plain, Numbered([3])) == (0, "")  # nor can it say which images it shares

    class Keyed(Numbered):
        def keep(self, limit: int) -> str:
            self.numbers = self.numbers[-limit:]
            return f"the last {limit}"

        def image_keys(self) -> list:
            return [("numbered", n) for n in self.numbers]

    keyed = Keyed([0, 1, 2, 3])
    assert shared_images(keyed, Keyed([3, 1, 9])) == (2, "image 1")
    assert limit_set(keyed, 9) is None and limit_set(keyed, 2) == "the last 2" and keyed.numbers == [2, 3]


# 5. grey and 16-bit images are counted ----------------------------------------------------------------


def test_grey_and_16_bit_images_are_counted_and_12_bit_data_is_warned_about(tmp_path):
    save_rgb(tmp_path / "rgb.png", size=(4, 4))
    Image.fromarray(np.full((4, 4), 9, np.uint8)).save(tmp_path / "grey.png")
    for i, peak in enumerate((4000, 4080)):  # a 12-bit camera's values, stored as 16-bit
        Image.fromarray(np.linspace(0, peak, 16).reshape(4, 4).astype(np.uint16)).save(tmp_path / f"deep{i}.png")
    _, said = build_said({"type": "folder", "path": tmp_path})
    grey = [line for line in said if "images are grey" in line]
    assert len(grey) == 1 and grey[0].startswith("data.sources.x: 3 images are grey (PIL mode I;16: 2, L: 1)"), said
    assert "2 of them are 16-bit, read on the full 0-65535 scale (value / 257)" in grey[0]
    warning = "data.sources.x: warning: every 16-bit image holds values up to 4080 only: 12-bit data"
    assert any(line.startswith(warning) for line in said), said
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "deep2.png")  # full range
    _, said = build_said({"type": "folder", "path": tmp_path})
    assert any("3 of them are 16-bit" in line for line in said)
    # a trial: 12-bit images among full-range ones read nearly black without a word
    mixed = "data.sources.x: warning: 2 of the 3 16-bit images checked (the first: deep0.png) hold values up to 4080"
    assert any(line.startswith(mixed) for line in said), said
    for i in range(2):
        Image.fromarray(np.full((4, 4), 60000, np.uint16)).save(tmp_path / f"deep{i}.png")
    _, said = build_said({"type": "folder", "path": tmp_path})
    assert not any("12-bit" in line for line in said), said


def test_unreadable_images_of_relative_and_absolute_paths_are_still_one_line():
    # a review: os.path.commonpath raised on relative and absolute paths mixed, a traceback for the error
    from amalgam.data.file_checks import _unreadable_error
    from amalgam.data.images import UnreadableImage

    bad = [UnreadableImage("image", Path("/x/a.png"), "cut short"), UnreadableImage("image", Path("b.png"), "empty")]
    message = str(_unreadable_error([*bad, AmalgamError("image /x/c.tif has PIL mode I;32")], 9))
    assert message.startswith("3 of 9 images cannot be read: /x/a.png (cut short); b.png (empty); image /x/c.tif")
    assert str(_unreadable_error([AmalgamError("image c.tif has PIL mode I;32")], 9)) == "image c.tif has PIL mode I;32"


def test_images_far_smaller_than_the_student_are_counted_and_the_first_named(tmp_path):
    # a trial: a 1x1 image was stretched to the student's 64x64 for training without a word
    from amalgam.data.sources import build_image_set

    save_rgb(tmp_path / "photo.png", size=(64, 48))
    save_rgb(tmp_path / "dot.png", size=(1, 1))
    save_rgb(tmp_path / "strip.png", size=(64, 8))
    said: list[str] = []
    build_image_set(
        "data.sources.x", SourceConfig(type="folder", path=tmp_path), lambda p: p, (64, 64), False, log=said.append
    )
    line = "data.sources.x: 2 images are under a quarter of the student's 64x64 on a side (the first: dot.png)"
    assert any(s.startswith(line) for s in said), said
    _, small = build_said({"type": "folder", "path": tmp_path})  # a 4x4 student: none is
    assert not any("under a quarter" in s for s in small)


# 9. 65535 in a uint16 depth map ----------------------------------------------------------------------


def test_the_uint16_maximum_in_a_depth_map_is_no_data_and_its_share_is_said(tmp_path):
    save_rgb(tmp_path / "images" / "0.png", size=(4, 4))
    (tmp_path / "depth").mkdir()
    depth = np.full((4, 4), 2000, np.uint16)
    depth[0] = 65535  # a sensor's "no data" (a quarter of the pixels)
    depth[1, :2] = 0  # holes: said as well (a trial: only the 65535 were counted)
    Image.fromarray(depth).save(tmp_path / "depth" / "0.png")
    dataset, said = build_said({"type": "dense", "path": tmp_path}, with_targets=True)
    assert "data.sources.x: depth maps: 25.0% of pixels are 65535 (the uint16 maximum): no data, not scored" in said
    assert "data.sources.x: depth maps: of the pixels, 12.5% are 0: no depth, not scored" in said
    assert any("2-2 m (5th-95th percentile)" in line for line in said), said  # the range leaves them out
    metres = dataset[0]["depth"]
    assert float(metres[0].abs().max()) == 0.0 and float(metres[2:].min()) == 2.0  # 0 = invalid, as the metrics read it
    assert metres[1].tolist() == [0.0, 0.0, 2.0, 2.0]


# 13. unreadable images found in one pass; hidden files ----------------------------------------------


def test_every_unreadable_image_is_counted_in_one_line_and_an_empty_one_says_so(tmp_path):
    for i in range(4):
        save_rgb(tmp_path / f"{i}.png", size=(4, 4), seed=i)
    whole = (tmp_path / "0.png").read_bytes()
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(whole[: len(whole) // 2])  # cut short
    (tmp_path / "d.png").write_bytes(b"")
    with pytest.raises(AmalgamError) as caught:
        build_said({"type": "folder", "path": tmp_path})
    message = str(caught.value)
    # a trial: only the first file had a reason, PIL's words naming a file handle, and no fix was said
    assert message.startswith(f"data.sources.x: 4 of 8 images cannot be read under {tmp_path}: a.png ("), message
    assert "; d.png (the file is empty (0 bytes)); remove them from the set" in message and "\n" not in message
    assert message.count("png (") == 4, message  # each with why
    (tmp_path / "e.png").write_text("notes, not an image")
    with pytest.raises(AmalgamError, match=r"e\.png \(not an image PIL can read \(another kind of file named as one"):
        build_said({"type": "folder", "path": tmp_path})
    (tmp_path / "f.png").write_bytes(b"")  # six: five named, every one in a file (100 took 20 runs to find)
    with pytest.raises(AmalgamError) as caught:
        build_said({"type": "folder", "path": tmp_path})
    listed = re.search(r"and 1 more \(all of them: (\S+\.txt)\)", str(caught.value)).group(1)
    lines = Path(listed).read_text().splitlines()
    assert len(lines) == 6 and lines[-1] == f"{tmp_path / 'f.png'}\tthe file is empty (0 bytes)", lines
    Path(listed).unlink()
    (tmp_path / "f.png").unlink()
    for name in ("a.png", "b.png", "c.png", "e.png"):
        (tmp_path / name).unlink()
    with pytest.raises(
        AmalgamError, match=r"corrupt image .*d\.png: the file is empty \(0 bytes\); remove it from the set"
    ):
        build_said({"type": "folder", "path": tmp_path})


def test_hidden_images_and_folders_are_not_read_and_are_counted(tmp_path):
    write_classes(tmp_path, classes=2, per_class=2)
    (tmp_path / "class0" / "._0.png").write_bytes(b"\x00\x05\x16\x07")  # a macOS AppleDouble copy, not a PNG
    save_rgb(tmp_path / ".ipynb_checkpoints" / "x.png", size=(4, 4))
    dataset, said = build_said({"type": "imagefolder", "path": tmp_path})
    assert dataset.classes == ["class0", "class1"] and len(dataset) == 4
    assert any("1 hidden images (names starting with '.', as macOS's ._ copies) are not read" in line for line in said)


# 6. label maps that are not class indices -----------------------------------------------------------


def dense_with_maps(root: Path, maps: list[np.ndarray], mode: str = "L") -> dict:
    for i, array in enumerate(maps):
        save_rgb(root / "images" / f"{i}.png", size=(4, 4), seed=i)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).convert(mode).save(root / "labels" / f"{i}.png")
    (root / "classes.txt").write_text("background\nshirt\nbag\n")
    return {"type": "dense", "path": root}


def test_label_maps_mostly_beyond_the_classes_stop_as_not_class_indices(tmp_path):
    quantized = [np.full((4, 4), v, np.uint8) for v in (0, 9, 14)]  # per-file palette indices, say
    with pytest.raises(AmalgamError) as caught:
        build_said(dense_with_maps(tmp_path / "a", quantized), with_targets=True)
    message = str(caught.value)
    assert "2 of 3 label maps hold values beyond the 3 classes (up to 14, e.g. " in message, message
    assert message.endswith("colour masks, or palettes quantized per file, must be mapped to those indices first")
    one_off = [np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8), np.full((4, 4), 9, np.uint8)]
    _, said = build_said(dense_with_maps(tmp_path / "b", one_off), with_targets=True)  # one map of three: a warning
    assert any("warning: 1 of 3 label maps hold values beyond the 3 classes" in line for line in said), said


def test_a_colour_label_map_is_told_how_to_become_class_indices(tmp_path):
    maps = [np.zeros((4, 4), np.uint8)]
    said = r"has PIL mode RGB, expected one of L, P, I;16, I;16B, I;16L, I: a label map holds each pixel's"
    with pytest.raises(AmalgamError, match=said):
        build_said(dense_with_maps(tmp_path, maps, mode="RGB"), with_targets=True)


def test_a_dense_eval_set_without_class_names_is_told_to_add_a_classes_txt(fresh_world):
    (fresh_world.parent / "scenes" / "val" / "classes.txt").unlink()
    with pytest.raises(AmalgamError, match=r"has no class names to match labels against: give it a classes.txt beside"):
        build_plan(load_recipe(fresh_world), log=lambda line: None)


def test_a_map_in_another_format_is_told_to_be_saved_as_png(tmp_path):
    save_rgb(tmp_path / "images" / "0.png", size=(4, 4))
    (tmp_path / "depth").mkdir()
    Image.fromarray(np.full((4, 4), 2.0, np.float32)).save(tmp_path / "depth" / "0.tif")
    dataset, _ = build_said({"type": "dense", "path": tmp_path}, with_targets=True)
    assert dataset[0]["depth"].eq(2.0).all()  # a float TIFF holds metres, read as they are (since stop 39)
    (tmp_path / "depth" / "0.tif").unlink()
    Image.fromarray(np.full((4, 4), 2, np.uint8)).save(tmp_path / "depth" / "0.jpg")
    expected = r"depth/ holds 0\.jpg; maps are read as <image name>\.png \(or, a depth map, \.npy/\.tiff/\.tif of float"
    with pytest.raises(AmalgamError, match=expected):
        build_said({"type": "dense", "path": tmp_path}, with_targets=True)


def test_a_classes_file_names_folders_with_spaces_by_a_tab(tmp_path):
    from amalgam.config.label_entries import rename_classes

    path = tmp_path / "map.txt"
    path.write_text("Ankle boot\tAnkle boot\nT-shirt_top\tT-shirt/top\nn01440764 tench\n")
    renamed = rename_classes(["Ankle boot", "T-shirt_top", "n01440764"], path)
    assert renamed == ["Ankle boot", "T-shirt/top", "tench"]
    with pytest.raises(AmalgamError, match=r"does not name 1 of the set's classes: Bag \(give each a line"):
        rename_classes(["Bag", "n01440764"], path)


def test_65535_is_no_data_however_pillow_reads_a_16_bit_map():
    from amalgam.data.sources import depth_metres

    for dtype in (np.uint16, np.int32):  # some Pillow versions open 16-bit PNGs as mode I (int32)
        assert depth_metres(np.array([[65535, 2000]], dtype=dtype), 1000.0).tolist() == [[0.0, 2.0]]


def test_a_map_named_in_another_unicode_normalisation_is_said(tmp_path):
    import unicodedata

    save_rgb(tmp_path / "images" / f"{unicodedata.normalize('NFC', 'café')}.png", size=(4, 4))
    (tmp_path / "labels").mkdir()
    decomposed = unicodedata.normalize("NFD", "café")  # how some macOS tools write the name
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "labels" / f"{decomposed}.png")
    (tmp_path / "classes.txt").write_text("background\n")
    with pytest.raises(AmalgamError, match=r"the same name in another Unicode normalisation \(NFC against NFD\)"):
        build_said({"type": "dense", "path": tmp_path}, with_targets=True)


def test_label_maps_of_different_palettes_are_warned_about(tmp_path):
    for i, colours in enumerate(([0, 0, 0, 255, 0, 0, 0, 255, 0], [0, 0, 0, 0, 255, 0, 255, 0, 0])):
        save_rgb(tmp_path / "images" / f"{i}.png", size=(4, 4), seed=i)
        (tmp_path / "labels").mkdir(exist_ok=True)
        image = Image.fromarray(np.array([[0, 1, 2, 1]] * 4, np.uint8), mode="L").convert("P")
        image.putpalette(colours + [0] * (768 - len(colours)))  # the same indices, other colours per file
        image.save(tmp_path / "labels" / f"{i}.png")
    (tmp_path / "classes.txt").write_text("background\nshirt\nbag\n")
    _, said = build_said({"type": "dense", "path": tmp_path}, with_targets=True)
    expected = "warning: index 1 of the label maps has one colour in 0.png's palette and another in 1.png's"
    assert any(expected in line for line in said), said


def test_palettes_that_agree_on_the_used_indices_are_not_warned_about(tmp_path):
    colours = [0, 0, 0, 255, 0, 0, 0, 255, 0]
    for i, palette in enumerate((colours + [9] * 30, colours)):  # one palette longer than the other
        save_rgb(tmp_path / "images" / f"{i}.png", size=(4, 4), seed=i)
        (tmp_path / "labels").mkdir(exist_ok=True)
        image = Image.fromarray(np.array([[0, 1, 2, 1]] * 4, np.uint8), mode="L").convert("P")
        image.putpalette(palette)
        image.save(tmp_path / "labels" / f"{i}.png")
    (tmp_path / "classes.txt").write_text("background\nshirt\nbag\n")
    _, said = build_said({"type": "dense", "path": tmp_path}, with_targets=True)
    assert not [line for line in said if "palette" in line], said


def test_16_bit_grey_label_maps_are_read_as_class_indices(tmp_path):
    # refused as "not a colour: map each colour to its class index", though they hold class indices
    import numpy as np
    from PIL import Image

    from amalgam.config.recipe import SourceConfig
    from amalgam.data import build_image_set

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    labels = np.zeros((4, 4), np.uint16)
    labels[:2] = 2
    labels[3, 3] = 255
    Image.fromarray(labels).save(tmp_path / "labels" / "a.png")
    (tmp_path / "classes.txt").write_text("background\nwall\ncar\n")
    cfg = SourceConfig(type="dense", path=tmp_path)
    dataset = build_image_set("data.eval.x", cfg, lambda p: p, (4, 4), True, native_targets=True)
    assert Image.open(tmp_path / "labels" / "a.png").mode.startswith("I")
    assert dataset[0]["mask"].tolist() == labels.astype(np.int64).tolist()


def test_the_copy_check_finds_copies_among_equal_size_files_and_says_when_it_sampled(tmp_path, monkeypatch):
    # BMPs of one size were each compared with every eval file (quadratic); past the cap, the count read as exact
    import shutil

    import amalgam.data.copies as copies

    for folder, count in (("train", 40), ("val", 20)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            Image.fromarray(np.full((4, 4, 3), i + (100 if folder == "val" else 0), np.uint8)).save(
                tmp_path / folder / f"{i:02d}.bmp"
            )
    shutil.copy(tmp_path / "val" / "07.bmp", tmp_path / "train" / "zz.bmp")
    train, val = sorted((tmp_path / "train").iterdir()), sorted((tmp_path / "val").iterdir())
    assert copies._copies(train, val) == ([40], False)
    monkeypatch.setattr(copies, "COPY_CHECKS", 8)
    found, sampled = copies._copies(train, val)
    assert sampled and found in ([], [40])


def test_16_bit_label_values_beyond_the_ignore_value_are_one_line(tmp_path):
    # 65535 as void was refused as "label maps are 8-bit", and negative values of a mode I map crashed in bincount
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    labels = np.zeros((4, 4), np.uint16)
    labels[0, 0] = 65535
    Image.fromarray(labels).save(tmp_path / "labels" / "a.png")
    (tmp_path / "classes.txt").write_text("background\nwall\n")
    with pytest.raises(AmalgamError, match=r"holds values 0-65535: class indices are 0-254 with 255 = ignore"):
        build_said({"type": "dense", "path": tmp_path}, with_targets=True)


def test_maps_named_by_another_suffix_are_shown_with_the_naming_rule(tmp_path):
    # a trial: Cityscapes' x_leftImg8bit.png beside labels/x_gtFine_labelTrainIds.png got "missing mask file" only
    save_rgb(tmp_path / "images" / "aachen_000000_leftImg8bit.png", size=(4, 4))
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "labels" / "aachen_000000_gtFine_labelTrainIds.png")
    (tmp_path / "classes.txt").write_text("background\n")
    with pytest.raises(AmalgamError, match=r"labels/ holds aachen_000000_gtFine_labelTrainIds.png, named otherwise"):
        build_said({"type": "dense", "path": tmp_path}, with_targets=True)


def _jpeg(path: Path, height: int, width: int, grey: bool = False) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (height // 8, width // 8) + (() if grey else (3,)), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).resize((width, height), Image.BILINEAR).save(path, quality=90)


def test_a_large_jpeg_decodes_at_a_reduced_scale_keeping_the_least_side(tmp_path):
    from amalgam.data.images import read_rgb

    root = tmp_path
    _jpeg(root / "photo.jpg", 480, 640)
    _jpeg(root / "grey.jpg", 480, 640, grey=True)
    Image.fromarray(np.zeros((480, 640, 3), np.uint8)).save(root / "flat.png")
    assert read_rgb(root / "photo.jpg").shape == (480, 640, 3)  # whole by default (eval sets, exports)
    assert read_rgb(root / "photo.jpg", least_side=100).shape == (120, 160, 3)  # 1/4: the short side stays >= 100
    assert read_rgb(root / "photo.jpg", least_side=240).shape == (240, 320, 3)  # exactly twice: 1/2
    assert read_rgb(root / "photo.jpg", least_side=241).shape == (480, 640, 3)  # under twice: whole
    grey = read_rgb(root / "grey.jpg", least_side=60)
    assert grey.shape == (60, 80, 3) and (grey[..., 0] == grey[..., 2]).all()  # its own mode: still grey
    assert read_rgb(root / "flat.png", least_side=60).shape == (480, 640, 3)  # not a JPEG: whole


def test_a_training_sources_large_jpegs_are_said_decoded_reduced_and_an_eval_sets_are_not(tmp_path):
    _jpeg(tmp_path / "big" / "a.jpg", 400, 600)
    _jpeg(tmp_path / "big" / "b.jpg", 100, 150)  # under twice the least side: whole
    cfg = SourceConfig(type="folder", path=tmp_path / "big")
    said: list[str] = []
    source = build_image_set("data.sources.x", cfg, lambda p: p, (32, 32), False, log=said.append, least_side=64)
    assert source.least_side == 64
    (line,) = [line for line in said if "JPEG images" in line]
    assert line.startswith("data.sources.x: 1 JPEG images (the first: a.jpg) are decoded at 1/2, 1/4 or 1/8 of")
    assert "keeping at least 64 px on the short side" in line
    assert [source.load(i)[0].shape[:2] for i in (0, 1)] == [(100, 150), (100, 150)]
    evaluated = build_image_set("data.eval.x", cfg, lambda p: p, (32, 32), True, least_side=64)
    assert evaluated.least_side is None  # its maps fit the whole image
    _jpeg(tmp_path / "small" / "b.jpg", 100, 150)
    cfg = SourceConfig(type="folder", path=tmp_path / "small")
    small = build_image_set("data.sources.x", cfg, lambda p: p, (32, 32), False, least_side=64)
    assert small.least_side is None  # nothing to reduce: read as before, and the teacher cache keyed as before


def test_the_plan_decodes_training_jpegs_at_twice_the_largest_view_and_keys_the_cache_by_it(fresh_world):
    from amalgam.distill.cache import teacher_key

    images = fresh_world.parent / "scenes" / "train" / "images"
    for png in images.glob("*.png"):
        _jpeg(png.with_suffix(".jpg"), 160, 200)
        png.unlink()
    edit_recipe(fresh_world, lambda r: r["teachers"]["seg-a"].update(input={"size": [40, 40]}))
    said: list[str] = []
    plan = build_plan(load_recipe(fresh_world), log=said.append)
    assert plan.least_side == 80  # seg-a's 40 px, the largest view (the student's 32, cls's 28)
    scenes = plan.sources.sets[plan.sources.names.index("scenes")]
    assert scenes.least_side == 80 and any("keeping at least 80 px on the short side" in line for line in said)
    assert scenes[0]["original"].shape[1:] == (80, 100)
    assert teacher_key(plan, "seg-a")["sources"]["scenes"]["least_side"] == 80
    assert "least_side" not in teacher_key(plan, "cls")["sources"]["items"]  # small PNGs: keyed as before
