"""What report.json and report.md say, read by programs and people: strict JSON, plain words."""

from __future__ import annotations

import json

import pytest
import torch

from amalgam.evaluation.report import to_markdown
from amalgam.evaluation.tree_report import tree_markdown
from amalgam.io import write_json


def _refuse(constant: str) -> None:
    raise ValueError(f"not JSON: {constant}")


def test_a_ratio_that_is_not_a_number_is_written_as_null_so_strict_parsers_read_the_file(tmp_path):
    path = tmp_path / "report.json"
    write_json({"tasks": [{"ratio": float("nan"), "relative": float("inf"), "values": (1.5, float("-inf"))}]}, path)
    read = json.loads(path.read_text(), parse_constant=_refuse)  # what JavaScript's JSON.parse accepts
    assert read == {"tasks": [{"ratio": None, "relative": None, "values": [1.5, None]}]}


def test_report_md_says_the_budget_in_words_and_one_epoch_in_the_singular():
    tree = {"branch_at": {"classification": 5}, "structure": [], "over_budget": [], "search": None}
    tree["budget"] = {"params": 966332, "latency_ms": None, "share": 0.65}
    assert "Budget: within (params at most 966,332 (65% of the teachers'))." in tree_markdown(tree)
    tree["budget"] = {"params": None, "latency_ms": 2.5, "share": None}
    assert "Budget: within (latency at most 2.5 ms)." in tree_markdown(tree)
    report = {"name": "r", "tasks": [], "unified": [], "warnings": []}
    report["student"] = report["teachers"] = {"params": 10, "latency_ms": {"b1": 1.0, "b32": 0.5}}
    for epochs, said in ((1, "Training: 1 epoch, 2.0 s"), (3, "Training: 3 epochs, 2.0 s")):
        report["train"] = {"epochs": epochs, "seconds": 2.0, "images_per_second": 9.0}
        assert said in to_markdown(report)
    # the latency table and the budget line name their estimators: a trial read 13.8 against 4.97 ms as a contradiction
    assert "| model | params | latency b1 (ms/img, median of 5) |" in to_markdown(report)
    tree["budget"] |= {"cpu_b1_ms": 2.0}
    assert "latency at most 2.5 ms, measured 2.00 ms on a CPU (the fastest of 7 runs))." in "".join(tree_markdown(tree))


def test_a_compact_students_budget_verdict_is_in_report_md():
    # a trial: a compact student over its budget was said in the build log only, the report silent
    report = {"name": "r", "tasks": [], "unified": [], "warnings": [], "train": {"epochs": 0}}
    report["teachers"] = {"params": 10, "latency_ms": {"b1": 1.0, "b32": 0.5}}
    over = ["params 733,186 > 300,000", "latency b1 4.2 ms > 2 ms"]
    budget = {"params": 300000, "latency_ms": 2.0, "share": 0.3, "over": over}
    report["student"] = {"params": 733186, "latency_ms": {"b1": 4.2, "b32": 0.5}, "budget": budget}
    said = to_markdown(report)
    assert "Budget: over: params 733,186 > 300,000; latency b1 4.2 ms > 2 ms (params at most 300,000" in said
    del report["student"]["budget"]  # a report written before the key: no line
    assert "Budget:" not in to_markdown(report)
    # its one decoder, not one a task (a trial read two decoders into a compact report)
    report["student"] |= {"decoders": {"segmentation": [8, 8], "depth": [8, 8]}, "decoder_shared": True}
    assert "Student decoders: one, shared by segmentation, depth: [8, 8]" in to_markdown(report)


def test_a_compact_spec_says_its_decoder_is_shared():
    from amalgam.students.build import StudentSpec

    spec = dict(encoder="resnet18", heads={"segmentation": 3, "depth": 1}, branch_at=3, decoder_channels=[8] * 5)
    assert StudentSpec(type="compact", **spec).report_fields()["decoder_shared"] is True
    assert "decoder_shared" not in StudentSpec(type="branched", **spec).report_fields()


@pytest.mark.parametrize("value", [float("nan"), None])
def test_report_md_shows_a_missing_ratio_as_n_a(value):
    report = {"name": "r", "unified": [], "warnings": [], "train": {"epochs": 0}}
    report["student"] = report["teachers"] = {"params": 10, "latency_ms": {"b1": 1.0, "b32": 0.5}}
    row = {"teacher": "t", "task": "classification", "eval": "e", "metric": "top1", "higher_is_better": True}
    report["tasks"] = [{**row, "teacher_value": 0.0, "student_value": 0.5, "ratio": value, "relative": value}]
    assert "| 0.0000 | 0.5000 | n/a | n/a |" in to_markdown(report)


def test_per_class_tables_leave_out_labels_the_set_holds_nothing_of():
    # a 1000-class teacher's table was 991 rows of n/a in report.md (and in report.html, and on stdout)
    from amalgam.evaluation.report import per_class_tables
    from amalgam.evaluation.visual import _per_class_html

    report = {"name": "r", "unified": [], "warnings": [], "train": {"epochs": 0}}
    report["student"] = report["teachers"] = {"params": 10, "latency_ms": {"b1": 1.0, "b32": 0.5}}
    row = {"teacher": "inet", "task": "classification", "eval": "e", "metric": "top1", "higher_is_better": True}
    per_class = [{"class": "jersey", "teacher": 0.9, "student": 0.8, "ratio": 0.8 / 0.9}]
    per_class += [{"class": f"absent {k}", "teacher": None, "student": None, "ratio": None} for k in range(991)]
    per_class += [{"class": "lost", "teacher": 0.5, "student": None, "ratio": None}]  # scored: kept
    report["tasks"] = [{**row, "teacher_value": 0.9, "student_value": 0.8, "ratio": 0.89, "relative": 0.89}]
    report["tasks"][0] |= {"per_class": per_class, "per_class_metric": "recall"}
    text = to_markdown(report)
    assert "| jersey | 0.9000 | 0.8000 | 0.8889 |" in text and "| lost | 0.5000 | n/a | n/a |" in text
    assert "absent 3 |" not in text
    # "the eval set holds nothing of" was untrue where a limit left a class's images unscored
    said = "991 labels without ground truth in the images scored not listed (report.json has them): absent 0, absent 1,"
    assert said in text and "absent 7 and 983 more" in text
    html = _per_class_html(per_class_tables(report)[0])
    assert "<td>absent 3</td>" not in html and "<td>lost</td>" in html and said in html


def test_a_warning_before_training_that_evaluation_says_again_is_reported_once():
    # the depth scale, measured on 16 images before training and on every one after, was in report.json twice;
    # the text rule that dropped it (same words, numbers aside) took teacher t2's warning with teacher t1's line
    from amalgam.evaluation.report import before_training
    from amalgam.task import get_task

    depth = get_task("depth")
    truth = torch.linspace(1.0, 4.0, 64).reshape(8, 8)
    reading = depth.eval_reading("t1", "metric", [truth * 3.1], [truth])
    assert reading.problem is None and reading.warnings == []
    assert reading.repeated == tuple(depth.teacher_warnings("t1", {"scale": 3.1}))
    assert reading.repeated[0].startswith("teacher t1's depth is 3.1x its eval set's")
    assert before_training(["teacher t2 has a mean"]) == ["before training: teacher t2 has a mean"]


def test_the_headline_says_the_images_each_row_scored_and_the_metrics_direction_in_md_and_html(tmp_path):
    # a trial: 60 of a set's 1,000 images were said in the log only; report.html showed "ratio 1.7561" for an rmse
    # with no direction; its picture heading named affinities no tree search had drawn
    from amalgam.evaluation.visual import write_html

    row = {"teacher": "d", "task": "depth", "eval": "v", "metric": "rmse", "higher_is_better": False}
    row |= {"teacher_value": 0.5, "student_value": 0.4, "ratio": 0.8, "relative": 1.25, "images": 60}
    report = {"name": "r", "tasks": [row], "unified": [], "warnings": []}
    report["train"] = {"epochs": 1, "seconds": 1.0, "images_per_second": 9.0}
    report["student"] = report["teachers"] = {"params": 10, "latency_ms": {"b1": 1.0, "b32": 0.5}}
    assert "| d | depth | v (60 images) | rmse (lower is better) |" in to_markdown(report)
    (tmp_path / "tree.png").write_bytes(b"")
    page = write_html(tmp_path, report).read_text()
    assert "<td>v (60 images)</td><td>rmse (lower is better)</td>" in page
    assert "<h2>Student tree</h2>" in page and "ms/img b1 (median of 5)" in page
    del row["images"]  # a report of before the count
    assert "| d | depth | v | rmse (lower is better) |" in to_markdown(report)
