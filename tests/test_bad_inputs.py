"""A catalogue of broken inputs, tried on purpose: each gives one specific line and no run folder.

Every case edits a fresh tiny world (recipe, files or both), runs ``amalgam build`` and checks
exit code 2, a single ``amalgam: error:`` line naming the problem, and that no run folder exists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from amalgam.cli import main

Edit = Callable[[dict, Path], None]


def drop(*path: str) -> Edit:
    def edit(raw: dict, root: Path) -> None:
        node = raw
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return edit


def put(value, *path: str) -> Edit:
    def edit(raw: dict, root: Path) -> None:
        node = raw
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def corrupt_png(raw: dict, root: Path) -> None:
    path = sorted((root / "scenes" / "train" / "images").glob("*.png"))[3]
    path.write_bytes(path.read_bytes()[:40])


def depth_as_uint8(raw: dict, root: Path) -> None:
    path = sorted((root / "scenes" / "val" / "depth").glob("*.png"))[0]
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(path)


def empty_folder(raw: dict, root: Path) -> None:
    (root / "empty").mkdir()
    raw["data"]["sources"]["scenes"]["path"] = "empty"


def other_architecture(raw: dict, root: Path) -> None:
    raw["teachers"]["seg-a"]["checkpoint"] = "zoo/cls.pt"


def truncated_checkpoint(raw: dict, root: Path) -> None:
    path = root / "zoo" / "seg-a.pt"
    path.write_bytes(path.read_bytes()[:100])


def wrong_shape_teacher(raw: dict, root: Path) -> None:
    # a classifier's [B, 2] logits where a segmenter's [B, C, H, W] map is expected
    raw["teachers"]["seg-a"]["model"] = {"from": "python", "factory": "models:tiny_cnn", "num_classes": 3}
    del raw["teachers"]["seg-a"]["checkpoint"]


def coco_unknown_category(raw: dict, root: Path) -> None:
    images = root / "scenes" / "val" / "images"
    first = sorted(images.glob("*.png"))[0].name
    coco = {
        "images": [{"id": 1, "file_name": first, "height": 32, "width": 32}],
        "categories": [{"id": 1, "name": "disc"}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 9, "bbox": [0, 0, 4, 4], "area": 16,
                         "iscrowd": 0, "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]}],
    }  # fmt: skip
    (root / "coco.json").write_text(json.dumps(coco))
    raw["data"]["eval"]["scenes-val"] = {"type": "coco", "path": "scenes/val/images", "annotations": "coco.json"}


def duplicate_teacher(raw: dict, root: Path) -> None:
    raw["__text__"] = "duplicate"  # handled in write_recipe: the YAML text repeats a teacher's key


CASES: dict[str, tuple[Edit, str]] = {
    "missing name": (drop("name"), r"^name: required"),
    "missing data": (drop("data"), r"^data: required"),
    "missing image_size": (drop("data", "image_size"), r"^data\.image_size: required"),
    "missing sources": (drop("data", "sources"), r"^data\.sources: required"),
    "missing teacher task": (drop("teachers", "cls", "task"), r"^teachers\.cls\.task: required"),
    "missing teacher model": (drop("teachers", "cls", "model"), r"^teachers\.cls\.model: required"),
    "missing model source": (drop("teachers", "cls", "model", "from"), r"^teachers\.cls\.model\.from: required"),
    "missing labels": (drop("teachers", "cls", "labels"), r"^teachers\.cls\.labels: required for a classification"),
    "missing source type": (drop("data", "sources", "items", "type"), r"^data\.sources\.items\.type: required"),
    "epochs not a number": (put("ten", "train", "epochs"), r"^train\.epochs: .*integer"),
    "epochs a yes/no": (put(True, "train", "epochs"), r"^train\.epochs: expected a number, got True$"),
    "infinite learning rate": (put(float("inf"), "train", "lr"), r"^train\.lr: Input should be a finite number"),
    "nan temperature": (put(float("nan"), "amalgamation", "temperature"), r"^amalgamation\.temperature: .*finite"),
    "teacher name with a dot": (
        lambda raw, root: raw["teachers"].update({"cls.v2": raw["teachers"].pop("cls")}),
        r"^teachers\.cls\.v2: a teacher's name becomes a parameter and a folder name: '\.' cannot be in it "
        r"\(e\.g\. 'cls-v2'\)",
    ),
    "teacher name with a slash": (
        lambda raw, root: raw["teachers"].update({"seg/a": raw["teachers"].pop("seg-a")}),
        r"^teachers\.seg/a: .*'/' cannot be in it \(e\.g\. 'seg-a'\)",
    ),
    "image_size a scalar": (put(32, "data", "image_size"), r"^data\.image_size: "),
    "unknown train key": (put(1, "train", "epoch"), r"^train\.epoch: unknown key"),
    "unknown timm model": (
        put({"from": "timm", "name": "resnet_nope"}, "teachers", "cls", "model"),
        r"^teachers\.cls\.model\.name: unknown timm model 'resnet_nope'",
    ),
    "unknown smp arch": (
        put({"from": "smp", "arch": "Unett", "encoder": "resnet18", "classes": 3}, "teachers", "seg-a", "model"),
        r"^teachers\.seg-a\.model\.arch: unknown smp architecture 'Unett'",
    ),
    "bad constructor argument": (
        put(5, "teachers", "seg-a", "model", "width"),
        r"^teachers\.seg-a\.model: bad constructor arguments for python model: .*'width'",
    ),
    "unknown task": (put("normals", "teachers", "cls", "task"), r"^teachers\.cls\.task: unknown task 'normals'"),
    "duplicate teacher": (duplicate_teacher, r"duplicate key 'cls' at line \d+"),
    "labels not in eval set": (  # only some absent: scored on the others (test_taxonomy.py)
        put(["fox", "wolf"], "teachers", "cls", "labels"),
        r"^teachers\.cls\.eval: none of the teacher's 2 labels is in eval set 'items-val' \(its labels: fox, wolf; "
        r"the set's classes: bird, cat, dog\)$",
    ),
    "label entry of the wrong form": (
        put(["cat", {"dog": 3}], "teachers", "cls", "labels"),
        r"^teachers\.cls\.labels\.1: expected a name, \{name: unified_class\} or \{name: \[unified_class, \.\.\.\]\}",
    ),
    "two labels cover one class": (
        put(["cat", {"dog": ["cat", "dog"]}], "teachers", "cls", "labels"),
        r"^teachers\.cls\.labels: 'cat' is covered by both 'cat' and 'dog'$",
    ),
    "checkpoint of another architecture": (other_architecture, r"teacher 'seg-a'.*(missing|unexpected|shape)"),
    "truncated checkpoint": (truncated_checkpoint, r"cannot read checkpoint .*zoo/seg-a\.pt"),
    "missing checkpoint": (put("zoo/none.pt", "teachers", "cls", "checkpoint"), r"file not found: .*zoo/none\.pt"),
    "teacher returns the wrong shape": (wrong_shape_teacher, r"^teacher 'seg-a' \(segmentation\): expected"),
    "empty image folder": (empty_folder, r"^data\.sources\.scenes: contains no images"),
    "corrupt PNG": (corrupt_png, r"^data\.sources\.scenes: corrupt image .*00003\.png"),
    "depth PNG of the wrong dtype": (depth_as_uint8, r"^data\.eval\.scenes-val: .*depth map.*00000\.png"),
    "COCO JSON with unknown category": (
        coco_unknown_category,
        r"^data\.eval\.scenes-val: COCO annotation 7 in .*coco\.json has unknown category 9",
    ),
    "image_size not divisible by the stride": (
        put([48, 48], "data", "image_size"),
        r"^data\.image_size: \[48, 48\] must be divisible by the encoder's stride 32",
    ),
    "unknown source of a teacher": (put(["nope"], "teachers", "cls", "sources"), r"unknown source 'nope'"),
    "unknown eval set": (put("nope", "teachers", "cls", "eval"), r"^teachers\.cls\.eval: unknown eval set 'nope'"),
}


def write_recipe(raw: dict, path: Path) -> None:
    if raw.pop("__text__", None) == "duplicate":
        text = yaml.safe_dump(raw, sort_keys=False)
        block = re.search(r"^  cls:\n(?:    .*\n)+", text, re.M).group(0)
        text = text.replace(block, block + block, 1)
        path.write_text(text)
    else:
        path.write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.mark.parametrize("case", list(CASES))
def test_broken_input_gives_one_specific_line_and_no_run_folder(case, fresh_world, tmp_path, capsys):
    edit, pattern = CASES[case]
    root = fresh_world.parent
    raw = yaml.safe_load(fresh_world.read_text())
    edit(raw, root)
    write_recipe(raw, fresh_world)
    out = tmp_path / "run"
    torch.manual_seed(0)
    code = main(["build", str(fresh_world), "--output", str(out), "--set", "train.samples_per_epoch=8", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("amalgam: error: "), err
    message = lines[0][len("amalgam: error: ") :]
    assert re.search(pattern, message), message
    assert not out.exists()
