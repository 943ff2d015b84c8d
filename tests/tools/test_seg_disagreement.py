"""tools/seg_disagreement.py on the tiny world's build: consistent confusion matrices, clear errors."""

from __future__ import annotations

import pytest
import seg_disagreement


def test_matrices_cover_every_eval_pixel_and_agree_with_each_other(world, built_run, capsys):
    result = seg_disagreement.disagreement(world, built_run / "student.pt", "seg-a")
    assert result["classes"] == ["background", "disc", "square"]
    gt_t, gt_s, t_s = result["gt_teacher"], result["gt_student"], result["teacher_student"]
    assert int(gt_t.sum()) == 6 * 32 * 32  # the world's 6 val scenes of 32x32
    assert gt_t.sum(1).tolist() == gt_s.sum(1).tolist()  # same ground truth
    assert t_s.sum(1).tolist() == gt_t.sum(0).tolist()  # teacher's predictions, counted two ways
    assert t_s.sum(0).tolist() == gt_s.sum(0).tolist()  # student's predictions, counted two ways
    assert seg_disagreement.main([str(world), str(built_run / "student.pt"), "seg-a"]) == 0
    assert "teacher x student" in capsys.readouterr().out


def test_a_classifier_is_counted_per_image(world, built_run, capsys):
    result = seg_disagreement.disagreement(world, built_run / "student.pt", "cls")
    assert result["unit"] == "images" and result["classes"] == ["cat", "dog"]
    # the world's items-val holds cat, dog and bird (4 each): bird is no class of the teacher's
    assert int(result["gt_teacher"].sum()) == 8
    assert result["teacher_student"].sum(1).tolist() == result["gt_teacher"].sum(0).tolist()
    assert seg_disagreement.main([str(world), str(built_run / "student.pt"), "cls"]) == 0
    assert "images given it by teacher / student / both" in capsys.readouterr().out


def test_a_teacher_without_labels_is_refused(world, built_run):
    with pytest.raises(SystemExit, match="'depth' is not a teacher with labels"):
        seg_disagreement.disagreement(world, built_run / "student.pt", "depth")
