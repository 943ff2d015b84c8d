"""Depth teachers read wrong, caught before training against the eval set's depth (trial F, S2).

The eval set's images encode its depth (grey level), so a teacher that reads depth off the image
is competent, and the wrong readings of one are made from it: a disparity left at the default
reading (metric) is upside down, a MiDaS-style relative inverse depth declared ``inverse`` is off
by an unknown scale and shift, and a depth in another unit is off by a scale.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
import yaml
from amalgam_tasks.depth import DepthMeter, DepthTask, RelativeDepthMeter, log_depth_loss, relative_depth_loss
from PIL import Image

import amalgam
from amalgam.config.recipe import load_recipe
from amalgam.distill.objective import Objective
from amalgam.distill.plan import build_plan
from amalgam.errors import AmalgamError, RecipeError
from amalgam.task import DistillOptions

MODELS = """
import torch
from torch import nn


class FromImage(nn.Module):
    '''Depth read off the grey level (1 + 5 * value metres), answered as ``mode`` says.'''

    def __init__(self, mode):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))
        self.mode = mode

    def forward(self, x):
        depth = (1.0 + 5.0 * x[:, :1]) * self.gain
        if self.mode == "disparity":
            return 16.0 / depth
        if self.mode == "relative":  # MiDaS-like: relative inverse depth, scale and shift unknown
            return 0.5 / depth + 0.0625
        if self.mode == "shifted_disparity":  # MiDaS-like with a negative shift: below 0 on far pixels
            return 16.0 / depth - 6.0
        if self.mode == "log":  # log metres
            return torch.log(depth)
        if self.mode == "log10":  # log10 metres
            return torch.log10(depth)
        if self.mode == "metric_035":  # metres, at 0.35x: in a room of 1-6 m, exp of it is near the truth's scale
            return 0.35 * depth
        if self.mode == "centimetres":
            return 100.0 * depth
        if self.mode == "millimetres":
            return 1000.0 * depth
        if self.mode == "gamma":  # depth warped by a power, scaled back to metres by output_scale: its order kept
            return depth**0.3
        if self.mode == "log_centimetres":
            return torch.log(100.0 * depth)
        if self.mode == "wants_half":  # trained on [-1, 1] inputs: the grey level is (x + 1) / 2
            return (1.0 + 5.0 * (x[:, :1] * 0.5 + 0.5)) * self.gain
        if self.mode == "sky_inf":  # metres, and +inf on the top rows (a depth made from a disparity of 0 there)
            rows = torch.arange(x.shape[-2], device=x.device).view(1, 1, -1, 1)
            return torch.where(rows < x.shape[-2] // 8, torch.full_like(depth, float("inf")), depth)
        if self.mode == "half_at_16":  # trained on [-1, 1] inputs at 16x16
            x, self.mode = x * 0.5 + 0.5, "trained_at_16"
            try:
                return self.forward(x)
            finally:
                self.mode = "half_at_16"
        if self.mode.startswith("trained_at_"):  # right at NxN only: at another size half its pixels 1.6x too far
            rows, cols = torch.meshgrid(torch.arange(x.shape[-2]), torch.arange(x.shape[-1]), indexing="ij")
            blocks = (rows * 4 // x.shape[-2] + cols * 4 // x.shape[-1]) % 2  # a 4x4 checker at any size
            return depth if x.shape[-1] == int(self.mode[11:]) else depth * (1.0 + 0.6 * blocks)
        if self.mode == "constant":  # a teacher that cannot do its job: the same depth everywhere
            return torch.full_like(depth, 3.0)
        return depth


def from_image(mode="metric"):
    return FromImage(mode)
"""


def write_scenes(root: Path, count: int, seed: int) -> None:
    """32x32 scenes whose grey level is their depth: 1-6 m, a ramp with a random tilt per image."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "depth"):
        (root / sub).mkdir(parents=True)
    rows, cols = np.mgrid[0:32, 0:32] / 31.0
    for i in range(count):
        a, b = rng.uniform(0.2, 0.8, 2)
        value = np.clip(a * rows + b * cols + rng.uniform(-0.2, 0.2), 0.0, 1.0)
        grey = np.round(value * 255).astype(np.uint8)
        Image.fromarray(np.stack([grey] * 3, -1)).save(root / "images" / f"{i:03d}.png")
        depth_mm = np.round((1.0 + 5.0 * grey / 255.0) * 1000).astype(np.uint16)
        Image.fromarray(depth_mm).save(root / "depth" / f"{i:03d}.png")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("depth_world")
    (root / "models.py").write_text(MODELS)
    write_scenes(root / "train", 4, seed=0)
    write_scenes(root / "val", 6, seed=1)
    return root


def plan_of(root: Path, mode: str, eval_set: Optional[dict] = None, **teacher):
    """The plan of one depth teacher answering as ``mode``, and the lines it logged (``eval_set``: keys
    of the eval set beside its type and path)."""
    recipe = {
        "name": f"depth-{mode}",
        "device": "cpu",
        "data": {
            "image_size": [32, 32],
            "sources": {"train": {"type": "folder", "path": "train/images"}},
            "eval": {"val": {"type": "dense", "path": "val", **(eval_set or {})}},
        },
        "teachers": {
            "d": {
                "task": "depth",
                "model": {"from": "python", "factory": "models:from_image", "mode": mode},
                "input": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
                "eval": "val",
                **teacher,
            }
        },
        "student": {"encoder": "tu-test_resnet"},
        "train": {"workers": 0},
    }
    path = root / f"{mode}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    said: list[str] = []
    return build_plan(load_recipe(path), log=said.append), said


def warnings_in(said: list[str]) -> list[str]:
    return [line for line in said if line.startswith("warning:")]


def test_a_disparity_read_as_metres_stops_before_training_naming_the_reading(scenes):
    with pytest.raises(RecipeError) as info:
        plan_of(scenes, "disparity")
    message = str(info.value)
    assert message.startswith("teachers.d.output: teacher 'd' (read as metric) is upside down on its eval set")
    assert "it reads like disparity / inverse depth: set teachers.d.output: inverse" in message
    assert "\n" not in message
    with pytest.raises(RecipeError) as info:
        plan_of(scenes, "disparity", output="inverse")  # the right way up, but 16 / metres: another unit
    # a trial's MiDaS-like net (37 / d + 4) took the scale offered first and passed, distorted: relative comes first
    assert re.search(
        r"depth is 0\.0625x .*: an inverse depth of no metric scale, .*: set teachers\.d\.output: relative\."
        r" If its inverse depth is metric in another unit, set teachers\.d\.output_scale: 0\.0625 ",
        str(info.value),
    )
    plan_of(scenes, "disparity", output="inverse", output_scale=0.0625)


def test_a_relative_inverse_depth_declared_inverse_is_warned_about_before_training(scenes):
    _, said = plan_of(scenes, "relative", output="inverse")
    lines = warnings_in(said)
    assert len(lines) == 1 and "teacher d's depth looks like relative depth (an unknown scale and shift" in lines[0]
    assert "it is distilled and scored as metric depth: if it is relative depth" in lines[0]


def test_a_depth_in_another_unit_stops_before_training_with_the_scale_that_fixes_it(scenes):
    # in millimetres it warned and built on: the student learnt millimetres, its report read 46x better
    with pytest.raises(RecipeError) as info:
        plan_of(scenes, "centimetres")
    message = str(info.value)
    assert message.startswith("teachers.d.output: teacher d's depth is 100x the depth of eval set 'val'")
    assert "another unit (centimetres?). If the teacher answers in it, set teachers.d.output_scale: 0.01 " in message
    assert "fix data.eval.val.depth_scale" in message
    plan, said = plan_of(scenes, "centimetres", output_scale=0.01)
    assert not warnings_in(said)
    assert "times 0.01 (output_scale)" in plan.teachers["d"].output_note()
    with pytest.raises(RecipeError, match=r"teachers\.d\.output_scale: expected a finite number > 0"):
        plan_of(scenes, "metric", output_scale=0)
    with pytest.raises(RecipeError, match=r"depth is 10x .*\.output_scale: 0\.1 \(times any output_scale it has now"):
        plan_of(scenes, "centimetres", output_scale=0.1)  # measured after the scale it has
    with pytest.raises(RecipeError, match=r"depth is 100x .* wrap teacher d so that it answers in metres"):
        plan_of(scenes, "log_centimetres", output="log")  # a scale of its log is no unit


def test_a_depth_teacher_giving_no_depth_where_the_set_has_it_stops_naming_relative(scenes):
    # a trial: a MiDaS-like disparity with a negative shift, read as inverse (and scaled as the unit stop said)
    # answered <= 0 on 46% of the pixels: masked out of its targets, with a 1.7 km rmse, and no word
    with pytest.raises(RecipeError) as info:
        plan_of(scenes, "shifted_disparity", output="inverse")
    message = str(info.value)
    assert re.match(
        r"teachers\.d\.output: teacher d gives no depth \(<= 0 or not finite\) on \d+% of the pixels where"
        r" eval set 'val'",
        message,
    )
    assert "a disparity with a shift (MiDaS, DPT: values below 0) is output: relative" in message
    plan_of(scenes, "shifted_disparity", output="relative")  # read as it is: passes


@pytest.mark.parametrize("declared", [{}, {"output": "metric"}])
def test_log_metres_read_as_metres_stop_naming_output_log_and_the_scale(scenes, declared):
    # a trial: a log-metres head declared metric was warned of as another scale only, then distilled as metres;
    # a second trial's, at the default reading, warned and built on too
    with pytest.raises(RecipeError) as info:
        plan_of(scenes, "log", **declared)
    message = str(info.value)
    assert message.startswith("teachers.d.output: teacher d read as metres is ")
    assert "read as log depth it agrees in scale (1x, r 1.000, rmse " in message
    assert re.search(
        r"if it answers log metres, set teachers\.d\.output: log; if metres at another scale,"
        r" teachers\.d\.output_scale: [0-9.]+ \(times any output_scale it has now\)$",
        message,
    )
    plan_of(scenes, "log", output="log")  # read as it is: passes
    _, said = plan_of(scenes, "metric")  # a metric teacher: no such line
    assert not [line for line in said if "read as log depth" in line]


def test_a_metric_teacher_at_another_scale_agreeing_as_log_too_is_warned_with_its_scale_first(scenes):
    # a review: k * t ~ log t in rooms of 1-5 m, and the stop sent a competent metric teacher to output: log,
    # which then passed and distilled warped depth; it follows the truth better as metres
    _, said = plan_of(scenes, "metric_035")
    (line,) = [line for line in warnings_in(said) if "read as log depth it agrees in scale" in line]
    assert "if it answers metres at another scale, set teachers.d.output_scale: 2.86" in line
    assert line.endswith("; if log metres, teachers.d.output: log")


def test_every_depth_teacher_off_its_eval_set_alike_names_the_set_first(scenes):
    # a trial: a set's maps read at the wrong depth_scale stopped naming the first teacher and its output_scale
    def teacher(mode: str) -> dict:
        model = {"from": "python", "factory": "models:from_image", "mode": mode}
        return {"task": "depth", "model": model, "input": {"mean": [0.0] * 3, "std": [1.0] * 3}, "eval": "val"}

    plan_of(scenes, "metric")  # writes the one-teacher recipe this one starts from
    recipe = yaml.safe_load((scenes / "metric.yaml").read_text())
    recipe["teachers"] = {"a": teacher("centimetres"), "b": teacher("centimetres")}
    path = scenes / "two_off.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    with pytest.raises(RecipeError) as info:
        build_plan(load_recipe(path), log=lambda m: None)
    message = str(info.value)
    assert message.startswith("data.eval.val: 2 teachers' readings disagree with its ground truth (a: 6 images,")
    assert "scale 100x" in message.split("; b: ")[1]  # each teacher with what its check measured
    assert "its maps are likely read wrong (depth_scale" in message
    assert "teachers.a.output: teacher a's depth" in message
    recipe["teachers"]["b"] = teacher("metric")  # one teacher off: its own stop, as before
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    with pytest.raises(RecipeError, match=r"^teachers\.a\.output: teacher a's depth is 100x"):
        build_plan(load_recipe(path), log=lambda m: None)


def test_output_scale_is_refused_for_a_labelled_teacher(world):
    with pytest.raises(RecipeError, match=r"teachers\.cls\.output_scale: a classification teacher's output is read"):
        load_recipe(world, ["teachers.cls.output_scale=0.5"])


@pytest.mark.parametrize("output", ["metric", "relative"])
def test_a_depth_teacher_answering_a_constant_is_warned_about_before_training(scenes, output):
    # it passed the check: a NaN correlation is not below the upside-down line, its scale within the band
    _, said = plan_of(scenes, "constant", output=output)
    lines = warnings_in(said)
    assert len(lines) == 1 and "teacher d hardly follows its eval set's depth (its depth is constant" in lines[0]


def test_a_competent_depth_teacher_passes_the_check_and_the_log_says_the_rule(scenes):
    plan, said = plan_of(scenes, "metric")
    assert warnings_in(said) == []
    checked = [line for line in said if line.startswith("teacher 'd' reading (metric) checked against 'val'")]
    assert len(checked) == 1 and "log-depth r 1.000 with the truth, scale 1x" in checked[0], said
    assert "log-depth correlating under -0.3 with the truth stops the build" in checked[0]  # the rule, once
    note = plan.teachers["d"].output_note()  # the reading line (inspect, report.json): the numbers only
    assert "read as metric" in note and "checked against 'val' before training: 6 images" in note
    assert "stops the build" not in note


# --- relative depth (output: relative): distilled and scored without its unknown scale and shift ---


def test_a_relative_teacher_declared_relative_passes_the_check_and_says_how_it_is_used(scenes):
    plan, said = plan_of(scenes, "relative", output="relative")
    assert warnings_in(said) == []
    note = plan.teachers["d"].output_note()
    assert "read as relative (output: relative)" in note
    assert "distilled by a scale-and-shift-invariant loss on inverse depth" in note
    assert "scored after a per-image least-squares scale and shift" in note


def test_a_relative_teacher_declared_inverse_is_told_to_declare_it_relative(scenes):
    _, said = plan_of(scenes, "relative", output="inverse")
    assert "if it is relative depth, set teachers.d.output: relative" in warnings_in(said)[0]


def test_metres_declared_relative_stop_as_upside_down_naming_affine_metric_and_the_ground_truth(scenes):
    with pytest.raises(RecipeError) as info:
        plan_of(scenes, "metric", output="relative")
    message = str(info.value)
    assert "is upside down on its eval set" in message
    assert "set teachers.d.output: affine (metric if it is metres)" in message
    # the same numbers come of a right teacher scored on disparity maps: that cause is named too
    assert message.endswith(
        "its eval set's maps are read the wrong way up: data.eval.val.depth_reading is inverse for maps of"
        " disparity, depth (the default) for maps of depth"
    )


MORE_MODELS = '''

class Affine(nn.Module):
    """Marigold-like: depth up to a scale and shift of each image's own (from its mean grey level)."""

    def forward(self, x):
        depth = 1.0 + 5.0 * x[:, :1]
        m = x.mean((1, 2, 3), keepdim=True)
        scale, shift = torch.exp(2.4 * (torch.frac(37 * m) - 0.5)), torch.frac(53 * m) - 0.5  # per image
        return scale * depth + shift


class Standardised(nn.Module):
    """A relative inverse depth with mean 0 and unit spread per image (half of it negative), times gain."""

    def __init__(self, gain=1.0):
        super().__init__()
        self.gain = gain

    def forward(self, x):
        inverse = 1.0 / (1.0 + 5.0 * x[:, :1])
        centred = inverse - inverse.mean((1, 2, 3), keepdim=True)
        return self.gain * centred / centred.std((1, 2, 3), keepdim=True)


def affine():
    return Affine()


def standardised(gain=1.0):
    return Standardised(gain)
'''


@pytest.fixture(scope="module")
def more(scenes):
    models = scenes / "models.py"
    if "class Affine" not in models.read_text():
        models.write_text(models.read_text() + MORE_MODELS)
    plan_of(scenes, "relative", output="relative")  # writes relative.yaml, the base of the recipes below
    return scenes


def plan_with(root: Path, name: str, model: dict, sets: Optional[dict] = None, log=None, **teacher):
    """The plan of one depth teacher built from ``model`` (models.py), with eval sets ``sets`` besides
    the recipe's, and the lines it logged (also to ``log``)."""
    recipe = yaml.safe_load((root / "relative.yaml").read_text())
    recipe["name"] = name
    recipe["data"]["eval"].update(sets or {})
    recipe["teachers"]["d"]["model"] = {"from": "python", **model}
    recipe["teachers"]["d"].update(teacher)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    said: list[str] = []
    return build_plan(load_recipe(path), log=log or said.append), said


AFFINE = {"factory": "models:affine"}


def test_affine_depth_is_told_apart_from_relative_inverse_depth(more):
    _, said = plan_with(more, "affine-default", AFFINE, output="metric")  # read as metres: the advice names affine
    (line,) = warnings_in(said)
    assert "as Marigold answer" in line and line.endswith("set teachers.d.output: affine"), line
    plan, said = plan_with(more, "affine-declared", AFFINE, output="affine")
    assert warnings_in(said) == []
    assert "affine: depth up to a per-image scale and shift" in plan.teachers["d"].output_note()
    with pytest.raises(RecipeError, match="set teachers.d.output: affine"):
        plan_with(more, "affine-as-relative", AFFINE, output="relative")  # not the loop back to metric


@pytest.mark.parametrize("gain", [1.0, 5000.0])
def test_a_standardised_relative_output_is_read_whole_at_any_gain(more, gain):
    # half of it negative was dropped as "no depth"; values in the thousands were flattened by a clamp
    model = {"factory": "models:standardised", "gain": gain}
    plan, said = plan_with(more, f"standardised-{gain:g}", model, output="relative")
    teacher = plan.teachers["d"]
    assert warnings_in(said) == [] and "<= 0" not in teacher.output_note()
    images = torch.rand(2, 3, 32, 32)
    out = teacher.task.convert_output(teacher.model(images), "relative")
    assert bool((out > 0).all()) and out.dtype == torch.float32
    truth, every = 1.0 + 5.0 * images[:, :1], torch.ones(2, 1, 32, 32, dtype=torch.bool)
    assert relative_depth_loss(out, truth, every).item() < 1e-4
    assert relative_depth_loss(out.half().float(), truth, every).item() < 2e-3  # as the fp16 cache stores it


def test_relative_values_move_to_positive_per_image_and_the_teachers_own_nan_stays_counted():
    task = DepthTask()
    raw = torch.tensor([[[[-3.0, 1.0], [5.0, float("inf")]]], [[[2.0, 2.0], [2.0, float("nan")]]]])
    out = task.convert_output(raw, "affine")
    first = out[0, 0].flatten()
    assert first.tolist() == pytest.approx([0.01, 1.01, 2.01, 0.0])  # low -3, mean 1; inf: no depth there
    assert out[1].flatten()[:3].eq(1.0).all()  # a flat image: all 1, it says nothing of shape
    assert task.nonfinite_rows(task.mark_no_answer(out)).tolist() == [False, True]  # its own NaN: counted


def test_one_outlier_does_not_squeeze_a_relative_image_into_a_few_fp16_steps():
    torch.manual_seed(0)
    inverse = 0.2 + torch.rand(1, 1, 32, 32)
    raw = inverse.clone()
    raw[0, 0, 0, 0] = -1000.0  # one wild pixel far below the rest
    stored = DepthTask().convert_output(raw, "relative").half().float()  # as the teacher cache holds it
    every = torch.ones(1, 1, 32, 32, dtype=torch.bool)
    every[0, 0, 0, 0] = False
    assert relative_depth_loss(stored, 1.0 / inverse, every).item() < 2e-3


def test_a_depth_teacher_without_an_eval_set_is_said_unchecked(more):
    model = {"factory": "models:from_image", "mode": "relative"}
    plan, said = plan_with(more, "no-eval", model, output="relative", eval=None)
    line = "teacher 'd' reading (relative) not checked against ground truth (no eval set): taken as declared"
    assert line in said and "not checked against ground truth" in plan.teachers["d"].output_note()


def test_an_eval_set_of_inverse_depth_maps_is_read_with_depth_reading(tmp_path, more):
    write_scenes(tmp_path / "val", 6, seed=1)
    for path in sorted((tmp_path / "val" / "depth").iterdir()):  # the same scenes as disparity: 25600 / metres
        metres = np.asarray(Image.open(path), dtype=np.float64) / 1000.0
        Image.fromarray(np.round(25600.0 / metres).astype(np.uint16)).save(path)
    model = {"factory": "models:from_image", "mode": "metric"}
    disparity = {"type": "dense", "path": str(tmp_path / "val")}
    with pytest.raises(RecipeError, match=r"data.eval.val2.depth_reading is inverse for maps of disparity"):
        plan_with(more, "inverse-truth", model, {"val2": disparity}, output="metric", eval="val2")
    read = {"val3": {**disparity, "depth_reading": "inverse", "depth_scale": 25600.0}}
    plan, said = plan_with(more, "inverse-truth", model, read, output="metric", eval="val3")
    assert warnings_in(said) == [], said
    assert any("depth maps read as inverse depth, metres = 25600 / value (depth_reading: inverse)" in s for s in said)


class ReadsImage(torch.nn.Module):
    """A student answering the eval set's depth exactly (metres read off the grey level)."""

    label_spaces = {"depth": None}

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(scale))

    def forward(self, x):
        return {"depth": (1.0 + 5.0 * x[:, :1]) * self.scale}


def scores(root: Path, output: str, scale: float = 1.0) -> dict:
    """report.json's depth row of the exact student (times ``scale``) beside the relative teacher read as ``output``."""
    plan_of(root, "relative", output=output)  # writes relative.yaml
    report = amalgam.evaluate(root / "relative.yaml", ReadsImage(scale), quiet=True)
    (row,) = [t for t in report["tasks"] if t["teacher"] == "d"]
    return row


def test_a_relative_teacher_and_the_student_beside_it_are_scored_after_a_per_image_fit(scenes):
    row = scores(scenes, "relative", scale=3.0)  # a student right up to scale scores as exact as the teacher
    assert row["teacher_metrics"]["rmse"] < 1e-3 and row["student_metrics"]["rmse"] < 1e-3, row
    raw = scores(scenes, "inverse", scale=3.0)  # read as inverse depth: off by its scale and shift
    assert raw["teacher_metrics"]["rmse"] > 1.0 and raw["student_metrics"]["rmse"] > 3.0, raw


def test_the_relative_loss_ignores_scale_and_shift_of_the_teachers_inverse_depth():
    torch.manual_seed(0)
    depth = 1.0 + 5.0 * torch.rand(2, 1, 8, 8)
    valid = torch.ones_like(depth, dtype=torch.bool)
    relative = 1.0 / (0.5 / depth + 0.0625)  # the teacher's inverse: a scale and shift of the truth's
    assert relative_depth_loss(depth, relative, valid).item() < 1e-5
    assert log_depth_loss(depth, relative, valid=valid).item() > 0.3  # read as metres it is far off
    flipped = depth.flip(-1)  # another layout is not forgiven
    assert relative_depth_loss(flipped, relative, valid).item() > 0.3


def test_the_relative_loss_by_hand_and_its_mask():
    student = torch.tensor([[[[1.0, 0.5, 0.25, 9.0]]]])  # inverse 1, 2, 4 (and a masked pixel)
    teacher = torch.tensor([[[[1.0, 1.0, 0.5, 0.01]]]])  # inverse 1, 1, 2
    valid = torch.tensor([[[[True, True, True, False]]]])
    # student inverse 1, 2, 4: mean 7/3, deviations -4/3, -1/3, 5/3, mean |.| 10/9 -> -1.2, -0.3, 1.5
    # teacher inverse 1, 1, 2: mean 4/3, deviations -1/3, -1/3, 2/3, mean |.| 4/9 -> -0.75, -0.75, 1.5
    expected = (0.45 + 0.45 + 0.0) / 3
    assert relative_depth_loss(student, teacher, valid).item() == pytest.approx(expected, abs=1e-6)


def test_the_task_distils_a_relative_teacher_with_the_relative_loss():
    task = DepthTask()
    depth = 1.0 + 5.0 * torch.rand(2, 1, 8, 8)
    relative = 1.0 / (0.5 / depth + 0.0625)
    assert task.distill_loss(depth, relative, DistillOptions(output_kind="relative")).item() < 1e-5
    assert task.distill_loss(depth, relative, DistillOptions(output_kind="inverse")).item() > 0.3


@pytest.mark.parametrize("output, near_zero", [("relative", True), ("inverse", False)])
def test_the_objective_distils_each_term_by_its_teachers_reading(scenes, output, near_zero):
    plan, _ = plan_of(scenes, "relative", output=output)
    objective = Objective(plan, student=None, epoch_steps=1)
    images = torch.rand(2, 3, 32, 32)
    source = torch.tensor([plan.source_ids["d"][0]] * 2)
    student = {"depth": (1.0 + 5.0 * images[:, :1]) * 3.0}  # right up to a scale
    _, parts = objective(student, images, source)
    assert (parts["d"] < 1e-4) is near_zero, parts


def test_the_whole_label_space_row_of_a_relative_only_student_is_fitted_too(scenes):
    plan_of(scenes, "relative", output="relative")
    report = amalgam.evaluate(scenes / "relative.yaml", ReadsImage(3.0), quiet=True)
    (row,) = [u for u in report["unified"] if u["task"] == "depth"]
    assert row["metrics"]["rmse"] < 1e-3 and "scale" not in row["metrics"], row


def test_the_relative_meter_fits_each_image_by_hand():
    truth = torch.tensor([[1.0, 2.0, 4.0, 0.0]])  # the last pixel has no truth
    pred = 1.0 / (3.0 / truth.clamp(min=1e-9) + 1.0)  # inverse 3x the truth's plus 1
    pred[0, 3] = 5.0
    meter = RelativeDepthMeter()
    meter.update(pred[None], truth[None])
    out = meter.compute()
    assert out["rmse"] == pytest.approx(0.0, abs=1e-6) and out["pixels"] == 3
    plain = DepthMeter()
    plain.update(pred[None], truth[None])
    assert plain.compute()["rmse"] > 0.5


def test_pictures_draw_relative_depth_as_it_is_scored():
    # drawn raw on the truth's metre colour bar, a student scoring 0.28 m looked broken
    task, truth = DepthTask(), 1.0 + 5.0 * torch.rand(2, 8, 8)
    relative = 1.0 / (3.0 / truth + 0.5)
    torch.testing.assert_close(task.as_scored(relative, truth, "relative"), truth, atol=1e-4, rtol=1e-4)
    assert torch.equal(task.as_scored(relative, truth, "metric"), relative)


def test_a_depth_only_eval_sets_partial_label_maps_are_not_required(tmp_path, more):
    # NYU's labelled subset: labels/ for some images only; the depth eval stopped on a missing mask file
    write_scenes(tmp_path / "val", 6, seed=1)
    (tmp_path / "val" / "labels").mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "val" / "labels" / "000.png")
    model = {"factory": "models:from_image", "mode": "metric"}
    sets = {"nyu": {"type": "dense", "path": str(tmp_path / "val")}}
    plan, said = plan_with(more, "partial-labels", model, sets, output="metric", eval="nyu")
    assert "data.eval.nyu: not read, no teacher scored on it uses them: its mask maps" in said, said
    assert plan.eval_sets["nyu"][5]["depth"].shape == (32, 32)


@pytest.mark.parametrize("suffix", [".npy", ".tiff"])
def test_float_depth_maps_in_metres_are_read_as_they_are(tmp_path, more, suffix):
    # DIODE's .npy and simulators' 32-bit TIFFs were refused ("save it as a PNG", with no formula)
    write_scenes(tmp_path / "val", 6, seed=1)
    for path in sorted((tmp_path / "val" / "depth").glob("*.png")):
        metres = np.asarray(Image.open(path), dtype=np.float32) / 1000.0
        metres[0, 0] = np.nan  # no data, as float maps mark it
        if suffix == ".npy":
            np.save(path.with_suffix(".npy"), metres)
        else:
            Image.fromarray(metres, mode="F").save(path.with_suffix(".tiff"))
        path.unlink()
    model = {"factory": "models:from_image", "mode": "metric"}
    sets = {"floats": {"type": "dense", "path": str(tmp_path / "val")}}
    plan, said = plan_with(more, f"float-{suffix[1:]}", model, sets, output="metric", eval="floats")
    assert warnings_in(said) == [], said
    checked = [line for line in said if line.startswith("teacher 'd' reading (metric) checked against 'floats'")]
    assert "log-depth r 1.000 with the truth, scale 1x" in checked[0], checked
    depth = plan.eval_sets["floats"][0]["depth"]
    assert depth[0, 0] == 0 and 1.0 <= float(depth[depth > 0].min()) and float(depth.max()) <= 6.0


def test_a_set_mixing_float_and_png_depth_maps_says_so_and_its_range_in_metres(tmp_path, more):
    # the range line read the PNGs' millimetres as metres (2-6e+03 m) where half the maps were .npy
    write_scenes(tmp_path / "val", 6, seed=1)
    pngs = sorted((tmp_path / "val" / "depth").glob("*.png"))
    for path in pngs[1::2]:
        np.save(path.with_suffix(".npy"), np.asarray(Image.open(path), dtype=np.float32) / 1000.0)
        path.unlink()
    model = {"factory": "models:from_image", "mode": "metric"}
    sets = {"mixed": {"type": "dense", "path": str(tmp_path / "val")}}
    _, said = plan_with(more, "mixed-depth", model, sets, output="metric", eval="mixed")
    assert any("depth maps: 3 of 6 are float maps (.npy/.tiff, read as metres as they are)" in line for line in said)
    (line,) = [line for line in said if "(5th-95th percentile)" in line]
    low, high = (float(v) for v in re.search(r": ([\d.e+]+)-([\d.e+]+) m \(5th", line).groups())
    assert 1.0 <= low and high <= 6.0, line


def test_depth_scale_on_a_set_of_float_maps_is_said_not_applied(tmp_path, more):
    # the log read "at 0.001 values a metre" and the scale warning pointed at depth_scale, which float maps ignore
    write_scenes(tmp_path / "val", 4, seed=1)
    for path in sorted((tmp_path / "val" / "depth").glob("*.png")):
        np.save(path.with_suffix(".npy"), np.asarray(Image.open(path), dtype=np.float32))  # millimetres: a slip
        path.unlink()
    model = {"factory": "models:from_image", "mode": "metric"}
    sets = {"mm": {"type": "dense", "path": str(tmp_path / "val"), "depth_scale": 0.001}}
    said: list[str] = []
    with pytest.raises(RecipeError) as info:  # the maps, a thousand times the teacher's depth: stopped, not warned
        plan_with(more, "npy-mm", model, sets, output="metric", eval="mm", log=said.append)
    assert "its maps are in another unit (millimetres?). Save float .npy/.tiff maps in metres" in str(info.value)
    assert any("depth_scale 0.001 is not applied: every depth map is a float map" in line for line in said), said
    assert any("depth maps read as metres, as float maps are: " in line for line in said), said


def test_depth_scale_written_at_its_default_on_float_maps_is_said_not_applied(tmp_path, more):
    # `depth_scale: 1000` written over float maps was ignored without a word (the default looked the same)
    write_scenes(tmp_path / "val", 4, seed=1)
    for path in sorted((tmp_path / "val" / "depth").glob("*.png")):
        np.save(path.with_suffix(".npy"), np.asarray(Image.open(path), dtype=np.float32) / 1000.0)  # metres
        path.unlink()
    model = {"factory": "models:from_image", "mode": "metric"}
    for written, told in (({"depth_scale": 1000}, True), ({}, False)):
        sets = {"m": {"type": "dense", "path": str(tmp_path / "val"), **written}}
        _, said = plan_with(more, f"npy-m-{told}", model, sets, output="metric", eval="m")
        assert any("depth_scale 1000 is not applied: every depth map is a float map" in x for x in said) is told, said


def test_an_eval_set_read_in_millimetres_is_named_first_not_the_teacher():
    # float maps saved in millimetres read 4,160 m at their median: the stop told the user to scale a good teacher
    from amalgam_tasks.depth import _unit_problem

    set_first = _unit_problem("d", "metric", 1e-3, set_median=4160.0)
    assert set_first.startswith("eval set '<set>' reads 4.16e+03 m at its median, no scene's depth, where teacher d")
    assert "its maps are in another unit (millimetres?). Save float .npy/.tiff maps in metres" in set_first
    teacher_first = _unit_problem("d", "metric", 1e3, set_median=4.2)  # a teacher in millimetres: as before
    assert teacher_first.startswith("teacher d's depth is 1e+03x") and "output_scale: 0.001" in teacher_first
    assert _unit_problem("d", "metric", 1e-3, set_median=None).startswith("teacher d's depth")


def test_a_depth_teacher_fed_another_normalisation_is_named_before_training(scenes):
    # a trial's depth teachers wanting [-1, 1] or BGR scored 1.5-2.5x worse with no word: depth had no input probe
    _, said = plan_of(scenes, "wants_half", input={})  # ImageNet's mean/std by default
    (line,) = [line for line in said if "as fed" in line]
    assert line.startswith("warning: teacher d has a delta1 (each image's depth scaled to the truth's median) of")
    assert "with mean 0.5, std 0.5 (values in [-1, 1]): set teachers.d.input.mean: [0.5, 0.5, 0.5]" in line
    _, said = plan_of(scenes, "wants_half", input={"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    assert not [line for line in said if "as fed" in line or "channels reversed" in line]
    _, said = plan_of(scenes, "metric")  # fed right: nothing
    assert not [line for line in said if "as fed" in line or "channels reversed" in line]


def test_the_depth_reading_quality_is_blind_to_the_unit_and_counts_pixels_within_1_25x():
    truth = torch.full((8, 8), 2.0)
    truth[0, 0] = 0.0  # no depth: not counted
    half_off = truth * 1000.0  # millimetres: the same after the median scaling
    half_off[4:] *= 2.0  # 32 of the 63 counted pixels 2x: the median is theirs, the other 31 are 2x off it
    quality = DepthTask().reading_quality
    assert quality("metric", [truth * 1000.0], [truth]) == 1.0
    assert quality("metric", [half_off], [truth]) == pytest.approx(32 / 63)
    assert quality("relative", [truth], [truth]) is None  # a shift no scaling removes: not judged


def test_a_teacher_trained_at_another_size_than_the_default_is_named_before_training(scenes):
    # fed at data.image_size where it was trained at half of it: 0.50 delta1 against 0.96, no word
    _, said = plan_of(scenes, "trained_at_16")
    (line,) = [line for line in said if "the default: data.image_size" in line]
    assert line.startswith("warning: teacher d has a delta1 (each image's depth scaled to the truth's median) of")
    assert "at 16x16: set teachers.d.input.size: [16, 16], or the size it was trained at" in line
    _, said = plan_of(scenes, "trained_at_16", input={"size": [32, 32], "mean": [0.0] * 3, "std": [1.0] * 3})
    assert not [line for line in said if "data.image_size" in line]  # the recipe's size: taken as given


def test_a_metric_teachers_inf_is_no_depth_as_its_check_counts_it():
    # a trial's sky at +inf (depth = f * B / disparity, 0 there) passed inspect as "no depth" and stopped
    # training at epoch 1 as "teacher targets are NaN/inf on most rows"
    from amalgam_tasks.depth import DepthTask

    task = DepthTask()
    raw = torch.tensor([[[[2.0, float("inf")], [float("nan"), -float("inf")]]]])
    for kind, given in (("metric", raw), ("log", torch.log(raw.clamp(min=0)).where(~raw.isnan(), raw))):
        marked = task.mark_no_answer(task.convert_output(given, kind))
        assert marked[0, 0, 0, 0] == pytest.approx(2.0) and marked[0, 0, 0, 1].isnan(), kind  # +inf: no depth
        assert marked[0, 0, 1, 0] == float("inf"), kind  # NaN: the teacher's failure, counted
        assert not task.nonfinite_rows(task.mark_no_answer(task.convert_output(raw[..., :1, :], kind))).any(), kind
    assert marked[0, 0, 1, 1].isnan()  # log's -inf is exp's 0: no depth


def test_a_teacher_with_its_sky_at_inf_builds(scenes):
    # a review: the output check before training still read the sky's +inf as a diverged checkpoint and stopped
    plan, said = plan_of(scenes, "sky_inf")
    assert any("not finite, read as no answer there" in note for note in plan.teachers["d"].notes)


def test_an_fp16_overflow_to_inf_still_stops_though_inf_is_no_depth(scenes, monkeypatch):
    # +inf as no depth must not hide a teacher whose fp16 autocast overflows (depth in millimetres past 65504)
    from amalgam.teachers import checks

    plan, _ = plan_of(scenes, "metric")
    teacher = plan.teachers["d"]
    real = teacher.answer

    def overflowing(images, *args, **kwargs):
        out, feat = real(images, *args, **kwargs)
        return (out * float("inf") if torch.is_autocast_cpu_enabled() else out), feat

    monkeypatch.setattr(teacher, "answer", overflowing)
    with pytest.raises(AmalgamError, match=r"answers NaN/inf under float16 autocast .* and finite numbers in fp32"):
        checks.check_teacher_precision(teacher, "fp16", "cuda")


def test_a_depth_teacher_with_no_eval_set_answering_another_unit_is_warned_about(scenes):
    # a trial's teacher in millimetres with no eval set was distilled as metres: "not checked ... taken as declared"
    _, said = plan_of(scenes, "centimetres", eval=None)
    (line,) = [line for line in said if "no scene's depth" in line]
    assert re.match(r"warning: teacher d's depth, read as metric, has a median of 3\d\d m on 4 images of its", line)
    assert "in millimetres (output_scale: 0.001, a median of 0.3" in line
    assert "or centimetres (output_scale: 0.01, a median of 3." in line and "give it one (data.eval)" in line
    # an inverse or log reading's output_scale is no factor of its depth: none is proposed (a review: a pixel
    # disparity read as 0.025 m was told "kilometres, output_scale: 1000", giving 2.5e-5 m)
    (inverse,) = DepthTask().unchecked_reading("d", "inverse", [torch.full((16, 16), 0.025)])
    assert "(another unit, or not inverse depth? teachers.d.output_scale multiplies its raw output" in inverse
    assert "output_scale:" not in inverse and "kilometres" not in inverse
    for mode, scale in (("metric", None), ("centimetres", 0.01), ("relative", None)):
        extra = {"output_scale": scale} if scale else {"output": "relative"} if mode == "relative" else {}
        _, said = plan_of(scenes, mode, eval=None, **extra)
        assert not [line for line in said if "no scene's depth" in line], mode
        # a trial: an inverse-depth teacher's 0.18 "m" looked plausible, and "taken as declared" hid that the
        # metric reading was the default, never declared
        unchecked = next(line for line in said if "not checked against ground truth" in line)
        assert unchecked.endswith("taken as declared") is (mode == "relative"), unchecked
        assert ("taken as metric, the default, not declared (set teachers.d.output" in unchecked) is (
            mode != "relative"
        )


def test_a_depth_teacher_wanting_another_size_and_normalisation_is_named_for_both(scenes):
    # fed [-1, 1] at the default size or ImageNet's at 16 px it stays low: neither probe alone named it
    _, said = plan_of(scenes, "half_at_16", input={})
    (line,) = [line for line in said if line.startswith("warning:") and ("as fed" in line or "at 16x16" in line)]
    assert "with mean 0.5, std 0.5 (values in [-1, 1]) at 16x16: set teachers.d.input.mean: [0.5, 0.5, 0.5] and" in line
    assert "std: [0.5, 0.5, 0.5] and teachers.d.input.size: [16, 16], or what it was trained with" in line


def test_a_timm_size_the_teacher_was_not_trained_at_is_probed_and_data_image_size_tried(scenes, monkeypatch):
    # a user's timm network trained at 32 px was fed its pretrained_cfg's 176 px: no size was tried, no word
    from dataclasses import replace

    from amalgam.teachers import teacher as teacher_module
    from amalgam.teachers.inputs import TIMM

    real = teacher_module.resolve_input

    def timm_sized(cfg, model, image_size):
        spec = real(cfg, model, image_size)
        return replace(spec, size=(88, 88), origin={**spec.origin, "size": TIMM})

    monkeypatch.setattr(teacher_module, "resolve_input", timm_sized)
    _, said = plan_of(scenes, "trained_at_32")  # right at data.image_size only: 2x and 0.5x of 88 miss it
    (line,) = [line for line in said if "fed at 88x88 (timm pretrained_cfg)" in line]
    assert "at 32x32: set teachers.d.input.size: [32, 32], or the size it was trained at" in line


def test_a_task_with_a_reading_quality_and_no_reading_check_gets_the_input_probes(scenes, monkeypatch):
    # the probes ran only after eval_reading: a plugin with a quality alone was never probed
    monkeypatch.setattr(DepthTask, "eval_reading", None)
    _, said = plan_of(scenes, "wants_half", input={})
    assert [line for line in said if "as fed" in line and "with mean 0.5, std 0.5" in line]


def test_the_depth_range_scan_keeps_a_bounded_sample_of_a_large_set(tmp_path, monkeypatch):
    # 4,096 values of every map, as float64: a set of 20,000 maps held 2.5 GB at inspect
    from amalgam.config.schema import SourceConfig
    from amalgam.data import build_image_set, target_scan

    write_scenes(tmp_path / "val", 10, seed=3)
    monkeypatch.setattr(target_scan, "RANGE_TOTAL", 160)  # 16 values a map for these 10
    kept, real = [], target_scan.np.percentile
    monkeypatch.setattr(target_scan.np, "percentile", lambda v, q: kept.append(v.size) or real(v, q))
    said: list[str] = []
    cfg = SourceConfig(type="dense", path=tmp_path / "val")
    build_image_set("data.eval.val", cfg, lambda p: p, (32, 32), True, log=said.append)
    assert kept and kept[0] <= 10 * 17, kept
    assert any("(5th-95th percentile)" in line for line in said), said


def test_a_depth_npy_with_a_channel_axis_of_one_is_read_as_its_map(tmp_path):
    # a trial's [H, W, 1] and [1, H, W] maps (a network's output saved as is) were refused
    from amalgam.data.images import read_depth
    from amalgam.errors import AmalgamError

    depth = np.random.default_rng(0).uniform(1, 5, (6, 8)).astype(np.float32)
    for name, saved in (("hw1", depth[..., None]), ("1hw", depth[None])):
        np.save(tmp_path / f"{name}.npy", saved)
        np.testing.assert_array_equal(read_depth(tmp_path / f"{name}.npy"), depth)
        assert read_depth(tmp_path / f"{name}.npy", header_only=True).shape == (6, 8)
    np.save(tmp_path / "two.npy", np.stack([depth, depth]))
    with pytest.raises(AmalgamError, match=r"holds float32 \[2, 6, 8\]: expected a 2-D float array \(\[H, W\];"):
        read_depth(tmp_path / "two.npy")


def test_the_whole_label_space_row_of_relative_and_affine_teachers_is_fitted_not_metric():
    # a trial: a relative + affine student's per-teacher rows fitted (rmse 0.34) but its whole row in metres (3.52)
    from types import SimpleNamespace

    from amalgam.evaluation.evaluate import unified_meter

    task = DepthTask()
    teachers = {n: SimpleNamespace(task=task, output_kind=k) for n, k in (("a", "relative"), ("b", "affine"))}
    meter = unified_meter(SimpleNamespace(teachers=teachers), task, None)
    assert isinstance(meter, RelativeDepthMeter) and meter.inverse
    assert task.unified_reading(["metric", "relative"]) is None and task.unified_reading(["affine"] * 2) == "affine"
    plan = SimpleNamespace(teachers=teachers)
    from amalgam.evaluation.evaluate import unified_reading_line

    assert unified_reading_line(plan, task, "v") == (  # the rule chosen is said in the log (a review)
        "the student's whole-label-space depth row on 'v': scored as relative (its teachers read affine, relative)"
    )
    teachers["b"].output_kind = "metric"  # a metric teacher beside: the student learns metres, scored so
    assert type(unified_meter(SimpleNamespace(teachers=teachers), task, None)) is DepthMeter


def test_a_teachers_no_depth_pixels_weigh_in_its_errors_not_in_its_scale():
    # a trial: disparity 0 (+inf depth) on the sky read as 1 mm made the scale 0.44x: "check the set's depth_scale"
    truth = torch.tensor([[2.0, 4.0, 4.0, 8.0]])
    pred = torch.tensor([[2.0, 4.0, float("inf"), float("nan")]])
    meter = DepthMeter()
    meter.update(pred[None], truth[None])
    out = meter.compute()
    assert out["scale"] == pytest.approx(1.0) and out["no_depth"] == pytest.approx(0.5)
    assert out["rmse"] == pytest.approx(((4 - 1e-3) ** 2 / 4 + (8 - 1e-3) ** 2 / 4) ** 0.5)  # 1 mm where none
    (line,) = DepthTask().teacher_warnings("d", out)
    assert line.startswith("teacher d gives no depth (<= 0 or not finite) on 50.0% of the pixels its eval set")


def test_a_negated_depth_is_told_that_no_setting_negates_it():
    # a trial: a -z camera's depth followed "output: log" then "output: inverse" into two more stops
    said = DepthTask().check_output(-torch.rand(2, 1, 8, 8) - 1, 2, None)
    assert "if its depth is negated (a camera looking down -z), give a factory that negates it: no setting does" in said


@pytest.mark.parametrize("unit, stops", [("millimetres", True), ("centimetres", False)])
def test_a_teacher_and_eval_set_agreeing_in_millimetres_are_stopped_beyond_the_students_reach(scenes, unit, stops):
    # a trial: teacher and maps both in millimetres passed every check ("scale 1x"); the student, whose head
    # answers 1,097 m at most, came out at delta1 0.0 with no warning; in centimetres it learnt 2x worse
    scale = {"millimetres": 1, "centimetres": 10}[unit]  # the PNGs hold millimetres: read as cm at 10 a metre
    if stops:
        with pytest.raises(RecipeError) as info:
            plan_of(scenes, unit, eval_set={"depth_scale": scale})
        said = str(info.value)
        assert said.startswith("teachers.d.output: beyond the student's reach: teacher d and eval set 'val' agree")
        fix = "in millimetres (a median of 3.33 m), set teachers.d.output_scale: 0.001 and data.eval.val.depth_scale:"
        fix += " 1000"
        assert fix in said
        return
    _, said = plan_of(scenes, unit, eval_set={"depth_scale": scale})
    (line,) = [w for w in warnings_in(said) if "agree, but both read" in w]
    assert "set teachers.d.output_scale: 0.01 and data.eval.val.depth_scale: 100" in line


def plan_of_two(root: Path, mode: str, **unchecked):
    """The plan of a metric depth teacher with an eval set beside one with none answering as ``mode``."""
    plan_of(root, "metric")
    raw = yaml.safe_load((root / "metric.yaml").read_text())
    raw["teachers"]["u"] = {
        "task": "depth",
        "model": {"from": "python", "factory": "models:from_image", "mode": mode},
        "input": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        **unchecked,
    }
    path = root / f"two-{mode}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    said: list[str] = []
    return build_plan(load_recipe(path), log=said.append), said


def test_a_teacher_without_an_eval_set_is_checked_against_a_confirmed_one_of_its_task(scenes):
    # a trial: a disparity read as metres with no eval set, beside a checked metric teacher, took the student
    # over (task weights 2.89 against 0.15) with only "not checked against ground truth" said
    with pytest.raises(RecipeError) as info:
        plan_of_two(scenes, "disparity")
    said = str(info.value)
    assert said.startswith("teachers.u.output: teacher 'u' (read as metric, no eval set) is upside down against")
    assert "<set>" not in said and "depth_reading" not in said  # no eval set's advice for a teacher without one
    assert "it reads like disparity / inverse depth: set teachers.u.output: inverse" in said
    with pytest.raises(RecipeError, match=r"answers 100x the depth of teacher 'd'.*output_scale: 0\.01"):
        plan_of_two(scenes, "centimetres")
    _, said = plan_of_two(scenes, "disparity", output="inverse", output_scale=1 / 16)  # read right: passes
    (line,) = [line for line in said if "checked against teacher 'd'" in line]
    assert "log-depth r 1.000, scale 1x" in line
    plan_of_two(scenes, "relative", output="relative")  # a relative reading: its direction only


def test_log10_metres_read_as_metres_name_the_settings_that_read_them(scenes):
    # a trial: a log10 head was warned of as 0.14x (output_scale 7.12 named, which left it warped); exp of
    # its log times ln 10 reads it exactly
    with pytest.raises(RecipeError) as info:
        plan_of(scenes, "log10")
    said = str(info.value)
    assert "read as log10 depth it agrees in scale (1x, r 1.000" in said
    assert "if it answers log10 metres, set teachers.d.output: log and output_scale: 2.302585" in said
    _, said = plan_of(scenes, "log10", output="log", output_scale=2.302585)
    assert not warnings_in(said)


def test_both_beyond_names_the_factor_of_each_reading():
    # a review: an inverse teacher in millimetres was told output_scale 0.001, which makes its depth 1000x larger
    from amalgam_tasks.depth import _both_beyond

    assert (
        "set teachers.t.output_scale: 0.001 and data.eval.<set>.depth_scale: 1000"
        in _both_beyond("t", "metric", 3000.0, 3000.0)[0]
    )
    assert (
        "set teachers.t.output_scale: 1000 and data.eval.<set>.depth_scale: 1000"
        in _both_beyond("t", "inverse", 3000.0, 3000.0)[0]
    )
    assert (
        "wrap teacher t to answer metres and set data.eval.<set>.depth_scale: 1000"
        in _both_beyond("t", "log", 3000.0, 3000.0)[0]
    )


def test_a_warped_depth_that_keeps_the_truths_order_is_warned_about(scenes):
    # a trial: a sigmoid of depth read through a linear output_scale passed every check (delta1 0.51); here a power
    _, said = plan_of(scenes, "gamma", output_scale=2.4)
    (line,) = [w for w in warnings_in(said) if "follows its eval set's order" in w]
    assert "but not its proportions" in line and "a warped reading" in line
    _, said = plan_of(scenes, "metric")  # a competent one: nothing said
    assert not [w for w in warnings_in(said) if "follows its eval set's order" in w]


def test_a_teacher_without_an_eval_set_runs_once_for_its_unit_and_peer_checks(scenes, monkeypatch):
    # a review: the unit check and the peer check each ran it over the same source images
    from amalgam.distill import eval_checks

    calls = []
    real = eval_checks._plain_answer
    monkeypatch.setattr(eval_checks, "_plain_answer", lambda plan, t, *a: calls.append(t.name) or real(plan, t, *a))
    plan_of_two(scenes, "disparity", output="inverse", output_scale=1 / 16)
    assert calls.count("u") == 4  # the 4 images of its source, once


def test_the_whole_label_space_rows_reading_is_in_report_json_and_markdown(more):
    # a review: the rule (relative and affine teachers: the row fitted as relative) was said in the log only, and
    # report.json's row read like metres
    from amalgam.evaluation.report import to_markdown
    from amalgam.evaluation.visual import write_html

    plan_of(more, "relative", output="relative")  # relative.yaml afresh: other tests rewrite it
    raw = yaml.safe_load((more / "relative.yaml").read_text())
    raw["teachers"]["a"] = raw["teachers"]["d"] | {"model": {"from": "python", **AFFINE}, "output": "affine"}
    path = more / "relative-and-affine.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    report = amalgam.evaluate(path, ReadsImage(3.0), quiet=True)
    (row,) = [u for u in report["unified"] if u["task"] == "depth"]
    assert row["scored_as"] == "relative" and row["metrics"]["rmse"] < 1e-3, row
    assert "(scored as relative) |" in to_markdown(report)
    assert "(scored as relative)</td>" in write_html(more, report).read_text()
    alone = amalgam.evaluate(more / "relative.yaml", ReadsImage(3.0), quiet=True)  # one reading: nothing to say
    assert all("scored_as" not in u for u in alone["unified"])


def test_grey_eval_images_do_not_probe_a_depth_teachers_channel_order(scenes):
    # R = G = B: reversing the channels only reverses the recipe's mean/std lists, which fed channel 0 of this
    # teacher as it wants ([-1, 1]) and read as a BGR teacher (the classification path's trial, on depth)
    lists = {"mean": [0.0, 0.0, 0.5], "std": [1.0, 1.0, 0.5]}
    _, said = plan_of(scenes, "wants_half", input=lists)
    assert not [line for line in said if "channels reversed" in line]


def write_edges(root: Path, scale: int = 1) -> Path:
    """32x32 scenes of a near wall (1.5 m) and a far one (5.5 m) split at a column of their own; depth maps at
    ``scale`` times their size."""
    (root / "models.py").write_text(MODELS)
    for split, count in (("train", 2), ("val", 6)):
        for sub in ("images", "depth"):
            (root / split / sub).mkdir(parents=True)
        for i in range(count):
            grey = np.full((32, 32), 26, np.uint8)
            grey[:, 6 + 3 * i :] = 230
            Image.fromarray(np.stack([grey] * 3, -1)).save(root / split / "images" / f"{i:03d}.png")
            depth_mm = np.round((1.0 + 5.0 * grey / 255.0) * 1000).astype(np.uint16)
            Image.fromarray(np.kron(depth_mm, np.ones((scale, scale), np.uint16))).save(
                root / split / "depth" / f"{i:03d}.png"
            )
    return root


@pytest.fixture(scope="module")
def edges(tmp_path_factory) -> Path:
    return write_edges(tmp_path_factory.mktemp("depth_edges"))


def test_a_relative_teachers_answer_is_resized_as_its_disparity_whatever_floor_amalgam_moves_it_to(edges, monkeypatch):
    # a relative teacher fed at half the maps' size: its answer was resized as depth, where amalgam's own floor
    # put its far end at 100x its mean, so its score hung on that constant (a trial: rmse 2.92 at 0.01, 2.37 at 0.1)
    import amalgam_tasks.depth as depth_plugin

    rows = []
    for floor in (0.01, 0.3):
        monkeypatch.setattr(depth_plugin, "RELATIVE_FLOOR", floor)
        plan_of(edges, "relative", output="relative", input={"size": [16, 16], "mean": [0.0] * 3, "std": [1.0] * 3})
        report = amalgam.evaluate(edges / "relative.yaml", ReadsImage(3.0), quiet=True)
        (row,) = [t for t in report["tasks"] if t["teacher"] == "d"]
        rows.append(row["teacher_metrics"])
    assert rows[0]["rmse"] == pytest.approx(rows[1]["rmse"], rel=1e-4), rows
    assert rows[0]["delta1"] == pytest.approx(rows[1]["delta1"], abs=1e-6), rows


def test_the_student_in_a_relative_teachers_row_is_resized_as_the_teacher_is(tmp_path):
    # maps at twice the images: teacher and student answer at 32 px, both resized onto 64; each is right up to
    # its scale and shift, so after the fit they score alike only when they are resized in one space
    root = write_edges(tmp_path, scale=2)
    plan_of(root, "relative", output="relative")
    report = amalgam.evaluate(root / "relative.yaml", ReadsImage(3.0), quiet=True)
    (row,) = [t for t in report["tasks"] if t["teacher"] == "d"]
    assert row["student_metrics"]["rmse"] == pytest.approx(row["teacher_metrics"]["rmse"], rel=1e-3), row


def test_the_whole_label_space_row_of_a_student_of_relative_teachers_is_resized_as_their_disparity(tmp_path):
    # the teacher's row resized the student's answer as disparity, the unified row (the same student, the same
    # fit) as depth: one student, two scores on one set
    root = write_edges(tmp_path, scale=2)
    plan_of(root, "relative", output="relative")
    report = amalgam.evaluate(root / "relative.yaml", ReadsImage(3.0), quiet=True)
    (row,) = [t for t in report["tasks"] if t["teacher"] == "d"]
    (unified,) = [u for u in report["unified"] if u["task"] == "depth"]
    assert unified["metrics"]["rmse"] == pytest.approx(row["student_metrics"]["rmse"], rel=1e-5), (unified, row)


def test_a_depth_truth_of_inf_is_no_depth_not_an_infinite_rmse():
    # a plugin's or torchvision set's +inf (too far: sky) was a valid pixel, and every metric went inf
    meter = DepthMeter()
    meter.update(torch.tensor([[2.0, 3.0, 5.0]]), torch.tensor([[2.0, 3.0, float("inf")]]))
    assert meter.compute()["rmse"] == 0.0 and meter.n == 2
