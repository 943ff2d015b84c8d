"""Depth teachers read wrong, caught before training against the eval set's depth (trial F, S2).

The eval set's images encode its depth (grey level), so a teacher that reads depth off the image
is competent, and the wrong readings of one are made from it: a disparity left at the default
reading (metric) is upside down, a MiDaS-style relative inverse depth declared ``inverse`` is off
by an unknown scale and shift, and a depth in another unit is off by a scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from amalgam.config.recipe import load_recipe
from amalgam.distill.plan import build_plan
from amalgam.errors import RecipeError

MODELS = """
import torch
from torch import nn


class FromImage(nn.Module):
    '''Depth read off the grey level (1 + 5 * value metres), answered as ``mode`` says.'''

    def __init__(self, mode):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))
        self.mode = mode

    def forward(self, x):
        depth = (1.0 + 5.0 * x[:, :1]) * self.gain
        if self.mode == "disparity":
            return 16.0 / depth
        if self.mode == "relative":  # MiDaS-like: relative inverse depth, scale and shift unknown
            return 0.5 / depth + 0.0625
        if self.mode == "centimetres":
            return 100.0 * depth
        return depth


def from_image(mode="metric"):
    return FromImage(mode)
"""


def write_scenes(root: Path, count: int, seed: int) -> None:
    """32x32 scenes whose grey level is their depth: 1-6 m, a ramp with a random tilt per image."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "depth"):
        (root / sub).mkdir(parents=True)
    rows, cols = np.mgrid[0:32, 0:32] / 31.0
    for i in range(count):
        a, b = rng.uniform(0.2, 0.8, 2)
        value = np.clip(a * rows + b * cols + rng.uniform(-0.2, 0.2), 0.0, 1.0)
        grey = np.round(value * 255).astype(np.uint8)
        Image.fromarray(np.stack([grey] * 3, -1)).save(root / "images" / f"{i:03d}.png")
        depth_mm = np.round((1.0 + 5.0 * grey / 255.0) * 1000).astype(np.uint16)
        Image.fromarray(depth_mm).save(root / "depth" / f"{i:03d}.png")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("depth_world")
    (root / "models.py").write_text(MODELS)
    write_scenes(root / "train", 4, seed=0)
    write_scenes(root / "val", 6, seed=1)
    return root


def plan_of(root: Path, mode: str, **teacher):
    """The plan of one depth teacher answering as ``mode``, and the lines it logged."""
    recipe = {
        "name": f"depth-{mode}",
        "device": "cpu",
        "data": {
            "image_size": [32, 32],
            "sources": {"train": {"type": "folder", "path": "train/images"}},
            "eval": {"val": {"type": "dense", "path": "val"}},
        },
        "teachers": {
            "d": {
                "task": "depth",
                "model": {"from": "python", "factory": "models:from_image", "mode": mode},
                "input": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
                "eval": "val",
                **teacher,
            }
        },
        "student": {"encoder": "tu-test_resnet"},
        "train": {"workers": 0},
    }
    path = root / f"{mode}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    said: list[str] = []
    return build_plan(load_recipe(path), log=said.append), said


def warnings_in(said: list[str]) -> list[str]:
    return [line for line in said if line.startswith("warning:")]


def test_a_disparity_read_as_metres_stops_before_training_naming_the_reading(scenes):
    with pytest.raises(RecipeError) as info:
        plan_of(scenes, "disparity")
    message = str(info.value)
    assert message.startswith("teachers.d.output: teacher 'd' (read as metric) is upside down on its eval set")
    assert "it reads like disparity / inverse depth: set teachers.d.output: inverse" in message
    assert "\n" not in message
    plan_of(scenes, "disparity", output="inverse")  # declared so, it is depth the right way up


def test_a_relative_inverse_depth_declared_inverse_is_warned_about_before_training(scenes):
    _, said = plan_of(scenes, "relative", output="inverse")
    lines = warnings_in(said)
    assert len(lines) == 1 and "teacher d's depth looks like relative depth (an unknown scale and shift" in lines[0]
    assert "amalgam distils and scores it as metric depth (relative depth is not supported)" in lines[0]


def test_a_depth_in_another_unit_is_warned_about_before_training(scenes):
    _, said = plan_of(scenes, "centimetres")
    assert any("teacher d's depth is 100x its eval set's" in line for line in warnings_in(said)), said


def test_a_competent_depth_teacher_passes_the_check_and_the_log_says_the_rule(scenes):
    plan, said = plan_of(scenes, "metric")
    assert warnings_in(said) == []
    checked = [line for line in said if line.startswith("teacher 'd' reading (metric) checked against 'val'")]
    assert len(checked) == 1 and "log-depth r 1.000 with the truth, scale 1x" in checked[0], said
    assert "log-depth correlating under -0.3 with the truth stops the build" in checked[0]  # the rule, once
    note = plan.teachers["d"].output_note()  # the reading line (inspect, report.json): the numbers only
    assert "read as metric" in note and "checked against 'val' before training: 6 images" in note
    assert "stops the build" not in note
