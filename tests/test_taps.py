"""Feature taps are owned by whoever makes them: the objective taps, the teacher cache is handed the taps."""

from __future__ import annotations

import gc

import torch

from amalgam.config.recipe import load_recipe
from amalgam.distill.cache import TeacherCache, open_cache, teacher_key
from amalgam.distill.objective import Objective
from amalgam.distill.plan import build_plan
from amalgam.distill.targets import live_targets
from amalgam.students.build import build_student
from amalgam.teachers.taps import FeatureTap

QUIET = lambda msg: None  # noqa: E731


def tapped_plan(world, *extra):
    recipe = load_recipe(world, ["amalgamation.features=adapters", "amalgamation.taps={seg-a: body}", *extra])
    return build_plan(recipe, log=QUIET)


def hooks_on(plan) -> int:
    return len(plan.teachers["seg-a"].model.get_submodule("body")._forward_hooks)


def test_a_tap_keeps_its_handle_and_detaches():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.ReLU())
    tap = FeatureTap.on(model, "0", "test")
    model(torch.rand(1, 3, 4, 4))
    assert tap.value.shape == (1, 4, 4, 4) and len(model[0]._forward_hooks) == 1
    tap.detach()
    assert len(model[0]._forward_hooks) == 0
    tap.value = None
    model(torch.rand(1, 3, 4, 4))
    assert tap.value is None


def test_the_objective_taps_without_changing_the_teachers_and_its_hooks_go_with_it(world):
    plan = tapped_plan(world)
    before = hooks_on(plan)
    objective = Objective(plan, build_student(plan.student_spec()))
    assert plan.teachers["seg-a"].tap is None  # nothing set on the teacher behind its back
    assert set(objective.teacher_taps) == {"seg-a"} and hooks_on(plan) == before + 1
    images = torch.rand(2, 3, *plan.recipe.data.image_size)
    out, feature = live_targets(plan.teachers, images, objective.teacher_taps)("seg-a", torch.arange(2))
    assert feature.shape[:2] == (2, 8) and out.shape[0] == 2  # the feature comes back from the call
    _, none = live_targets(plan.teachers, images)("seg-a", torch.arange(2))
    assert none is None  # without the objective's taps, no feature
    del objective
    gc.collect()
    assert hooks_on(plan) == before


def test_the_cache_stores_and_is_keyed_by_the_taps_it_is_given(world, tmp_path):
    plan = tapped_plan(world)
    assert teacher_key(plan, "seg-a")["tap"] is None
    objective = Objective(plan, build_student(plan.student_spec()))
    assert teacher_key(plan, "seg-a", objective.teacher_taps)["tap"] == "body"
    cache = open_cache(plan, tmp_path, objective.teacher_taps, QUIET)
    assert cache.stores["seg-a"].features is not None and cache.stores["seg-b"].features is None
    # the same folder opened without taps is another key: rebuilt, never read with missing features
    plain = TeacherCache(tmp_path / "teacher_cache", plan, QUIET)
    assert plain.stores["seg-a"].features is None


def test_a_tap_keeps_the_modules_output_not_what_later_in_place_ops_make_of_it():
    # a ResNet block's bn2 output is changed by out += identity and ReLU(inplace): the tap held the post-ReLU map
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(2).eval()
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            out = self.bn(x)
            out += x
            return self.relu(out)

    model = Block()
    tap = FeatureTap.on(model, "bn", "test")
    x = torch.randn(1, 2, 4, 4)
    model(x)
    assert torch.equal(tap.value, model.bn(x)) and tap.value.min() < 0


def test_a_teacher_left_on_another_device_is_tapped_there(world, monkeypatch):
    # branch_at: auto's search leaves the teachers on the GPU: the objective fed them a CPU image
    plan = tapped_plan(world)
    teacher = plan.teachers["seg-a"]
    teacher.model.to("meta")  # stands in for a GPU: another device than the objective's images
    seen = []
    monkeypatch.setattr(type(teacher), "answer", lambda self, images, tap=None: seen.append(images.device))
    try:
        Objective(plan, build_student(plan.student_spec()))
    except Exception:  # noqa: BLE001 - the stand-in answers nothing: only the device it was handed counts
        pass
    assert seen and seen[0].type == "meta"
