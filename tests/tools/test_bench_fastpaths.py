"""tools/bench_fastpaths.py on the tiny world: every teacher and student variant is timed."""

from __future__ import annotations

import json

import bench_fastpaths


def test_every_fast_path_is_timed_against_its_plain_counterpart(world, tmp_path):
    out = tmp_path / "fast.json"
    args = [str(world), "--batch", "2", "--repeats", "1", "--size", "32", "32", "--json", str(out)]
    assert bench_fastpaths.main(args) == 0
    report = json.loads(out.read_text())
    teachers = [r for r in report["rows"] if r["model"].startswith("teacher ")]
    assert len(teachers) == 4  # the tiny world's teachers
    for row in teachers:
        assert set(row["images_per_second"]) == {
            "no_grad",
            "inference_mode",
            "no_grad + channels_last",
            "inference_mode + channels_last",
        }
    student = report["rows"][-1]["images_per_second"]
    assert set(student) == {"fp32", "bfloat16 autocast", "fp32 + channels_last"}
    assert all(v > 0 for row in report["rows"] for v in row["images_per_second"].values())
    assert report["matmul_peak_gflops"]["float32"] > 0
