"""The one documented form of Task.distill_loss: a plugin written from docs/plugins.md works with
every amalgamation option on, and says in the log which options it leaves unused."""

from __future__ import annotations

import pytest
import torch
from amalgam_tasks.classification import ClassificationTask

import amalgam
from amalgam.config.recipe import load_recipe
from amalgam.distill.objective import Objective
from amalgam.distill.plan import build_plan
from amalgam.labels import partial_label_kl
from amalgam.task import TASKS, DistillOptions, distill


class DocsFormTask(ClassificationTask):
    """A labelled plugin whose distill_loss is written as docs/plugins.md shows it."""

    name = "docs-classification"
    distill_options = frozenset()  # it does not use weights / after_projection

    def distill_loss(self, student, teacher, options: DistillOptions):
        return partial_label_kl(student, teacher, options.projection, options.temperature)


class OldFormTask(ClassificationTask):
    """A plugin of amalgam 0.1: distill_loss(student, teacher, projection, temperature)."""

    name = "old-classification"
    distill_options = frozenset()

    def distill_loss(self, student, teacher, projection, temperature):
        return partial_label_kl(student, teacher, projection, temperature)


class NonExclusiveTask(ClassificationTask):
    """A labelled plugin whose labels may hold together (one sigmoid each), taking every option."""

    name = "nonexclusive-classification"
    exclusive_labels = False


@pytest.fixture
def registered():
    for cls in (DocsFormTask, OldFormTask, NonExclusiveTask):
        TASKS.add(cls.name, cls, origin="tests")
    yield
    for cls in (DocsFormTask, OldFormTask, NonExclusiveTask):
        TASKS._items.pop(cls.name)
        TASKS._origins.pop(cls.name)


def cls_term(world, task_name: str, lines: list[str]) -> tuple[float, float]:
    """The 'cls' term with domain weights and temperature_after_projection on, and the plain KL."""
    overrides = [
        f"teachers.cls.task={task_name}",
        "amalgamation.domain_weights=true",
        "amalgamation.temperature_after_projection=true",
    ]
    plan = build_plan(load_recipe(world, overrides), with_data=False, log=lines.append)
    plan.source_ids = {"cls": [1], "seg-a": [0], "seg-b": [0], "depth": [0]}  # the batch: source 1, cls only
    # as if a second classifier had added a third class to the union that 'cls' does not know
    plan.projections["cls"] = torch.tensor([[True, False, False], [False, True, False]])
    logits = torch.tensor([[4.0, 0.0, 0.0], [10.0, -5.0, 16.0]])
    images = torch.rand(2, 3, 32, 32)
    objective = Objective(plan, student=None)
    assert "cls" in objective.known_classes  # weights are computed and handed over
    _, parts = objective({task_name: logits}, images, torch.ones(2, dtype=torch.long))
    plain = partial_label_kl(logits, plan.teachers["cls"](images), plan.projections["cls"], 2.0)
    return parts["cls"], plain.item()


def test_a_plugin_in_the_documented_form_runs_with_domain_weights_on(world, registered):
    lines: list[str] = []
    term, plain = cls_term(world, "docs-classification", lines)
    assert term == pytest.approx(plain, rel=1e-5)  # it takes the options object and uses what it knows
    said = [line for line in lines if "'docs-classification' does not use it" in line]
    assert len(said) == 2 and said[0].startswith("amalgamation.domain_weights: ")
    assert said[1].startswith("amalgamation.temperature_after_projection: ")


def test_a_plugin_in_the_old_form_still_runs_with_a_deprecation_warning(world, registered):
    lines: list[str] = []
    with pytest.warns(DeprecationWarning, match="distill_loss\\(self, student, teacher, options\\)"):
        term, plain = cls_term(world, "old-classification", lines)
    assert term == pytest.approx(plain, rel=1e-5)
    # said in the log too: Python's default filters hid the warning from the command line
    said = [line for line in lines if "deprecated 0.1 form" in line]
    assert said == [
        "warning: task plugin 'old-classification' (tests): distill_loss(student, teacher, projection,"
        " temperature) is the deprecated 0.1 form: write distill_loss(self, student, teacher, options)"
        " (docs/plugins.md)"
    ]


def test_domain_weights_are_not_given_to_a_task_whose_labels_are_not_exclusive(world, registered):
    # a softmax's mass on a teacher's labels means nothing for one sigmoid per label: it weighed a
    # multi-label plugin's terms silently (an image of nothing above one holding two known labels)
    lines: list[str] = []
    overrides = ["teachers.cls.task=nonexclusive-classification", "amalgamation.domain_weights=true"]
    plan = build_plan(load_recipe(world, overrides), with_data=False, log=lines.append)
    plan.projections["cls"] = torch.tensor([[True, False, False], [False, True, False]])  # knows part of the union
    assert Objective(plan, student=None).known_classes == {}
    said = [line for line in lines if line.startswith("amalgamation.domain_weights: not for task")]
    assert said == [
        "amalgamation.domain_weights: not for task 'nonexclusive-classification': the weights are the student's"
        " softmax over a teacher's labels, and its labels are not exclusive (exclusive_labels is False): its"
        " teachers' terms are computed without them"
    ]


def test_the_builtin_tasks_use_the_options_they_declare(world):
    lines: list[str] = []
    term, plain = cls_term(world, "classification", lines)
    assert term < 0.9 * plain  # weighted: the 2nd sample is outside the teacher's labels
    assert not [line for line in lines if "does not use it" in line]


def test_pixel_weights_set_for_a_recipe_without_a_segmenter_are_said(world):
    # focal, class_balance and pseudo_labels weigh dense labelled terms: a classifier ignores them
    lines: list[str] = []
    overrides = ["amalgamation.focal=2.0", "amalgamation.pseudo_labels=1.0", "amalgamation.class_balance=0.7"]
    build_plan(load_recipe(world, overrides), with_data=False, log=lines.append)
    said = sorted(line.split(":")[0] for line in lines if "task 'classification' does not use it" in line)
    assert said == ["amalgamation.class_balance", "amalgamation.focal", "amalgamation.pseudo_labels"]
    assert not [line for line in lines if "task 'segmentation' does not use it" in line]
    for recipe in (load_recipe(world), amalgam.load_recipe(load_recipe(world), ["train.epochs=1"])):
        lines.clear()  # on by default: not said, also for a Recipe object passed with overrides (dumped)
        build_plan(recipe, with_data=False, log=lines.append)
        assert not [line for line in lines if "does not use it" in line]


def test_distill_passes_one_options_object():
    seen = []

    class Probe(ClassificationTask):
        def distill_loss(self, student, teacher, options):
            seen.append(options)
            return torch.zeros(())

    options = DistillOptions(None, 3.0, torch.ones(2), True)
    distill(Probe(), torch.zeros(2, 2), torch.zeros(2, 2), options)
    assert seen == [options]
