"""The flip of training (train.augment) leaves alone the sources whose teachers' labels change under a mirror."""

from __future__ import annotations

import pytest
import torch
import yaml

from amalgam.config.recipe import load_recipe
from amalgam.config.schema import TrainConfig
from amalgam.distill.plan import build_plan
from amalgam.errors import RecipeError
from amalgam.training.augment import BatchAugment

MODELS = """
import torch
from torch import nn


class LeftRight(nn.Module):  # 'left' where the image's left half is the brighter: a mirror swaps every answer
    def forward(self, x):
        w = x.shape[-1] // 2
        d = x[..., :w].mean((1, 2, 3)) - x[..., w:].mean((1, 2, 3))
        return torch.stack([d, -d], 1) * 100


class Sides(nn.Module):  # per pixel: 'left' on the image's left half, 'right' on its right half (left and right arms)
    def forward(self, x):
        b, _, h, w = x.shape
        left = (torch.arange(w, device=x.device) < w // 2).float().expand(b, 1, h, w)
        return torch.cat([left, 1 - left], 1) * 10


class Colours(nn.Module):  # the mean of each channel: the same answer for an image and its mirror
    def forward(self, x):
        return x.mean((2, 3))


def left_right():
    return LeftRight()


def sides():
    return Sides()


def colours():
    return Colours()
"""


def mirror_world(recipe_path, teachers: dict, sources: dict | None = None):
    """The tiny world's recipe with only ``teachers`` (param-free, on ``mirror_models.py``) and no eval sets."""
    (recipe_path.parent / "mirror_models.py").write_text(MODELS)
    raw = yaml.safe_load(recipe_path.read_text())
    raw["teachers"] = teachers
    raw["data"]["eval"] = {}
    for name, extra in (sources or {}).items():
        raw["data"]["sources"][name].update(extra)
    recipe_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return recipe_path


def teacher(factory: str, source: str, labels: list[str], task: str = "classification") -> dict:
    return {
        "task": task,
        "model": {"from": "python", "factory": f"mirror_models:{factory}"},
        "labels": labels,
        "sources": [source],
    }


def test_a_classifier_whose_answers_a_mirror_swaps_leaves_its_source_unflipped(fresh_world):
    # a trial's digits classifiers answered otherwise on 33% and 66% of mirrored images, and the flip taught the
    # student their unmirrored labels (a mirrored 2 as a 2): top-1 0.936 / 0.966 against 0.947 / 0.987 unflipped
    recipe = mirror_world(
        fresh_world,
        {
            "lr": teacher("left_right", "items", ["left", "right"]),
            "colours": teacher("colours", "scenes", ["red", "green", "blue"]),
        },
    )
    said: list[str] = []
    plan = build_plan(load_recipe(recipe), log=said.append)
    assert list(plan.unflipped) == ["items"]  # the colours teacher answers a mirror as the image: scenes flip
    (line,) = [s for s in said if "not flipped" in s]
    assert line.startswith(
        "train.augment: source 'items' is not flipped: teacher 'lr' names mirrored images of source 'items'"
        " otherwise: left kept on 0% (as right on 100%), right kept on 0% (as left on 100%)"
    )
    assert "data.sources.items.flip: true flips it all the same" in line
    assert any("source 'items' trained unflipped" in note for note in plan.teachers["lr"].notes)


def test_a_segmenter_of_left_and_right_labels_leaves_its_source_unflipped(fresh_world):
    sides = teacher("sides", "scenes", ["left", "right"], "segmentation")
    recipe = mirror_world(fresh_world, {"sides": sides, "colours": teacher("colours", "items", ["r", "g", "b"])})
    plan = build_plan(load_recipe(recipe), log=lambda s: None)
    assert plan.unflipped["scenes"].startswith(
        "teacher 'sides' names mirrored images of source 'scenes' otherwise: left kept on 0% (as right on 100%)"
    )


def test_flip_set_in_the_recipe_decides_without_the_check(fresh_world):
    recipe = mirror_world(
        fresh_world,
        {
            "lr": teacher("left_right", "items", ["left", "right"]),
            "colours": teacher("colours", "scenes", ["red", "green", "blue"]),
        },
        {"items": {"flip": True}, "scenes": {"flip": False}},
    )
    plan = build_plan(load_recipe(recipe), log=lambda s: None)
    assert plan.unflipped == {"scenes": "data.sources.scenes.flip: false"}
    auto = ["data.sources.items.flip=auto", "data.sources.scenes.flip=auto"]
    no_augment = build_plan(load_recipe(recipe, ["train.augment=false", *auto]), log=lambda s: None)
    assert no_augment.unflipped == {}


@pytest.mark.parametrize(
    ("overrides", "key", "why"),
    [
        (["data.eval.scenes-val.flip=false"], "data.eval.scenes-val.flip", "eval sets are never flipped"),
        (["train.augment=false", "data.sources.items.flip=true"], "data.sources.items.flip", "train.augment is false"),
    ],
)
def test_flip_where_nothing_is_flipped_is_refused(world, overrides, key, why):
    with pytest.raises(RecipeError, match=rf"^{key}: {why}"):
        load_recipe(world, overrides)


def test_the_unflipped_sources_rows_are_never_flipped_and_the_others_flip_as_before():
    cfg = TrainConfig(epochs=1, batch_size=64, lr=1e-3)
    raw = torch.rand(64, 3, 4, 4)
    source = torch.arange(64) % 2
    plain = BatchAugment(cfg, ["a", "b"], 0, slice(0, 64))(raw, source)
    kept = BatchAugment(cfg, ["a", "b"], 0, slice(0, 64), unflipped=["b"])(raw, source)
    assert plain.flip[source == 1].any() and not kept.flip[source == 1].any()
    assert torch.equal(kept.flip[source == 0], plain.flip[source == 0])  # the same draws: a resume flips alike
    assert torch.equal(kept.images[source == 1], raw[source == 1])


def test_the_trainer_leaves_the_plans_unflipped_sources_alone(fresh_world, tmp_path):
    from world import trainer_for

    lr, colours = teacher("left_right", "items", ["left", "right"]), teacher("colours", "scenes", ["r", "g", "b"])
    recipe = mirror_world(fresh_world, {"lr": lr, "colours": colours})
    trainer = trainer_for(recipe, tmp_path / "run")
    items = trainer.plan.sources.names.index("items")
    assert trainer.augment.unflipped.tolist() == [items]
