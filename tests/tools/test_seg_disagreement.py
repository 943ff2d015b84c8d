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


def test_a_teacher_that_does_not_segment_is_refused(world, built_run):
    with pytest.raises(SystemExit, match="'depth' is not a segmentation teacher"):
        seg_disagreement.disagreement(world, built_run / "student.pt", "depth")
