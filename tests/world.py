"""A tiny amalgamation world written to a temp dir: images, labels, teachers and a recipe.

Everything is random and small (32x32 images, tiny models), so building it takes a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

#: settings of the session build (and of anything compared with it)
TINY_BUILD = ["--set", "train.epochs=1", "--set", "train.samples_per_epoch=8", "--quiet"]
#: a Trainer's tiny schedule (tests that drive the Trainer itself)
SMALL_TRAIN = ["train.epochs=2", "train.samples_per_epoch=8", "train.batch_size=4", "train.cache_teachers=false"]

CLASSES = ["background", "disc", "square", "bar"]
ITEM_CLASSES = ["cat", "dog", "bird"]

FACTORY = """
import torch
from torch import nn


def tiny_cnn(num_classes, in_channels=3):
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, num_classes),
    )


class TinyDense(nn.Module):
    def __init__(self, out_channels, positive=False):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU()
        )
        self.head = nn.Conv2d(8, out_channels, 1)
        self.positive = positive

    def forward(self, x):
        y = self.head(self.body(x))
        return torch.nn.functional.softplus(y) + 0.5 if self.positive else y


def tiny_dense(out_channels, positive=False):
    return TinyDense(out_channels, positive)
"""


def write_dense(root: Path, count: int, size: int = 32, seed: int = 0) -> None:
    """A dense set: random RGB images, label maps over CLASSES, uint16 depth in mm."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "labels", "depth"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for i in range(count):
        img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        labels = rng.integers(0, len(CLASSES), (size, size), dtype=np.uint8)
        depth = rng.integers(500, 8000, (size, size)).astype(np.uint16)
        Image.fromarray(img).save(root / "images" / f"{i:05d}.png")
        Image.fromarray(labels).save(root / "labels" / f"{i:05d}.png")
        Image.fromarray(depth).save(root / "depth" / f"{i:05d}.png")


def write_imagefolder(root: Path, per_class: int, size: int = 28, seed: int = 1) -> None:
    """An ImageFolder classification set over ITEM_CLASSES (grey images)."""
    rng = np.random.default_rng(seed)
    for name in ITEM_CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(root / name / f"{i}.png")


def make_world(root: Path, steps_images: int = 16) -> Path:
    """Writes data, teachers (python factory, smp, TorchScript) and a recipe; returns the recipe path."""
    torch.manual_seed(0)
    (root / "models.py").write_text(FACTORY)
    import importlib.util

    spec = importlib.util.spec_from_file_location("world_models", root / "models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    write_dense(root / "scenes" / "train", 12)
    write_dense(root / "scenes" / "val", 6, seed=1)
    write_imagefolder(root / "items" / "train", 6)
    write_imagefolder(root / "items" / "val", 4, seed=2)
    zoo = root / "zoo"
    zoo.mkdir()
    torch.save(mod.tiny_cnn(2, 1).state_dict(), zoo / "cls.pt")
    torch.save(mod.tiny_dense(3).state_dict(), zoo / "seg-a.pt")
    torch.save({"state_dict": mod.tiny_dense(2).state_dict()}, zoo / "seg-b.pt")
    depth = mod.tiny_dense(1, positive=True).eval()
    torch.jit.trace(depth, torch.rand(1, 3, 32, 32)).save(str(zoo / "depth.ts"))
    recipe = {
        "name": "tiny",
        "seed": 0,
        "output": "runs/tiny",
        "device": "cpu",
        "data": {
            "image_size": [32, 32],
            "sources": {
                "scenes": {"type": "folder", "path": "scenes/train/images", "weight": 1.0},
                "items": {"type": "imagefolder", "path": "items/train", "weight": 0.5},
            },
            "eval": {
                "scenes-val": {"type": "dense", "path": "scenes/val"},
                "items-val": {"type": "imagefolder", "path": "items/val"},
            },
        },
        "teachers": {
            "cls": {
                "task": "classification",
                "model": {"from": "python", "factory": "models:tiny_cnn", "num_classes": 2, "in_channels": 1},
                "checkpoint": "zoo/cls.pt",
                "input": {"size": [28, 28], "channels": 1, "mean": [0.5], "std": [0.25]},
                "labels": ["cat", "dog"],
                "sources": ["items"],
                "eval": "items-val",
            },
            "seg-a": {
                "task": "segmentation",
                "model": {"from": "python", "factory": "models:tiny_dense", "out_channels": 3},
                "checkpoint": "zoo/seg-a.pt",
                "labels": ["background", "disc", "square"],
                "background": "background",
                "sources": ["scenes"],
                "eval": "scenes-val",
            },
            "seg-b": {
                "task": "segmentation",
                "model": {"from": "python", "factory": "models:tiny_dense", "out_channels": 2},
                "checkpoint": "zoo/seg-b.pt",
                "labels": ["other", "bar"],
                "background": "other",
                "sources": ["scenes"],
                "eval": "scenes-val",
            },
            "depth": {
                "task": "depth",
                "model": {"from": "torchscript", "path": "zoo/depth.ts"},
                "sources": ["scenes"],
                "eval": "scenes-val",
            },
        },
        # timm's 0.4M-parameter test ResNet: a resnet18 student made each build write a 390 MB checkpoint
        "student": {
            "type": "branched",
            "encoder": "tu-test_resnet",
            "branch_at": 3,
            "decoder_channels": [16, 16, 8, 8, 8],
        },
        "amalgamation": {"temperature": 2.0, "features": "none", "task_weights": "uncertainty"},
        "train": {"epochs": 2, "batch_size": 4, "lr": 1e-3, "workers": 0, "samples_per_epoch": steps_images},
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def trainer_for(recipe: Path, run_dir: Path, overrides=(), log=lambda message: None):
    """A CPU Trainer of ``recipe`` on :data:`SMALL_TRAIN` (plus ``overrides``), writing to ``run_dir``."""
    from amalgam.config.recipe import load_recipe
    from amalgam.distill.plan import build_plan
    from amalgam.students.build import build_student
    from amalgam.training.trainer import Trainer

    plan = build_plan(load_recipe(recipe, [*SMALL_TRAIN, *overrides]), log=lambda message: None)
    return Trainer(plan, build_student(plan.student_spec()), run_dir, torch.device("cpu"), log=log)
