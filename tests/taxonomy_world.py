"""A tiny world of palette images and oracle teachers in VOC, COCO and coarse label names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

VOC = [{"tvmonitor": "tv"}, "person"]
COCO = ["tv", "person", "car", "bus"]
COARSE = [{"vehicle": ["car", "bus"]}]
CLASSES = ["background", "tv", "person", "car", "bus"]  # the palette's order: black, red, green, blue, yellow

MODELS = '''
import torch
import torch.nn.functional as F
from torch import nn

PALETTE = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=torch.float)


def palette_index(x):
    """The palette colour nearest each pixel: the true class of the tiny world."""
    return ((x.unsqueeze(1) - PALETTE.view(1, 5, 3, 1, 1)) ** 2).sum(2).argmin(1)


class PaletteTeacher(nn.Module):
    """An oracle in its own label space: palette class -> its label (``mapping``), confident logits."""

    def __init__(self, mapping, classes):
        super().__init__()
        self.register_buffer("lut", torch.tensor(mapping))
        self.classes = classes
        self.scale = nn.Parameter(torch.tensor(6.0))

    def forward(self, x):
        return self.scale * F.one_hot(self.lut[palette_index(x)], self.classes).permute(0, 3, 1, 2).float()


def teacher(mapping, classes):
    return PaletteTeacher(mapping, classes)
'''


def write_scenes(root: Path, count: int, seed: int) -> None:
    """Images of palette rectangles; labels are the palette index (one class per colour)."""
    rng = np.random.default_rng(seed)
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.uint8)
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for i in range(count):
        label = np.zeros((32, 32), dtype=np.uint8)
        for cls in range(1, 5):
            y, x = rng.integers(0, 24, 2)
            label[y : y + 8, x : x + 8] = cls
        Image.fromarray(palette[label]).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(label).save(root / "labels" / f"{i:03d}.png")


def teacher_block(labels: list, mapping: list[int]) -> dict:
    return {
        "task": "segmentation",
        "model": {"from": "python", "factory": "models:teacher", "mapping": mapping, "classes": len(labels) + 1},
        "input": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        "labels": ["background", *labels],
        "background": "background",
        "eval": "val",
    }


def taxonomy_world(root: Path, related: bool = True) -> Path:
    """Three oracle teachers in VOC, COCO and coarse names; ``related=False`` names only (no relations)."""
    (root / "models.py").write_text(MODELS)
    write_scenes(root / "train", 8, seed=0)
    write_scenes(root / "val", 4, seed=1)
    voc = VOC if related else ["tvmonitor", "person"]
    coarse = COARSE if related else ["vehicle"]
    recipe = {
        "name": "taxonomy",
        "device": "cpu",
        "data": {
            "image_size": [32, 32],
            "sources": {"train": {"type": "folder", "path": "train/images"}},
            "eval": {"val": {"type": "dense", "path": "val"}},
        },
        "teachers": {  # mapping: palette class -> the teacher's label index
            "voc": teacher_block(voc, [0, 1, 2, 0, 0]),
            "coco": teacher_block(COCO, [0, 1, 2, 3, 4]),
            "coarse": teacher_block(coarse, [0, 0, 0, 1, 1]),
        },
        "student": {"encoder": "tu-test_resnet"},
        "train": {"workers": 0},
    }
    if not related:  # by name alone the coarse teacher's vehicle is in no eval set (only coco is scored)
        del recipe["teachers"]["voc"]["eval"], recipe["teachers"]["coarse"]["eval"]
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return root / "recipe.yaml"
