"""Recipe faults of trial C: mapping overrides, ensemble groups and their weights and arguments,
taps on modules that never run, ``student.branch_at`` messages (docs: amalgam/config/ensembles.py)."""

from __future__ import annotations

import pytest
import torch
import yaml

import amalgam
from amalgam.config.recipe import apply_override, load_recipe
from amalgam.distill.objective import Objective, check_feature_taps, ensemble_groups, task_weighting
from amalgam.distill.plan import build_plan
from amalgam.errors import RecipeError
from amalgam.students.build import build_student
from amalgam.task import DistillOptions


def twin_world(world, tmp_path, cls2_labels=None, **amalgamation):
    """The tiny world plus 'cls2': cls's checkpoint and sources, its labels in the order given."""
    raw = yaml.safe_load(world.read_text())
    raw["teachers"]["cls2"] = dict(raw["teachers"]["cls"], labels=cls2_labels or ["cat", "dog"])
    raw["amalgamation"].update(amalgamation)
    path = world.parent / f"faults-{tmp_path.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def plan_and_log(path, *overrides):
    lines = []
    plan = build_plan(load_recipe(path, list(overrides)), with_data=False, log=lines.append)
    plan.source_ids = {"cls": [1], "cls2": [1], "seg-a": [0], "seg-b": [0], "depth": [0]}
    return plan, lines


# S4 ------------------------------------------------------------------------------------------


def test_a_mapping_override_merges_key_by_key_as_a_base_variant_does(world):
    original = load_recipe(world)
    for overrides in (["train={epochs: 5}"], {"train": {"epochs": 5}}):
        train = amalgam.load_recipe(world, overrides).train
        assert train.epochs == 5
        assert train.model_dump(exclude={"epochs"}) == original.train.model_dump(exclude={"epochs"})
    weights = load_recipe(world, ["amalgamation.task_weights={cls: 2.0}", "amalgamation={temperature: 4.0}"])
    assert weights.amalgamation.task_weights == {"cls": 2.0} and weights.amalgamation.temperature == 4.0
    # {} typed on a command line empties: no fixed weight given (every term 1), no eval set
    emptied = load_recipe(world, ["amalgamation.task_weights={cls: 2.0}", "amalgamation.task_weights={}"])
    assert emptied.amalgamation.task_weights == {}
    no_eval = load_recipe(world, ["data.eval={}"])  # the eval sets are gone, and with them every teacher's eval
    assert no_eval.data.eval == {} and all(t.eval is None for t in no_eval.teachers.values())


def test_a_mapping_override_naming_another_kind_replaces_its_arguments(world):
    raw = yaml.safe_load(world.read_text())
    apply_override(raw, "teachers.cls.model={from: tiny-zoo, classes: 2}")  # a python factory's keys would not fit
    assert raw["teachers"]["cls"]["model"] == {"from": "tiny-zoo", "classes": 2}
    apply_override(raw, "amalgamation.ensemble={type: fixed, weights: [1, 2]}")
    apply_override(raw, "amalgamation.ensemble={type: mean}")
    assert raw["amalgamation"]["ensemble"] == {"type": "mean"}
    apply_override(raw, "student.encoder_args={channels: [8, 8, 16, 16]}")
    apply_override(raw, "student.encoder_args={}")  # clears, as in a base variant
    assert raw["student"]["encoder_args"] == {}


# S5 ------------------------------------------------------------------------------------------


def test_teachers_with_one_label_set_in_another_order_merge_with_their_outputs_reordered(world, tmp_path):
    plan, log = plan_and_log(twin_world(world, tmp_path, ["dog", "cat"], ensemble={"type": "mean"}))
    assert ensemble_groups(plan) == [["cls", "cls2"]]
    assert "amalgamation.ensemble (mean): cls and cls2 merged into one term 'cls+cls2'; cls2 reordered" in "\n".join(
        log
    )
    objective = Objective(plan, student=None)
    torch.manual_seed(0)
    a = torch.randn(3, 2)
    out = {"classification": torch.randn(3, 2, requires_grad=True)}
    answers = {"cls": a, "cls2": a.flip(1)}  # the same beliefs, in cls2's label order
    targets = lambda name, idx: (answers[name][idx], None)  # noqa: E731
    _, parts = objective(out, torch.rand(3, 3, 32, 32), torch.ones(3, dtype=torch.long), targets)
    task = plan.teachers["cls"].task
    alone = task.distill_loss(out["classification"], a, DistillOptions(plan.projections["cls"], 2.0))
    assert parts["cls+cls2"] == pytest.approx(alone.item(), rel=1e-5)


def test_a_task_weight_given_through_any_teacher_of_a_group_applies_and_two_must_agree(world, tmp_path):
    path = twin_world(world, tmp_path, ensemble={"type": "mean"})
    plan, _ = plan_and_log(path, "amalgamation.task_weights={cls2: 5.0}")
    weights = task_weighting({"cls2": 5.0}, plan, {"cls+cls2": ["cls", "cls2"]}, None).weights()
    assert weights == {"cls+cls2": 5.0}
    with pytest.raises(
        RecipeError, match=r"^amalgamation\.task_weights\.cls2: .*one term 'cls\+cls2': give one weight"
    ):
        load_recipe(path, ["amalgamation.task_weights={cls: 1.0, cls2: 5.0}"])


def test_an_ensemble_with_nothing_to_merge_is_said(world):
    _, log = plan_and_log(world, "amalgamation.ensemble={type: fixed, weights: [1, 3]}")
    assert any(line.startswith("amalgamation.ensemble (fixed): nothing to merge") for line in log)


# C4 / U3 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ensemble, message",
    [
        (
            "{type: mean, weights: [1, 3]}",
            r"ensemble\.weights: 'mean' does not take 'weights' \(it takes no argument\)",
        ),
        ("{type: fixed, weights: [1, 3, 4]}", r"ensemble\.weights: expected 2 non-negative values, got \[1, 3, 4\]"),
        ("{type: fixed}", r"ensemble\.weights: required by 'fixed' \(its arguments: weights\)"),
    ],
)
def test_ensemble_arguments_are_checked_with_the_recipe_naming_key_and_group(world, tmp_path, ensemble, message):
    with pytest.raises(RecipeError, match=rf"^amalgamation\.{message} \(for the group cls\+cls2\)$"):
        load_recipe(twin_world(world, tmp_path), [f"amalgamation.ensemble={ensemble}"])


# C3 ------------------------------------------------------------------------------------------


def test_a_student_tap_on_a_container_says_it_never_runs_and_names_a_module_that_does(world):
    keys = ["amalgamation.features=adapters", "amalgamation.taps={seg-a: body}", "amalgamation.student_tap=decoders"]
    plan = build_plan(load_recipe(world, keys), with_data=False, log=lambda m: None)
    student = build_student(plan.student_spec())
    expected = (
        r"^amalgamation\.student_tap: module 'decoders' never runs in the forward \(a container\?\); 'decoders\.\w+"
    )
    with pytest.raises(RecipeError, match=expected):
        check_feature_taps(plan, student)  # what inspect runs
    with pytest.raises(RecipeError, match=expected):
        Objective(plan, student)


def test_a_teacher_tap_on_a_module_that_never_runs_is_named(world):
    plan = build_plan(
        load_recipe(world, ["amalgamation.features=adapters", "amalgamation.taps={seg-a: spare}"]),
        with_data=False,
        log=lambda m: None,
    )
    plan.teachers["seg-a"].model.spare = torch.nn.ModuleList([torch.nn.Conv2d(8, 8, 1)])  # held, never called
    with pytest.raises(RecipeError, match=r"^amalgamation\.taps\.seg-a: module 'spare' never runs .*neither does any"):
        check_feature_taps(plan, build_student(plan.student_spec()))


# U1 / K5 -------------------------------------------------------------------------------------


def test_a_null_branch_at_is_named_with_what_it_accepts(world):
    with pytest.raises(RecipeError) as err:
        load_recipe(world, ["student.branch_at=null"])
    assert str(err.value) == (
        "student.branch_at: expected the encoder stages shared: a number 0-5, a number per task"
        " ({task: 0-5}, a tree) or auto, got None"
    )


def test_a_branch_point_of_a_compact_student_is_said_to_be_unused(world):
    _, log = plan_and_log(world, "student.type=compact", "student.branch_at=5")
    assert "student.branch_at: 5 is not used by a compact student (it has no branches" in "\n".join(log)
    _, log = plan_and_log(world, "student.type=compact")  # the default: nothing set, nothing said
    assert not any(line.startswith("student.branch_at") for line in log)


@pytest.mark.parametrize(
    ("key", "value"),
    [("data.image_size", "96"), ("teachers.cls.input.size", "28"), ("teachers.cls.input.size", "[28]")],
)
def test_a_size_given_as_one_number_names_the_form_it_needs(world, key, value):
    # a trial's image_size: 96 read "Input should be a valid tuple, got 96"; [32] read "size.1: required key is missing"
    side = value.strip("[]")
    with pytest.raises(RecipeError, match=rf"^{key}: expected \[height, width\], two numbers: \[{side}, {side}\]"):
        load_recipe(world, [f"{key}={value}"])


def test_student_hypercolumn_names_dense_tasks_or_all_of_them(world):
    plan, _ = plan_and_log(world, "student.hypercolumn=true")
    assert plan.student_spec(3).hypercolumn == plan.dense_tasks == ["segmentation", "depth"]
    plan, _ = plan_and_log(world, "student.hypercolumn=[segmentation]")
    assert plan.student_spec(3).hypercolumn == ["segmentation"]
    from amalgam.students.budget import decoder_lines

    assert decoder_lines(plan.student_spec(3))[-1] == (
        "  hypercolumn (student.hypercolumn): the heads of segmentation also read the decoder's second block's map"
        " (1/8 of the input), upsampled"
    )
    assert plan_and_log(world)[0].student_spec(3).hypercolumn == []  # the default: as before
    # a compact student's one decoder widens every dense head: its spec says so (a review: it said segmentation)
    plan, _ = plan_and_log(world, "student.type=compact", "student.hypercolumn=[segmentation]")
    assert plan.student_spec(3).hypercolumn == ["segmentation", "depth"]
    plan, _ = plan_and_log(world, "student.hypercolumn=[classification]")
    with pytest.raises(RecipeError, match=r"^student.hypercolumn: classification: not a dense task of the recipe"):
        plan.student_spec(3)
