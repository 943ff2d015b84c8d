"""tools/bench_torchdistill.py on the tiny world's classification teacher: all three rows are measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torchdistill")

import bench_torchdistill  # noqa: E402


def one_teacher_recipe(world: Path) -> Path:
    """The tiny world cut down to its classification teacher, with a fixed task weight (plain KD)."""
    raw = yaml.safe_load(world.read_text())
    raw["teachers"] = {"cls": raw["teachers"]["cls"]}
    raw["data"]["sources"] = {"items": raw["data"]["sources"]["items"]}
    raw["data"]["eval"] = {"items-val": raw["data"]["eval"]["items-val"]}
    raw["amalgamation"] = {"temperature": 4.0, "features": "none", "task_weights": {"cls": 1.0}}
    path = world.parent / "kd.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_both_sides_train_and_score(fresh_world, tmp_path):
    out = tmp_path / "bench.json"
    args = [str(one_teacher_recipe(fresh_world)), "--epochs", "1", "--batch-size", "8", "--samples", "24"]
    assert bench_torchdistill.main(args + ["--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {r["side"]: r for r in report["rows"]}
    assert set(rows) == {"amalgam, cached", "amalgam, live teacher", "torchdistill"}
    for row in rows.values():
        assert row["epochs"] == 1 and row["images"] == 24
        assert row["images_per_second"] > 0 and 0.0 <= row["top1"] <= 1.0
        assert row["speed_vs_torchdistill"] > 0
    assert rows["torchdistill"]["speed_vs_torchdistill"] == 1.0
    assert rows["torchdistill"]["final_lr"] == pytest.approx(0.0, abs=1e-12)  # the cosine ran over all steps
    assert len(rows["amalgam, cached"]["cache_hit_rate"]) == 1
    assert report["torchdistill"] and report["command"].startswith("python tools/bench_torchdistill.py")


def test_refuses_a_recipe_with_several_teachers(world):
    with pytest.raises(bench_torchdistill.AmalgamError, match="exactly one teacher"):
        bench_torchdistill.main([str(world), "--skip-torchdistill"])
