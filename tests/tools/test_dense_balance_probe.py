"""The dense-loss probe: oracle teachers from ground truth, one tiny run end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import dense_balance_probe as probe  # noqa: E402
import make_shapes  # noqa: E402


def test_oracle_logits_map_unknown_classes_to_the_background():
    space = probe.parse_teachers(["a=circle|ring"])["a"]
    assert space.names == ("background", "circle", "ring") and space.background == "background"
    classes = ["background", "circle", "square", "ring"]
    logits = probe.oracle_logits(torch.tensor([[[0, 1, 2, 3]]]), classes, space, 4.0)
    assert logits.shape == (1, 3, 1, 4)
    assert logits[0, :, 0].argmax(0).tolist() == [0, 1, 0, 2]  # the square is background to this teacher
    assert logits.max().item() == 4.0


def test_probe_runs_and_writes_per_class_iou(tmp_path):
    for split, seed in (("train", 0), ("val", 1)):
        make_shapes.write_scenes(tmp_path / split, 8, 32, seed)
    out = tmp_path / "probe.json"
    args = ["--data", str(tmp_path), "--balance", "0", "0.5", "--epochs", "1", "--batch", "4", "--size", "16"]
    assert probe.main([*args, "--train-images", "8", "--val-images", "4", "--json", str(out)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [r["balance"] for r in runs] == [0.0, 0.5]
    assert list(runs[0]["iou"]) == ["background", "circle", "square", "triangle", "cross", "ring", "diamond"]
