"""Faults of a loaded student's input (audit 2): images it misread without a word (uint8, 0-255,
normalised, another layout) and sizes its decoder cannot take stop in one line; a raw trace carries no
check (`amalgam export` scripts the checks around it: tests/test_export.py)."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import pytest
import torch

import amalgam
from amalgam.errors import AmalgamError
from amalgam.evaluation.export import TaskOutputs
from amalgam.students.build import IMAGENET_MEAN, IMAGENET_STD, StudentSpec, build_student
from amalgam.students.serialize import input_multiple, save_student

HEADS = {"classification": 3, "segmentation": 4, "depth": 1}
EXPECTS = "the student expects float RGB in [0, 1] (its own normalisation is inside), got "


def saved_student(folder: Path, kind: str, heads: dict[str, int] = HEADS) -> tuple[torch.nn.Module, Path]:
    """A small student of random weights and its ``student.pt``, as tests/test_students.py builds them."""
    torch.manual_seed(0)
    student = build_student(StudentSpec(kind, "resnet18", 3, [16, 16, 8, 8, 8], dict(heads))).eval()
    path = folder / "student.pt"
    save_student(student, {t: None for t in heads}, {"name": "faults"}, path)
    return student, path


@pytest.fixture(scope="module", params=["branched", "compact"])
def built_and_loaded(request, tmp_path_factory) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A student as built and as ``amalgam.load_student`` gives it back, of each type."""
    built, path = saved_student(tmp_path_factory.mktemp(request.param), request.param)
    return built, amalgam.load_student(path)[0]


def refusal(student: torch.nn.Module, images: object) -> str:
    """The one-line message the student stops ``images`` with."""
    with pytest.raises(AmalgamError) as info, torch.no_grad():
        student(images)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_uint8_images_stop_saying_divide_by_255(built_and_loaded):
    _, student = built_and_loaded
    images = (torch.rand(2, 3, 32, 32) * 255).to(torch.uint8)
    images[0, 0, 0, 0] = 255
    assert refusal(student, images) == EXPECTS + "uint8 with max 255: divide by 255"
    assert refusal(student, images.to(torch.int32) * 257) == EXPECTS + "int32 with max 65535: scale it to [0, 1]"


def test_0_255_floats_and_normalised_images_stop_and_a_resampling_overshoot_passes(built_and_loaded):
    _, student = built_and_loaded
    images = torch.rand(2, 3, 32, 32)
    images[0, 0, 0, 0] = 1.0
    assert refusal(student, images * 255) == EXPECTS + "float32 with max 255: divide by 255"
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    normalised = (torch.zeros(2, 3, 32, 32) - mean) / std  # black, normalised: about -2.1, max below 1.5
    message = refusal(student, normalised)
    assert message.startswith(EXPECTS + "float32 with min -2.1") and "before normalising them" in message
    with torch.no_grad():  # bicubic resizing overshoots [0, 1] a little: not refused
        student(images * 1.2 - 0.1)
    full = (images - mean) / std  # normalised photos reach 2.6 too: they were told to divide by 255
    assert "before normalising them" in refusal(student, full)


def test_float64_and_nan_images_stop_in_one_line(built_and_loaded):
    # float64 (numpy's default) failed inside the first convolution; NaN made every output NaN
    _, student = built_and_loaded
    images = torch.rand(2, 3, 32, 32)
    assert refusal(student, images.double()) == EXPECTS + "float64: convert it with .float()"
    images[0, 0, 0, 0] = float("nan")
    assert refusal(student, images) == EXPECTS + "float32 holding NaN"


def test_a_student_moved_to_float64_takes_float64_images(built_and_loaded):
    # a trial's .double() student refused float64 images ("convert it with .float()"), which then failed
    import copy

    _, student = built_and_loaded
    double = copy.deepcopy(student).double()
    with torch.no_grad():
        outputs = double(torch.rand(2, 3, 32, 32, dtype=torch.float64))
    assert all(bool(torch.isfinite(o).all()) for o in outputs.values())  # it runs (depth answers in float32)


def test_a_student_moved_to_half_precision_names_the_images_dtype_it_takes(built_and_loaded):
    # a trial's .half() student fed float32 failed inside a convolution ("Input type ... and weight type");
    # a review's amalgam.evaluate of a .double() student was refused the float32 images amalgam fed it
    import copy

    _, student = built_and_loaded
    half = copy.deepcopy(student).bfloat16()
    said = "the student's weights are bfloat16, the images float16: feed images.bfloat16()"
    assert refusal(half, torch.rand(2, 3, 32, 32).half()) == said
    with torch.no_grad():  # float32, what amalgam and torchvision give, is cast to the weights
        for moved, dtype in ((half, torch.bfloat16), (copy.deepcopy(student).double(), torch.float64)):
            out = moved(torch.rand(2, 3, 32, 32))  # depth answers in float32 (its head casts)
            assert dtype in {v.dtype for v in out.values()} and all(bool(torch.isfinite(v).all()) for v in out.values())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts for it: not refused
        half.float()(torch.rand(2, 3, 32, 32))


def test_a_size_not_a_multiple_of_the_stride_stops_naming_the_rule(built_and_loaded):
    _, student = built_and_loaded
    assert input_multiple(student) == 32  # five stride-2 stages, read from the model
    rule = "the student needs height and width multiples of 32 (resize)"  # saved without a recipe: no size known
    assert refusal(student, torch.rand(2, 3, 48, 40)) == f"input 48x40: {rule}"
    assert refusal(student, torch.rand(1, 3, 33, 64)) == f"input 33x64: {rule}"
    # it said "(pad or resize)": padding puts things at another place and scale than the student learnt
    before, student.image_size = student.image_size, (64, 96)
    try:
        assert refusal(student, torch.rand(1, 3, 33, 64)) == (
            "input 33x64: the student needs height and width multiples of 32 (trained at 64x96: resize every image"
            " to it, as in training)"
        )
    finally:
        student.image_size = before
    with torch.no_grad():  # nothing is padded: a size that fits gives outputs of its own size
        out = student(torch.rand(2, 3, 64, 32))
    assert out["segmentation"].shape == (2, 4, 64, 32) and out["depth"].shape == (2, 1, 64, 32)


def test_a_student_run_at_another_size_than_it_learnt_says_so_once(built_and_loaded):
    # a trial's digits classifier, trained at 64x64 and fed the 32x32 originals, answered near chance
    # (top-1 0.93 -> 0.11) without a word: a pooled head takes any size
    import warnings

    from amalgam.students.serialize import OtherSizeWarning

    _, student = built_and_loaded
    before, student.image_size = student.image_size, (32, 32)
    try:
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("default")
            student(torch.rand(1, 3, 32, 32))  # its own size: nothing said
            student(torch.rand(1, 3, 64, 64))
            student(torch.rand(1, 3, 64, 64))
        said = [str(w.message) for w in caught if w.category is OtherSizeWarning]
        assert said == [
            "input 64x64: the student was trained at 32x32; at another size things sit at another scale than it"
            " learnt and its answers can be far worse: resize every image to it, as in training"
        ]
    finally:
        student.image_size = before


def test_a_student_without_dense_tasks_takes_any_size_but_not_uint8(tmp_path):
    _, path = saved_student(tmp_path, "compact", {"classification": 3})
    student, _ = amalgam.load_student(path)
    assert input_multiple(student) is None  # its head pools: no decoder to line up
    with torch.no_grad():
        assert student(torch.rand(2, 3, 48, 40))["classification"].shape == (2, 3)
    assert refusal(student, torch.zeros(2, 3, 48, 40, dtype=torch.uint8)).startswith(EXPECTS + "uint8 with max 0")


def test_other_layouts_stop_saying_the_fix(built_and_loaded):
    _, student = built_and_loaded
    expects = re.escape("the student expects images [B, 3, H, W], got ")
    assert re.fullmatch(expects + r"\[3, 32, 32\]: add the batch dimension .*", refusal(student, torch.rand(3, 32, 32)))
    channels_last = refusal(student, torch.rand(2, 32, 32, 3))
    assert re.fullmatch(expects + r"\[2, 32, 32, 3\]: put the channels first .*", channels_last)
    grey = refusal(student, torch.rand(2, 1, 32, 32))  # broadcast against the RGB mean before
    assert re.fullmatch(expects + r"\[2, 1, 32, 32\]: repeat a grey image over 3 channels .*", grey)
    assert refusal(student, torch.rand(2, 3, 32, 32).numpy()).endswith("as a tensor [B, 3, H, W], got ndarray")


def test_images_in_range_get_the_built_students_answers_and_the_check_survives_pickling(built_and_loaded):
    built, student = built_and_loaded
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        want, got = built(images), student(images=images)  # images by keyword are checked too
    assert all(torch.equal(want[t], got[t]) for t in HEADS)
    assert type(student) is type(built) and student.state_dict().keys() == built.state_dict().keys()
    buffer = io.BytesIO()
    torch.save(student, buffer)  # a whole module, pickled: the check is a class, not a closure
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    assert refusal(again, images * 255) == refusal(student, images * 255)


def test_a_raw_trace_and_onnx_export_carry_no_python_check(built_and_loaded, tmp_path):
    _, student = built_and_loaded
    module = TaskOutputs(student, list(HEADS)).eval()
    bright = torch.rand(2, 3, 32, 32) * 255
    assert refusal(student, bright).startswith(EXPECTS)
    with warnings.catch_warnings(record=True) as seen, torch.no_grad():
        warnings.simplefilter("always")
        traced = torch.jit.trace(module, torch.rand(2, 3, 32, 32), strict=False)
    # the check's host sync would warn while tracing: it did not run
    assert not [w for w in seen if Path(w.filename).name == "serialize.py"]
    with torch.no_grad():
        assert traced(bright)[0].shape == (2, 3)
    pytest.importorskip("onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.rand(2, 3, 32, 32),), str(tmp_path / "s.onnx"), dynamo=False)
    assert (tmp_path / "s.onnx").stat().st_size > 0


def test_check_inputs_false_leaves_the_check_out(tmp_path):
    built, path = saved_student(tmp_path, "branched")
    unchecked = amalgam.load_student(path, check_inputs=False)[0]
    images = torch.rand(1, 3, 64, 64) * 255  # 0-255 floats: the checked student refuses them
    with torch.no_grad():
        out = unchecked(images)
        expected = built(images)
    assert all(torch.equal(out[t], expected[t]) for t in expected)


def test_a_half_precision_student_traced_from_float32_images_takes_them(built_and_loaded):
    # a review: the cast was skipped while tracing or compiling, so a .half()/.double() student ran eagerly
    # but failed inside its first convolution when traced from the same float32 images
    import copy

    _, student = built_and_loaded
    half = copy.deepcopy(student).bfloat16().eval()
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        traced = torch.jit.trace(half, images, strict=False)
        eager = half(images)
        again = traced(images)
    assert all(torch.allclose(eager[k].float(), again[k].float()) for k in eager)
