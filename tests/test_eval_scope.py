"""What an eval set holds beyond a teacher's labels is said, not silently dropped or relabelled."""

from __future__ import annotations

from amalgam.config.recipe import load_recipe
from amalgam.distill.eval_checks import outside_labels
from amalgam.distill.plan import build_plan
from amalgam.labels import LabelSpace


def test_outside_classes_are_either_not_scored_or_the_teachers_background():
    classes = ["background", "disc", "bar"]
    assert outside_labels(LabelSpace(("cat", "dog")), ["cat", "dog", "bird"], None) == (["bird"], [])
    assert outside_labels(LabelSpace(("background", "disc"), "background"), classes, None) == ([], ["bar"])
    coarse = LabelSpace(("background", "shape"), "background", ((), ("disc", "bar")))  # {shape: [disc, bar]}
    assert outside_labels(coarse, classes, None) == ([], [])


def test_the_plan_says_which_eval_classes_a_teacher_is_not_scored_on(world):
    lines: list[str] = []
    build_plan(load_recipe(world), log=lines.append)
    said = "\n".join(lines)
    # items-val holds bird images; the cls teacher knows cat and dog only (4 of 12 images are not scored)
    assert "teacher 'cls' on 'items-val': not scored on the set's classes it has no label for: bird" in said
    # scenes-val's bar pixels are seg-a's background (it has one), as are seg-b's other classes
    assert "teacher 'seg-a' on 'scenes-val': the set's classes outside its labels count as its background: bar" in said
    assert "teacher 'seg-b' on 'scenes-val': the set's classes outside its labels count as its background: " in said
