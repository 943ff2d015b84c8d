"""tools/average_students.py: writes the mean student, exit 2 naming a missing file."""

from __future__ import annotations

import average_students as tool
import torch

from amalgam.labels import LabelSpace
from amalgam.students.build import StudentSpec, build_student
from amalgam.students.serialize import load_student, save_student


def test_writes_the_mean_and_names_a_missing_file(tmp_path, capsys):
    spec = StudentSpec("compact", "resnet18", 5, [16, 16, 8, 8, 8], {"segmentation": 3})
    spaces = {"segmentation": LabelSpace(("background", "a", "b"), "background")}
    paths = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"s{seed}.pt")
        save_student(build_student(spec), spaces, {"name": "r"}, paths[-1])
    assert tool.main([*map(str, paths), "--out", str(tmp_path / "soup.pt")]) == 0
    assert "the mean of 3 students" in capsys.readouterr().out
    weights = [load_student(p)[0].state_dict() for p in [tmp_path / "soup.pt", *paths]]
    key = next(k for k, v in weights[0].items() if v.is_floating_point())
    assert torch.allclose(weights[0][key], sum(w[key] for w in weights[1:]) / 3)

    assert tool.main([str(paths[0]), str(tmp_path / "gone.pt"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "student file not found: " + str(tmp_path / "gone.pt") in capsys.readouterr().err
