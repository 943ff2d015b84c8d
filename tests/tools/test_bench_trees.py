"""tools/bench_trees.py: the grid, Kendall's tau, the quality of a report and the summary of the rows built."""

from __future__ import annotations

import bench_trees as tool
import pytest

TASKS = ["classification", "segmentation", "depth"]


def test_grid_has_every_uniform_point_and_each_task_alone():
    trees = tool.grid(TASKS, 2)
    assert len(trees) == 9 and len({tuple(t.values()) for t in trees}) == 9
    assert trees[:6] == [dict.fromkeys(TASKS, p) for p in range(6)]
    assert {"classification": 2, "segmentation": 5, "depth": 5} in trees


def test_kendall_tau():
    assert tool.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert tool.kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == -1.0
    assert tool.kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)


def test_quality_inverts_lower_is_better():
    report = {"tasks": [{"ratio": 0.9, "higher_is_better": True}, {"ratio": 1.25, "higher_is_better": False}]}
    assert tool.quality(report) == pytest.approx((0.9 + 0.8) / 2)


def test_summary_ranks_the_auto_choice_within_budget():
    def row(points, quality, score, over=()):
        return {"branch_at": points, "quality": quality, "score": score, "params": 10, "latency_b1_ms": 1.0,
                "train_seconds": 100.0, "over_budget": list(over), "in_grid": True, "images": 1000}  # fmt: skip

    a, b, c = (dict.fromkeys(TASKS, p) for p in (5, 4, 3))
    rows = [row(a, 0.90, 0.3), row(b, 0.95, 0.2), row(c, 0.99, 0.1, over=["too big"])]
    search = {"budget": {"params": 20, "latency_ms": None}, "cost": {"seconds": 30.0, "images": 300}}
    s = tool.summarise(rows, search, a)
    assert s["auto_rank_within_budget"] == 2 and s["trees_within_budget"] == 2
    assert s["auto_over_best"] == pytest.approx(0.90 / 0.95)
    assert s["kendall_tau_all"] == -1.0 and s["grid_built"] == 3
    assert s["search_seconds"] / s["grid_train_seconds"] == pytest.approx(0.1)


def test_over_budget_reads_the_search_budget():
    report = {"student": {"params": 120, "latency_ms": {"b1": 3.0}}}
    assert tool.over_budget(report, {"params": 100, "latency_ms": None}) == ["120 params > 100"]
    assert tool.over_budget(report, {"params": 200, "latency_ms": 5.0}) == []
    assert tool.over_budget(report, {"params": None, "latency_ms": 2.0}) == ["b1 3.0 ms > 2.0 ms"]


def test_shards_cover_every_tree_once():
    parts = [tool.shard_trees(10, f"{i}/3") for i in range(3)]
    assert sorted(i for p in parts for i in p) == list(range(10)) and parts[0] == {0, 3, 6, 9}
    assert tool.shard_trees(4, "0/1") == {0, 1, 2, 3}
    with pytest.raises(SystemExit):
        tool.shard_trees(4, "3/3")


def test_every_tree_gets_the_searched_students_encoder():
    choice = {"encoder": "tu-lcnet_050", "decoder_channels": [32, 24, 16, 16, 16]}
    assert tool.same_student({"encoder_choice": choice}) == [
        "student.encoder=tu-lcnet_050",
        "student.decoder_channels=[32,24,16,16,16]",
    ]
    assert tool.same_student({"encoder_choice": None}) == []
