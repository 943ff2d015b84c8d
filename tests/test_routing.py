"""Row routing: a task's branch runs only on its teachers' rows; the loss sees the same outputs there."""

from __future__ import annotations

import pytest
import torch

from amalgam.config.recipe import load_recipe
from amalgam.distill.plan import build_plan
from amalgam.students.build import StudentSpec, build_student, routed, scatter_rows
from amalgam.teachers.taps import FeatureTap
from amalgam.training.routing import Router, make_router, routing_line, takes_rows, task_sources
from amalgam.training.trainer import Trainer

QUIET = lambda msg: None  # noqa: E731
HEADS = {"classification": 10, "segmentation": 11, "depth": 1}
SMALL = ["train.epochs=1", "train.samples_per_epoch=8", "train.batch_size=4", "train.cache_teachers=false"]


def _student(kind: str, branch_at=3):
    torch.manual_seed(0)
    spec = StudentSpec(kind, "tu-test_efficientnet", branch_at, [8, 8, 8, 8, 8], HEADS)
    return build_student(spec).eval()


@pytest.mark.parametrize(
    "kind,branch_at",
    [("branched", 3), ("branched", {"classification": 5, "segmentation": 1, "depth": 2}), ("compact", 3)],
)
def test_routed_rows_get_the_outputs_of_the_full_forward_and_the_others_zeros(kind, branch_at):
    student = _student(kind, branch_at)
    images = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    rows = {
        "segmentation": torch.tensor([0, 3]),
        "depth": torch.tensor([0, 3]),
        "classification": torch.tensor([1, 2, 4]),
    }
    with torch.no_grad():
        full, part = student(images), student(images, rows=rows)
    for task, r in rows.items():
        assert part[task].shape == full[task].shape
        assert torch.allclose(part[task][r], full[task][r], atol=1e-5), task
        others = [i for i in range(5) if i not in r.tolist()]
        if kind == "branched" or task != "classification":  # compact: the pooled heads run on every row
            assert not part[task][others].any(), task


def test_rows_outside_a_task_give_its_branch_no_gradient_and_cost_nothing():
    student = _student("branched").train()
    images = torch.rand(4, 3, 64, 64)
    calls = []
    student.decoders["segmentation"].register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    out = student(images, rows={"segmentation": torch.tensor([1, 2])})
    assert calls == [2]  # the decoder ran on the routed rows only
    out["segmentation"][[0, 3]].sum().backward()  # a loss on the rows it skipped
    assert all(p.grad is None or not p.grad.any() for p in student.decoders["segmentation"].parameters())


def test_fewer_than_two_rows_or_all_rows_run_unrouted():
    assert routed({"a": torch.tensor([0])}, "a", 4) is None  # batch norm needs two rows
    assert routed({"a": torch.tensor([], dtype=torch.long)}, "a", 4) is None
    assert routed({"a": torch.arange(4)}, "a", 4) is None
    assert routed(None, "a", 4) is None and routed({}, "a", 4) is None
    assert routed({"a": torch.tensor([1, 2])}, "a", 4).tolist() == [1, 2]
    y = torch.ones(2, 3)
    assert scatter_rows(y, torch.tensor([2, 0]), 3).tolist() == [[1.0] * 3, [0.0] * 3, [1.0] * 3]


def test_the_router_routes_tasks_by_their_teachers_sources(world):
    plan = build_plan(load_recipe(world, SMALL), log=QUIET)
    names = plan.sources.names
    assert task_sources(plan) == {
        "classification": [names.index("items")],
        "segmentation": [names.index("scenes")],
        "depth": [names.index("scenes")],
    }
    router = Router(plan, torch.device("cpu"))
    source = torch.tensor([names.index("scenes"), names.index("items"), names.index("scenes")])
    rows = router.rows(source)
    assert rows["segmentation"].tolist() == [0, 2] and rows["depth"].tolist() == [0, 2]
    assert "classification" not in rows  # pooled tasks run on every row
    assert router.describe().startswith("row routing: segmentation on scenes; depth on scenes")


def test_routing_is_off_when_asked_or_when_the_feature_tap_lies_in_a_routed_part(world):
    plan = build_plan(load_recipe(world, SMALL), log=QUIET)
    lines = []
    branched = build_student(plan.student_spec())
    assert make_router(plan, branched, None, torch.device("cpu"), lines.append) is not None
    assert lines and lines[-1].startswith("row routing: ")
    trunk_tap = FeatureTap.on(branched, "trunk.2", "test")
    assert make_router(plan, branched, trunk_tap, torch.device("cpu"), lines.append) is not None
    compact = build_student(build_plan(load_recipe(world, SMALL + ["student.type=compact"]), log=QUIET).student_spec())
    decoder_tap = FeatureTap.on(compact, "decoder", "test")
    assert make_router(plan, compact, decoder_tap, torch.device("cpu"), lines.append) is None
    assert "off" in lines[-1] and "'decoder'" in lines[-1]
    off = build_plan(load_recipe(world, SMALL + ["train.route_rows=false"]), log=QUIET)
    assert make_router(off, branched, None, torch.device("cpu"), lines.append) is None


def test_a_routed_training_step_trains_every_task(world, tmp_path):
    plan = build_plan(load_recipe(world, SMALL), log=QUIET)
    trainer = Trainer(plan, build_student(plan.student_spec()), tmp_path, torch.device("cpu"), log=QUIET)
    assert trainer.router is not None
    batch = next(iter(trainer.loader))
    before = {n: p.detach().clone() for n, p in trainer.student.named_parameters()}
    trainer.student.train()
    loss, parts = trainer.step(batch)
    changed = {
        n.split(".")[1]
        for n, p in trainer.student.named_parameters()
        if n.startswith(("decoders.", "heads.")) and not torch.equal(before[n], p)
    }
    present = {plan.teachers[t].task.name for t in parts}
    assert present and present <= changed and torch.isfinite(torch.tensor(loss))


def test_a_tasks_own_encoder_stages_see_every_row_and_its_decoder_the_routed_ones():
    student = _student("branched", {"classification": 5, "segmentation": 2, "depth": 5}).train()
    seen = {}
    student.branches["segmentation"][0].register_forward_hook(lambda m, i, o: seen.update(stage=o.shape[0]))
    student.decoders["segmentation"].register_forward_hook(lambda m, i, o: seen.update(decoder=o.shape[0]))
    student(torch.rand(4, 3, 64, 64), rows={"segmentation": torch.tensor([0, 3])})
    assert seen == {"stage": 4, "decoder": 2}


def test_inspect_says_what_the_build_will_do(world):
    from amalgam.inspection import inspect_recipe

    plan = build_plan(load_recipe(world, SMALL), log=QUIET)
    branched = build_student(plan.student_spec())
    assert routing_line(plan, branched, None) == Router(plan, torch.device("cpu")).describe()
    compact = build_student(build_plan(load_recipe(world, SMALL + ["student.type=compact"]), log=QUIET).student_spec())
    off = routing_line(plan, compact, "decoder")
    assert off.startswith("row routing: off") and "'decoder'" in off
    assert not compact._forward_hooks and not compact.decoder._forward_hooks  # the probe's tap is gone
    shown = inspect_recipe(load_recipe(world, SMALL), log=QUIET)
    assert shown.routing == Router(plan, torch.device("cpu")).describe() and shown.routing in shown.summary()


def test_a_plugin_student_without_rows_trains_unrouted(world):
    from amalgam.students.build import CompactStudent

    class PlainForward(CompactStudent):
        def forward(self, images):
            return super().forward(images)

    plan = build_plan(load_recipe(world, SMALL), log=QUIET)
    student = PlainForward(build_plan(load_recipe(world, SMALL + ["student.type=compact"]), log=QUIET).student_spec())
    lines = []
    assert not takes_rows(student) and takes_rows(build_student(plan.student_spec()))
    assert make_router(plan, student, None, torch.device("cpu"), lines.append) is None
    assert lines == ["row routing: off, the student type 'branched' has no forward(images, rows=...)"]


def test_a_run_from_before_route_rows_resumes_only_with_it_pinned_off(world):
    from amalgam.config.schema import recipe_changes

    recipe = load_recipe(world, SMALL)
    stored = recipe.model_dump(mode="json")
    del stored["train"]["route_rows"]  # a checkpoint written before the key existed trained unrouted
    assert recipe_changes(stored, recipe) == ["train.route_rows"]
    assert recipe_changes(stored, load_recipe(world, SMALL + ["train.route_rows=false"])) == []
    assert recipe_changes(recipe.model_dump(mode="json"), recipe) == []
