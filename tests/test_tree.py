"""Tree-shaped branched students: which modules each task shares, their cost, save/load/export."""

from __future__ import annotations

import pytest
import torch

from amalgam.config.recipe import load_recipe
from amalgam.errors import AmalgamError, RecipeError
from amalgam.evaluation.export import export
from amalgam.labels import LabelSpace
from amalgam.students.budget import measure_costs
from amalgam.students.build import StudentSpec, build_student, count_params, default_student_tap
from amalgam.students.serialize import load_student, save_student
from amalgam.students.tree import all_trees, branch_points, describe

HEADS = {"classification": 3, "segmentation": 4, "depth": 1}
TASKS = list(HEADS)


def tree(branch_at) -> StudentSpec:
    return StudentSpec("branched", "tu-test_resnet", branch_at, [16, 16, 8, 8, 8], dict(HEADS))


def stages_of(student, task: str) -> list:
    """The five encoder stage modules the task runs, in order."""
    return list(student.task_path(task).encoder)


def test_stages_are_shared_by_the_tasks_that_branch_at_or_after_them():
    torch.manual_seed(0)
    student = build_student(tree({"classification": 2, "segmentation": 4, "depth": 4}))
    cls, seg, depth = (stages_of(student, t) for t in TASKS)
    assert all(len(s) == 5 for s in (cls, seg, depth))
    for k in range(2):  # stages 1-2: all three
        assert cls[k] is seg[k] is depth[k]
    for k in (2, 3):  # stages 3-4: segmentation and depth, classification has its own
        assert seg[k] is depth[k] and cls[k] is not seg[k]
        assert all(p is not q for p, q in zip(cls[k].parameters(), seg[k].parameters()))
    assert seg[4] is not depth[4] and cls[4] is not seg[4]  # stage 5: each its own
    assert student.decoders["segmentation"] is not student.decoders["depth"]
    assert default_student_tap(student.spec) == "trunk.1"  # the last stage all tasks share


def test_tree_outputs_are_each_task_path_and_skips_come_from_its_own_stages():
    torch.manual_seed(0)
    student = build_student(tree({"classification": 4, "segmentation": 1, "depth": 4})).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = student(x)
        for task in TASKS:
            assert torch.allclose(out[task], student.task_path(task)(x), atol=1e-6), task
        # segmentation left the spine after stage 1: the spine's stage 3 (its skip at 1/8) is not its
        for p in student.trunk[2].parameters():
            p.add_(1.0)
        after = student(x)
    assert torch.equal(after["segmentation"], out["segmentation"])
    assert not torch.equal(after["depth"], out["depth"])


def test_a_number_builds_todays_student_and_a_lone_deepest_point_is_lowered():
    uniform = build_student(tree(3)).state_dict()
    assert uniform.keys() == build_student(tree(dict.fromkeys(TASKS, 3))).state_dict().keys()
    assert any(k.startswith("trunk.2.") for k in uniform) and not any(k.startswith("trunk.3.") for k in uniform)
    lone = tree({"classification": 2, "segmentation": 3, "depth": 5})
    assert branch_points(lone.branch_at, TASKS) == {"classification": 2, "segmentation": 3, "depth": 3}
    assert count_params(build_student(lone)) == count_params(build_student(tree({**lone.branch_at, "depth": 3})))
    assert any(
        "depth: branch_at 5 is built as 3: no other task runs stages 4-5" in line
        for line in describe(lone.branch_at, TASKS)
    )


def test_bad_mappings_name_the_tasks():
    with pytest.raises(
        AmalgamError, match=r"misses \['depth'\]; it needs one point per task: classification, segmentation, depth"
    ):
        branch_points({"classification": 1, "segmentation": 2}, TASKS)
    with pytest.raises(AmalgamError, match="unknown tasks"):
        branch_points({**dict.fromkeys(TASKS, 1), "pose": 2}, TASKS)


def test_costs_price_every_tree_exactly():
    costs = measure_costs(tree(5), (32, 32), repeats=1)
    trees = all_trees(TASKS)
    assert len(trees) == 51 and len({tuple(t.values()) for t in trees}) == 51
    for points in (trees[0], trees[7], trees[-1], {"classification": 1, "segmentation": 4, "depth": 4}):
        assert costs.params(points) == count_params(build_student(tree(points))), points
    assert costs.latency_ms({t: 5 for t in TASKS}) < costs.latency_ms({t: 0 for t in TASKS})


@pytest.fixture(scope="module")
def saved_tree(tmp_path_factory):
    torch.manual_seed(0)
    student = build_student(tree({"classification": 1, "segmentation": 3, "depth": 3})).train()
    with torch.no_grad():
        student(torch.rand(2, 3, 32, 32))  # BatchNorm statistics off their defaults
    spaces = {
        "classification": LabelSpace(("cat", "dog", "bird")),
        "segmentation": LabelSpace(("background", "disc", "square", "bar"), "background"),
        "depth": None,
    }
    run = tmp_path_factory.mktemp("tree_run")
    save_student(student.eval(), spaces, {"name": "t", "data": {"image_size": [32, 32]}}, run / "student.pt")
    return student, run


def test_tree_save_and_load_round_trip(saved_tree):
    student, run = saved_tree
    loaded, _ = load_student(run / "student.pt")
    assert loaded.spec.branch_at == {"classification": 1, "segmentation": 3, "depth": 3}
    shared = stages_of(loaded, "segmentation")
    assert shared[2] is stages_of(loaded, "depth")[2] and shared[2] is not stages_of(loaded, "classification")[2]
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a, b = student(x), loaded(x)
    assert all(torch.equal(a[k], b[k]) for k in HEADS)


@pytest.mark.parametrize("task", [None, "segmentation"])
def test_tree_exports_whole_and_per_task(saved_tree, task):
    _, run = saved_tree
    path, diff = export(run, "torchscript", task, log=lambda m: None)
    assert path.is_file() and diff is not None and diff < 1e-4
    module = torch.jit.load(str(path))
    with torch.no_grad():
        outputs = module(torch.rand(1, 3, 32, 32))
    assert len(outputs) == (1 if task else 3)


def test_recipe_takes_a_mapping_or_auto_and_checks_it(world):
    recipe = load_recipe(world, ["student.branch_at={classification: 1, segmentation: 4, depth: 4}"])
    assert recipe.student.branch_at == {"classification": 1, "segmentation": 4, "depth": 4}
    assert load_recipe(world, ["student.branch_at=auto"]).student.branch_at == "auto"
    assert load_recipe(world).student.budget.params == 0.5  # the documented default: half the teachers'
    with pytest.raises(RecipeError, match=r"^student.branch_at: the branch_at mapping misses \['depth'\]"):
        load_recipe(world, ["student.branch_at={classification: 1, segmentation: 4}"])
    with pytest.raises(RecipeError, match="student.branch_at: .*0-5"):
        load_recipe(world, ["student.branch_at={classification: 1, segmentation: 4, depth: 6}"])
    with pytest.raises(RecipeError, match="needs student.type: branched"):
        load_recipe(world, ["student.branch_at=auto", "student.type=compact"])
