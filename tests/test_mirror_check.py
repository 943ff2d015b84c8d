"""The flip of training (train.augment) leaves alone the sources whose teachers' labels change under a mirror."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from amalgam.config.recipe import load_recipe
from amalgam.config.schema import TrainConfig
from amalgam.distill.mirror_check import changed_labels, unflipped_sources
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


class Sides(nn.Module):  # per pixel: 'left' on the image's left quarter, 'right' on its right one (arms)
    def forward(self, x):
        b, _, h, w = x.shape
        column = torch.arange(w, device=x.device)
        left = (column < w // 4).float().expand(b, 1, h, w)
        right = (column >= w - w // 4).float().expand(b, 1, h, w)
        return torch.cat([1 - left - right, left, right], 1) * 10


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
    assert plan.unflipped == {} and not said[-1].startswith("train.augment")  # evaluation never decides it
    unflipped = unflipped_sources(plan, log=said.append)
    assert list(unflipped) == ["items"]  # the colours teacher answers a mirror as the image: scenes flip
    (line,) = [s for s in said if "not flipped" in s]
    assert line.startswith(
        "train.augment: source 'items' is not flipped: teacher 'lr' names mirrored images of source 'items'"
        " otherwise: left kept on 0% (as right on 100%), right kept on 0% (as left on 100%)"
    )
    assert "data.sources.items.flip: true flips it all the same" in line


def test_a_segmenter_of_left_and_right_labels_leaves_its_source_unflipped(fresh_world):
    sides = teacher("sides", "scenes", ["background", "left", "right"], "segmentation")
    recipe = mirror_world(fresh_world, {"sides": sides, "colours": teacher("colours", "items", ["r", "g", "b"])})
    plan = build_plan(load_recipe(recipe), log=lambda s: None)
    assert unflipped_sources(plan, lambda s: None)["scenes"].startswith(
        "teacher 'sides' names mirrored images of source 'scenes' otherwise: left kept on 0% (as right on 100%),"
        " right kept on 0% (as left on 100%)"
    )


def test_a_dense_teachers_background_taken_by_the_check_is_named_unless_declared(fresh_world):
    # the check leaves a dense teacher's background out; one it takes (the most answered label) is a guess,
    # so the log names it
    from amalgam.distill.mirror_check import mirror_finding

    sides = teacher("sides", "scenes", ["middle", "left", "right"], "segmentation")
    recipe = mirror_world(fresh_world, {"sides": sides, "colours": teacher("colours", "items", ["r", "g", "b"])})
    plan = build_plan(load_recipe(recipe), log=lambda s: None)
    scenes = plan.sources.sets[plan.sources.names.index("scenes")]
    guessed = mirror_finding(plan.teachers["sides"], "scenes", scenes, plan.student_view)
    assert guessed.background == "middle"
    assert "; 'middle', answered most, left out as its background (it declares none)" in guessed.line()
    declared = build_plan(load_recipe(recipe, ["teachers.sides.background=middle"]), log=lambda s: None)
    finding = mirror_finding(declared.teachers["sides"], "scenes", scenes, declared.student_view)
    assert finding.background is None and "answered most" not in finding.line()
    assert [c[0] for c in finding.changed] == [c[0] for c in guessed.changed] == ["left", "right"]


def test_a_labelled_teacher_the_check_cannot_read_is_said_with_the_mirror_it_is_taught_through(fresh_world):
    # a trial: a multi-label teacher's 'left_heavier' attribute was learnt on 0.61 of images flipped against
    # 0.82 unflipped: the cache mirrored its answers by the default hook (unchanged), and nothing said so
    from amalgam.distill.mirror_check import unchecked_lines
    from amalgam.task import Task

    class Attributes(Task):
        name, dense, labelled, exclusive_labels = "attributes", False, True, False

    recipe = mirror_world(
        fresh_world,
        {"lr": teacher("left_right", "items", ["left", "right"]), "c": teacher("colours", "scenes", ["r", "g", "b"])},
    )
    plan = build_plan(load_recipe(recipe), log=lambda s: None)
    assert unchecked_lines(plan) == []
    plan.teachers["c"].task = Attributes()
    (line,) = unchecked_lines(plan)
    assert line.startswith("teacher 'c' is not checked (task attributes has no exclusive labels): on mirrored images")
    assert "of scenes the student learns its cached answers through the task's mirror (the default: unchanged)" in line
    said: list[str] = []
    unflipped_sources(plan, said.append)
    assert f"mirror check: {line}" in said
    live = build_plan(load_recipe(recipe, ["train.cache_teachers=false"]), log=lambda s: None)
    live.teachers["c"].task = Attributes()
    assert unchecked_lines(live) == []  # live, the teacher answers each mirrored image itself


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
    assert unflipped_sources(plan, lambda s: None) == {"scenes": "data.sources.scenes.flip: false"}
    auto = ["data.sources.items.flip=auto", "data.sources.scenes.flip=auto"]
    no_augment = build_plan(load_recipe(recipe, ["train.augment=false", *auto]), log=lambda s: None)
    assert unflipped_sources(no_augment, lambda s: None) == {}


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


def test_noisy_labels_and_a_thin_class_losing_its_edges_are_no_mirror_finding():
    # a review: one of three images of a rare class of a 100-class classifier (95% kept overall) turned the flip
    # off, and so did a 4-px pole that a stride-4 segmenter kept on 46% of its pixels (the rest background)
    names = ["background", "pole", "left", "right"]
    rare = torch.zeros(4, 4, dtype=torch.long)
    rare[1, 1], rare[1, 2], rare[1, 3] = 1, 1, 1
    assert changed_labels(rare, names, dense=False) == ([], 0)  # three answers: not judged
    thin = torch.tensor([[9000, 50, 0, 0], [540, 460, 0, 0], [0, 0, 900, 100], [0, 0, 100, 900]])
    assert changed_labels(thin, names, dense=True) == ([], 3)  # the pole's answers go to the background
    swapped = torch.tensor([[9000, 0, 0, 0], [0, 800, 0, 0], [0, 0, 50, 950], [0, 0, 900, 100]])
    changed, judged = changed_labels(swapped, names, dense=True)
    assert judged == 3 and [c[:3] for c in changed] == [("left", 0.05, "right"), ("right", 0.1, "left")]
    scattered = torch.tensor([[10, 0, 0, 0], [4, 3, 3, 0], [0, 0, 10, 0], [0, 0, 0, 10]])  # 30% kept, no one label
    assert changed_labels(scattered, names, dense=False) == ([], 4)


def test_a_swap_is_found_whatever_the_background_takes_and_whichever_label_is_answered_most():
    # a second review: edge pixels lost to the background hid a swap (47% moved); a swapped label answered most was
    # taken for the background; a 2-label dense teacher could never be judged
    names = ["background", "left", "right"]
    edges = torch.tensor([[100000, 0, 0], [300, 100, 350], [300, 350, 100]])
    assert [c[0] for c in changed_labels(edges, names, dense=True, background=0)[0]] == ["left", "right"]
    assert [c[0] for c in changed_labels(edges, names, dense=True)[0]] == ["left", "right"]  # the most answered
    close_up = torch.tensor([[2000, 0, 0], [0, 0, 5000], [0, 3000, 0]])  # 'left' answered most, and swapped
    assert [c[0] for c in changed_labels(close_up, names, dense=True)[0]] == ["left", "right"]
    two = torch.tensor([[0, 5000], [4000, 0]])
    assert changed_labels(two, ["left", "right"], dense=True) == (
        [("left", 0.0, "right", 1.0), ("right", 0.0, "left", 1.0)],
        2,
    )


def test_a_classifier_of_many_labels_is_asked_enough_images_and_says_what_it_judged(fresh_world):
    # a second review: 26 letters had about 6 of 160 images each, none judged (8 needed), and nothing was said
    from amalgam.distill.mirror_check import MIRROR_CHECK_IMAGES, MIRROR_MIN_ANSWERS, mirror_finding

    letters = [chr(ord("a") + i) for i in range(26)]
    recipe = mirror_world(
        fresh_world,
        {"lr": teacher("left_right", "items", ["left", "right"]), "c": teacher("colours", "scenes", ["r", "g", "b"])},
    )
    plan = build_plan(load_recipe(recipe), log=lambda s: None)
    items = plan.sources.sets[plan.sources.names.index("items")]
    t = plan.teachers["lr"]
    t.space = type(t.space)(tuple(letters))  # 26 labels (it answers two of them)
    assert MIRROR_CHECK_IMAGES[False][0] < MIRROR_MIN_ANSWERS[False] * 26 <= MIRROR_CHECK_IMAGES[False][1]
    finding = mirror_finding(t, "items", items, plan.student_view)
    assert finding.images == min(len(items), MIRROR_MIN_ANSWERS[False] * 26) and finding.labels == 26
    said: list[str] = []
    unflipped_sources(build_plan(load_recipe(recipe), log=lambda s: None), said.append)
    kept = "mirror check: teacher 'c' keeps its labels on mirrored images of source 'scenes' ("
    assert any(line.startswith(kept) and " of 3 labels judged" in line for line in said)


def test_a_build_decides_once_keeps_the_decision_for_resume_and_reports_it(fresh_world, tmp_path):
    from world import TINY_BUILD

    from amalgam.cli import main

    lr, colours = teacher("left_right", "items", ["left", "right"]), teacher("colours", "scenes", ["r", "g", "b"])
    recipe = mirror_world(fresh_world, {"lr": lr, "colours": colours})
    out = tmp_path / "run"
    assert main(["build", str(recipe), "--output", str(out), *TINY_BUILD]) == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["train"]["unflipped"]) == ["items"]
    assert list(torch.load(out / "checkpoint.pt", weights_only=False)["unflipped"]) == ["items"]


def test_a_resume_keeps_its_checkpoints_flips_and_one_from_before_the_check_flips_everything(world, world_plan):
    # a review: a run begun flipped, resumed with the check, trained its rest unflipped without a word
    from amalgam.pipeline import run_flips
    from amalgam.training.distributed import DistContext

    said: list[str] = []
    assert run_flips(world_plan, {"unflipped": {"items": "why"}}, DistContext(), said.append) == {"items": "why"}
    assert said == [
        "train.augment: source 'items' is not flipped: why; a mirror changes what some labels mean"
        " (digits, text, left/right classes): data.sources.items.flip: true flips it all the same"
    ]
    said.clear()
    assert run_flips(world_plan, {}, DistContext(), said.append) == {}
    assert said == [
        "resume: the checkpoint keeps no mirror check: the flip goes on as the run began, on every source the recipe"
        " does not set flip: false"
    ]
    # a second review: the recipe's own flip: false was dropped from such a resume
    plan = build_plan(load_recipe(world, ["data.sources.items.flip=false"]), log=lambda s: None)
    assert run_flips(plan, {}, DistContext(), lambda s: None) == {"items": "data.sources.items.flip: false"}


def test_flip_averaging_on_a_teacher_of_left_and_right_labels_stops(fresh_world, monkeypatch):
    # a trial: wrap: {type: multi_transform, flip: true} on a left/right teacher taught 0.5 / 0.5 where it answered
    # 1 / 0, with augmentation off for that source and nothing said of the wrap
    sides = teacher("sides", "scenes", ["background", "left", "right"], "segmentation")
    sides["wrap"] = {"type": "multi_transform", "flip": True}
    colours = teacher("colours", "items", ["r", "g", "b"])
    colours["wrap"] = {"type": "multi_transform", "flip": True}  # a mirror changes nothing: its flip is fine
    recipe = mirror_world(fresh_world, {"sides": sides, "colours": colours})
    with pytest.raises(RecipeError, match=r"^teachers.sides.wrap: flip averaging would average .* teacher 'sides'"
                       r" names mirrored images of source 'scenes' otherwise: left kept on 0%"):  # fmt: skip
        build_plan(load_recipe(recipe), log=lambda s: None)
    sides["wrap"]["flip"] = False
    recipe = mirror_world(fresh_world, {"sides": sides, "colours": colours})
    import amalgam.distill.mirror_check as mirror_check

    seen, plain = [], mirror_check.mirror_finding
    monkeypatch.setattr(mirror_check, "mirror_finding", lambda t, *a: seen.append(t.name) or plain(t, *a))
    plan = build_plan(load_recipe(recipe), log=lambda s: None)  # the wrap check reads colours on items
    unflipped_sources(plan, lambda s: None)  # the flip's check reads it again: made once
    assert sorted(seen) == ["colours", "sides"]


def test_a_teacher_the_check_could_not_judge_leaves_its_source_unflipped(fresh_world):
    # a review: a source of 5 images gave no label the 8 answers it needs, and the source was flipped, said as
    # 'keeps its labels (0 of 2 labels judged)': a guess on no evidence
    recipe = mirror_world(
        fresh_world,
        {"c": teacher("colours", "items", ["r", "g", "b"]), "s": teacher("colours", "scenes", ["r", "g", "b"])},
        sources={"items": {"limit": 5}},
    )
    said: list[str] = []
    unflipped = unflipped_sources(build_plan(load_recipe(recipe), log=lambda s: None), said.append)
    assert list(unflipped) == ["items"]  # scenes, judged, flip
    assert unflipped["items"] == (
        "teacher 'c' could not be judged on mirrored images of source 'items': its 5 images gave no label the 8"
        " answers it needs (0 of 3 labels judged, 5 images)"
    )
    (line,) = [s for s in said if "not flipped" in s]
    assert "data.sources.items.flip: true flips it all the same" in line
    assert not any("'c' keeps its labels" in s for s in said)


def test_one_label_beside_a_background_and_answers_spread_over_many_labels_flip_as_before():
    # a review: a segmenter of background + one class could never be judged (the class can move to no other label
    # than the background, which is left out), so person or lesion masks lost the flip; an ImageNet classifier on
    # 400 images of a large source judged none of its 1,000 labels and lost it too
    from amalgam.distill.mirror_check import MirrorFinding

    binary = MirrorFinding("seg", "s", [], 0, 2, 16, dense=True, judgeable=0, few=False)
    assert not binary.unjudged and not binary.keeps_flip_out
    assert binary.line() == (
        "teacher 'seg' keeps its labels on mirrored images of source 's' (one label beside its background: nothing"
        " to swap; 16 images)"
    )
    spread = MirrorFinding("cls", "s", [], 0, 1000, 400, judgeable=1000, few=False)
    assert spread.unjudged and not spread.keeps_flip_out  # flipped, said as not judged
    assert "its answers spread over its labels, none answered 8 times (0 of 1000 labels judged, 400 images);" in (
        spread.line()
    )
    assert spread.line().endswith("it holds no flip back: data.sources.s.flip: false if a mirror"
                                  " changes what its labels mean")  # fmt: skip
    small = MirrorFinding("cls", "s", [], 0, 3, 5, judgeable=3, few=True)
    assert small.keeps_flip_out
