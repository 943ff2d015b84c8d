"""What report.json and report.md say, read by programs and people: strict JSON, plain words."""

from __future__ import annotations

import json

import pytest

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


@pytest.mark.parametrize("value", [float("nan"), None])
def test_report_md_shows_a_missing_ratio_as_n_a(value):
    report = {"name": "r", "unified": [], "warnings": [], "train": {"epochs": 0}}
    report["student"] = report["teachers"] = {"params": 10, "latency_ms": {"b1": 1.0, "b32": 0.5}}
    row = {"teacher": "t", "task": "classification", "eval": "e", "metric": "top1", "higher_is_better": True}
    report["tasks"] = [{**row, "teacher_value": 0.0, "student_value": 0.5, "ratio": value, "relative": value}]
    assert "| 0.0000 | 0.5000 | n/a | n/a |" in to_markdown(report)
