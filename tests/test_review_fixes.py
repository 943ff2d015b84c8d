"""Review s38's findings: a resume of an older checkpoint read as a divergence, the NaN/inf stop's row
floor at an epoch's end, the cost of the NaN/inf test, label orders copied every step, report.json's
wrap arguments, the search's NaN targets, the export's descriptions and the wrap checked every call."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_faults_nonfinite import failing
from torch import nn
from world import trainer_for

from amalgam.distill.targets import NONFINITE_MIN_ROWS, NonFiniteRows
from amalgam.errors import AmalgamError
from amalgam.task import get_task
from amalgam.training.divergence import DivergenceWatch

QUIET = lambda message: None  # noqa: E731


# 1: a healthy run resumed from a checkpoint without first values is not "diverged" -------------------


def test_a_resume_without_first_values_judges_only_the_epochs_after_it():
    healthy = [{"epoch": e, "cls": c, "seg": 1.2 / e} for e, c in enumerate([6.0, 2.0, 0.9, 0.5], 1)]
    watch = DivergenceWatch()
    watch.load_state_dict(None, len(healthy))  # a checkpoint from before the first values were stored
    watch.see({"cls": 0.45, "seg": 0.3})  # the first step after the resume: a trained student
    assert watch.line([*healthy, {"epoch": 5, "cls": 0.44, "seg": 0.28}], "initial_loss", 4e-3) is None
    blown = watch.line([*healthy, {"epoch": 5, "cls": 9.0, "seg": 0.28}], "initial_loss", 4e-3)
    assert blown and "cls 20x (9 in epoch 5" in blown  # what comes after the resume is still judged
    again = DivergenceWatch()  # a second resume keeps both
    again.load_state_dict(watch.state_dict(), len(healthy) + 1)
    assert again.first == watch.first and again.since == len(healthy)
    flat = DivergenceWatch()  # the first version's checkpoints: {term: first value}, every row judged
    flat.load_state_dict({"cls": 6.0}, 4)
    assert flat.first == {"cls": 6.0} and flat.since == 0


def test_a_trainer_resumed_from_an_older_checkpoint_is_not_called_diverged(world, tmp_path):
    first = trainer_for(world, tmp_path / "a")
    first.callbacks.clear()
    first.train_one_epoch(1)
    state = first.state_dict()
    state.pop("divergence")  # as checkpoints before it
    terms = [k for k in state["history"][0] if k not in ("epoch", "seconds", "lr") and not k.startswith("time_")]
    state["history"][0] |= {k: 1000 * state["history"][0][k] for k in terms}  # an untrained student's epoch 1
    second = trainer_for(world, tmp_path / "b")
    second.callbacks.clear()
    second.load_state_dict(state)
    second.train_one_epoch(2)
    assert second.divergence.line(second.result.history, "initial_loss", 1e-3) is None
    assert second.state_dict()["divergence"]["since"] == 1


# 3: the end-of-epoch NaN/inf stop needs NONFINITE_MIN_ROWS rows, as the mid-epoch one ----------------


def test_a_rarely_drawn_teacher_bad_on_2_of_its_3_rows_warns_and_does_not_stop(world_plan):
    task = world_plan.teachers["seg-a"].task
    counts = NonFiniteRows()
    for value in (float("nan"), 0.0, float("inf")):  # 3 one-row batches in the epoch
        counts.keep("seg-a", ["seg-a"], [torch.full((1, 3, 2, 2), value)], task)
    [line] = counts.epoch_lines()
    assert line.startswith("warning: teacher seg-a answered NaN/inf on 2 of 3 training rows this epoch")
    assert line.endswith(f"most of its rows, but too few to stop on (< {NONFINITE_MIN_ROWS})")


def test_a_teacher_bad_on_every_one_of_its_few_rows_still_stops(world_plan):
    task = world_plan.teachers["seg-a"].task
    counts = NonFiniteRows()
    for _ in range(4):  # no chance makes every image of a teacher fail
        counts.keep("seg-a", ["seg-a"], [torch.full((1, 3, 2, 2), float("nan"))], task)
    with pytest.raises(AmalgamError, match=r"teacher targets are NaN/inf on most rows \(seg-a on 4 of 4 rows\)"):
        counts.epoch_lines()


# 4: a healthy target costs one reduction, not a per-value pass --------------------------------------


@pytest.fixture
def per_row_calls(monkeypatch):
    """Counts the per-row NaN/inf passes of the segmentation and depth tasks."""
    calls = []
    tasks = {name: get_task(name) for name in ("segmentation", "depth")}
    for task in tasks.values():
        real = task.nonfinite_rows
        monkeypatch.setattr(task, "nonfinite_rows", lambda out, _real=real: calls.append(1) or _real(out))
    return tasks, calls


def test_a_healthy_target_takes_no_per_row_pass(per_row_calls):
    tasks, calls = per_row_calls
    seg, depth = tasks["segmentation"], tasks["depth"]
    counts = NonFiniteRows()
    logits = torch.randn(4, 11, 8, 8)
    big = torch.full((4, 3, 8, 8), 60000.0, dtype=torch.float16)  # a float16 sum would overflow
    no_depth = depth.mark_no_answer(torch.rand(4, 1, 8, 8) - 0.2)  # NaN where it is <= 0: not a failure
    assert counts.keep("seg", ["seg"], [logits], seg) is None
    assert counts.keep("seg", ["seg"], [big], seg) is None
    assert counts.keep("depth", ["depth"], [no_depth], depth) is None
    assert calls == []  # on the current code: one per-row pass per call
    assert counts.epoch_lines() == [] and counts.rows == {}


def test_the_cheap_test_still_finds_every_failing_row(per_row_calls):
    tasks, calls = per_row_calls
    seg, depth = tasks["segmentation"], tasks["depth"]
    counts = NonFiniteRows()
    logits = torch.randn(4, 3, 2, 2)
    logits[1, 0, 0, 0], logits[2, 1, 1, 1], logits[3, 2, 0, 1] = float("-inf"), float("inf"), float("nan")
    assert counts.keep("seg", ["seg"], [logits], seg).tolist() == [0]
    marked = depth.mark_no_answer(torch.tensor([[[[1.0, 0.0]]], [[[float("nan"), 2.0]]], [[[2.0, 3.0]]]]))
    assert counts.keep("depth", ["depth"], [marked], depth).tolist() == [0, 2]
    assert len(calls) == 2


# 5: label orders move with the objective once ----------------------------------------------------------


def test_the_label_orders_of_reordered_members_move_with_the_objective(world, tmp_path):
    from amalgam.config.recipe import load_recipe
    from amalgam.distill.objective import Objective
    from amalgam.distill.plan import build_plan

    raw = yaml.safe_load(world.read_text())
    raw["teachers"]["cls2"] = dict(raw["teachers"]["cls"], labels=["dog", "cat"])  # cls's labels, swapped
    raw["amalgamation"]["ensemble"] = {"type": "mean"}
    path = world.parent / f"swapped-{tmp_path.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    plan = build_plan(load_recipe(path), with_data=False, log=QUIET)
    objective = Objective(plan, student=None)
    swapped = objective._in_group_order("cls2", torch.tensor([[1.0, 2.0]]))
    assert swapped.tolist() == [[2.0, 1.0]]
    assert "label_order_0" in dict(objective.named_buffers())
    assert not any(k.startswith("label_order") for k in objective.state_dict())  # checkpoints as before
    objective.to("meta")  # a device move takes them along
    assert objective.label_orders["cls2"].device.type == "meta"


# 6: report.json's wrap arguments are JSON whatever a plugin keeps ---------------------------------


def test_the_args_of_a_wrap_holding_a_tensor_a_numpy_number_and_a_path_are_json():
    from amalgam.teachers.subteachers import SubTeacher

    class Weighted(SubTeacher):
        def __init__(self, weights=(1.0, 2.0), scale=0.5, folder="x", nested=None):
            self.weights, self.scale = torch.tensor(weights), np.float32(scale)
            self.folder, self.nested = Path(folder), {1: (np.int64(3), torch.tensor(1.5))}

    args = Weighted().args()
    assert json.loads(json.dumps(args)) == {
        "weights": [1.0, 2.0], "scale": 0.5, "folder": "x", "nested": {"1": [3, 1.5]},
    }  # fmt: skip


# 8: the search leaves NaN/inf rows out, as training does --------------------------------------------


def test_the_search_leaves_a_teachers_nonfinite_rows_out_of_its_affinities(world, tmp_path, monkeypatch):
    from amalgam.config.recipe import load_recipe
    from amalgam.distill.affinity import measure_affinity
    from amalgam.distill.plan import build_plan

    quick = ["student.search.steps=2", "student.search.every=1", "student.budget.params=1000"]
    plan = build_plan(load_recipe(world, quick), log=QUIET)
    bad = failing(monkeypatch, plan, "seg-a", float("nan"), every=3)
    lines = []
    affinity = measure_affinity(plan, torch.device("cpu"), tmp_path / "warmup.pt", lines.append)
    assert bad.failed > 0
    assert all(np.isfinite(v) for stage in affinity.table for row in stage for v in row), affinity.table
    said = [line for line in lines if "answered NaN/inf" in line]
    assert len(said) == 1 and said[0].startswith("search: warning: teacher seg-a answered NaN/inf on "), lines


# quality: the export's description is the task's; a wrap is checked once ---------------------------


def test_export_asks_the_task_what_its_output_means(monkeypatch):
    from amalgam.evaluation.export import output_meaning
    from amalgam.task import TASKS, Task

    class Heatmaps(Task):
        name, dense, labelled = "heatmaps", True, True

        def output_meaning(self, labels, shape):
            return f"heatmaps [{', '.join(map(str, shape[1:]))}]: one sigmoid map per keypoint listed"

    class Boxes(Task):  # no hook: only what is known
        name, dense, labelled = "boxes", True, True

    monkeypatch.setitem(TASKS._items, "heatmaps", Heatmaps)
    monkeypatch.setitem(TASKS._items, "boxes", Boxes)
    shape = (2, 17, 16, 16)
    said = output_meaning("heatmaps", ["nose"], shape, (32, 32))
    half = "1/2 of the input's height and width (16x16 at 32x32)"  # a decoder ending at a stride
    assert said == f"heatmaps [17, 16, 16]: one sigmoid map per keypoint listed, at {half}"
    plain = output_meaning("boxes", ["car"], shape, (32, 32))  # a dense labelled task is not segmentation
    assert plain == f"boxes logits [batch, 17, 16, 16] over the labels listed, in their order, at {half}"
    unknown = output_meaning("absent", None, (2, 4), (32, 32))  # its plugin is not installed here
    assert unknown == "absent [batch, 4] in the unit the student was trained on"
    # the built-ins say what they said before
    assert output_meaning("depth", None, (2, 1, 32, 32), (32, 32)) == (
        "depth [batch, 1, 32, 32] in metres, as the student was trained (its teachers' depth converted"
        " to metres); a student taught only by relative-depth teachers (output: relative or affine) knows it"
        " only up to a per-image scale and shift (of its inverse, or of itself), as its output's teachers list"
        " says, at the input's height and width"
    )
    assert output_meaning("segmentation", ["a", "b"], (2, 2, 32, 32), (32, 32)).endswith(
        "in their order (argmax over dim 1: each pixel's label), at the input's height and width"
    )
    assert output_meaning("classification", ["a", "b"], (2, 2), (32, 32)).endswith(
        "(apply a softmax over dim 1 for probabilities)"
    )


def test_a_wrap_checks_its_network_once_not_at_every_call(monkeypatch):
    from amalgam.errors import AmalgamError
    from amalgam.teachers.subteachers import build_subteacher

    wrap = build_subteacher("mc_dropout", {"samples": 2})
    checks = []
    real = wrap.check
    monkeypatch.setattr(wrap, "check", lambda model, task: checks.append(model) or real(model, task))
    model = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5))
    task = get_task("classification")
    for _ in range(3):
        wrap(model, model, task, torch.rand(2, 4))
    assert len(checks) == 1
    with pytest.raises(AmalgamError, match="the teacher has no dropout layers"):  # another network: checked
        wrap(model, nn.Linear(4, 3), task, torch.rand(2, 4))
