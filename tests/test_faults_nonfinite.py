"""Trial D faults: a teacher that answers NaN/inf on some images is counted and left out (evaluation
and training), a damaged student.pt or report.json is one line, and damaged cache rows are said once."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from amalgam.errors import AmalgamError


class FailsOnSome:
    """A teacher's network (``Teacher.run``) that answers ``value`` on every ``every``-th image it is
    asked about (counted over all its calls, from ``first``), as a model failing on some inputs does."""

    def __init__(self, inner, value: float, every: int = 3, first: int = 0):
        self.inner, self.value, self.every, self.first = inner, value, every, first
        self.asked = self.failed = 0

    def __call__(self, x):
        out = self.inner(x).clone()
        rows = torch.arange(self.asked, self.asked + x.shape[0])
        bad = ((rows - self.first) % self.every == 0) & (rows >= self.first)
        out[bad] = self.value
        self.asked += x.shape[0]
        self.failed += int(bad.sum())
        return out


def failing(monkeypatch, plan, name: str, value: float, every: int = 3, first: int = 0) -> FailsOnSome:
    """Wraps teacher ``name``'s network in :class:`FailsOnSome` for the test."""
    teacher = plan.teachers[name]
    wrapper = FailsOnSome(teacher.run, value, every, first)
    monkeypatch.setattr(teacher, "run", wrapper)
    return wrapper


@pytest.fixture(scope="module")
def student(world_plan):
    from amalgam.students.build import build_student

    torch.manual_seed(0)
    return build_student(world_plan.student_spec())


def scored(plan, student, **kwargs):
    from amalgam.evaluation.evaluate import evaluate

    lines = []
    result = evaluate(plan, student, torch.device("cpu"), log=lines.append, **kwargs)
    return {r.teacher: r for r in result.tasks}, result, lines


# ---- F1 (evaluation): images a teacher answers NaN/inf on leave its row, the teacher's and the student's score


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_eval_leaves_a_teachers_nonfinite_images_out_of_both_scores_and_says_so(
    value, world_plan, student, monkeypatch
):
    healthy, _, _ = scored(world_plan, student)
    failing(monkeypatch, world_plan, "depth", value)  # 6 images in one batch: images 0 and 3
    rows, result, lines = scored(world_plan, student)
    depth = rows["depth"]
    assert depth.left_out == [0, 3] and depth.images == 6
    line = (
        "teacher depth answered NaN/inf on 2 of 6 eval images ('scenes-val'): they are left out of its and the"
        " student's scores"
    )
    assert result.warnings()[0] == line and f"warning: {line}" in lines
    # both meters scored the same 4 images, so the ratio compares like with like
    assert depth.teacher_metrics["pixels"] == depth.student_metrics["pixels"] == 4 * 32 * 32
    assert 0 < depth.teacher_metrics["rmse"] < float("inf")
    # not 1 mm nor inf: the teacher's score on the images it answered is what a healthy run gives there
    assert depth.teacher_metrics["rmse"] == pytest.approx(healthy["depth"].teacher_metrics["rmse"], rel=0.5)
    # nor does its scale move (the tiny world's teacher is in another unit than its set anyway)
    assert depth.teacher_metrics["scale"] == pytest.approx(healthy["depth"].teacher_metrics["scale"], rel=0.2)
    # the other teachers answered everything: no line, nothing left out
    assert rows["seg-a"].left_out == [] and sum("NaN/inf" in w for w in result.warnings()) == 1


def test_eval_of_a_teacher_nonfinite_everywhere_has_no_score_not_inf(world_plan, student, monkeypatch):
    failing(monkeypatch, world_plan, "depth", float("inf"), every=1)
    rows, result, _ = scored(world_plan, student)
    row = rows["depth"].row()
    assert row["teacher_value"] != row["teacher_value"] and row["ratio"] != row["ratio"]  # NaN: null in JSON
    assert "on 6 of 6 eval images" in result.warnings()[0]


def test_eval_leaves_nan_segmentation_logits_out_instead_of_taking_their_argmax(world_plan, student, monkeypatch):
    failing(monkeypatch, world_plan, "seg-a", float("nan"), every=2)
    rows, result, _ = scored(world_plan, student)
    assert rows["seg-a"].left_out == [0, 2, 4] and rows["seg-b"].left_out == []
    assert "teacher seg-a answered NaN/inf on 3 of 6 eval images" in result.warnings()[0]


def test_scoring_the_student_alone_leaves_out_the_images_found_before(world_plan, student, monkeypatch):
    from amalgam.evaluation.during import scores_row

    wrapper = failing(monkeypatch, world_plan, "depth", float("nan"))
    reference, left_out = {}, {}
    first = scores_row(world_plan, student, torch.device("cpu"), reference, left_out)
    asked = wrapper.asked
    again = scores_row(world_plan, student, torch.device("cpu"), reference, left_out)
    assert wrapper.asked == asked  # the teacher was not run again
    assert left_out["depth"] == [0, 3] and again == first


# ---- F1 (training): NaN/inf targets are counted per teacher and epoch, left out, or stop naming the teacher


def test_training_counts_nonfinite_targets_once_per_epoch_and_leaves_those_rows_out(world, tmp_path, monkeypatch):
    from world import trainer_for

    lines = []
    trainer = trainer_for(world, tmp_path / "run", log=lines.append)
    wrapper = failing(monkeypatch, trainer.plan, "depth", float("nan"), every=3, first=1)
    trainer.fit()
    said = [line for line in lines if "answered NaN/inf" in line]
    assert len(said) == 2, said  # one line per epoch, not one per batch
    assert wrapper.failed > 0
    total = sum(int(line.split(" on ")[1].split(" of ")[0]) for line in said)
    assert total == wrapper.failed
    assert said[0].startswith("warning: teacher depth answered NaN/inf on ") and "training rows this epoch" in said[0]
    assert all(v == v for row in trainer.result.history for v in row.values() if isinstance(v, float))


def test_a_teacher_nonfinite_on_most_rows_stops_naming_the_teacher_not_the_loss(world, tmp_path, monkeypatch):
    from world import trainer_for

    from amalgam.distill import targets

    # the tiny world's epoch asks seg-a about a few rows, under NONFINITE_MIN_ROWS (which only warns)
    monkeypatch.setattr(targets, "NONFINITE_MIN_ROWS", 1)
    trainer = trainer_for(world, tmp_path / "run")
    failing(monkeypatch, trainer.plan, "seg-a", float("nan"), every=1)
    with pytest.raises(AmalgamError) as info:
        trainer.fit()
    message = str(info.value)
    assert "\n" not in message and "loss of teacher term" not in message
    assert message.startswith("epoch 1 step 1: teacher targets are NaN/inf on most rows (seg-a on "), message


def test_objective_leaves_nonfinite_rows_out_of_the_term(world_plan):
    from amalgam.distill.targets import NonFiniteRows

    task = world_plan.teachers["seg-a"].task
    target = torch.zeros(4, 3, 2, 2)
    target[1, 0, 0, 0] = float("nan")
    target[3, 2, 1, 1] = float("-inf")
    counts = NonFiniteRows()
    assert counts.keep("seg-a", ["seg-a"], [target], task).tolist() == [0, 2]
    assert counts.keep("seg-a", ["seg-a"], [torch.zeros(4, 3, 2, 2)], task) is None
    assert counts.epoch_lines() == [
        "warning: teacher seg-a answered NaN/inf on 2 of 8 training rows this epoch: left out of its term"
        " (a teacher failing on some images; they teach nothing)"
    ]
    assert counts.epoch_lines() == []  # reset each epoch


def test_depth_no_depth_stays_apart_from_the_teachers_own_nan(world_plan):
    task = world_plan.teachers["depth"].task
    out = torch.tensor([[[[1.0, 0.0]]], [[[float("nan"), 2.0]]], [[[-1.0, float("inf")]]]])
    marked = task.mark_no_answer(out)
    assert task.nonfinite_rows(marked).tolist() == [False, True, True]  # a 0 or -1 is no depth, not a failure


# ---- F3: a damaged student.pt is refused in one line


def tiny_student_file(path):
    from amalgam.labels import LabelSpace
    from amalgam.students.build import StudentSpec, build_student
    from amalgam.students.serialize import save_student

    student = build_student(StudentSpec("branched", "tu-test_resnet", 3, [16, 16, 8, 8, 8], {"classification": 3}))
    save_student(student, {"classification": LabelSpace(("a", "b", "c"))}, {"name": "t"}, path)
    return path


def test_a_student_file_failing_its_crc_is_refused_in_one_line(tmp_path):
    from amalgam.students.serialize import load_student

    path = tiny_student_file(tmp_path / "student.pt")
    data = bytearray(path.read_bytes())
    start = len(data) // 3
    data[start : start + 4096] = bytes(4096)  # a zeroed stretch of the weights: still unpickles
    path.write_bytes(bytes(data))
    with pytest.raises(AmalgamError) as info:
        load_student(path)
    message = str(info.value)
    assert message.startswith(f"student file {path} is damaged: ") and "\n" not in message


def test_an_empty_student_file_is_one_line_not_an_index_error(tmp_path):
    from amalgam.students.serialize import init_student, load_student

    path = tmp_path / "student.pt"
    path.write_bytes(b"")
    with pytest.raises(AmalgamError, match=r"is damaged: it is empty \(0 bytes\)"):
        load_student(path)
    with pytest.raises(AmalgamError, match=r"^student\.init: .*is damaged: it is empty"):
        init_student(nn.Linear(1, 1), {}, path)


# ---- F9.1: a damaged report.json is one line naming the fix


def test_report_of_a_damaged_report_json_is_one_line(tmp_path, capsys):
    from amalgam.cli import main

    run = tmp_path / "run"
    run.mkdir()
    # a trial: the advice dropped the build's --set options, and the report it wrote scored 200 images, not 100
    (run / "run.json").write_text(json.dumps({"recipe": "/r/recipe.yaml", "set": ["data.eval.x.limit=100"]}))
    (run / "student.pt").write_bytes(b"")
    (run / "report.json").write_text('{"name": "tiny",\n')  # cut short by a killed write
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"amalgam: error: {run / 'report.json'} is damaged (JSONDecodeError: ")
    assert err[0].endswith(
        f"run amalgam eval /r/recipe.yaml --set data.eval.x.limit=100 --student {run / 'student.pt'} --json"
        f" {run / 'report.json'}"
        " to score the student again"
    )


# ---- F9.3: damaged cache rows are said once per epoch with the total


def test_damaged_cache_rows_are_one_line_per_flush_not_per_batch(world_plan, tmp_path):
    from test_faults import scene_batch

    from amalgam.distill.cache import TeacherCache

    root = tmp_path / "cache"
    cache = TeacherCache(root, world_plan, lambda msg: None)
    images, source, index = scene_batch(world_plan, 4)
    cache.targets(images, source, index, None)("depth", torch.arange(4))
    cache.flush()
    cache.stores["depth"].sums[:4] += 1  # every row's checksum now fails
    lines = []
    cache.log = lines.append
    for half in (torch.arange(2), torch.arange(2, 4)):  # two batches
        cache.targets(images, source, index, None)("depth", half)
    assert lines == []
    cache.flush()
    assert lines == [
        "teacher cache 'depth': 4 rows failed their checksum (the file changed outside amalgam?): recomputed from"
        " the teacher"
    ]
