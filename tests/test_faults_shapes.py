"""Real-world teacher shapes of trial F: each was silently wrong, crashed in training or failed in torch's words."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from amalgam.config.recipe import TeacherConfig, load_recipe
from amalgam.errors import AmalgamError
from amalgam.task import get_task
from amalgam.teachers.checks import check_teacher_output
from amalgam.teachers.teacher import Teacher, build_teacher, to_input

LABELS = ["background", "a", "b"]


def teacher(model: nn.Module, task: str = "segmentation", labels=LABELS, **cfg) -> Teacher:
    config = TeacherConfig(task=task, model={"from": "python", "factory": "m:f"}, labels=labels, **cfg)
    return Teacher("t1", get_task(task), model, config, (32, 32))


def stand_in_recipe(base: Path, **train) -> SimpleNamespace:
    """What build_teacher reads of a recipe: its folder, image size and train block."""
    train = SimpleNamespace(channels_last=True, precision="fp32", **train)
    return SimpleNamespace(
        base_dir=base, data=SimpleNamespace(image_size=(16, 16)), resolve=lambda p: base / p, train=train
    )


# ---- S1. weights a factory loads from a model arg key the teacher cache, and are said


def test_weights_a_factory_loads_from_a_model_arg_key_the_cache_and_are_said(world, tmp_path):
    from amalgam.teachers.fingerprint import weight_digests
    from amalgam.teachers.model_sources import unloaded_note

    recipe = load_recipe(world).model_copy(update={"base_dir": tmp_path}, deep=True)
    weights = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(2)}, weights)
    recipe.teachers["seg-a"].checkpoint = None
    kwargs = {"from": "python", "factory": "models:tiny_dense", "out_channels": 3, "weights": "w.pt"}
    recipe.teachers["seg-a"].model = recipe.teachers["seg-a"].model.model_validate(kwargs)
    before = weight_digests(recipe, "seg-a")
    assert set(before) == {"w.pt"}
    torch.save({"w": torch.ones(2)}, weights)  # retrained in place, same name
    assert weight_digests(recipe, "seg-a") != before
    note = unloaded_note("python", recipe.teachers["seg-a"].model.kwargs(), tmp_path)
    said = "none: weights loaded by the factory from model.weights: w.pt (a file among its model args; not compared"
    assert note == said + " with the model)"
    timm = {"name": "resnet10t", "checkpoint_path": str(weights)}  # an absolute path
    assert unloaded_note("timm", timm, tmp_path).startswith(
        f"none: weights loaded by timm from model.checkpoint_path: {weights}"
    )
    assert "random" in unloaded_note("timm", {"name": "resnet10t", "checkpoint_path": "gone.pth"}, tmp_path)
    # a run started before such files were recorded resumes; one that recorded it sees the change
    from amalgam.teachers.fingerprint import fingerprint_changes, teacher_fingerprints

    now = teacher_fingerprints(recipe)
    then = {name: {**fp, "files": {}} if name == "seg-a" else fp for name, fp in now.items()}
    assert fingerprint_changes(then, recipe) == []
    recorded = {**now, "seg-a": {**now["seg-a"], "files": {"w.pt": "an older digest"}}}
    assert fingerprint_changes(recorded, recipe) == ["seg-a: w.pt changed"]


# ---- S3. one network read as two teachers is held once and counted once


def test_one_network_read_as_two_teachers_is_held_and_counted_once(world):
    from amalgam.distill.plan import Plan
    from amalgam.teachers.teacher import build_teachers

    recipe = load_recipe(world).model_copy(deep=True)
    recipe.teachers = {
        "seg-a": recipe.teachers["seg-a"],
        "seg-a2": recipe.teachers["seg-a"].model_copy(deep=True),  # the same model block and checkpoint
        "fresh": recipe.teachers["seg-a"].model_copy(update={"checkpoint": None}, deep=True),  # random weights
    }
    teachers = build_teachers(recipe)
    assert teachers["seg-a2"].model is teachers["seg-a"].model
    assert teachers["fresh"].model is not teachers["seg-a"].model  # another draw of random weights: another network
    assert "one network with teacher 'seg-a' (same model and weights)" in teachers["seg-a2"].output_note()
    one = teachers["seg-a"].num_params()
    assert Plan(recipe, {}, {}, teachers).teacher_params == 2 * one  # seg-a once, fresh once


# ---- S5. a BGR teacher is fed its channels reversed, and the input line says the order


def test_a_bgr_teacher_is_fed_its_channels_reversed_and_says_so():
    mean, std = [0.406, 0.456, 0.485], [0.225, 0.224, 0.229]  # Caffe's, in BGR order
    bgr = teacher(nn.Conv2d(3, 3, 1), input={"channel_order": "bgr", "mean": mean, "std": std})
    images = torch.rand(2, 3, 32, 32)
    expected = (images.flip(1) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(bgr.prepare(images), expected, atol=1e-6)
    assert torch.allclose(to_input(images, (32, 32), 3, mean, std, bgr=True), expected, atol=1e-6)
    assert bgr.input_spec.describe().endswith(", channel order BGR")
    assert bgr.input_spec.view.fill == pytest.approx((0.485, 0.456, 0.406))  # padding: the mean colour in RGB
    assert "channel order" not in teacher(nn.Conv2d(3, 3, 1)).input_spec.describe()  # RGB, the README's default
    # without a mean and std in the recipe, ImageNet's (RGB) are reversed into the teacher's order
    default = teacher(nn.Conv2d(3, 3, 1), input={"channel_order": "bgr"})
    assert default.input_spec.mean == pytest.approx(mean) and default.input_spec.std == pytest.approx(std)
    grey_mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand(1, 3, 4, 4)  # the mean colour, RGB
    assert default.prepare(grey_mean).abs().max() < 1e-6  # normalises to zero, as it would for an RGB teacher
    with pytest.raises(ValueError, match="bgr orders 3 channels; this teacher takes 1"):
        TeacherConfig(
            task="depth",
            model={"from": "python", "factory": "m:f"},
            input={"channels": 1, "mean": [0.5], "std": [0.5], "channel_order": "bgr"},
        )


# ---- C1. a teacher with half-precision weights runs under the run's autocast; the check runs it there


def test_a_half_precision_teacher_runs_under_bf16_autocast_and_the_check_uses_the_runs_precision():
    half = teacher(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)).half())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as training computes its targets
        out = half(torch.rand(2, 3, 32, 32))  # was: "mixed dtype (CPU): expect parameter to have scalar type of Float"
    assert out.dtype == torch.float32 and out.shape == (2, 3, 32, 32)
    from amalgam.teachers.checks import check_teacher_precision

    check_teacher_precision(half, "bf16")

    class AutocastOnly(nn.Conv2d):
        def forward(self, x):
            if torch.is_autocast_enabled("cpu"):
                raise RuntimeError("an op without a bf16 kernel")
            return super().forward(x)

    fails = teacher(AutocastOnly(3, 3, 1))
    check_teacher_output(fails, (32, 32))  # fp32: fine
    check_teacher_precision(fails, "fp32")
    with pytest.raises(AmalgamError) as info:
        check_teacher_precision(fails, "bf16")
    assert str(info.value) == (
        "teacher 't1' fails under bfloat16 autocast (train.precision: bf16, what training computes its targets in):"
        " an op without a bf16 kernel; set train.precision: fp32"
    )


def test_a_teacher_that_overflows_fp16_stops_at_the_check_not_as_nan_rows_in_training():
    # it ran without raising, so the check passed; training dropped its rows as NaN/inf
    from amalgam.teachers.checks import check_teacher_precision

    big = nn.Conv2d(3, 3, 1)
    nn.init.constant_(big.weight, 1e5)  # answers ~1e5: past fp16's 65504, within bf16's range
    loud = teacher(big)
    check_teacher_precision(loud, "bf16")
    with pytest.raises(AmalgamError, match=r"NaN/inf under float16 autocast .* set train.precision: fp32 or bf16$"):
        check_teacher_precision(loud, "fp16")


# ---- C2. a teacher that fails in channels_last is checked there and kept contiguous


OLD_NET = """
from torch import nn


class OldNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16 * 16, 3)

    def forward(self, x):
        x = self.features(x)
        return self.fc(x.view(x.size(0), -1))  # AlexNet-era flattening: fails on an NHWC tensor
"""


def test_a_teacher_that_views_its_activations_is_checked_in_channels_last_and_kept_contiguous(tmp_path):
    (tmp_path / "shapes_old_net.py").write_text(OLD_NET)
    model = {"from": "python", "factory": "shapes_old_net:OldNet"}
    cfg = TeacherConfig(task="classification", model=model, labels=["a", "b", "c"])
    built = build_teacher("old", cfg, stand_in_recipe(tmp_path))
    built.use_channels_last()  # what the plan does for every teacher under train.channels_last
    assert built(torch.rand(2, 3, 16, 16)).shape == (2, 3)  # was: "view size is not compatible with input tensor's"
    assert not built.channels_last
    assert "run contiguous (NCHW), not channels_last (train.channels_last): in channels_last it fails (view size" in (
        built.output_note()
    )
    (tmp_path / "shapes_plain_net.py").write_text("from torch import nn\n\ndef f():\n    return nn.Conv2d(3, 3, 1)\n")
    plain = TeacherConfig(task="segmentation", model={"from": "python", "factory": "shapes_plain_net:f"}, labels=LABELS)
    assert build_teacher("plain", plain, stand_in_recipe(tmp_path)).channels_last  # checked as it then runs


def test_teachers_sharing_one_network_share_its_memory_format():
    shared = nn.Conv2d(3, 3, 1)
    a, b = teacher(shared), teacher(shared)  # two heads of one network (output_key)
    a.use_channels_last()
    assert a.channels_last and shared.weight.is_contiguous(memory_format=torch.channels_last)
    b.contiguous_reason = "view size is not compatible"  # found when b was checked
    assert a.contiguous_reason == b.contiguous_reason
    a.use_channels_last()  # what the plan does for every teacher: the network stays contiguous for both
    assert not a.channels_last and shared.weight.is_contiguous()


def test_a_network_shared_by_two_teachers_fed_one_input_is_timed_once():
    from amalgam.evaluation.evaluate import distinct_runs

    shared = nn.Conv2d(3, 3, 1)
    a, b = teacher(shared), teacher(shared)  # two heads of one network: one pass answers both
    assert distinct_runs([a, b]) == [a]  # the report's teacher latency counted it twice before
    other_size = teacher(shared, input={"size": [16, 16]})  # fed another input: another pass
    separate = teacher(nn.Conv2d(3, 3, 1))  # another network
    assert distinct_runs([a, b, other_size, separate]) == [a, other_size, separate]


# ---- U1/U4. a fixed-size network fed another size is told which key sets it


class FixedSize(nn.Module):
    """torchvision's VisionTransformer's size assertion and ``image_size``."""

    image_size = 224

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        torch._assert(x.shape[2] == self.image_size, f"Wrong image height! Expected 224 but got {x.shape[2]}!")
        return self.fc(x.mean((2, 3)))


def test_a_fixed_size_teacher_fed_another_size_is_told_to_set_input_size():
    with pytest.raises(AmalgamError) as info:
        check_teacher_output(teacher(FixedSize(), task="classification", labels=["a", "b", "c"]), (32, 32))
    assert str(info.value).endswith(
        "Wrong image height! Expected 224 but got 32! (32x32 is data.image_size, fed by default:"
        " set teachers.t1.input.size: [224, 224], the size the network takes)"
    )
    stated = teacher(FixedSize(), task="classification", labels=["a", "b", "c"], input={"size": [64, 64]})
    with pytest.raises(AmalgamError) as info:
        check_teacher_output(stated, (32, 32))
    assert "(64x64 is the recipe's teachers.t1.input.size: the network takes 224x224; set it to the size" in str(
        info.value
    )


# ---- U2. a blank line among a labels file's names, or an empty inline label, is refused where it is


def test_a_blank_line_in_a_labels_file_or_an_empty_label_is_refused_naming_where(tmp_path):
    from amalgam.config.label_entries import label_names, read_names

    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog\n\nbird\n\n\n")
    with pytest.raises(AmalgamError) as info:
        read_names(path)
    assert str(info.value).startswith(
        f"line 3 of {path} is blank, among the labels (one output's name a line, 4 lines)"
    )
    path.write_text("cat\r\ndog\r\nbird\r\n\r\n")  # blank lines at the end only: read
    assert read_names(path) == ["cat", "dog", "bird"]
    path.write_text("\n\ncat\ndog\n\nbird\n")  # at the start too; the line said counts them
    with pytest.raises(AmalgamError, match="^line 5 of .* is blank"):
        read_names(path)
    path.write_text("\ncat\ndog\n")
    assert read_names(path) == ["cat", "dog"]
    path.write_text("0 cat\n\n1 dog\n2 bird\n")  # numbered: each name carries its output, a blank shifts nothing
    assert read_names(path) == ["cat", "dog", "bird"]
    with pytest.raises(AmalgamError, match="^1: an empty label name"):
        label_names(["cat", ""])
    with pytest.raises(AmalgamError, match="^0: an empty label name"):
        label_names([{" ": "cat"}])
    # a trial: an empty relation target made a unified class named '' (or ' '), said only as a typo
    for target in ("", " ", ["cat", ""]):
        with pytest.raises(AmalgamError, match="^0: 'yellow' stands for an empty class name"):
            label_names([{"yellow": target}])


def test_a_synset_labels_file_is_read_without_its_wordnet_ids(tmp_path):
    # ImageNet's LOC_synset_mapping.txt made 'n01440764 tench, Tinca tinca' a label, matching no eval class
    from amalgam.config.label_entries import read_class_map, read_names

    path = tmp_path / "LOC_synset_mapping.txt"
    path.write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    assert read_names(path) == ["tench, Tinca tinca", "goldfish, Carassius auratus"]
    assert list(read_class_map(path).values()) == read_names(path)  # the same names as an eval set's classes_file
    path.write_text("n01440764 tench\nnot an id\n")
    assert read_names(path) == ["n01440764 tench", "not an id"]  # only a file of such lines throughout


def test_a_labels_file_naming_one_class_twice_is_refused_with_both_lines(tmp_path):
    # ImageNet's LOC_synset_mapping.txt names two synsets 'crane': refused as "duplicate label names: ['crane']",
    # with no line, no id and no fix
    from amalgam.config.label_entries import read_names

    path = tmp_path / "LOC_synset_mapping.txt"
    path.write_text("n01440764 tench\nn02012849 crane\nn03126707 crane\nn03710637 maillot\nn03710721 maillot\n")
    with pytest.raises(AmalgamError) as info:
        read_names(path)
    assert str(info.value).startswith(
        f"lines 2 and 3 of {path} both name 'crane' (n02012849 and n03126707); 1 other name is given twice too:"
        " each output needs its own name; rename them in the file"
    )
    path.write_text("\ncat\ndog\ncat\n")
    with pytest.raises(AmalgamError, match="^lines 2 and 4 of .* both name 'cat': each output needs its own name"):
        read_names(path)
    path.write_text("0 cat\n1 dog\n")
    assert read_names(path, map_values=True) == ["cat", "dog"]


def test_weights_named_among_model_args_that_the_model_does_not_hold_stop(tmp_path):
    # a trial: `checkpoint:` written inside `model:` (a factory taking **kwargs) was said "weights loaded by
    # the factory from model.checkpoint" while the teacher ran with random weights; timm's
    # pretrained_cfg_overlay.file too (amalgam builds timm with pretrained=False)
    from amalgam.teachers.model_sources import unloaded_note

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 2, 1))
    trained = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 2, 1))
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    (tmp_path / "labels.txt").write_text("a\nb\n")  # a file that is no weights: not compared
    kwargs = {"factory": "m:f", "checkpoint": "w.pt", "names": "labels.txt"}
    with pytest.raises(
        AmalgamError, match=r"^model.checkpoint names weights \(w.pt\) the built model holds none of: the"
    ):
        unloaded_note("python", kwargs, tmp_path, model)
    model.load_state_dict(trained.state_dict())  # the factory loaded them: said so
    note = unloaded_note("python", kwargs, tmp_path, model)
    assert note.endswith(
        "model.checkpoint: w.pt; model.names: labels.txt (a file among its model args; not compared with the model)"
    )
    del kwargs["names"]
    assert unloaded_note("python", kwargs, tmp_path, model).endswith(
        "(a file among its model args; the model holds its weights)"
    )
    # an EMA file (AveragedModel: 'module.' keys beside n_averaged) is compared too (review: it read "not compared")
    torch.save(torch.optim.swa_utils.AveragedModel(trained).state_dict(), tmp_path / "w.pt")
    assert unloaded_note("python", kwargs, tmp_path, model).endswith("the model holds its weights)")
    fresh = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 2, 1))
    with pytest.raises(AmalgamError, match=r"^model.checkpoint names weights \(w.pt\) the built model holds none of"):
        unloaded_note("python", kwargs, tmp_path, fresh)


def test_a_model_arg_naming_a_file_of_the_recipe_folder_reaches_the_factory_resolved(tmp_path, monkeypatch):
    # a trial: timm's checkpoint_path was read against the working directory, another file than amalgam hashed
    from amalgam.teachers.model_sources import _files_resolved

    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "w.pt").write_bytes(b"x")
    monkeypatch.chdir(tmp_path / "ck")
    kwargs = {"name": "resnet10t", "checkpoint_path": "ck/w.pt", "overlay": {"file": "ck/w.pt"}, "other": "w.pt"}
    resolved = _files_resolved(kwargs, tmp_path)
    assert resolved["checkpoint_path"] == resolved["overlay"]["file"] == str((tmp_path / "ck" / "w.pt").resolve())
    assert resolved["name"] == "resnet10t" and resolved["other"] == "w.pt"  # no file of the recipe's folder


def test_a_model_whose_own_child_is_named_module_loads_its_own_state_dict(tmp_path):
    # a trial: its keys 'module.features...' were stripped as DDP's prefix, and the load refused them as missing
    from amalgam.teachers.model_sources import load_checkpoint

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 1))

    trained, model = Wrapped(), Wrapped()
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    assert load_checkpoint(model, tmp_path / "w.pt", "teacher 't'") == ""
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values()))
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 1))  # DDP's prefix on a plain model: stripped
    torch.save({f"module.{k}": v for k, v in trained.module.state_dict().items()}, tmp_path / "ddp.pt")
    assert "prefix stripped" in load_checkpoint(plain, tmp_path / "ddp.pt", "teacher 't'")
    # the same network saved under DDP or as an AveragedModel: 'module.module.', stripped once, fits as it is
    torch.save({f"module.{k}": v for k, v in trained.state_dict().items()}, tmp_path / "ddp2.pt")
    torch.save(torch.optim.swa_utils.AveragedModel(trained).state_dict(), tmp_path / "ema.pt")
    for name in ("ddp2.pt", "ema.pt"):
        again = Wrapped()
        assert "prefix stripped" in load_checkpoint(again, tmp_path / name, "teacher 't'")
        assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), trained.state_dict().values()))


def test_a_checkpoint_of_another_format_or_damaged_is_named_for_what_it_is(tmp_path):
    # a trial: a TorchScript file was met with torch's "weights_only=False will likely succeed"; a safetensors
    # file named .pt was "not a PyTorch file"; a truncated one "[Errno 22] Invalid argument"; a folder "not found"
    from safetensors.torch import save_file

    from amalgam.teachers.model_sources import read_state_dict

    net = nn.Sequential(nn.Conv2d(3, 4, 3))
    torch.jit.script(net).save(str(tmp_path / "scripted.pt"))
    save_file(net.state_dict(), str(tmp_path / "st.pt"))
    torch.save(net.state_dict(), tmp_path / "torch.safetensors")
    torch.save(net.state_dict(), tmp_path / "full.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "full.pt").read_bytes()[:200])
    (tmp_path / "folder").mkdir()
    for name, said in (
        ("scripted.pt", "it is a TorchScript file, a model of its own: give it as model: {from: torchscript"),
        ("st.pt", "it is a safetensors file: name it .safetensors"),
        ("torch.safetensors", "it is a torch.save file named .safetensors: name it .pt"),
        ("cut.pt", "a zip (torch.save's format) that is cut short or damaged"),
        ("folder", "is a folder, not a file"),
    ):
        with pytest.raises(AmalgamError) as info:
            read_state_dict(tmp_path / name)
        assert said in str(info.value), (name, str(info.value))


@pytest.mark.parametrize(
    "text, said",
    [
        ("'Bag',\n'Coat',\n", "line 1 of .* reads \"'Bag',\": quotes or a trailing comma, as pasted from code"),
        ('Bag\n"Coat"\n', "line 2 of .* reads '\"Coat\"': quotes or a trailing comma"),
        ("name\nBag\nCoat\n", "line 1 of .* reads 'name', a header: every line names one output"),
        ("id,name\n0,Bag\n1,Coat\n", "line 1 of .* reads 'id,name', a header"),
        ("# fashion labels\nBag\nCoat\n", "line 1 of .* reads '# fashion labels', a comment"),
    ],
)
def test_a_labels_file_line_that_names_no_output_stops_naming_it(tmp_path, text, said):
    # a trial: lines pasted from Python ('Bag',) became ten more unified classes, unsaid; a header or comment
    # line was label 0, every label after it shifted by one and the last dropped (said only with an eval set)
    from amalgam.config.label_entries import read_names

    path = tmp_path / "labels.txt"
    path.write_text(text)
    for map_values in (False, True):  # a teacher's labels_file and a dense set's classes.txt alike
        with pytest.raises(AmalgamError, match=said):
            read_names(path, map_values=map_values)
    path.write_text("0, Bag\n1: T-shirt, top\n")  # numbered lines and a comma inside a name still read
    assert read_names(path) == ["Bag", "T-shirt, top"]
