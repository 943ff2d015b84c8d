"""Logit ensembles and feature ensembles inside the amalgamation objective (recipe keys)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml

from amalgam.cli import main
from amalgam.config.recipe import load_recipe
from amalgam.distill.objective import Objective, ensemble_groups
from amalgam.distill.plan import build_plan
from amalgam.errors import RecipeError
from amalgam.students.build import build_student
from amalgam.task import DistillOptions


def twin_world(world, tmp_path, **amalgamation):
    """The tiny world plus 'cls2': a second classifier with cls's labels, sources and checkpoint."""
    raw = yaml.safe_load(world.read_text())
    raw["teachers"]["cls2"] = dict(raw["teachers"]["cls"])
    raw["amalgamation"].update(amalgamation)
    path = world.parent / f"twin-{tmp_path.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def plan_of(path, *overrides):
    plan = build_plan(load_recipe(path, list(overrides)), with_data=False, log=lambda m: None)
    plan.source_ids = {"cls": [1], "cls2": [1], "seg-a": [0], "seg-b": [0], "depth": [0]}
    return plan


def test_identical_teachers_ensemble_to_the_same_target(world, tmp_path):
    plan = plan_of(twin_world(world, tmp_path, ensemble={"type": "entropy"}))
    assert ensemble_groups(plan) == [["cls", "cls2"]]
    objective = Objective(plan, student=None)
    assert set(objective.terms) == {"cls+cls2", "seg-a", "seg-b", "depth"}
    torch.manual_seed(0)
    out = {"classification": torch.randn(3, 2, requires_grad=True)}
    images = torch.rand(3, 3, 32, 32)
    _, parts = objective(out, images, torch.ones(3, dtype=torch.long))
    cls = plan.teachers["cls"]
    alone = cls.task.distill_loss(out["classification"], cls(images), DistillOptions(plan.projections["cls"], 2.0))
    assert parts["cls+cls2"] == pytest.approx(alone.item(), rel=1e-4)


def test_mean_of_two_teachers_by_hand(world, tmp_path):
    plan = plan_of(twin_world(world, tmp_path, ensemble={"type": "fixed", "weights": [3.0, 1.0]}))
    objective = Objective(plan, student=None)
    a, b = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    target = objective._ensemble("cls+cls2", [a, b], torch.tensor([0]))
    p = 0.75 * torch.softmax(a / 2, 1) + 0.25 * torch.softmax(b / 2, 1)
    torch.testing.assert_close(torch.softmax(target / 2, 1), p)
    # dense outputs: every pixel is ensembled on its own
    da, db = torch.randn(2, 2, 3, 4), torch.randn(2, 2, 3, 4)
    dense = objective._ensemble("cls+cls2", [da, db], torch.arange(2))
    dp = 0.75 * torch.softmax(da / 2, 1) + 0.25 * torch.softmax(db / 2, 1)
    torch.testing.assert_close(torch.softmax(dense / 2, 1), dp)


def test_learned_gate_reads_the_student_and_trains(world, tmp_path):
    plan = plan_of(twin_world(world, tmp_path, ensemble={"type": "gate"}), "student.branch_at=2")
    torch.manual_seed(0)
    twin = plan.teachers["cls2"]
    twin.model = copy.deepcopy(twin.model)  # twins of one checkpoint share one network (held once)
    with torch.no_grad():  # and give one target whatever the gate says
        for p in twin.model.parameters():
            p.add_(torch.randn_like(p))
    student = build_student(plan.student_spec())
    objective = Objective(plan, student)
    images = torch.rand(2, 3, 32, 32)
    total, parts = objective(student(images), images, torch.ones(2, dtype=torch.long))
    total.backward()
    assert objective.ensembles["cls+cls2"].gate.weight.grad.abs().sum() > 0


def test_ensemble_recipe_errors(world, tmp_path):
    with pytest.raises(RecipeError, match=r"amalgamation\.ensemble\.type: unknown logit ensemble 'median'"):
        load_recipe(twin_world(world, tmp_path, ensemble={"type": "median"}))
    with pytest.raises(RecipeError, match=r"amalgamation\.ensemble\.type: 'confidence' .*labels"):
        load_recipe(twin_world(world, tmp_path, ensemble={"type": "confidence"}))
    with pytest.raises(RecipeError, match=r"amalgamation\.taps: required when features is 'feed'"):
        load_recipe(twin_world(world, tmp_path, features="feed"))


@pytest.mark.parametrize("features", ["feed", "similarity"])
def test_builds_with_an_ensemble_and_feature_terms(world, tmp_path, features):
    recipe = twin_world(
        world, tmp_path, ensemble={"type": "mean"}, features=features, taps={"seg-a": "body", "cls2": "3"}
    )
    out = tmp_path / "run"
    args = ["build", str(recipe), "--output", str(out), "--quiet", "--set", "student.branch_at=2"]
    assert main(args + ["--set", "train.epochs=1", "--set", "train.samples_per_epoch=8"]) == 0
    header = (out / "train_log.csv").read_text().splitlines()[0].split(",")
    assert "cls+cls2" in header and "seg-a/features" in header
    report = json.loads((out / "report.json").read_text())
    assert {r["teacher"] for r in report["tasks"]} == {"cls", "cls2", "seg-a", "seg-b", "depth"}


def test_a_plugin_loss_that_is_not_a_scalar_is_one_line_naming_the_term():
    # a distill_loss left unreduced failed in torch ("Boolean value of Tensor ... is ambiguous")
    import pytest
    import torch

    from amalgam.distill.objective import _check_finite
    from amalgam.errors import AmalgamError

    with pytest.raises(AmalgamError, match=r"loss of teacher term 'edges' \(edges\) is \[4, 1\], not a scalar"):
        _check_finite(torch.zeros(4, 1), "edges", "edges")
    with pytest.raises(AmalgamError, match=r"is nan: training stopped"):
        _check_finite(torch.tensor(float("nan")), "edges", "edges")


def test_a_plugin_loss_that_is_no_tensor_or_has_no_gradient_is_one_line_naming_the_term():
    # a trial: a float was "float, not a scalar"; a loss on detached outputs trained nothing, silently
    import pytest
    import torch

    from amalgam.distill.objective import _check_finite
    from amalgam.errors import AmalgamError

    with pytest.raises(AmalgamError, match=r"'edges' \(edges\) is a float, not a tensor: the task's distill_loss"):
        _check_finite(0.5, "edges", "edges")
    student = torch.zeros(2, 3, requires_grad=True)
    with pytest.raises(AmalgamError, match=r"'edges' \(edges\) has no gradient to the student's output"):
        _check_finite((student.detach() - 1).abs().mean(), "edges", "edges", student)
    _check_finite((student - 1).abs().mean(), "edges", "edges", student)  # a loss with its graph passes
    _check_finite(student.new_zeros(()), "edges", "edges", student)  # an empty-batch guard's zero passes (review)
    with torch.no_grad():  # scoring a loss without a graph (no training): nothing to say
        _check_finite((student - 1).abs().mean(), "edges", "edges", student * 1)
