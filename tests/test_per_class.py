"""Per-class tables and warnings: a near-blind teacher and a class the student lost are said."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch

from amalgam.evaluation.metrics import ConfusionMatrix
from amalgam.evaluation.per_class import class_verdicts, class_warnings, per_class_rows, verdict_counts
from amalgam.evaluation.report import to_markdown
from amalgam.evaluation.visual import write_html
from amalgam.task import get_task


def test_recall_per_class_by_hand():
    cm = ConfusionMatrix(3)
    # truth 0 x3 (2 right), truth 1 x1 (wrong), class 2 never in the truth
    cm.update(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 0, 0, 1]))
    recall = cm.recall()
    assert recall[0].item() == pytest.approx(2 / 3) and recall[1].item() == 0.0 and torch.isnan(recall[2])


def test_rows_and_warnings_by_hand():
    rows = per_class_rows(["bg", "cat", "dog", "owl", "eel"], [0.9, 0.05, 0.6, 0.4, None], [0.8, 0.0, 0.2, 0.3, 0.1])
    assert rows[0] == {"class": "bg", "teacher": 0.9, "student": 0.8, "ratio": pytest.approx(0.8 / 0.9)}
    assert rows[4]["ratio"] is None  # never scored for the teacher
    lines = class_warnings("seg", "iou", rows)
    assert len(lines) == 2  # owl kept: 0.3 >= 0.5 x 0.4; bg kept; eel never scored
    assert lines[0].startswith("teacher seg is near-blind on 'cat' (iou 0.050 < 0.1)")
    assert lines[1].startswith("student lost 'dog' of teacher seg: iou 0.200 vs the teacher's 0.600")
    assert class_warnings("seg", "iou", rows, blind_below=0.01, lost_below=0.2) == [
        "student lost 'cat' of teacher seg: iou 0.000 vs the teacher's 0.050 (< 0.2x)"
    ]


def test_a_lost_class_says_the_students_deployed_score_beside_the_rows():
    # a trial: "student lost 'Dress' of teacher hf: iou 0.000" where the deployed student scored 0.148: the
    # row sums the student into hf's labels, whose background takes the six classes hf does not know
    rows = per_class_rows(["background", "Dress", "Bag"], [0.9, 0.364, 0.6], [0.85, 0.0, 0.1], {"Dress": 0.148})
    assert rows[1]["student_all_labels"] == 0.148 and "student_all_labels" not in rows[2]
    lost = class_warnings("hf", "iou", rows)
    assert lost[0] == (
        "student lost 'Dress' of teacher hf: iou 0.000 vs the teacher's 0.364 (< 0.5x); over all its labels, as"
        " deployed, 0.148"
    )
    assert lost[1].endswith("(< 0.5x)")  # no deployed score to say


def test_a_partial_teachers_rows_carry_the_students_deployed_per_class_scores(built_run):
    report = json.loads((built_run / "report.json").read_text())
    unified = next(u for u in report["unified"] if u["task"] == "segmentation")
    deployed = dict(zip(unified["classes"], unified["metrics"]["iou"]))
    for row in (r for r in report["tasks"] if r["teacher"] in ("seg-a", "seg-b")):  # each knows part of the space
        named = {c["class"]: c["student_all_labels"] for c in row["per_class"] if "student_all_labels" in c}
        assert named and all(deployed[name] == value for name, value in named.items()), row["teacher"]
        assert "background" not in named  # a catch-all label is several unified classes: no one score
    cls = next(r for r in report["tasks"] if r["teacher"] == "cls")  # it knows the whole space: nothing to add
    assert not [c for c in cls["per_class"] if "student_all_labels" in c]


def test_build_report_carries_per_class_tables(built_run):
    report = json.loads((built_run / "report.json").read_text())
    rows = {r["teacher"]: r for r in report["tasks"]}
    seg = rows["seg-a"]
    assert seg["per_class_metric"] == "iou" and len(seg["per_class"]) == len(seg["teacher_metrics"]["iou"])
    assert [c["teacher"] for c in seg["per_class"]] == seg["teacher_metrics"]["iou"]
    assert [c["student"] for c in seg["per_class"]] == seg["student_metrics"]["iou"]
    assert rows["cls"]["per_class_metric"] == "recall" and "per_class" not in rows["depth"]
    md, page = (built_run / "report.md").read_text(), (built_run / "report.html").read_text()
    assert "seg-a: iou per class" in md and "cls: recall per class" in md
    # the student as deployed, per class: a trial could not see a class the teachers' tables called lost
    assert "Student over all its labels on 'scenes-val': iou per class\n\n| class | student |" in md
    assert "seg-a: iou per class" in page
    expected = [
        w
        for r in report["tasks"]
        if r.get("per_class")
        for w in class_warnings(
            r["teacher"], r["per_class_metric"], r["per_class"], floor=get_task(r["task"]).per_class_floor
        )
    ]
    # the cls teacher is scored on part of items-val (tests/test_faults_eval.py): that line aside,
    # the tiny world's depth teacher is far from metric: its task's own warning follows
    warnings = [w for w in report["warnings"] if "is scored on part of eval set" not in w]
    assert not [w for w in warnings if "whole-label-space" in w]  # items-val's 'bird', no teacher's: unscored by nature
    before = [w for w in warnings if w.startswith("before training: ")]  # the teacher checks', first
    assert warnings[: len(before)] == before
    warnings = warnings[len(before) :]
    assert warnings[: len(expected)] == expected
    (depth_line,) = warnings[len(expected) :]
    assert depth_line.startswith("teacher depth's depth is") and "depth_scale" in depth_line


def test_warnings_come_first_in_markdown_and_html(built_run, tmp_path):
    report = json.loads((built_run / "report.json").read_text())
    report["warnings"] = ["teacher seg-a is near-blind on 'x'"]
    md = to_markdown(report)
    assert md.index("near-blind on 'x'") < md.index("| teacher | task |")
    page = write_html(tmp_path, report).read_text()
    assert "<h2>Warnings</h2>" in page and "near-blind on &#x27;x&#x27;" in page
    report["warnings"] = []
    assert "Warnings" not in to_markdown(report) and "Warnings" not in write_html(tmp_path, report).read_text()


def test_evaluate_logs_each_warning(world_plan, built_run):
    from amalgam.evaluation.evaluate import evaluate
    from amalgam.students.serialize import load_student

    student, spaces = load_student(built_run / "student.pt")
    lines: list[str] = []
    evaluation = evaluate(world_plan, student, torch.device("cpu"), spaces=spaces, log=lines.append)
    said = [line.removeprefix("warning: ") for line in lines if line.startswith("warning: ")]
    reported = json.loads((built_run / "report.json").read_text())["warnings"]
    from amalgam.evaluation.report import before_training

    before = before_training(world_plan.teacher_warnings)  # said when the plan was built, less repeats
    schedule = [w for w in reported if w.startswith("before training: the schedule gives the student")]
    assert len(schedule) == 1  # the build's own (say_plan), beside the plan's checks: its 2 steps are too few
    reported = [w for w in reported if w not in schedule]
    assert said == evaluation.warnings() and reported == before + said  # before training first
    assert said and before  # one epoch on 8 images: the tiny student loses classes; its depth teacher is weak
    # the depth teacher's scale, said before training on 6 images and again after on all: once in the report
    assert sum("teacher depth's depth is" in w for w in reported) <= 1


def test_a_teacher_naming_classes_as_others_is_asked_about_its_label_order():
    from amalgam.evaluation.metrics import ConfusionMatrix
    from amalgam.evaluation.per_class import label_order_warning

    m = ConfusionMatrix(4)  # rows: truth; 0 is the common class (a background)
    m.matrix[:] = torch.tensor([[90, 5, 3, 2], [1, 2, 17, 0], [1, 15, 4, 0], [9, 0, 0, 11]])
    mostly = m.mostly_predicted_as(skip_common=True)
    assert mostly == [None, 2, 1, None]  # class 3 lost to the background is blindness, not a swap
    swap = ConfusionMatrix(3)  # a balanced classifier's classes 0 and 1 swapped: class 0 counts as any other
    swap.matrix[:] = torch.tensor([[1, 9, 0], [8, 2, 0], [0, 0, 10]])
    assert swap.mostly_predicted_as() == [1, 0, None]
    line = label_order_warning("cls", ["bg", "cat", "dog", "bird"], mostly)
    assert line == (
        "teacher cls names most of 2 classes as one other class ('cat' as 'dog', 'dog' as 'cat'): are its labels"
        " (and the eval set's class names) in the order of its outputs, and is it fed as it was trained"
        " (teachers.cls.input: size, mean/std, channel order)? If its labels are the cause, in the order of its"
        " outputs they are ['bg', 'dog', 'cat', 'bird'] (teachers.cls.labels)"
    )
    assert label_order_warning("cls", ["bg", "cat", "dog", "bird"], [None, 2, None, None]) is None  # one: a weak class
    assert label_order_warning("cls", ["bg", "cat", "dog", "bird"], [2, None, None, 2]) is None  # all as one: collapsed
    swapped_first = label_order_warning("cls", ["cat", "dog", "bird"], [1, 0, None])  # classes 0 and 1 swapped
    assert swapped_first is not None and "('cat' as 'dog', 'dog' as 'cat')" in swapped_first
    # a trial's spare 11th output with unused_outputs: [0]: every class named as the previous output, no fix said
    shifted = label_order_warning("cls", ["a", "b", "c", "d", "e"], [None, 0, 1, 2, 3])
    assert shifted.endswith("of a net whose unused output is the last ([5], not [0])")
    assert "named as the next output" in label_order_warning("cls", ["a", "b", "c", "d", "e"], [1, 2, 3, 4, None])


def test_a_task_result_says_the_label_order_line_first():
    from amalgam.evaluation.evaluate import TaskResult
    from amalgam.task import get_task

    task = get_task("classification")
    meter = task.new_meter(3)
    truth = torch.tensor([0] * 10 + [1] * 10 + [2] * 10)
    meter.update(torch.tensor([0] * 10 + [2] * 9 + [1] + [1] * 8 + [2] * 2), truth)  # 1 and 2 swapped
    metrics = meter.compute()
    result = TaskResult("cls", task, "set", metrics, metrics, classes=["cat", "dog", "bird"])
    assert result.warnings()[0].startswith("teacher cls names most of 2 classes as one other class ('dog' as 'bird'")


def test_a_class_the_set_cannot_score_has_no_iou_and_no_near_blind_warning():
    from amalgam.task import get_task

    meter = get_task("segmentation").new_meter(4)
    truth = torch.tensor([0, 0, 1, 1, 3, 3])
    meter.update(torch.tensor([0, 2, 1, 1, 3, 3]), truth)  # class 2: predicted once, never in the truth
    assert meter.compute()["iou"] == [0.5, 1.0, None, 1.0]
    meter.restrict([0, 1, 2])  # class 3 is not among the set's classes
    iou = meter.compute()["iou"]
    assert iou == [0.5, 1.0, None, None]
    rows = per_class_rows(["bg", "a", "b", "c"], iou, iou)
    assert class_warnings("seg", "iou", rows) == []


@pytest.mark.parametrize("task_name", ["classification", "segmentation"])
def test_per_class_scores_are_not_rounded_before_their_ratio(task_name):
    from amalgam.task import get_task

    meter = get_task(task_name).new_meter(2)
    truth = torch.tensor([0, 0, 0, 1, 1, 1])
    meter.update(torch.tensor([0, 1, 1, 1, 1, 1]), truth)  # class 0: recall 1/3, IoU 1/3
    key = "recall" if task_name == "classification" else "iou"
    assert meter.compute()[key][0] == pytest.approx(1 / 3, abs=1e-9)


def test_a_student_naming_another_teachers_labels_on_a_teachers_images_is_said():
    # a user trial: cls-low's row said 0.964 (its 7 labels), the student named only 0.890 right over
    # all 10: 22 of its 43 errors were a class only the other teacher knows, and nothing said so
    from types import SimpleNamespace

    from amalgam.evaluation.evaluate import Evaluation, TaskResult, _Scorer
    from amalgam.labels import IGNORE
    from amalgam.labels.algebra import LabelSpace, projection, unify
    from amalgam.task import get_task

    low, high = LabelSpace(("0", "1", "2")), LabelSpace(("2", "3"))
    unified = unify([low, high])  # 0 1 2 3
    teacher = SimpleNamespace(task=get_task("classification"))
    scorer = _Scorer(teacher, projection(low, unified), None, None, False, [])
    logits = torch.eye(4)[[0, 1, 3, 3, 2]] * 5  # answers 0, 1, 3, 3, 2 over the whole space
    scorer._count_outside(logits, torch.tensor([0, 1, 2, IGNORE, 2]))  # the 4th is not the row's image
    assert (scorer.scored, scorer.outside) == (4, 1)  # '3' on one of its 4 images: a label low lacks
    row = TaskResult("cls-low", get_task("classification"), "low-test", {"top1": 0.978}, {"top1": 0.964})
    row.outside_share = scorer.outside / scorer.scored
    (line,) = Evaluation([row], []).warnings()
    assert line.startswith("student on 'low-test': on 25.0% of the images teacher cls-low is scored on, its answer")
    row.outside_share = 0.01  # within 0.02: nothing
    assert Evaluation([row], []).warnings() == []
    # a teacher with a background (or a coarse one) covers every class: nothing is counted outside it
    other = LabelSpace(("0", "other"), background="other")
    scorer = _Scorer(teacher, projection(other, unified), None, None, False, [])
    scorer._count_outside(logits, torch.tensor([0, 1, 1, 1, 1]))
    assert scorer.outside == 0


def test_the_outside_count_leaves_a_multi_label_plugins_rows_alone():
    # a review: multi-hot targets [B, C] against a [B] answer crashed evaluation after training
    from types import SimpleNamespace

    from amalgam.evaluation.evaluate import _Scorer
    from amalgam.labels.algebra import LabelSpace, projection, unify

    low, high = LabelSpace(("0", "1", "2")), LabelSpace(("2", "3"))
    multi = SimpleNamespace(exclusive_labels=False, dense=False)
    scorer = _Scorer(SimpleNamespace(task=multi), projection(low, unify([low, high])), None, None, False, [])
    scorer._count_outside(torch.randn(3, 4), torch.ones(3, 4, dtype=torch.long))
    assert (scorer.scored, scorer.outside) == (0, 0)


def test_a_student_far_above_its_teacher_is_warned_about():
    # a trial's misfed depth teacher read 1.4-3x worse than it is: the ratio said the student beat it, no word
    from amalgam.evaluation.evaluate import TaskResult
    from amalgam.task import get_task

    depth = get_task("depth")
    far = TaskResult("d", depth, "val", {"rmse": 1.5}, {"rmse": 0.5})
    (line,) = far._far_above_warning()
    assert line.startswith("the student scores 3.00x teacher d on 'val' (rmse): a teacher far below its student")
    assert "teachers.d.input: size, mean/std, channel order" in line
    assert TaskResult("d", depth, "val", {"rmse": 0.5}, {"rmse": 0.45})._far_above_warning() == []  # 1.11x: no word
    assert TaskResult("d", depth, "val", {"rmse": None}, {"rmse": 0.45})._far_above_warning() == []  # not scored


def test_a_class_with_too_little_ground_truth_is_not_judged_but_named():
    # a trial: "teacher near-blind on 'Dress' (recall 0.000)" came from one image (0.89 on the full set)
    rows = per_class_rows(
        ["a", "b", "c"], [0.0, 0.0, 0.9], [0.0, 0.0, 0.1], support=[1, 40, 30]
    )  # 'a': one image; 'b': blind on 40; 'c': lost on 30
    lines = class_warnings("t", "recall", rows, floor=("images", 10))
    assert not any("near-blind on 'a'" in line for line in lines)
    assert any("near-blind on 'b'" in line for line in lines) and any("lost 'c'" in line for line in lines)
    assert lines[-1].startswith(
        "teacher t: 1 class of its eval set too thin to judge per class (under 10 images of ground truth each):"
        " 'a' (1 images)"
    )
    assert class_verdicts(rows, floor=("images", 10)) == {"near_blind": [rows[1]], "lost": [rows[2]], "thin": [rows[0]]}


def test_the_headline_row_and_the_tables_carry_what_a_mean_hides():
    # a trial: a blind teacher's headline row read "ratio 0.9855" with no mark; html had no whole-label-space
    # per-class tables and showed an undefined ratio as nan (None once re-rendered), md as n/a
    report = {"name": "r", "warnings": [], "train": {"epochs": 0}}
    report["student"] = report["teachers"] = {"params": 10, "latency_ms": {"b1": 1.0, "b32": 0.5}}
    per_class = per_class_rows(
        ["bg", "shirt", "coat"], [0.9, 0.05, 0.6], [0.9, 0.0, 0.2], {"coat": 0.45}, [500, 2000, 3000]
    )
    row = {"teacher": "seg", "task": "segmentation", "eval": "e", "metric": "miou", "higher_is_better": True}
    row |= {"teacher_value": 0.5, "student_value": 0.4, "ratio": float("nan"), "relative": None}
    row |= {"per_class": per_class, "per_class_metric": "iou"}
    row["per_class_verdicts"] = verdict_counts(class_verdicts(per_class, floor=("pixels", 1024)))
    report["tasks"] = [row]
    report["unified"] = [
        {"task": "segmentation", "eval": "e", "metrics": {"iou": [0.9, None, 0.45]}, "classes": ["bg", "shirt", "coat"]}
    ]
    md = to_markdown(report)
    note = "seg (warned: teacher near-blind on 1 class; student lost 1 class; too thin to judge: 1 class)"
    assert f"| {note} | segmentation |" in md
    assert "| class | teacher | student | ratio | student, all its labels | ground truth |" in md
    assert "| coat | 0.6000 | 0.2000 | 0.3333 | 0.4500 | 3,000 |" in md
    assert "| shirt | 0.4500 |" not in md and "1 label without ground truth in the images scored not listed" in md
    page = write_html(Path(tempfile.mkdtemp()), report).read_text()
    assert f"<td>{note}</td>" in page and "nan" not in page and "None" not in page
    assert "Student over all its labels on &#x27;e&#x27;: iou per class" in page
    assert "<tr><td>coat</td><td>0.6000</td><td>0.2000</td><td>0.3333</td><td>0.4500</td><td>3,000</td></tr>" in page


def test_labels_the_scored_images_hold_nothing_of_are_warned(world, built_run):
    # a trial: train.max_eval_images 5 scored 5 of 9 classes; only "absent: Sandal" (no folder) was warned
    import amalgam

    report = amalgam.evaluate(world, built_run / "student.pt", overrides={"train.max_eval_images": 1}, quiet=True)
    cls = next(r for r in report["tasks"] if r["task"] == "classification")
    unseen = [c["class"] for c in cls["per_class"] if c.get("support") == 0]
    assert unseen
    line = next(w for w in report["warnings"] if w.startswith(f"teacher {cls['teacher']}: {len(unseen)} of its labels"))
    assert "have no ground truth in the 1 images scored" in line and "train.max_eval_images" in line


def test_labels_no_image_of_the_whole_set_holds_are_not_blamed_on_a_limit(fresh_world, built_run):
    # a trial: a set whose maps held none of 4 labels, scored whole, was told a limit had left them out
    import shutil

    import amalgam

    dog = fresh_world.parent / "items" / "val" / "dog"
    shutil.rmtree(dog)
    dog.mkdir()  # the class is named (its folder), no image holds it
    report = amalgam.evaluate(fresh_world, built_run / "student.pt", quiet=True)
    line = next(w for w in report["warnings"] if w.startswith("teacher cls: 1 of its labels that 'items-val' names"))
    assert line.endswith("(no image of the set holds them)"), line


def test_eval_reports_the_eval_sets_data_warnings_as_a_build_does(fresh_world, built_run):
    # a trial: report.json began "data.eval.scenes-sub: 2 of 11 classes have no pixel in any label map";
    # `amalgam eval` on the same recipe and student said it in the log only
    import amalgam

    classes = fresh_world.parent / "scenes" / "val" / "classes.txt"
    classes.write_text(classes.read_text() + "unicorn\n")
    report = amalgam.evaluate(fresh_world, built_run / "student.pt", quiet=True)
    assert any(w.startswith("data.eval.scenes-val: ") and "no pixel in any label map" in w for w in report["warnings"])


def test_a_plugin_meter_whose_support_is_no_per_class_list_still_gives_rows():
    # a review: a third-party meter with its own scalar 'support' crashed the rows (len of an int)
    from amalgam.evaluation.evaluate import TaskResult
    from amalgam.task import get_task

    task = get_task("classification")
    meter = task.new_meter(2)
    meter.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    metrics = {**meter.compute(), "support": 3}
    rows = TaskResult("cls", task, "set", metrics, metrics, classes=["cat", "dog"]).per_class()
    assert [r["class"] for r in rows] == ["cat", "dog"] and all("support" not in r for r in rows)


def test_a_label_order_warning_names_the_shift_or_the_reordered_labels_it_points_at():
    # a trial: a 1001-output net given unused_outputs: [1000] (its background unit is first) and a labels
    # file sorted by name both scored 0.0 with a warning that named no fix, though the pattern held it
    from amalgam.evaluation.per_class import label_order_warning

    shifted = label_order_warning("t", ["a", "b", "c", "d"], [1, 2, 3, None])
    assert shifted.endswith("as with a background unit first (teachers.t.unused_outputs: [0], not the last)")
    sorted_file = label_order_warning("t", ["bag", "cat", "dog"], [2, 0, 1])
    assert sorted_file.endswith("in the order of its outputs they are ['cat', 'dog', 'bag'] (teachers.t.labels)")
    assert label_order_warning("t", ["a", "b", "c"], [1, 2, 1]).endswith("channel order)?")  # no clean pattern


def test_a_rows_images_are_the_ones_it_scored(built_run):
    # a review: the cls row said 12 images (the set's, evaluated) where its coverage line said 8 were scored
    report = json.loads((built_run / "report.json").read_text())
    cls = next(r for r in report["tasks"] if r["task"] == "classification")
    line = next(w for w in report["warnings"] if w.startswith(f"teacher {cls['teacher']} is scored on part"))
    assert f"scored on {cls['images']} of the 12 images evaluated" in line and cls["images"] < 12
    seg = next(r for r in report["tasks"] if r["task"] == "segmentation")
    assert seg["images"] > 0  # label maps: every image evaluated is scored


def test_a_lost_class_on_little_ground_truth_says_the_gap_can_be_chance():
    # a trial: "student lost" verdicts on classes of about 30 images turned on one or two of them
    rows = per_class_rows(["few", "many"], [0.5, 0.5], [0.2, 0.2], support=[30, 3000])
    few, many = [
        line for line in class_warnings("t", "recall", rows, floor=("images", 10), counts=True) if "lost" in line
    ]
    # 6 of 30 against 15: a gap of 9 under 2 sqrt(21) = 9.2; on 3000 images 600 against 1500 is no chance
    assert few == (
        "student lost 'few' of teacher t: recall 0.200 vs the teacher's 0.500 (< 0.5x); about 6 of 30 images right"
        " against the teacher's 15: a gap this size on so little ground truth can be chance, a larger eval set tells"
    )
    assert "chance" not in many
    clear = per_class_rows(["gone"], [0.9], [0.0], support=[30])  # 0 of 30 against 27: no chance
    assert "chance" not in class_warnings("t", "recall", clear, floor=("images", 10), counts=True)[0]
    # a review: IoU x pixels is no count of pixels right, and pixels of one image are not independent draws
    assert "chance" not in class_warnings("t", "iou", rows, floor=("pixels", 10))[0]
    from amalgam.task import get_task  # the tasks say it, not a metric's name (a review)

    assert get_task("classification").per_class_counts and not get_task("segmentation").per_class_counts
