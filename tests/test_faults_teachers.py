"""Teacher-side faults of the audit: each was silent before (a wrong student, or a wrong fix-it hint)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from amalgam.config.recipe import TeacherConfig
from amalgam.errors import AmalgamError
from amalgam.task import DistillOptions, get_task
from amalgam.teachers.checks import check_teacher_output
from amalgam.teachers.model_sources import build_model, check_model, load_checkpoint
from amalgam.teachers.teacher import Teacher, build_teacher

LABELS = ("background", "a", "b")


def teacher(model, task="segmentation", labels=LABELS, **cfg) -> Teacher:
    config = TeacherConfig(task=task, model={"from": "python", "factory": "m:f"}, labels=labels and list(labels), **cfg)
    return Teacher("t1", get_task(task), model, config, (32, 32))


class Dense(nn.Module):
    """Logits at 1/``stride`` of the input, then bent out of shape by ``mode``."""

    def __init__(self, mode="", stride=1, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 3, padding=1, stride=stride)
        self.mode = mode

    def forward(self, x):
        y = self.conv(x)
        if self.mode == "transpose":
            return y.transpose(2, 3)
        if self.mode == "pad":
            return F.pad(y, (0, 16, 0, 0))
        if self.mode == "crop":
            return y[..., 2:-2, 2:-2]
        if self.mode == "pct":
            return y.softmax(1) * 100
        return y


# ---- 1. a dense output that is not its input's size scaled by one factor stops


@pytest.mark.parametrize("mode, got", [("transpose", "64x32"), ("pad", "32x80"), ("crop", "28x60")])
def test_a_dense_output_out_of_proportion_with_its_input_stops_naming_both_sizes(mode, got):
    t = teacher(Dense(mode), input={"size": [32, 64]})
    with pytest.raises(AmalgamError) as info:
        check_teacher_output(t, (32, 32))
    message = str(info.value)
    assert message.startswith(f"teacher 't1' (segmentation): its output is {got} for its 32x64 input (input.size)")
    assert "not the input's size scaled by one factor on both axes" in message and "\n" not in message


def test_a_dense_output_below_its_inputs_resolution_is_said_and_strides_may_round():
    quarter = teacher(Dense(stride=4), input={"size": [32, 64]})
    check_teacher_output(quarter, (32, 32))
    assert quarter.output_is_a_choice()
    said = "; it answers at 1/4 of its input (8x16 for 32x64): each cell over its 4x4 pixels"
    assert quarter.output_note().endswith(said)
    odd = teacher(Dense(stride=2), input={"size": [31, 45]})  # 16x23: ceil(31/2) x ceil(45/2)
    check_teacher_output(odd, (32, 32))
    assert "1/2 of its input (16x23 for 31x45)" in odd.output_note()
    full = teacher(Dense(), input={"size": [32, 64]})
    check_teacher_output(full, (32, 32))
    assert "answers at" not in full.output_note()
    from amalgam.teachers.checks import output_fit

    assert output_fit((30, 45), (4, 6)) == (
        "it answers at 1/8 of its input (4x6 for 30x45): each cell over its 8x8 pixels, then cropped or edge-padded"
        " to 30x45"
    )
    assert output_fit((32, 64), (128, 256)) == "it answers at 4x its input (128x256 for 32x64): resized"
    assert output_fit((32, 32), (28, 28)) is None  # cropped, though in proportion
    assert output_fit((513, 513), (65, 65)).startswith("it answers at 1/8 of its input")  # DeepLab at 1/8
    # the same map upsampled 8x by the net: 520 for 513 (ceil), or 512 (floor)
    assert output_fit((513, 513), (520, 520)) == (
        "it answers at 520x520 for 513x513 (a 1/8 map upsampled 8x), then cropped or edge-padded to 513x513"
    )
    assert output_fit((513, 513), (512, 512)).startswith("it answers at 512x512 for 513x513 (a 1/2 map")
    assert output_fit((299, 299), (8, 8)) == "it answers at 8x8 for 299x299: upsampled bilinearly"  # not "1/37"


def test_a_strided_map_of_an_input_no_multiple_of_its_stride_is_placed_on_the_pixels_its_cells_pooled():
    # a trial: a 16x11 map of a 65x47 input (stride 4, floor) was stretched over all 47 columns, each cell
    # drifting up to 3 px: an exact segmenter scored mIoU 0.80 against 0.92 placed
    from amalgam.data.views import onto_input

    cells = torch.arange(11.0).view(1, 1, 1, 11).expand(1, 1, 16, 11)  # each cell holds its column
    placed = onto_input(cells, (65, 47))
    assert placed.shape[-2:] == (65, 47)
    assert placed[0, 0, 0, 41].item() == pytest.approx(9.875)  # pixels 40-43 pooled into cell 10
    assert torch.equal(placed[0, 0, 0, 42:], torch.full((5,), 10.0))  # the cell, then the 3 px edge-padded
    up = torch.arange(520.0).view(1, 1, 1, 520).expand(1, 1, 520, 520)  # a 1/8 map the net upsampled 8x
    assert torch.equal(onto_input(up, (513, 513))[0, 0, 0], torch.arange(513.0))  # cropped, not squeezed
    assert onto_input(cells, (64, 44)).shape[-2:] == (64, 44)  # a multiple: the same upsampling
    assert torch.equal(onto_input(cells, (16, 11)), cells)  # its own size: untouched


# ---- 3. a teacher without a checkpoint says whose weights it runs with


def test_a_teacher_without_a_checkpoint_says_its_weights_are_the_factorys(tmp_path):
    (tmp_path / "faults_teachers_factory.py").write_text(
        "from torch import nn\n\ndef f():\n    return nn.Conv2d(3, 3, 1)\n\n"
        "def g():  # weights of its own, the same on every build (a from_pretrained)\n"
        "    m = nn.Conv2d(3, 3, 1)\n    nn.init.constant_(m.weight, 0.5)\n"
        "    nn.init.constant_(m.bias, 0.0)\n    return m\n"
    )
    cfg = TeacherConfig(
        task="segmentation", model={"from": "python", "factory": "faults_teachers_factory:f"}, labels=list(LABELS)
    )
    recipe = SimpleNamespace(
        base_dir=tmp_path, data=SimpleNamespace(image_size=(16, 16)), resolve=lambda p: tmp_path / p
    )
    built = build_teacher("seg", cfg, recipe)
    said = "none: its weights are the factory's own"
    assert built.checkpoint_note == said + " (random: two builds of the factory hold different weights)"
    cfg.model = cfg.model.model_validate({"from": "python", "factory": "faults_teachers_factory:g"})
    assert build_teacher("seg", cfg, recipe).checkpoint_note == said
    from amalgam.teachers.model_sources import unloaded_note

    assert unloaded_note("timm", {"name": "resnet18"}).endswith("(random: timm's pretrained=False)")
    assert unloaded_note("torchvision", {"name": "x"}).endswith("(random: weights=None)")
    assert unloaded_note("torchvision", {"name": "x", "weights": "DEFAULT"}) == (
        "none: its weights are torchvision's (weights / weights_backbone)"
    )
    assert unloaded_note("torchscript", {"path": "t.pt"}) == ""  # the file carries its weights


# ---- 4. depth values <= 0 are no depth: masked out of the targets, never 1 mm or 10^6 m


def test_depth_values_at_or_below_zero_are_masked_out_of_the_targets():
    task = get_task("depth")
    disparity = torch.tensor([[[[0.5, 0.0], [0.25, -1.0]]]])
    depth = task.convert_output(disparity, "inverse")
    assert torch.equal(depth, torch.tensor([[[[2.0, 0.0], [4.0, 0.0]]]]))  # was 10^6 m where 0
    student = torch.tensor([[[[2.0, 7.0], [4.0, 0.3]]]])  # right wherever the teacher gives depth
    assert task.distill_loss(student, depth, DistillOptions()).item() == pytest.approx(0.0, abs=1e-6)
    metric = torch.tensor([[[[2.0, 0.0], [4.0, -0.5]]]])  # a ReLU head's zeros, read as metres: were 1 mm
    assert task.distill_loss(student, metric, DistillOptions()).item() == pytest.approx(0.0, abs=1e-6)
    # resized onto a half-resolution student: a pixel that blends in no depth is left out too
    big = torch.full((1, 1, 4, 4), 3.0)
    big[..., :2, :2] = 0.0
    half = torch.tensor([[[[0.01, 3.0], [3.0, 3.0]]]])
    assert task.distill_loss(half, big, DistillOptions()).item() == pytest.approx(0.0, abs=1e-6)
    assert torch.equal(task.ensemble([depth, torch.full_like(depth, 2.0)])[0, 0, 0], torch.tensor([2.0, 2.0]))


class SkyAtQuarter(nn.Module):
    """5 m at 1/4 of the input, no depth (0) on the left half: a disparity net's sky."""

    def forward(self, x):
        y = torch.full((x.shape[0], 1, x.shape[2] // 4, x.shape[3] // 4), 5.0) + 0 * x.mean()
        y[..., : y.shape[-1] // 2] = 0.0
        return y


def test_no_depth_is_not_blended_into_depth_when_a_teachers_answer_is_resized():
    # resized onto the student's grid, the 0s were averaged with 5 m into 1-4 m targets at the border
    from amalgam.data.views import BatchViews
    from amalgam.teachers.inputs import answer_views

    t = teacher(SkyAtQuarter(), task="depth", labels=None)
    images = torch.rand(2, 3, 32, 32)
    out, _ = answer_views(t, BatchViews(images, t.input_spec.view), torch.arange(2), (32, 32), augmented=False)
    answered = out.isfinite()
    assert torch.equal(out[answered], torch.full_like(out[answered], 5.0))  # no blend passes for an answer
    assert answered[..., 20:].all() and not answered[..., :16].any()
    assert get_task("depth").distill_loss(torch.full_like(out, 5.0), out, DistillOptions()).item() == 0.0
    meter = get_task("depth").new_meter(None)  # scored, a no-answer where the truth has depth is 1 mm: wrong
    meter.update(out[:, 0], torch.full((2, 32, 32), 5.0))
    assert 0.4 < meter.compute()["abs_rel"] < 0.6


class ReluDepth(nn.Module):
    def forward(self, x):
        return torch.relu(x[:, :1] - 0.5) * 10


def test_a_depth_teacher_with_zeros_says_their_share_at_the_teacher_check():
    t = teacher(ReluDepth(), task="depth", labels=None, output="inverse")
    check_teacher_output(t, (16, 16))
    assert "of its depth on the check batch is <= 0: no depth there, masked out of its targets" in t.output_note()


class DeadDepth(nn.Module):
    def forward(self, x):
        return 0 * x[:, :1]  # a dead ReLU head: 0 everywhere


def test_a_depth_teacher_with_no_depth_anywhere_stops():
    # every target would be masked out: the depth branch would be trained by nothing, silently
    with pytest.raises(AmalgamError, match=r"no value of its depth on the check batch is > 0 \(max 0\)"):
        check_teacher_output(teacher(DeadDepth(), task="depth", labels=None), (16, 16))


# ---- 5. probabilities scaled by 100 are caught like probabilities


def test_percentages_read_as_logits_stop_and_read_as_probabilities():
    with pytest.raises(AmalgamError, match=r"^teachers\.t1\.output: the output sums to 100 over its 3 labels"):
        check_teacher_output(teacher(Dense(mode="pct")), (32, 32))
    t = teacher(Dense(mode="pct"), output="probabilities")
    check_teacher_output(t, (32, 32))
    x = torch.rand(1, 3, 32, 32)
    expected = Dense.forward(t.model, t.prepare(x)).div(100).log().softmax(1)
    assert torch.allclose(t(x).softmax(1), expected, atol=1e-5)


# ---- 6. messages: DDP's prefix said; a grey network given colour gets the key to set


def test_a_stripped_ddp_prefix_is_said(tmp_path):
    model = nn.Linear(2, 2)
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "ddp.pt")
    assert (
        load_checkpoint(model, tmp_path / "ddp.pt", "teacher 't1'") == "DDP's 'module.' prefix stripped from every key"
    )
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "wrapped.pt")
    note = load_checkpoint(model, tmp_path / "wrapped.pt", "teacher 't1'")
    assert (
        note == "entry 'model' (state_dict, else model, else model_state_dict, is read);"
        " DDP's 'module.' prefix stripped from every key"
    )


def refusal_of(channels: int, size: tuple[int, int]) -> str:
    """The teacher check's refusal of a network taking ``channels``-channel images, fed 3."""
    with pytest.raises(AmalgamError) as info:
        check_teacher_output(teacher(nn.Conv2d(channels, 3, 3, padding=1)), size)
    return str(info.value)


def test_a_one_channel_network_given_three_channels_is_told_to_set_input_channels():
    assert refusal_of(1, (16, 16)).endswith(
        "(the network takes 1-channel images: set teachers.t1.input.channels: 1 and a mean and std of 1 value each)"
    )


def test_a_four_channel_network_is_told_to_be_wrapped_not_resized():
    # a trial: an RGB-D network's channel error was hinted as a size ("64" read in "input[2, 3, 64, 64]")
    assert refusal_of(4, (64, 64)).endswith(
        "(the network takes 4-channel images, and amalgam feeds 1 or 3 channels: give a factory that wraps it,"
        " making its 4 channels of the 3 (e.g. the image and a constant channel))"
    )


def test_a_teacher_file_with_a_damaged_stretch_stops_naming_its_crc(tmp_path):
    # a trial: 64 KB zeroed in a teacher checkpoint loaded without a word (11% of a layer zero, mIoU 0.66 -> 0.62)
    from amalgam.teachers.model_sources import _torchscript_build, load_checkpoint

    model = nn.Conv2d(64, 64, 3)
    path, scripted = tmp_path / "t.pt", tmp_path / "t.ts"
    torch.save(model.state_dict(), path)
    torch.jit.save(torch.jit.script(model), str(scripted))
    for damaged in (path, scripted):
        data = bytearray(damaged.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 4096] = bytes(4096)
        damaged.write_bytes(bytes(data))
    with pytest.raises(AmalgamError, match=r"checkpoint .*t\.pt is damaged: entry '.*' fails its CRC check: copy it"):
        load_checkpoint(nn.Conv2d(64, 64, 3), path, "teacher 't'")
    with pytest.raises(AmalgamError, match=r"TorchScript file .*t\.ts is damaged: entry '.*' fails its CRC check"):
        _torchscript_build({"path": str(scripted)}, tmp_path)


# ---- 7. real-world teachers (audit 3): TorchScript files, other dtypes, EMA checkpoints, factories


class FixedBatch(nn.Module):
    """A network whose trace bakes in its batch size (reshape to constants)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x).reshape(2, 3, 32 * 32).reshape(2, 3, 32, 32)


def test_an_error_inside_a_torchscript_teacher_is_its_own_line_not_the_interpreters_preamble():
    grey = teacher(torch.jit.script(nn.Conv2d(1, 3, 3, padding=1)))
    with pytest.raises(AmalgamError) as info:
        check_teacher_output(grey, (16, 16))
    assert "TorchScript interpreter" not in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).endswith(
        "(the network takes 1-channel images: set teachers.t1.input.channels: 1 and a mean and std of 1 value each)"
    )
    fixed = teacher(torch.jit.trace(FixedBatch().eval(), torch.rand(2, 3, 32, 32)))
    with pytest.raises(AmalgamError) as info:
        check_teacher_output(fixed, (32, 32))
    assert str(info.value) == (
        "teacher 't1' fails on one image where it ran on two (shape '[2, 3, 1024]' is invalid for input of size"
        " 3072; a batch size fixed when traced, or batch statistics of a BatchNorm in training mode?): re-export"
        " it from model.eval(), taking any batch size"
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_a_teacher_with_fp16_or_fp64_weights_gets_its_input_in_that_dtype_and_is_said(dtype):
    torch.manual_seed(0)
    net = Dense()
    reference = teacher(Dense())
    reference.model.load_state_dict(net.state_dict())
    for model in (Dense().to(dtype), torch.jit.script(Dense().to(dtype))):  # a factory's, a TorchScript file's
        model.load_state_dict({k: v.to(dtype) for k, v in net.state_dict().items()})
        t = teacher(model)
        check_teacher_output(t, (32, 32))  # was: "Input type (float) and bias type (c10::Half) should be the same"
        kind = str(dtype)[6:]
        assert t.output_note().endswith(
            f"; its weights are {kind}: it runs in {kind}, outside train.precision's autocast"
        )
        x = torch.rand(2, 3, 32, 32)
        out = t(x)
        assert out.dtype == torch.float32 and torch.allclose(out, reference(x), atol=2e-2)


def test_an_averaged_models_ema_weights_load_and_are_said(tmp_path):
    from torch.optim.swa_utils import AveragedModel

    net = nn.Conv2d(3, 3, 1)
    ema = AveragedModel(net)  # torchvision's model_ema: 'module.weight', 'module.bias' and 'n_averaged'
    torch.save(ema.state_dict(), tmp_path / "ema.pt")
    model = nn.Conv2d(3, 3, 1)
    note = load_checkpoint(model, tmp_path / "ema.pt", "teacher 't1'")  # was: missing key 'weight'
    assert (
        note == "an AveragedModel's (EMA, SWA) weights: 'module.' prefix stripped from every key, n_averaged left out"
    )
    assert torch.equal(model.weight, net.weight)
    torch.save({"model": ema.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    assert load_checkpoint(model, tmp_path / "wrapped.pt", "teacher 't1'").startswith("entry 'model' (state_dict")


def test_a_factory_that_raises_is_named_with_its_own_error_not_bad_arguments(tmp_path):
    from amalgam.teachers.model_sources import build_model

    (tmp_path / "faults_teachers_raising.py").write_text(
        "def f(variant='b0'):\n    raise FileNotFoundError(f'no weights for {variant}')\n"
    )
    kwargs = {"factory": "faults_teachers_raising:f", "variant": "b7"}
    with pytest.raises(AmalgamError) as info:
        build_model("python", kwargs, tmp_path)  # was: "bad constructor arguments for python model: ..."
    assert str(info.value) == "factory: 'faults_teachers_raising:f' raised FileNotFoundError: no weights for b7"
    with pytest.raises(AmalgamError, match=r"^bad constructor arguments for python model: .*'width'"):
        build_model("python", {**kwargs, "width": 3}, tmp_path)  # arguments the factory does not take


# ---- timm teachers built for another input size than their pretrained_cfg's


def timm_teacher(**model) -> Teacher:
    config = TeacherConfig(task="classification", model={"from": "timm", **model}, labels=list(LABELS))
    return Teacher(
        "vit", get_task("classification"), build_model("timm", config.model.kwargs(), None), config, (32, 32)
    )


@pytest.mark.parametrize("size", [64, [64, 64]])
def test_a_timm_teacher_built_with_img_size_is_fed_that_size_and_says_so(size):
    # timm leaves pretrained_cfg at its own size: a ViT built at 64 px was fed 160 (224) px, or crashed
    t = timm_teacher(name="test_vit", img_size=size, num_classes=3, dynamic_img_size=False)
    assert t.size == (64, 64)
    assert t.input_spec.describe().startswith("size 64x64 (model img_size), 3 channels (default)")
    check_teacher_output(t, (32, 32))


def test_a_timm_size_from_pretrained_cfg_is_said_and_named_when_the_network_refuses_it():
    t = timm_teacher(name="test_vit", num_classes=3)
    assert t.input_spec.describe().startswith("size 160x160 (timm pretrained_cfg)")
    config = TeacherConfig(task="classification", model={"from": "timm", "name": "test_vit"}, labels=list(LABELS))
    built_elsewhere = build_model("timm", {"name": "test_vit", "img_size": 64, "dynamic_img_size": False}, None)
    t = Teacher("vit", get_task("classification"), built_elsewhere, config, (32, 32))
    with pytest.raises(AmalgamError) as info:
        check_teacher_output(t, (32, 32))
    assert str(info.value).endswith(
        "(160x160 is the timm pretrained_cfg's input_size: give the model img_size, or set teachers.vit.input.size)"
    )


def test_a_timm_teachers_pretrained_cfg_names_its_tag_and_the_other_tags_that_state_other_values():
    # a trial: efficientnet_b0 named alone takes timm's default tag's ImageNet mean/std, where another tag of it
    # (ra4_e3600_r224_in1k) states 0.5; a network fine-tuned from that one was fed the wrong statistics, unsaid
    def said(name: str, **given) -> str:
        config = TeacherConfig(
            task="classification", model={"from": "timm", "name": name}, labels=list(LABELS), input=given
        )
        model = build_model("timm", config.model.kwargs(), None)
        return Teacher("t", get_task("classification"), model, config, (32, 32)).input_line()

    line = said("efficientnet_b0")
    assert "timm pretrained_cfg: efficientnet_b0.ra_in1k (timm's default tag)" in line, line
    assert "ra4_e3600_r224_in1k mean [0.500, 0.500, 0.500], std [0.500, 0.500, 0.500]" in line, line
    assert line.endswith("name it (model.name: efficientnet_b0.<tag>) or set input.mean, input.std"), line
    tagged = said("efficientnet_b0.ra4_e3600_r224_in1k")  # a tag named: its own values, no other tag to say
    assert tagged.endswith("; timm pretrained_cfg: efficientnet_b0.ra4_e3600_r224_in1k"), tagged
    given = said("efficientnet_b0", mean=[0.5] * 3, std=[0.5] * 3)  # the recipe's values: no other tag differs
    assert given.endswith("; timm pretrained_cfg: efficientnet_b0.ra_in1k (timm's default tag)"), given


def test_a_timm_teachers_recipe_input_size_wins_over_img_size():
    config = TeacherConfig(
        task="classification",
        model={"from": "timm", "name": "test_vit", "img_size": 64, "num_classes": 3, "dynamic_img_size": True},
        labels=list(LABELS),
        input={"size": [32, 32]},
    )
    t = Teacher("vit", get_task("classification"), build_model("timm", config.model.kwargs(), None), config, (32, 32))
    assert t.size == (32, 32) and t.input_spec.describe().startswith("size 32x32, ")


@pytest.mark.parametrize(
    "model, message",
    [
        ({"img_size": 64, "input_size": [3, 32, 32]}, "img_size [64, 64] and input_size [32, 32] disagree"),
        ({"img_size": "big"}, "img_size 'big' is not an input size (an int, [H, W] or [C, H, W])"),
    ],
)
def test_a_malformed_or_conflicting_timm_size_stops_in_one_line(model, message):
    with pytest.raises(AmalgamError, match=re.escape(message)):
        build_model("timm", {"name": "test_vit", **model}, None)
    with pytest.raises(AmalgamError, match=re.escape(message)):
        check_model("timm", {"name": "test_vit", **model}, None)


# ---- shape errors name the setting or fix their shape points at


class Shaped(nn.Module):
    """Logits of ``classes`` channels, bent into another shape by ``mode``."""

    def __init__(self, classes: int, mode: str = ""):
        super().__init__()
        self.conv, self.mode = nn.Conv2d(3, classes, 1), mode

    def forward(self, x):
        y = self.conv(x)
        if self.mode == "pooled":
            return y.mean((2, 3))
        if self.mode == "1x1":
            return y.mean((2, 3), keepdim=True)
        if self.mode == "nhwc":
            return y.permute(0, 2, 3, 1)
        if self.mode == "argmax":
            return y.argmax(1)
        if self.mode == "scalar":
            return y.sum()
        return y


@pytest.mark.parametrize(
    "task, classes, mode, hint",
    [
        ("segmentation", 1, "", "(one channel for two labels: set output: binary (a logit) or binary_probability"),
        ("classification", 1, "pooled", "(one channel for two labels: set output: binary (a logit)"),
        (
            "classification",
            3,
            "1x1",
            "(a [B, C, 1, 1] map: flatten it in the model, e.g. return torch.flatten(out, 1))",
        ),
        ("segmentation", 3, "nhwc", "(channels last? return it as [B, C, H, W]: out.permute(0, 3, 1, 2))"),
        ("segmentation", 3, "argmax", "(an integer class map, not scores: export the network's logits)"),
    ],
)
def test_a_refused_output_shape_names_the_setting_it_points_at(task, classes, mode, hint):
    labels = ("background", "a") if classes == 1 else LABELS
    with pytest.raises(AmalgamError) as info:
        check_teacher_output(teacher(Shaped(classes, mode), task=task, labels=labels), (32, 32))
    message = str(info.value)
    assert message.startswith(f"teacher 't1' ({task}): expected logits of shape") and "\n" not in message
    assert hint in message


def test_a_scalar_output_is_a_shape_error_not_a_crash():
    with pytest.raises(AmalgamError, match=r"expected logits of shape \[B, 2\] = \[2, 2\], got \[\]$"):
        check_teacher_output(teacher(Shaped(2, "scalar"), task="classification", labels=["a", "b"]), (32, 32))


def test_a_plain_shape_error_gets_no_hint():
    with pytest.raises(AmalgamError) as info:  # fewer channels than labels: the labels list is what to look at
        check_teacher_output(teacher(Shaped(2), task="segmentation"), (32, 32))
    assert str(info.value) == (
        "teacher 't1' (segmentation): expected logits of shape [B, 3, H, W], got [2, 2, 32, 32]"
        " (2 channels for 3 labels: teachers.t1.labels lists one label per output channel)"
    )
    with pytest.raises(AmalgamError) as info:  # more: unused_outputs may
        check_teacher_output(teacher(Shaped(4), task="segmentation"), (32, 32))
    assert str(info.value).endswith(
        "got [2, 4, 32, 32] (1 more channels than labels: name them in teachers.t1.labels, or list them in"
        " teachers.t1.unused_outputs)"
    )


def test_a_python_teacher_without_checkpoint_whose_factory_draws_random_weights_is_warned(fresh_world):
    # a trial: a recipe that left `checkpoint:` out, with no eval set, distilled a random teacher with one
    # note line ("its weights are the factory's own"); timm/smp/torchvision's notes said "random", python's not
    from amalgam.config.recipe import load_recipe
    from amalgam.distill.plan import build_plan

    recipe = load_recipe(fresh_world)
    recipe.teachers["seg-a"].checkpoint = None
    said: list[str] = []
    plan = build_plan(recipe, with_data=False, log=said.append)
    note = plan.teachers["seg-a"].checkpoint_note
    assert note.endswith("(random: two builds of the factory hold different weights)"), note
    line = next(w for w in plan.teacher_warnings if w.startswith("teacher seg-a runs with random weights"))
    assert "Give teachers.seg-a.checkpoint" in line and f"warning: {line}" in said
    assert not any(w.startswith("teacher cls runs with random") for w in plan.teacher_warnings)  # loaded: not said


def test_a_file_among_model_args_that_holds_no_weights_does_not_hide_a_random_factory(tmp_path):
    # a review: any file among the args (a label list) skipped the two-builds check, and the note said
    # "weights loaded by the factory from model.labels_file" of a teacher drawing its weights at random
    from amalgam.teachers.model_sources import unloaded_note

    (tmp_path / "faults_teachers_labels_factory.py").write_text(
        "from torch import nn\n\ndef f(labels_file):\n    return nn.Conv2d(3, 3, 1)\n"
    )
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    kwargs = {"factory": "faults_teachers_labels_factory:f", "labels_file": "labels.txt"}
    model = torch.nn.Conv2d(3, 3, 1)
    assert unloaded_note("python", kwargs, tmp_path, model) == (
        "none: its weights are the factory's own (random: two builds of the factory hold different weights;"
        " model.labels_file: labels.txt: files among its model args, none found holding its weights)"
    )


def test_a_weights_file_whose_ema_copy_the_model_holds_counts_as_loaded(tmp_path):
    # a review: timm's checkpoint_path loads 'state_dict_ema' first; amalgam compared 'state_dict' only and
    # stopped, saying timm had not loaded the file
    from amalgam.teachers.model_sources import args_weights_held

    trained, ema = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(3, 4, 3)
    path = tmp_path / "train.pth.tar"
    torch.save({"epoch": 3, "state_dict": trained.state_dict(), "state_dict_ema": ema.state_dict()}, path)
    model = torch.nn.Conv2d(3, 4, 3)
    model.load_state_dict(ema.state_dict())
    assert args_weights_held(model, {"checkpoint_path": ("train.pth.tar", path)}) == {"checkpoint_path": True}
    assert args_weights_held(torch.nn.Conv2d(3, 4, 3), {"checkpoint_path": ("train.pth.tar", path)}) == {
        "checkpoint_path": False
    }


def test_a_factory_with_a_pretrained_body_and_a_fresh_head_is_said_partly_random(tmp_path):
    # a review: a body loaded by the factory under a new random head was said "random weights: it teaches noise"
    from amalgam.teachers.model_sources import unloaded_note

    (tmp_path / "faults_teachers_head_factory.py").write_text(
        "import torch\nfrom torch import nn\n\ndef f():\n    body = nn.Conv2d(3, 8, 1)\n"
        "    body.weight.data = torch.linspace(-1, 1, 24).view(8, 3, 1, 1)\n"
        "    body.bias.data = torch.linspace(0, 1, 8)\n"
        "    return nn.Sequential(body, nn.Conv2d(8, 3, 1))\n"
    )
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(8, 3, 1))
    model[0].weight.data, model[0].bias.data = torch.linspace(-1, 1, 24).view(8, 3, 1, 1), torch.linspace(0, 1, 8)
    assert unloaded_note("python", {"factory": "faults_teachers_head_factory:f"}, tmp_path, model) == (
        "none: its weights are the factory's own (random: two builds of the factory differ in 2 of its 4 weight"
        " tensors: '1.weight', '1.bias')"
    )


def test_a_fresh_factory_network_with_batch_norm_is_said_random_not_partly(tmp_path):
    # a trial: batch norm's fresh ones and zeros, alike in any two builds, read as a pretrained body
    from amalgam.teachers.model_sources import unloaded_note

    (tmp_path / "faults_teachers_bn_factory.py").write_text(
        "from torch import nn\n\ndef f():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 3, 1))\n"
    )
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 3, 1))
    assert unloaded_note("python", {"factory": "faults_teachers_bn_factory:f"}, tmp_path, model) == (
        "none: its weights are the factory's own (random: two builds of the factory hold different weights)"
    )


def test_a_timm_local_dir_without_a_checkpoint_stops_naming_its_weights_file_which_then_loads(tmp_path):
    # a trial: the folder's config.json built the network and its weights were never read; the build went on,
    # warned, with random weights
    import timm
    from timm.models import save_for_hf

    from amalgam.teachers.model_sources import unloaded_note

    save_for_hf(timm.create_model("resnet10t", num_classes=3), str(tmp_path / "folder"))
    weights = next(f for f in ("model.safetensors", "pytorch_model.bin") if (tmp_path / "folder" / f).is_file())
    kwargs = {"name": "local-dir:folder"}
    model = build_model("timm", kwargs, tmp_path)
    with pytest.raises(
        AmalgamError, match=r"^model\.name: local-dir:folder: .*set the teacher's checkpoint to folder/"
    ):
        unloaded_note("timm", kwargs, tmp_path, model)
    load_checkpoint(model, tmp_path / "folder" / weights, "teacher 'cls'")
    saved = timm.create_model(f"local-dir:{tmp_path / 'folder'}", pretrained=True)
    assert torch.equal(model.fc.weight, saved.fc.weight)
    # its weights given as timm's checkpoint_path, which loads them itself (review): taken, and checked
    by_path = {**kwargs, "checkpoint_path": f"folder/{weights}"}
    assert unloaded_note("timm", by_path, tmp_path, build_model("timm", by_path, tmp_path)).endswith(
        "the model holds its weights)"
    )


def test_timm_names_with_a_tag_or_a_local_folder_and_timms_own_checkpoints_are_taken(tmp_path):
    # a trial: 'resnet10t.c3_in1k' (its tag picks the pretrained_cfg: mean, std, size) was "unknown"; timm's
    # train.py checkpoint, an argparse.Namespace of its arguments beside the state dicts, was refused as pickled
    import argparse

    from amalgam.teachers.model_sources import _timm_check, read_checkpoint

    _timm_check({"name": "resnet10t.c3_in1k"}, tmp_path)
    with pytest.raises(AmalgamError, match=r"^name: 'hf-hub:timm/x' downloads from the Hugging Face hub"):
        _timm_check({"name": "hf-hub:timm/x"}, tmp_path)
    with pytest.raises(AmalgamError, match=r"^name: local-dir:missing: no config.json in "):
        _timm_check({"name": "local-dir:missing"}, tmp_path)
    net = torch.nn.Conv2d(3, 4, 3)
    args = argparse.Namespace(input_size=[3, 40, 56], mean=[0.5] * 3, model="resnet10t")
    torch.save({"epoch": 3, "arch": "resnet10t", "state_dict": net.state_dict(), "args": args}, tmp_path / "t.pth.tar")
    state, note = read_checkpoint(tmp_path / "t.pth.tar")
    assert set(state) == {"weight", "bias"} and "'state_dict'" in note


def test_a_teachers_input_size_that_is_not_square_is_said_as_height_and_width():
    # a trial: [48, 96] was said "size 48x96", which a user writing PIL's (width, height) read as confirmed
    from amalgam.teachers.inputs import ResolvedInput

    wide = ResolvedInput((48, 96), 3, [0.5] * 3, [0.5] * 3, "stretch", {"size": "recipe"})
    assert wide.describe().startswith("size 48 high x 96 wide, 3 channels")
    square = ResolvedInput((64, 64), 3, [0.5] * 3, [0.5] * 3, "stretch", {"size": "recipe"})
    assert square.describe().startswith("size 64x64, 3 channels")


def test_a_whole_teacher_file_is_read_through_once_and_a_foreign_zip_is_one_line(tmp_path, monkeypatch):
    # a review: every check read a big checkpoint through again for its CRC; a zip of another compression raised
    import zipfile

    from amalgam import io

    path = tmp_path / "t.pt"
    torch.save(nn.Conv2d(3, 3, 1).state_dict(), path)
    assert io.zip_problem(path) is None
    monkeypatch.setattr(io, "_zip_problem", lambda *a: pytest.fail("read through again"))
    assert io.zip_problem(path) is None
    monkeypatch.undo()
    odd = tmp_path / "odd.zip"
    with zipfile.ZipFile(odd, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x", "y" * 100)
    monkeypatch.setattr(zipfile.ZipFile, "testzip", lambda self: (_ for _ in ()).throw(NotImplementedError("method")))
    assert io.zip_problem(odd) == "it is no torch file (method)"
