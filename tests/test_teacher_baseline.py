"""The teacher baseline of the report is the plain model the user owns, not the recipe's wrap of it."""

from __future__ import annotations

import torch

from amalgam.config.recipe import load_recipe
from amalgam.distill.plan import build_plan
from amalgam.evaluation.evaluate import evaluate
from amalgam.evaluation.report import to_markdown
from amalgam.students.serialize import load_student

NOISY = ["teachers.seg-a.wrap={type: noise, sigma: 3.0, alpha: 1.0}"]


def _rows(recipe_path, built_run, overrides):
    plan = build_plan(load_recipe(recipe_path, overrides), log=lambda m: None)
    student, spaces = load_student(built_run / "student.pt")
    result = evaluate(plan, student, torch.device("cpu"), spaces=spaces, log=lambda m: None)
    return {r.teacher: r.row() for r in result.tasks}


def test_a_wrapped_teacher_is_scored_as_its_plain_model(world, built_run):
    torch.manual_seed(0)
    plain, noisy = _rows(world, built_run, []), _rows(world, built_run, NOISY)
    # a noise wrap this strong changes the teacher's answers (so a wrapped baseline would differ) ...
    plan = build_plan(load_recipe(world, NOISY), log=lambda m: None)
    teacher = plan.teachers["seg-a"]
    x = torch.rand(2, 3, 32, 32)
    assert not torch.allclose(teacher.answer(x)[0], teacher.answer(x, wrapped=False)[0])
    # ... but the report scores the plain model, and says the wrap shaped the targets only
    assert noisy["seg-a"]["teacher_metrics"] == plain["seg-a"]["teacher_metrics"]
    assert noisy["seg-a"]["teacher_wrap"] == "noise" and plain["seg-a"]["teacher_wrap"] is None
    md = to_markdown(
        {
            "name": "t",
            "tasks": list(noisy.values()),
            "unified": [],
            "student": {"params": 1, "latency_ms": {"b1": 1, "b32": 1}},
            "teachers": {"params": 1, "latency_ms": {"b1": 1, "b32": 1}},
            "train": {"epochs": 1, "seconds": 1.0, "images_per_second": 1.0},
        }
    )
    assert "the wraps of seg-a (noise) shaped the training targets only" in md
