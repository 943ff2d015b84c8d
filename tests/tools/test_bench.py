"""tools/bench.py on the tiny world: per-epoch speed, a time split that adds up, FLOPs and peak."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "tools" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_measures_every_section(world, tmp_path):
    bench = load_bench()
    out = tmp_path / "bench.json"
    args = [str(world), "--epochs", "2", "--samples", "8", "--limit", "4", "--output", str(tmp_path / "run")]
    assert bench.main(args + ["--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [e["epoch"] for e in report["epochs"]] == [1, 2]
    for e in report["epochs"]:
        split = e["split_seconds"]
        assert set(split) == {"data", "teachers", "student", "optimizer"}
        assert all(v >= 0 for v in split.values())
        # each value is rounded to 0.01 s: allow half a unit per rounded term
        assert sum(split.values()) <= e["seconds"] * 1.05 + 0.005 * (len(split) + 1)
    # 4 images per source, 8 draws per epoch: epoch 2 re-draws images cached in epoch 1
    assert report["epochs"][1]["cache_hit_rate"] > report["epochs"][0]["cache_hit_rate"]
    assert report["student_training_gflop_per_image"] > 0 and report["matmul_peak_gflops_fp32"] > 0
    assert report["peak_memory_mb"] > 0 and report["command"].startswith("python tools/bench.py")


def test_flops_are_counted_on_the_rows_a_step_routes(world):
    """Dense branches skip the rows of other sources while training: the count skips them too."""
    from amalgam.config.recipe import load_recipe
    from amalgam.distill.plan import build_plan
    from amalgam.students.build import build_student

    bench = load_bench()
    plan = build_plan(load_recipe(world), log=lambda m: None)
    student = build_student(plan.student_spec())
    cpu = torch.device("cpu")
    rows = bench.expected_rows(plan, student, 8, cpu)
    assert rows and all(0 < len(r) < 8 for r in rows.values())
    routed = bench.training_flops_per_image(student, (32, 32), 8, cpu, rows)
    assert 0 < routed < bench.training_flops_per_image(student, (32, 32), 8, cpu)
    off = build_plan(load_recipe(world, ["train.route_rows=false"]), log=lambda m: None)
    assert bench.expected_rows(off, student, 8, cpu) is None
