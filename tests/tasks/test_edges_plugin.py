"""The example third-party plugin (examples/amalgam-edges): the task contract, its metric by hand,
and, installed with pip into this environment, discovered and used in a build beside built-in tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from contract import TaskContract

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "examples" / "amalgam-edges"
sys.path.insert(0, str(PLUGIN))

from amalgam_edges import EdgeMeter, EdgeTask, label_edges  # noqa: E402


class TestEdgesContract(TaskContract):
    task_name = "edges"

    @pytest.fixture
    def task(self):
        return EdgeTask()  # not registered in this process: the contract runs on the class itself

    def test_get_task_returns_the_plugin(self, task):
        assert task.name == "edges"


def test_label_edges_and_f1_by_hand():
    mask = torch.tensor([[[0, 0, 1], [0, 0, 1], [255, 2, 2]]])
    edges, valid = label_edges(mask)
    assert edges.tolist() == [[[False, True, False], [False, True, True], [False, False, False]]]
    assert valid.sum() == 8
    meter = EdgeMeter()
    pred = torch.tensor([[[False, True, True], [False, False, True], [False, False, False]]])
    meter.update(pred, mask)
    # (1, 0) is no edge: its lower neighbour is ignored. tp 2 (0,1) (1,2); fp 1 (0,2); fn 1 (1,1)
    assert meter.compute() == pytest.approx({"f1": 2 / 3, "precision": 2 / 3, "recall": 2 / 3})


def run(*args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)


def test_installed_plugin_is_found_and_trains_beside_builtin_tasks(world, tmp_path):
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(PLUGIN)]
    done = run(*pip)
    assert done.returncode == 0, done.stderr[-2000:]
    try:
        listed = run(sys.executable, "-m", "amalgam", "tasks")
        assert listed.returncode == 0
        lines = dict(line.split("\t") for line in listed.stdout.strip().splitlines())
        assert "edges" in lines and "amalgam-edges" in lines["edges"]
        assert {"classification", "segmentation", "depth"} <= set(lines)
        raw = yaml.safe_load(world.read_text())
        raw["teachers"]["edges"] = {
            "task": "edges",
            "model": {"from": "python", "factory": "amalgam_edges:sobel_edges"},
            "sources": ["scenes"],
            "eval": "scenes-val",
        }
        recipe = world.parent / f"edges-{tmp_path.name}.yaml"
        recipe.write_text(yaml.safe_dump(raw))
        out = tmp_path / "run"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        build = [sys.executable, "-m", "amalgam", "build", str(recipe), "--output", str(out), "--quiet"]
        done = run(*build, "--set", "train.epochs=1", "--set", "train.samples_per_epoch=8", env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        report = json.loads((out / "report.json").read_text())
        rows = {r["teacher"]: r for r in report["tasks"]}
        assert rows["edges"]["task"] == "edges" and rows["edges"]["metric"] == "f1"
        assert 0.0 <= rows["edges"]["student_value"] <= 1.0 and rows["edges"]["teacher_value"] > 0
        assert {"cls", "seg-a", "seg-b", "depth"} <= set(rows)
    finally:
        run(sys.executable, "-m", "pip", "uninstall", "-y", "-q", "amalgam-edges")
