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


def test_an_unannotated_class_counted_as_a_teachers_background_is_warned_with_both_fixes(fresh_world):
    # a trial: Cityscapes-like maps with '0 unlabeled' on every border scored mIoU 0.547 against 0.678 with them
    # ignored, said in an info line only, and amalgam's own advice ('0 other') led there
    classes = fresh_world.parent / "scenes" / "val" / "classes.txt"
    classes.write_text(classes.read_text() + "unlabeled\n")  # a value no map holds: judged by its name
    lines: list[str] = []
    plan = build_plan(load_recipe(fresh_world), log=lines.append)
    expected = "teacher 'seg-a' on 'scenes-val': the set's unlabeled counts as its background, as every class outside"
    assert any(line.startswith(f"warning: {expected}") for line in lines), lines
    assert any(w.startswith(expected) and "write those pixels as 255 (ignore)" in w for w in plan.teacher_warnings)
    assert not [line for line in lines if "outside its labels count as its background: unlabeled" in line]


def test_the_whole_space_row_says_which_classes_of_the_set_it_cannot_score():
    # a folder named as a group label ('jersey' for T-shirt/top and Shirt) left 160 of 800 images out of
    # the student's whole-space row, its count the only trace
    from amalgam.evaluation.evaluate import Evaluation, unscored_in_space
    from amalgam.labels import LabelSpace, extents, lookup, unify

    plain = LabelSpace(("T-shirt/top", "Shirt", "Trouser"))
    coarse = LabelSpace(("jersey", "Trouser"), covers=(("T-shirt/top", "Shirt"), ("Trouser",)))
    unified, extent = unify([plain, coarse]), extents([plain, coarse])
    classes = ["jersey", "Trouser", "Sandal"]
    lut = lookup(classes, unified, extent, refuse_look_alikes=False).tolist()
    unscored = unscored_in_space(classes, lut, extent)
    assert [u.text() for u in unscored] == [
        "'jersey' (stands for 2 unified classes, Shirt, T-shirt/top)",
        "'Sandal' (no unified class)",
    ]
    (line,) = Evaluation(unscored={("classification", "items"): unscored}).warnings()
    assert line.startswith("the student's whole-label-space classification row on 'items' does not score the set's")
    assert "'jersey' (stands for 2 unified classes, Shirt, T-shirt/top)" in line and "Sandal" not in line
    assert not Evaluation(unified=[{"task": "classification", "eval": "items", "metrics": {}}]).warnings()
    # the warning reads which entries are groups, not the entries' words: a class named 'stands for x' is none
    odd = unscored_in_space(["stands for x"], [lut[2]], extent)
    assert not Evaluation(unscored={("classification", "items"): odd}).warnings()
    only_unknown = unscored_in_space(["other"], [lut[2]], extent)  # ADE20K's 'other': no teacher's
    assert not Evaluation(unscored={("segmentation", "ade"): only_unknown}).warnings()  # unscored by nature


def test_an_eval_set_no_teacher_names_is_said_not_scored(world):
    # a trial: a set added to score the student over all classes was never read, and nothing said so
    lines: list[str] = []
    extra = "data.eval.all-items={type: imagefolder, path: items/val}"
    plan = build_plan(load_recipe(world, [extra]), log=lines.append)
    said = "data.eval.all-items: warning: no teacher's eval names it: it is not scored (name it in teachers.<name>.eval"
    assert any(line.startswith(said) for line in lines) and "all-items" not in plan.eval_sets
    assert any(w.startswith("data.eval.all-items: no teacher's eval names it") for w in plan.data_warnings)
    assert not [w for w in build_plan(load_recipe(world), log=lambda m: None).data_warnings if "names it" in w]


def test_a_partial_teachers_set_background_counts_the_classes_it_holds_unnamed():
    # a trial: a set naming only its teacher's classes put bars and triangles in its background; the
    # whole-label-space row counted the student's right 'bar' there as wrong (pixel_acc 0.82 against 0.99)
    from types import SimpleNamespace

    import torch

    from amalgam.evaluation.evaluate import set_catch_all
    from amalgam.labels import LabelSpace, lookup

    unified = LabelSpace(["background", "disc", "square", "bar", "tri"], background="background")
    task = SimpleNamespace(name="segmentation", exclusive_labels=True)
    partial = SimpleNamespace(task=task, space=LabelSpace(["disc", "void", "square"], background="void"))
    general = SimpleNamespace(task=task, space=unified)
    for order in ({"a": partial, "b": general}, {"b": general, "a": partial}):  # decided from the set alone
        plan = SimpleNamespace(teachers=order)
        classes = ["void", "disc", "square", "sky"]  # 'sky': no teacher's class, no background by name
        found = set_catch_all(plan, task, classes, lookup(classes, unified, refuse_look_alikes=False), unified, {})
        assert (found.names, found.values.tolist(), found.classes) == (("void",), [0], ("bar", "tri"))
    assert found.text() == (
        "the set's 'void' holds bar, tri too (the set names none of them): an answer of one of them there is"
        " counted as it"
    )
    target = torch.tensor([[0, 0, 0, 1, 3]])  # void, void, void, disc, sky
    pred = torch.tensor([[3, 1, 0, 1, 4]])  # bar (right: unnamed), disc (wrong), background, disc, tri
    assert found.merged(pred, target).tolist() == [[0, 1, 0, 1, 4]]  # only the unnamed answer on 'void' moves
    complete = ["background", "disc", "square", "bar", "tri"]  # every class labelled: its background is one
    plan = SimpleNamespace(teachers={"a": partial})
    assert set_catch_all(plan, task, complete, lookup(complete, unified), unified, {}) is None
    # two background-like classes ('void' beside 'background'): both get the rule (a review: only the first did)
    both = ["background", "disc", "void"]
    two = set_catch_all(plan, task, both, lookup(both, unified, refuse_look_alikes=False), unified, {})
    assert two.names == ("background", "void") and two.merged(
        torch.tensor([[3, 3]]), torch.tensor([[0, 2]])
    ).tolist() == [[0, 0]]
    # a multi-label task's target is no class map: no rule (a review: it scrambled such predictions)
    multi = SimpleNamespace(name="segmentation", exclusive_labels=False)
    assert set_catch_all(plan, multi, both, lookup(both, unified, refuse_look_alikes=False), unified, {}) is None


def test_the_whole_label_space_row_of_a_set_naming_part_of_the_classes_gets_the_catch_all(world_plan):
    # the scorer of the row carries the rule, decided from the set's classes (a review: the first version
    # was wired only where its own test did not look)
    import torch

    from amalgam.evaluation.evaluate import _scorers

    space = world_plan.spaces["segmentation"]
    partial = ["background", "disc", "square"]  # the world's set without 'bar'
    scorers = _scorers(world_plan, "scenes-val", partial, world_plan.spaces, torch.device("cpu"))
    row = next(s for s in scorers.values() if s.with_unified and s.teacher.task.name == "segmentation")
    assert row.catch_all is not None and row.catch_all.classes == ("bar",)
    assert row.catch_all.background == space.background_index
    complete = _scorers(world_plan, "scenes-val", list(space.names), world_plan.spaces, torch.device("cpu"))
    assert all(s.catch_all is None for s in complete.values())


def test_a_teachers_row_on_a_set_labelled_for_part_of_its_classes_reads_the_sets_background_as_the_unified_row_does(
    monkeypatch,
):
    # a trial: on a set labelled for 2 of 10 items (the rest painted background), the teacher's row counted its
    # right Coat there as a background miss (mIoU 0.74, pixel_acc 0.76) while the whole-label-space row, by the
    # set's catch-all rule, did not (the same answers: 0.82 / 0.97)
    from types import SimpleNamespace

    import torch

    from amalgam.evaluation import evaluate as ev
    from amalgam.evaluation.evaluate import _Scorer, set_catch_all
    from amalgam.labels import lookup
    from amalgam.task import get_task

    seg = get_task("segmentation")
    space = LabelSpace(("background", "disc", "square"), "background")
    classes = ["background", "disc"]  # the set names no square: its squares are painted background
    lut = lookup(classes, space)
    plan = SimpleNamespace(teachers={"seg": SimpleNamespace(task=seg, space=space)})
    catch_all = set_catch_all(plan, seg, classes, lut, space, {})
    assert catch_all.classes == ("square",) and catch_all.names == ("background",)
    target = torch.tensor([[[0, 0, 1, 1]]])  # two background pixels (the first a square), two discs
    answer = torch.tensor([[[2, 0, 1, 2]]])  # square on the painted square: right; square on a disc: wrong
    logits = torch.nn.functional.one_hot(answer, 3).permute(0, 3, 1, 2).float() * 9
    monkeypatch.setattr(ev, "answer_views", lambda *a, **k: (logits, None))
    teacher = SimpleNamespace(task=seg, space=space, name="seg", wrap=None)
    rows = []
    for merge in (None, catch_all):
        meters = [seg.new_meter(3), seg.new_meter(3), seg.new_meter(3)]
        ev.restrict(meters[:2], lut, 3)
        scorer = _Scorer(teacher, torch.eye(3, dtype=torch.bool), lut, None, False, meters, teacher_catch_all=merge)
        views = SimpleNamespace(student=torch.zeros(1, 3, 1, 4))
        scorer.update(views, {"segmentation": logits}, {"mask": target, "image": torch.zeros(1, 3, 1, 4)})
        rows.append([m.compute()["pixel_acc"] for m in meters[:2]])
    assert rows[0] == [0.5, 0.5] and rows[1] == [0.75, 0.75]  # teacher and student alike, the square right


def test_a_teacher_whose_labels_differ_from_the_sets_only_in_case_is_told_the_relation():
    # a trial: 'dress' against the set's 'Dress' (another teacher's label: no look-alike stop) stopped with the two
    # lists only, no word of the pair
    from types import SimpleNamespace

    import pytest

    from amalgam.distill.eval_checks import check_eval_set
    from amalgam.errors import RecipeError
    from amalgam.task import get_task

    cls = get_task("classification")
    teacher = SimpleNamespace(name="subset", task=cls, space=LabelSpace(("trousers", "dress")), eval_name="items")
    dataset = SimpleNamespace(target_keys=frozenset({"label"}), classes=["Trouser", "Dress", "Bag"])
    extent = {c: frozenset([c]) for c in ("Trouser", "Dress", "Bag", "trousers", "dress")}  # the other teacher's
    with pytest.raises(RecipeError, match=r"'dress' is the set class 'Dress' but for how it is written: relate"):
        check_eval_set(teacher, dataset, extent, log=lambda line: None)


def test_a_build_reports_a_teachers_catch_all_where_its_set_names_part_of_its_labels(fresh_world, built_run):
    # a review: the test above builds the scorer by hand; the wiring (tasks[].catch_all, its log line) was untested
    import torch

    from amalgam.evaluation.evaluate import evaluate
    from amalgam.students.serialize import load_student

    classes = fresh_world.parent / "scenes" / "val" / "classes.txt"
    classes.write_text(classes.read_text().replace("square", "blob"))  # the set names no square: seg-a's is unnamed
    student, spaces = load_student(built_run / "student.pt")
    plan = build_plan(load_recipe(fresh_world), log=lambda line: None)
    lines: list[str] = []
    result = evaluate(plan, student, torch.device("cpu"), spaces=spaces, log=lines.append)
    row = next(r.row() for r in result.tasks if r.teacher == "seg-a")
    assert row["catch_all"].startswith("the set's 'background' holds square too (the set names none of them)")
    assert f"teacher seg-a's row on 'scenes-val': {row['catch_all']}" in lines


def test_a_teacher_check_on_a_set_whose_maps_were_warned_of_names_them_as_a_cause():
    # a trial: maps quantized file by file read the teacher near-blind, and the line sent the user to its input only
    from types import SimpleNamespace

    from amalgam.distill.eval_checks import _maps_doubt

    plan = SimpleNamespace(data_warnings=["data.eval.val: index 3 of the label maps has one colour in a.png's palette"])
    assert _maps_doubt(plan, "val") == "; or the set's ground truth, which its scan warned of (data.eval.val above)"
    assert _maps_doubt(plan, "other") == ""
