"""Which tensor of a teacher's output is distilled: ``output_key`` or a stated rule, never a silent pick."""

from __future__ import annotations

from collections import OrderedDict, namedtuple

import pytest
import torch
from torch import nn

from amalgam.config.recipe import TeacherConfig
from amalgam.errors import AmalgamError
from amalgam.task import get_task
from amalgam.teachers.checks import check_teacher_output
from amalgam.teachers.outputs import candidates, resolve, select
from amalgam.teachers.teacher import Teacher


class Heads(nn.Module):
    """A segmenter answering ``{aux, seg}``: the aux head first, as dict order puts it."""

    def __init__(self, keys=("aux", "seg"), classes=3):
        super().__init__()
        self.keys = keys
        self.conv = nn.Conv2d(3, classes, 1)

    def forward(self, x):
        y = self.conv(x)
        return {k: y * (i + 1) for i, k in enumerate(self.keys)}  # each key a different tensor


class Logits:
    """An HF-style output object (not a dict): ``.logits`` beside ``.hidden_states``."""

    def __init__(self, logits, hidden):
        self.logits = logits
        self.hidden_states = hidden
        self.loss = None


class HFStyle(nn.Module):
    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(3, 2)

    def forward(self, x):
        pooled = x.mean((2, 3))
        return Logits(self.classifier(pooled), pooled)


class DepthOut(nn.Module):
    """A depth model answering ``(features, {predicted_depth: [B, H, W]})``."""

    def forward(self, x):
        return x[:, :2], {"predicted_depth": x[:, 0].abs() + 1.0}


def teacher(model, task="segmentation", labels=("background", "a", "b"), **cfg) -> Teacher:
    config = TeacherConfig(task=task, model={"from": "python", "factory": "m:f"}, labels=labels and list(labels), **cfg)
    return Teacher("t1", get_task(task), model, config, (16, 16))


def test_aux_and_seg_without_output_key_is_an_error_listing_both_with_shapes():
    t = teacher(Heads())
    with pytest.raises(AmalgamError) as info:
        check_teacher_output(t, (16, 16))
    assert str(info.value) == (
        "teachers.t1.output_key: the output (dict) holds 2 tensors: aux [2, 3, 16, 16], seg [2, 3, 16, 16]; "
        "set output_key to one of: aux, seg"
    )


def test_output_key_selects_the_named_head_not_the_first():
    model = Heads()
    t = teacher(model, output_key="seg")
    check_teacher_output(t, (16, 16))
    x = torch.rand(1, 3, 16, 16)
    assert torch.allclose(t(x), model(t.prepare(x))["seg"])
    assert not torch.allclose(t(x), model(t.prepare(x))["aux"])
    assert (
        t.output_note() == "output 'seg' (output_key), read as logits"
        " (output: logits, the default of logits, probabilities, sigmoid, binary, binary_probability)"
    )


def test_torchvision_out_is_the_stated_default():
    model = Heads(keys=("out", "aux"))
    t = teacher(model)
    check_teacher_output(t, (16, 16))
    x = torch.rand(1, 3, 16, 16)
    assert torch.allclose(t(x), model(t.prepare(x))["out"])
    assert t.output_note() == (
        "output 'out' ('out' by default (torchvision's convention; not aux)), read as logits"
        " (output: logits, the default of logits, probabilities, sigmoid, binary, binary_probability)"
    )


def test_logits_object_through_output_key_without_wrapping_the_model():
    model = HFStyle()
    keys = list(model.state_dict())
    with pytest.raises(AmalgamError, match=r"holds 2 tensors: logits \[2, 2\], hidden_states \[2, 3\]"):
        check_teacher_output(teacher(model, task="classification", labels=("x", "y")), (16, 16))
    t = teacher(model, task="classification", labels=("x", "y"), output_key="logits")
    check_teacher_output(t, (16, 16))
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(t(x), model(t.prepare(x)).logits)
    assert t.model is model and list(t.model.state_dict()) == keys  # checkpoints keep loading as they are


def test_hf_model_output_dict_with_one_tensor_needs_no_key():
    class ModelOutput(OrderedDict):  # transformers' ModelOutput is an OrderedDict; None fields are absent
        pass

    raw = ModelOutput(logits=torch.zeros(2, 2))
    choice = resolve(raw, None)
    assert choice.key == "logits" and "only tensor" in choice.reason


def test_depth_tuple_with_nested_dotted_key_and_three_dim_depth():
    t = teacher(DepthOut(), task="depth", labels=None, output_key="1.predicted_depth")
    check_teacher_output(t, (16, 16))
    x = torch.rand(2, 3, 16, 16)
    out = t(x)
    assert out.shape == (2, 1, 16, 16)  # [B, H, W] accepted
    assert torch.allclose(out[:, 0], t.prepare(x)[:, 0].abs() + 1.0)
    with pytest.raises(AmalgamError, match=r"holds 2 tensors: 0 \[2, 2, 16, 16\], 1.predicted_depth \[2, 16, 16\]"):
        check_teacher_output(teacher(DepthOut(), task="depth", labels=None), (16, 16))


def test_unknown_key_names_what_exists():
    raw = {"aux": torch.zeros(1), "seg": {"logits": torch.zeros(2)}}
    assert set(candidates(raw)) == {"aux", "seg.logits"}
    with pytest.raises(AmalgamError, match=r"^output_key 'seg.out': seg has no 'out' \(tensors in the output: aux"):
        select(raw, "seg.out")
    with pytest.raises(AmalgamError, match="is a dict, not a tensor"):
        select(raw, "seg")
    with pytest.raises(AmalgamError, match="has no '5'"):
        select((torch.zeros(1),), "5")


class RawDepth(nn.Module):
    """A depth head without its activation (log depth, say): many values negative."""

    def forward(self, x):
        return x[:, :1] - 0.5


def test_a_negative_depth_read_as_metres_stops_naming_the_other_readings():
    # read as metres by default, a log-depth output was clamped to 1 mm in the loss without a word
    t = teacher(RawDepth(), task="depth", labels=None)
    with pytest.raises(AmalgamError, match=r"depth in metres cannot be negative, .*set output: log.*output: inverse"):
        check_teacher_output(t, (16, 16))
    logged = teacher(RawDepth(), task="depth", labels=None, output="log")
    check_teacher_output(logged, (16, 16))
    assert logged.output_note() == "the output tensor, read as log (output: log)"


class AlmostPositiveDepth(nn.Module):
    """Metres from a linear head: a few values of a noise batch stray below 0."""

    def forward(self, x):
        out = torch.ones_like(x[:, :1])
        out[:, :, 0, 0] = -0.1  # 1 pixel of 256
        return out


class ReluDisparity(nn.Module):
    """Inverse depth ending in ReLU: exact zeros where it sees no depth (the sky)."""

    def forward(self, x):
        return torch.relu(x[:, :1])


def test_a_disparity_head_with_zeros_passes_the_check():
    # a check that read its zeros (1e6 m once clamped) as a fault stopped MiDaS-like teachers
    check_teacher_output(teacher(ReluDisparity(), task="depth", labels=None, output="inverse"), (16, 16))


def test_a_softmax_teacher_is_caught_under_a_flip_averaging_wrap():
    # the wrap's log(mean(softmax(p))) is negative: checked wrapped, the probabilities got past
    wrapped = teacher(Softmaxed(), wrap={"type": "multi_transform", "flip": True})
    with pytest.raises(AmalgamError, match="sums to 1 over its 3 labels"):
        check_teacher_output(wrapped, (16, 16))


def test_a_few_negative_metres_on_the_noise_batch_do_not_stop_the_build():
    check_teacher_output(teacher(AlmostPositiveDepth(), task="depth", labels=None), (16, 16))


def test_the_default_depth_reading_is_said():
    t = teacher(DepthOut(), task="depth", labels=None, output_key="1.predicted_depth")
    check_teacher_output(t, (16, 16))
    assert t.output_note().endswith(
        "read as metric (output: metric, the default of metric, inverse, log, relative, affine)"
    )  # noqa: E501


class Softmaxed(nn.Module):
    """A network ending in softmax: probabilities where logits are expected."""

    def __init__(self, dense=True):
        super().__init__()
        self.conv, self.dense = nn.Conv2d(3, 3, 1), dense

    def forward(self, x):
        y = self.conv(x).softmax(1)
        return y if self.dense else y.mean((2, 3))


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_probabilities_distilled_as_logits_stop_the_build(task):
    # softmax(p / T) of probabilities is near uniform: the student learnt almost nothing, silently
    t = teacher(Softmaxed(dense=task == "segmentation"), task=task)
    with pytest.raises(AmalgamError, match=r"sums to 1 over its 3 labels at every position, as probabilities do"):
        check_teacher_output(t, (16, 16))
    check_teacher_output(teacher(Heads(keys=("out",)), task="segmentation"), (16, 16))  # logits pass


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_output_probabilities_distils_their_log(task):
    # a vendor network with its softmax built in (a TorchScript file) has a recipe-level way past the stop
    model = Softmaxed(dense=task == "segmentation")
    t = teacher(model, task=task, output="probabilities")
    check_teacher_output(t, (16, 16))
    x = torch.rand(2, 3, 16, 16)
    probs = model(t.prepare(x))
    torch.testing.assert_close(t(x), probs.log())
    torch.testing.assert_close(t(x).softmax(1), probs)
    assert t.output_note() == "the output tensor, read as probabilities (output: probabilities)"


def test_a_diverged_probabilities_teacher_is_said_to_be_nan_not_misread():
    with pytest.raises(AmalgamError, match=r"'t1' \(segmentation\): 384 of 1,536 values of its output on a random"):
        check_teacher_output(teacher(Diverged(), output="probabilities"), (16, 16))


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_a_zoo_network_trained_for_probabilities_ends_in_softmax(task):
    assert isinstance(get_task(task).output_layer("probabilities"), nn.Softmax)
    assert get_task(task).output_layer("logits") is None


def test_output_probabilities_on_logits_stops_naming_the_key():
    with pytest.raises(AmalgamError, match=r"^teachers\.t1\.output: read as probabilities, but the output is not"):
        check_teacher_output(teacher(Heads(keys=("out",)), output="probabilities"), (16, 16))


class Sigmoided(nn.Module):
    """A network ending in one sigmoid per label (smp ``activation: sigmoid``, multi-label heads)."""

    def __init__(self, channels=3, dense=True):
        super().__init__()
        self.conv, self.dense = nn.Conv2d(3, channels, 1), dense

    def forward(self, x):
        y = self.conv(x * 4 - 2).sigmoid()
        return y if self.dense else y.mean((2, 3))


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_sigmoids_distilled_as_logits_stop_the_build(task):
    # every value in [0, 1] without summing to 1: softened as logits they were near-uniform targets
    # (a classifier needs 16 values on the 2-image check batch: a few small logits can lie in [0, 1])
    labels = ("background", *"abcdefg")
    t = teacher(Sigmoided(channels=len(labels), dense=task == "segmentation"), task=task, labels=labels)
    with pytest.raises(AmalgamError, match=r"^teachers\.t1\.output: every value .* lies in \[0, 1\], as sigmoid"):
        check_teacher_output(t, (16, 16))


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_output_sigmoid_distils_their_logit(task):
    model = Sigmoided(dense=task == "segmentation")
    t = teacher(model, task=task, output="sigmoid")
    check_teacher_output(t, (16, 16))
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(t(x).sigmoid(), model(t.prepare(x)), atol=1e-5, rtol=1e-4)
    assert isinstance(get_task(task).output_layer("sigmoid"), nn.Sigmoid)


def test_output_sigmoid_on_logits_stops_naming_the_key():
    with pytest.raises(AmalgamError, match=r"^teachers\.t1\.output: read as sigmoid probabilities, but values lie"):
        check_teacher_output(teacher(Heads(keys=("out",)), output="sigmoid"), (16, 16))


class OneLogit(nn.Module):
    """A binary segmenter with one output channel (smp ``classes: 1``): the foreground's logit."""

    def __init__(self, sigmoid=False):
        super().__init__()
        self.conv, self.sigmoid = nn.Conv2d(3, 1, 1), sigmoid

    def forward(self, x):
        y = self.conv(x * 4 - 2)
        return y.sigmoid() if self.sigmoid else y


@pytest.mark.parametrize("kind", ["binary", "binary_probability"])
def test_a_one_channel_binary_model_is_read_as_two_logits(kind):
    model = OneLogit(sigmoid=kind == "binary_probability")
    t = teacher(model, labels=("background", "person"), background="background", output=kind)
    check_teacher_output(t, (16, 16))
    x = torch.rand(2, 3, 16, 16)
    z = model.conv(t.prepare(x) * 4 - 2)
    out = t(x)
    assert out.shape == (2, 2, 16, 16)
    torch.testing.assert_close(out.softmax(1)[:, 1:], z.sigmoid(), atol=1e-5, rtol=1e-4)  # p(person) = sigmoid(z)
    assert t.output_note() == f"the output tensor, read as {kind} (output: {kind})"


class RedOverGreen(nn.Module):
    """A binary classifier of colour: its logit, 0.5 + 2 (red - green), lies in [0, 1] on grey images."""

    def forward(self, x):
        rgb = x * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) + torch.tensor([0.485, 0.456, 0.406]).view(
            1, 3, 1, 1
        )
        return 0.5 + 2 * (rgb[:, :1] - rgb[:, 1:2]).mean((2, 3))


def test_a_binary_classifier_with_logits_in_0_1_on_the_check_batch_passes():
    # a few values prove nothing: a real binary classifier's logits of 0.3 and 0.8 were refused; the
    # check reads 16 varied images, on which real logits stray out of [0, 1]
    labels = dict(labels=("no", "yes"), output="binary")
    t = teacher(RedOverGreen(), task="classification", **labels)
    assert (t.selected_output(torch.rand(2, 3, 16, 16)) - 0.5).abs().max() < 0.5  # the check batch's lie in [0, 1]
    check_teacher_output(t, (16, 16))
    assert isinstance(get_task("segmentation").output_layer("binary_probability"), nn.Sigmoid)


class SigmoidClassifier(nn.Module):
    """A classifier ending in one sigmoid per label (a multi-label head), of few labels."""

    def __init__(self, labels: int):
        super().__init__()
        self.fc = nn.Linear(3, labels)

    def forward(self, x):
        return self.fc(x.mean((2, 3))).sigmoid()


@pytest.mark.parametrize("labels", [2, 5, 7])
def test_a_sigmoid_classifier_of_few_labels_stops_as_sigmoids(labels):
    # 2 images x 5 labels is 10 values, under the 16 the check needs: it was distilled as logits
    names = tuple("abcdefg"[:labels])
    with pytest.raises(AmalgamError, match=r"^teachers\.t1\.output: every value .* lies in \[0, 1\], as sigmoid"):
        check_teacher_output(teacher(SigmoidClassifier(labels), task="classification", labels=names), (16, 16))
    check_teacher_output(
        teacher(SigmoidClassifier(labels), task="classification", labels=names, output="sigmoid"), (16, 16)
    )


def test_a_one_logit_classifier_ending_in_sigmoid_stops_as_binary_probability():
    # its 2 values on the check batch never reached the 16 the binary check needs
    binary = dict(labels=("no", "yes"), output="binary")
    with pytest.raises(AmalgamError, match=r"^teachers\.t1\.output: read as a logit, but every value lies in \[0, 1\]"):
        check_teacher_output(teacher(SigmoidClassifier(1), task="classification", **binary), (16, 16))
    sigmoid = dict(labels=("no", "yes"), output="binary_probability")
    check_teacher_output(teacher(SigmoidClassifier(1), task="classification", **sigmoid), (16, 16))


@pytest.mark.parametrize("labels", [1, 2, 5])
def test_small_logits_of_untrained_stand_ins_pass_the_wider_reading_check(labels):
    # an untrained resnet's few logits barely vary across images: on 16 plain images they all lay in
    # [0, 1] for 1 in 3 one-logit stand-ins; the wider check amplifies its images' input, as logits grow
    timm = pytest.importorskip("timm")
    kind = dict(labels=("no", "yes"), output="binary") if labels == 1 else dict(labels=tuple("abcde"[:labels]))
    for seed in range(10):
        torch.manual_seed(seed)
        model = timm.create_model("resnet10t", pretrained=False, num_classes=labels)
        check_teacher_output(teacher(model, task="classification", **kind), (16, 16))
        sigmoid = nn.Sequential(model, nn.Sigmoid())
        with pytest.raises(AmalgamError, match=r"^teachers\.t1\.output: .*lies? in \[0, 1\]"):
            check_teacher_output(teacher(sigmoid, task="classification", **kind), (16, 16))


def test_a_binary_reading_of_a_sigmoid_or_of_several_channels_stops():
    binary = dict(labels=("background", "person"), background="background", output="binary")
    with pytest.raises(AmalgamError, match=r"^teachers\.t1\.output: read as a logit, but every value lies in \[0, 1\]"):
        check_teacher_output(teacher(OneLogit(sigmoid=True), **binary), (16, 16))
    with pytest.raises(AmalgamError, match=r"^teachers\.t1\.output: binary reads one channel .* got \[2, 3, 16, 16\]"):
        check_teacher_output(teacher(Heads(keys=("out",)), **binary), (16, 16))


class Diverged(nn.Module):
    """A checkpoint that diverged in training: NaN logits."""

    def forward(self, x):
        out = torch.zeros(x.shape[0], 3, *x.shape[-2:])
        out[:, :, :4] = float("nan")
        return out


def test_nan_outputs_stop_at_the_teacher_check_naming_the_teacher():
    # they passed `amalgam inspect` and stopped the build at step 1 blaming the loss
    with pytest.raises(AmalgamError, match=r"'t1' \(segmentation\): 384 of 1,536 values of its output on a random"):
        check_teacher_output(teacher(Diverged()), (16, 16))


SegOut = namedtuple("SegOut", ["logits", "aux_logits"])


class NamedTupleSeg(nn.Module):
    """A segmenter answering a namedtuple, the form of torchvision's ``InceptionOutputs``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        y = self.conv(x)
        return SegOut(y, y * 2)


def test_output_key_names_a_namedtuple_field():
    # the output has .logits, yet "the output has no 'logits'": tuples were read by index only
    model = NamedTupleSeg()
    t = teacher(model, output_key="logits")
    check_teacher_output(t, (16, 16))
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(t(x), model(t.prepare(x)).logits)
    assert torch.equal(select(model(x), "aux_logits"), model(x).aux_logits)
    assert torch.equal(select(model(x), "1"), model(x).aux_logits)  # its index still selects


def test_a_namedtuple_output_lists_its_field_names():
    with pytest.raises(AmalgamError) as info:
        check_teacher_output(teacher(NamedTupleSeg()), (16, 16))
    assert str(info.value).endswith(
        "holds 2 tensors: logits [2, 3, 16, 16], aux_logits [2, 3, 16, 16];"
        " set output_key to one of: logits, aux_logits"
    )
    with pytest.raises(
        AmalgamError, match=r"has no 'out' \(tensors in the output: logits \[2, 3, 16, 16\], aux_logits"
    ):
        select(NamedTupleSeg()(torch.rand(2, 3, 16, 16)), "out")


class Pair(nn.Module):
    def forward(self, x):
        return x[:, :3] * 2, x[:, :1]


@pytest.mark.parametrize("key", [0, "0"])
def test_output_key_takes_a_tuple_index_written_as_a_number(key):
    # `output_key: 0` in YAML is an int: refused with "Input should be a valid string", though the
    # README and the tuple error offer 0
    config = TeacherConfig(task="segmentation", model={"from": "python", "factory": "m:f"}, output_key=key)
    assert config.output_key == "0"
    t = teacher(Pair(), output_key=key)
    check_teacher_output(t, (16, 16))
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(t(x), t.prepare(x) * 2)


def test_output_key_refuses_a_boolean():
    with pytest.raises(ValueError, match="valid string"):
        TeacherConfig(task="segmentation", model={"from": "python", "factory": "m:f"}, output_key=True)


class PropertyLogits:
    """An output whose ``.logits`` is computed on access, beside a plain auxiliary map."""

    def __init__(self, raw: torch.Tensor):
        self._raw = raw
        self.features = raw.flip(-1)

    @property
    def logits(self) -> torch.Tensor:
        return self._raw


def test_a_property_is_a_candidate_so_two_tensors_stop_instead_of_the_attribute_alone():
    # only __dict__ was read: 'features', the one tensor found, was distilled in place of .logits
    raw = PropertyLogits(torch.zeros(2, 3, 4, 4))
    with pytest.raises(AmalgamError, match=r"holds 2 tensors: features \[2, 3, 4, 4\], logits \[2, 3, 4, 4\]"):
        resolve(raw, None)
    assert resolve(raw, "logits").apply(raw) is raw._raw


def test_a_slots_dataclass_output_gives_its_tensor():
    from dataclasses import dataclass

    @dataclass(slots=True)
    class SlotOut:
        logits: torch.Tensor

    raw = SlotOut(torch.ones(1, 2))
    choice = resolve(raw, None)
    assert choice.key == "logits" and choice.apply(raw) is raw.logits


def test_an_output_with_no_tensor_found_asks_for_output_key():
    with pytest.raises(AmalgamError, match=r"holds no tensor amalgam can list: set output_key"):
        resolve(object(), None)


class SpareUnits(nn.Module):
    """A classifier of 5 output units whose last 2 were never trained (a 1001st background unit, say)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 1)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def test_spare_output_units_stop_naming_unused_outputs_and_are_dropped_when_listed():
    labels = ("a", "b", "c")
    spare = r"2 more channels than labels: name them in teachers.t1.labels, or list them in teachers.t1.unused_outputs"
    with pytest.raises(AmalgamError, match=spare):
        check_teacher_output(teacher(SpareUnits(), task="classification", labels=labels), (16, 16))
    model = SpareUnits()
    t = teacher(model, task="classification", labels=labels, unused_outputs=[4, 3])
    check_teacher_output(t, (16, 16))
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(t(x), model(t.prepare(x))[:, :3])  # softmax over its labels, not the spare units
    assert "less its channels [3, 4] (unused_outputs)" in t.output_note()
    beyond = teacher(SpareUnits(), task="classification", labels=("a", "b"), unused_outputs=[2, 3, 5])
    # a trial: the stop named teachers.t1.output_key
    with pytest.raises(
        AmalgamError, match=r"^teachers.t1.unused_outputs: \[2, 3, 5\]: the output \[2, 5\] has 5 channels"
    ):
        check_teacher_output(beyond, (16, 16))


class SoftmaxOver(nn.Module):
    """A classifier ending in a softmax over ``units`` outputs (TF-slim's 1001: a background unit first)."""

    def __init__(self, units: int = 5):
        super().__init__()
        self.fc = nn.Linear(3, units)

    def forward(self, x):
        return (self.fc(x.mean((2, 3)) * 8)).softmax(1)


def test_a_softmax_over_more_units_than_the_labels_reads_as_probabilities_of_the_kept_ones():
    # sums 0.55 to 1 over the kept units: 'probabilities' was refused, and the error's 'sigmoid' passed
    labels = tuple("abcd")
    with pytest.raises(
        AmalgamError, match=r"sums to at most 1 .*list the extra ones in unused_outputs and set output: probabilities"
    ):
        check_teacher_output(teacher(SoftmaxOver(), task="classification", labels=labels, unused_outputs=[4]), (16, 16))
    model = SoftmaxOver()
    t = teacher(model, task="classification", labels=labels, unused_outputs=[4], output="probabilities")
    check_teacher_output(t, (16, 16))
    assert any("sum to a constant with unused_outputs [4] kept" in note for note in t.notes)
    x = torch.rand(2, 3, 16, 16)
    kept = model(t.prepare(x))[:, :4]
    torch.testing.assert_close(t(x).softmax(1), kept / kept.sum(1, keepdim=True))  # renormalised over the labels
    with pytest.raises(AmalgamError, match=r"read as probabilities, but the output is not"):  # no softmax at all
        spare = teacher(SpareUnits(), task="classification", labels=labels[:3], unused_outputs=[3, 4])
        check_teacher_output(replace_kind(spare, "probabilities"), (16, 16))


class SlicedSoftmax(SoftmaxOver):
    """A softmax over 5 outputs of which the model returns 4: its share of the labels sums to less than 1."""

    def forward(self, x):
        return super().forward(x)[:, :4]


def test_a_model_returning_part_of_its_softmax_is_told_to_return_it_all():
    # 'probabilities' was refused without a way on, and the logits error's 'probabilities' led there
    labels = tuple("abcd")
    with pytest.raises(AmalgamError, match=r"return them all and list the extra ones in unused_outputs$"):
        check_teacher_output(
            teacher(SlicedSoftmax(), task="classification", labels=labels, output="probabilities"), (16, 16)
        )


def replace_kind(t: Teacher, kind: str) -> Teacher:
    t.output_kind = kind
    return t


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_softmax_reads_as_probabilities(dtype):
    # a bf16 softmax's sums lie 0.996 to 1: not 'probabilities' within 1e-3, and read as sigmoids
    labels = tuple("abcd")
    model = SoftmaxOver(4).to(dtype)
    with pytest.raises(AmalgamError, match=r"sums to 1 over its 4 labels at every position, as probabilities do"):
        check_teacher_output(teacher(model, task="classification", labels=labels), (16, 16))
    check_teacher_output(teacher(model, task="classification", labels=labels, output="probabilities"), (16, 16))


def test_unused_outputs_are_for_labelled_teachers_only(world):
    from amalgam.config.recipe import load_recipe
    from amalgam.errors import RecipeError

    with pytest.raises(RecipeError, match=r"unused_outputs: a depth teacher has no label channels to leave out"):
        load_recipe(world, overrides=["teachers.depth.unused_outputs=[1]"])


class FeaturesFirst(nn.Module):
    """A classifier answering ``(features [B, 8], logits [B, 3])``."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        features = x.mean((2, 3)).repeat(1, 3)[:, :8]
        return features, self.fc(features)


class OutNotTheMap(nn.Module):
    """A segmenter answering ``{"out": pooled logits [B, 3], "seg": the map [B, 3, H, W]}``."""

    def forward(self, x):
        seg = x * 2 - 1
        return {"out": seg.mean((2, 3)), "seg": seg}


def test_an_out_key_taken_by_rule_that_does_not_fit_names_the_rule_and_the_key_that_does():
    # a trial's dict: the error said only "expected [B, 3, H, W], got [2, 3]", not that 'out' was taken by rule
    with pytest.raises(AmalgamError) as info:
        check_teacher_output(teacher(OutNotTheMap(), labels=("a", "b", "c")), (16, 16))
    assert str(info.value).endswith(
        "(output 'out' by default (torchvision's convention; not seg) was read; 'seg' [2, 3, 16, 16] has a channel"
        " per label: set output_key to distil it)"
    )
    check_teacher_output(teacher(OutNotTheMap(), labels=("a", "b", "c"), output_key="seg"), (16, 16))


class DivergedOut(nn.Module):
    """torchvision's form, ``{"out", "aux"}``, with a diverged 'out'."""

    def forward(self, x):
        seg = x * 2 - 1
        return {"out": seg * float("nan"), "aux": seg}


def test_a_diverged_out_is_not_told_to_distil_the_aux_head():
    with pytest.raises(AmalgamError) as info:
        check_teacher_output(teacher(DivergedOut(), labels=("a", "b", "c")), (16, 16))
    assert "NaN or inf" in str(info.value) and "output_key" not in str(info.value)


class ExtraAxis(nn.Module):
    def forward(self, x):
        return x.unsqueeze(1)  # [B, 1, 3, H, W]: a 3-label segmenter with one axis too many


def test_a_key_picking_features_names_the_key_that_fits_and_an_extra_axis_is_squeezed():
    # key 0 of (features, logits) got "name them, or list them in unused_outputs": following it built a
    # teacher of top-1 0.22; [B, 1, C, H, W] got no hint at all
    picked = teacher(FeaturesFirst(), task="classification", labels=("a", "b", "c"), output_key=0)
    with pytest.raises(AmalgamError) as info:
        check_teacher_output(picked, (16, 16))
    assert str(info.value).endswith("(output_key '1' [2, 3] has a channel per label: is that the output to distil?)")
    with pytest.raises(AmalgamError) as info:
        check_teacher_output(teacher(ExtraAxis(), labels=("a", "b", "c")), (16, 16))
    assert str(info.value).endswith("got [2, 1, 3, 16, 16] (an extra axis of size 1: return out.squeeze(1))")


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_a_softmax_read_as_sigmoids_stops_naming_probabilities(task):
    # accepted without a word: its targets were sharper than the teacher's (softened top class 0.91 vs 0.82)
    with pytest.raises(AmalgamError, match=r"^teachers\.t1\.output: read as sigmoids, but they sum to 1 over the"):
        check_teacher_output(teacher(Softmaxed(dense=task == "segmentation"), task=task, output="sigmoid"), (16, 16))


def test_an_output_error_says_which_entry_of_a_checkpoint_of_several_was_loaded():
    # {'model': untrained, 'ema': trained}: the error read 'as sigmoid probabilities do', the entry said nowhere
    t = teacher(Sigmoided(channels=8), labels=("background", *"abcdefg"))
    t.checkpoint_note = (
        "entry 'model' (state_dict, else model, else model_state_dict, is read); it also holds state dicts under: ema"
    )
    with pytest.raises(AmalgamError) as info:
        check_teacher_output(t, (16, 16))
    assert str(info.value).endswith(f"(its weights: {t.checkpoint_note})")
    t.checkpoint_note = "entry 'model' (state_dict, else model, else model_state_dict, is read)"  # the only one
    with pytest.raises(AmalgamError) as info:
        check_teacher_output(t, (16, 16))
    assert "its weights" not in str(info.value)


def test_a_logit_declared_a_probability_and_too_few_channels_name_their_fix():
    # 'drop output: binary_probability' led to a stop asking for output: binary; [B, 4] for 5 labels said shapes only
    with pytest.raises(AmalgamError, match=r"outside \[0, 1\] .*: if they are logits, set output: binary$"):
        check_teacher_output(
            teacher(OneLogit(), labels=("background", "person"), output="binary_probability"), (16, 16)
        )
    with pytest.raises(AmalgamError, match=r"\(3 channels for 4 labels: teachers.t1.labels lists one label per output"):
        check_teacher_output(teacher(Sigmoided(channels=3), labels=("background", *"abc")), (16, 16))


def test_a_torchvision_checkpoint_with_an_auxiliary_head_points_at_aux_loss(tmp_path):
    from amalgam.teachers.model_sources import load_checkpoint

    model = nn.Conv2d(3, 2, 1)
    path = tmp_path / "deeplab.pt"
    torch.save({**model.state_dict(), "aux_classifier.0.weight": torch.zeros(1)}, path)
    with pytest.raises(
        AmalgamError, match=r"unexpected key 'aux_classifier\.0\.weight' \(.*set model\.aux_loss: true\)"
    ):
        load_checkpoint(model, path, "teacher 'seg'")


@pytest.mark.parametrize("saved_aux", [False, True])
def test_googlenets_auxiliary_classifiers_point_at_aux_logits(tmp_path, saved_aux):
    # a trial's googlenet fine-tuned from torchvision's weights (no aux1/aux2 kept) stopped on 'missing key
    # aux1.conv.conv.weight' with no word of aux_logits, which torchvision turns on when built without weights
    from amalgam.teachers.model_sources import load_checkpoint

    def net(aux: bool) -> nn.Module:
        model = nn.Sequential()
        model.add_module("fc", nn.Linear(4, 2))
        for name in ("aux1", "aux2") if aux else ():
            model.add_module(name, nn.Sequential(nn.Linear(4, 2)))
        return model

    path = tmp_path / "googlenet.pt"
    torch.save(net(saved_aux).state_dict(), path)
    said = (
        r"unexpected key 'aux1\.0\.weight' \(.*set model\.aux_logits: true\)"
        if saved_aux
        else (r"missing key 'aux1\.0\.weight' \(.*set model\.aux_logits: false\)")
    )
    with pytest.raises(AmalgamError, match=said):
        load_checkpoint(net(not saved_aux), path, "teacher 'cls'")


def test_torchvision_googlenet_needs_transform_input_said(tmp_path):
    # a trial: built without weights torchvision leaves transform_input false, where a network fine-tuned from its
    # weights was built with it true; the state dict does not hold it, and the teacher ran at top-1 0.24 for 0.70
    from amalgam.teachers.model_sources import build_model, check_model

    for name in ("googlenet", "inception_v3"):
        with pytest.raises(AmalgamError, match=rf"transform_input: required for torchvision's {name}.*set true if"):
            check_model("torchvision", {"name": name, "num_classes": 3}, tmp_path)
    kwargs = {"name": "googlenet", "num_classes": 3, "aux_logits": False, "transform_input": True}
    check_model("torchvision", kwargs, tmp_path)
    assert build_model("torchvision", kwargs, tmp_path).transform_input is True
    check_model("torchvision", {"name": "resnet18", "num_classes": 3}, tmp_path)  # no such default: no key asked


def test_torchvision_weights_that_cannot_be_downloaded_say_so_and_point_at_checkpoint(tmp_path, monkeypatch):
    # a trial read "bad constructor arguments for torchvision model: <urlopen error ...>" for weights: IMAGENET1K_V1
    import urllib.error

    import torchvision

    from amalgam.teachers.model_sources import build_model

    def offline(name, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(AmalgamError, match=r"weights: IMAGENET1K_V1: torchvision could not download them .*leave out"):
        build_model("torchvision", {"name": "resnet18", "weights": "IMAGENET1K_V1"}, tmp_path)
    with pytest.raises(AmalgamError, match=r"bad constructor arguments"):  # not a download: as before
        build_model("torchvision", {"name": "resnet18"}, tmp_path)


def test_a_checkpoint_without_the_auxiliary_head_the_model_has_points_at_aux_loss(tmp_path):
    # a trial: aux_loss: true over a checkpoint saved without the head said only "missing key"
    from amalgam.teachers.model_sources import load_checkpoint

    model = nn.Sequential()
    model.add_module("backbone", nn.Conv2d(3, 2, 1))
    model.add_module("aux_classifier", nn.Sequential(nn.Conv2d(2, 2, 1)))
    path = tmp_path / "deeplab.pt"
    torch.save({f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}, path)
    with pytest.raises(AmalgamError, match=r"missing key 'aux_classifier\.0\.weight' \(.*leave out model\.aux_loss"):
        load_checkpoint(model, path, "teacher 'seg'")


@pytest.mark.parametrize("prefix", ["_orig_mod.", "_orig_mod.module.", "module._orig_mod."])
def test_a_compiled_checkpoint_loads_with_its_prefixes_stripped_and_said(tmp_path, prefix):
    # a trial: torch.compile's '_orig_mod.' (alone or with DDP's, in either order) stopped with a command to strip
    # it, where DDP's 'module.' alone is stripped and said
    from amalgam.teachers.model_sources import load_checkpoint

    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Conv2d(2, 2, 1))
    path = tmp_path / "compiled.pt"
    torch.save({f"{prefix}{k}": v for k, v in model.state_dict().items()}, path)
    fresh = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Conv2d(2, 2, 1))
    note = load_checkpoint(fresh, path, "teacher 'seg'")
    assert torch.equal(fresh[1].weight, model[1].weight)
    assert "torch.compile's '_orig_mod.' prefix stripped from every key" in note, note
    assert ("DDP's 'module.' prefix stripped" in note) == ("module." in prefix), note


def test_a_compiled_network_loads_its_own_checkpoint_and_a_compiled_averaged_model_is_unwrapped(tmp_path):
    # review: a factory returning torch.compile(net) saves and holds '_orig_mod.' keys alike: stripped, they were
    # missing; torch.compile(AveragedModel(net)) saves '_orig_mod.n_averaged' beside '_orig_mod.module.'
    from amalgam.teachers.model_sources import load_checkpoint

    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Conv2d(2, 2, 1))
    compiled = torch.compile(net)
    torch.save(compiled.state_dict(), tmp_path / "own.pt")
    assert (
        load_checkpoint(torch.compile(nn.Sequential(nn.Conv2d(3, 2, 1), nn.Conv2d(2, 2, 1))), tmp_path / "own.pt", "t")
        == ""
    )
    averaged = torch.optim.swa_utils.AveragedModel(net)
    torch.save({f"_orig_mod.{k}": v for k, v in averaged.state_dict().items()}, tmp_path / "ema.pt")
    fresh = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Conv2d(2, 2, 1))
    note = load_checkpoint(fresh, tmp_path / "ema.pt", "t")
    assert torch.equal(fresh[1].weight, net[1].weight)
    assert "torch.compile's '_orig_mod.' prefix stripped" in note and "n_averaged left out" in note, note


def test_a_lightning_checkpoint_of_a_compiled_network_gets_the_command_that_strips_both_prefixes(tmp_path):
    # 'model._orig_mod.' under Lightning's state_dict: said, with a command, as Lightning's 'model.' is
    import re
    import subprocess
    import sys

    from amalgam.teachers.model_sources import load_checkpoint

    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Conv2d(2, 2, 1))
    path = tmp_path / "lit.pt"
    torch.save({"state_dict": {f"model._orig_mod.{k}": v for k, v in model.state_dict().items()}}, path)
    with pytest.raises(AmalgamError, match=r"every checkpoint key starts with 'model\._orig_mod\.'") as info:
        load_checkpoint(nn.Sequential(nn.Conv2d(3, 2, 1), nn.Conv2d(2, 2, 1)), path, "teacher 'seg'")
    strip = re.search(r'python -c "([^"]+)"', str(info.value)).group(1)
    subprocess.run([sys.executable, "-c", strip], check=True)
    fresh = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Conv2d(2, 2, 1))
    load_checkpoint(fresh, tmp_path / "lit.pt.inner.pt", "teacher 'seg'")
    assert torch.equal(fresh[1].weight, model[1].weight)
