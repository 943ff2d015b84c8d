"""Model sources and checkpoint loading."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from amalgam.errors import AmalgamError
from amalgam.teachers.model_sources import build_model, check_model, load_checkpoint, read_state_dict


def tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))


def test_torchvision_model_builds_without_download(tmp_path):
    check_model("torchvision", {"name": "resnet18", "num_classes": 3}, tmp_path)
    model = build_model("torchvision", {"name": "resnet18", "num_classes": 3}, tmp_path).eval()
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 3)


def test_timm_model_builds():
    check_model("timm", {"name": "resnet10t", "num_classes": 4}, None)
    model = build_model("timm", {"name": "resnet10t", "num_classes": 4}, None).eval()
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 4)


@pytest.mark.parametrize("arch", ["Unet", "unet", "UNET"])
def test_smp_model_builds_and_arch_is_case_insensitive(arch, tmp_path):
    kwargs = {"arch": arch, "encoder": "resnet18", "classes": 2}
    check_model("smp", kwargs, tmp_path)
    model = build_model("smp", kwargs, tmp_path).eval()
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 2, 32, 32)


def test_smp_unknown_encoder_is_named(tmp_path):
    with pytest.raises(AmalgamError, match=r"^encoder: unknown smp encoder 'resnet17'"):
        check_model("smp", {"arch": "Unet", "encoder": "resnet17"}, tmp_path)


def test_unknown_timm_and_torchvision_names(tmp_path):
    with pytest.raises(AmalgamError, match=r"^name: unknown timm model 'resnet10x'"):
        check_model("timm", {"name": "resnet10x"}, tmp_path)
    with pytest.raises(AmalgamError, match=r"^name: required string"):
        check_model("torchvision", {}, tmp_path)


def test_torchscript_file_loads(tmp_path):
    model = tiny().eval()
    torch.jit.trace(model, torch.rand(1, 3, 8, 8)).save(str(tmp_path / "m.ts"))
    check_model("torchscript", {"path": "m.ts"}, tmp_path)  # relative to the recipe folder
    loaded = build_model("torchscript", {"path": "m.ts"}, tmp_path)
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(loaded(x), model(x))


def test_torchscript_errors(tmp_path):
    with pytest.raises(AmalgamError, match=r"^path: required"):
        check_model("torchscript", {}, tmp_path)
    with pytest.raises(AmalgamError, match=r"^path: TorchScript file not found: .*nope.ts"):
        check_model("torchscript", {"path": "nope.ts"}, tmp_path)
    (tmp_path / "junk.ts").write_bytes(b"not a zip")
    with pytest.raises(AmalgamError, match=r"^path: cannot load TorchScript file .*junk.ts"):
        build_model("torchscript", {"path": "junk.ts"}, tmp_path)


def test_python_factory_from_the_recipe_folder(tmp_path):
    (tmp_path / "amalgam_test_factory.py").write_text(
        "from torch import nn\n\ndef make(width, out=2):\n    return nn.Linear(width, out)\n"
    )
    kwargs = {"factory": "amalgam_test_factory:make", "width": 5, "out": 3}
    check_model("python", kwargs, tmp_path)
    model = build_model("python", kwargs, tmp_path)
    assert isinstance(model, nn.Linear) and model.in_features == 5 and model.out_features == 3
    with pytest.raises(AmalgamError, match=r"^factory: module 'amalgam_test_factory' has no function 'nope'"):
        check_model("python", {"factory": "amalgam_test_factory:nope"}, tmp_path)
    with pytest.raises(AmalgamError, match=r"^factory: cannot import module 'amalgam_no_such_module'"):
        check_model("python", {"factory": "amalgam_no_such_module:make"}, tmp_path)
    (tmp_path / "amalgam_test_broken.py").write_text("open('no-such-weights.pt')\n")  # fails as it loads
    with pytest.raises(AmalgamError, match=r"^factory: importing module 'amalgam_test_broken' raised FileNotFound"):
        check_model("python", {"factory": "amalgam_test_broken:make"}, tmp_path)
    with pytest.raises(AmalgamError, match=r"^factory: expected 'package.module:function'"):
        check_model("python", {"factory": "no_colon"}, tmp_path)
    with pytest.raises(AmalgamError, match=r"bad constructor arguments for python model"):
        build_model("python", {"factory": "amalgam_test_factory:make", "depth": 3}, tmp_path)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd, "optimizer": {}},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
    ],
    ids=["plain", "state_dict", "model", "module-prefix"],
)
def test_read_state_dict_accepts_common_layouts(wrap, tmp_path):
    model = tiny()
    path = tmp_path / "ckpt.pt"
    torch.save(wrap(model.state_dict()), path)
    state = read_state_dict(path)
    assert set(state) == set(model.state_dict())
    fresh = tiny()
    load_checkpoint(fresh, path, "teacher 't'")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))


def test_read_state_dict_from_safetensors(tmp_path):
    from safetensors.torch import save_file

    model = tiny()
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    fresh = tiny()
    load_checkpoint(fresh, tmp_path / "w.safetensors", "teacher 't'")
    assert torch.equal(fresh[0].weight, model[0].weight)


def test_load_checkpoint_names_the_first_mismatched_key(tmp_path):
    other = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Conv2d(5, 2, 1))
    torch.save(other.state_dict(), tmp_path / "wrong.pt")
    with pytest.raises(AmalgamError) as info:
        load_checkpoint(tiny(), tmp_path / "wrong.pt", "teacher 'seg-a'")
    assert str(info.value).startswith(f"teacher 'seg-a': checkpoint {tmp_path / 'wrong.pt'} does not fit the model")
    assert "key '0.weight' has shape [5, 3, 3, 3] in the checkpoint, [4, 3, 3, 3] in the model" in str(info.value)
    state = tiny().state_dict()
    del state["2.bias"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(AmalgamError, match=r"missing key '2.bias'"):
        load_checkpoint(tiny(), tmp_path / "missing.pt", "teacher 'x'")
    state = {**tiny().state_dict(), "extra.weight": torch.zeros(1)}
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(AmalgamError, match=r"unexpected key 'extra.weight'"):
        load_checkpoint(tiny(), tmp_path / "extra.pt", "teacher 'x'")


def test_truncated_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save(tiny().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AmalgamError) as info:
        read_state_dict(path)
    assert str(info.value).startswith(f"cannot read checkpoint {path}: ")
    assert "\n" not in str(info.value)


def test_missing_checkpoint_and_non_state_dict(tmp_path):
    with pytest.raises(AmalgamError, match=r"^checkpoint not found: .*absent.pt$"):
        read_state_dict(tmp_path / "absent.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(AmalgamError, match=r"does not hold a state dict of tensors"):
        read_state_dict(tmp_path / "list.pt")


def test_pickled_module_is_refused_with_how_to_convert(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(tiny(), path)  # a whole pickled module, not a state dict
    with pytest.raises(AmalgamError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert message.startswith(f"refusing checkpoint {path}: it holds pickled objects")
    assert "weights_only=False" in message and f"'{path}.state.pt'" in message


def test_a_checkpoint_without_batchnorm_step_counts_loads(tmp_path):
    # older checkpoints and conversions leave out num_batches_tracked, which torch fills in
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    state = model.state_dict()  # deleting keeps torch's version metadata, with which it fills in nothing
    del state["1.num_batches_tracked"]
    torch.save(state, tmp_path / "old.pt")
    load_checkpoint(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), tmp_path / "old.pt", "teacher 'x'")


@pytest.mark.parametrize("layout", ["module", "dict holding the module", "lightning", "lightning, tensors only"])
def test_the_conversion_command_for_a_pickled_checkpoint_gives_a_loadable_state_dict(tmp_path, layout):
    import subprocess
    import sys
    import types

    from amalgam.teachers.model_sources import conversion_command

    path = tmp_path / "whole.pt"
    saved = {
        "module": tiny(),
        "dict holding the module": {"model": tiny(), "epoch": 3},
        # Lightning: the state dict beside hyper-parameters that weights_only refuses
        # Lightning: the LightningModule's state dict ('model.' before each key) beside hyper-parameters
        "lightning": {
            "state_dict": {f"model.{k}": v for k, v in tiny().state_dict().items()},
            "hyper_parameters": types.SimpleNamespace(lr=0.1),  # (argparse's Namespace, timm's, is read)
            "epoch": 3,
        },
        # the same without hyper-parameters: weights_only reads it, and the prefix hint must strip the
        # keys of the entry read (state_dict), not the checkpoint's top level
        "lightning, tensors only": {
            "state_dict": {f"model.{k}": v for k, v in tiny().state_dict().items()},
            "epoch": 1,
        },
    }[layout]
    torch.save(saved, path)
    if layout == "lightning, tensors only":
        with pytest.raises(AmalgamError, match=r"every checkpoint key starts with 'model\.'") as info:
            load_checkpoint(tiny(), path, "teacher 'x'")
        strip = re.search(r'python -c "([^"]+)"', str(info.value)).group(1)  # the command the error gives
        subprocess.run([sys.executable, "-c", strip], check=True)
        load_checkpoint(tiny(), tmp_path / "whole.pt.inner.pt", "teacher 'x'")
        return
    if layout == "lightning":
        with pytest.raises(AmalgamError, match="holds pickled objects beyond tensors"):
            load_checkpoint(tiny(), path, "teacher 'x'")
    said = subprocess.run([sys.executable, "-c", conversion_command(path)], check=True, capture_output=True, text=True)
    assert said.stdout.startswith("saved ") and "whole.pt.state.pt" in said.stdout
    converted = tmp_path / "whole.pt.state.pt"
    if layout == "lightning":
        assert "from entry 'state_dict'" in said.stdout
        with pytest.raises(AmalgamError, match=r"every checkpoint key starts with 'model\.'") as info:
            load_checkpoint(tiny(), converted, "teacher 'x'")
        strip = re.search(r'python -c "([^"]+)"', str(info.value)).group(1)  # the command the error gives
        subprocess.run([sys.executable, "-c", strip], check=True)
        converted = tmp_path / "whole.pt.state.pt.inner.pt"
    load_checkpoint(tiny(), converted, "teacher 'x'")


def test_the_conversion_command_fails_when_it_finds_no_tensors(tmp_path):
    import argparse
    import subprocess
    import sys

    from amalgam.teachers.model_sources import conversion_command

    torch.save({"args": argparse.Namespace(lr=0.1), "epoch": 3}, tmp_path / "odd.pt")
    said = subprocess.run(
        [sys.executable, "-c", conversion_command(tmp_path / "odd.pt")], capture_output=True, text=True
    )
    assert said.returncode != 0 and "no tensors at the top or under one entry of: []" in said.stderr
    assert not (tmp_path / "odd.pt.state.pt").exists()


def test_torchvision_builders_never_download(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    # lraspp's weights_backbone defaults to ImageNet weights in torchvision: amalgam sets it to None
    model = build_model("torchvision", {"name": "lraspp_mobilenet_v3_large", "num_classes": 3}, tmp_path).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64))["out"].shape == (1, 3, 64, 64)


def test_torchvision_constructor_error_is_one_line_naming_the_teacher(tmp_path):
    from amalgam.config.recipe import parse_recipe
    from amalgam.teachers.teacher import build_teacher

    (tmp_path / "images").mkdir()
    raw = {
        "name": "t",
        "data": {"image_size": [32, 32], "sources": {"s": {"type": "folder", "path": "images"}}},
        "teachers": {
            "seg": {
                "task": "segmentation",
                "model": {"from": "torchvision", "name": "lraspp_mobilenet_v3_large", "num_classes": 2}
                | {"aux_loss": True},
                "labels": ["background", "thing"],
                "background": "background",
            }
        },
    }
    recipe = parse_recipe(raw, tmp_path)
    with pytest.raises(AmalgamError) as info:
        build_teacher("seg", recipe.teachers["seg"], recipe)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("teachers.seg.model: bad constructor arguments for torchvision model:")
    assert "auxiliary loss" in message


def test_a_file_that_is_not_a_pytorch_file_is_said_so(tmp_path):
    # torch's own error on a text file is KeyError('101'): said as ": 101"
    path = tmp_path / "weights.pt"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(
        AmalgamError, match=r"it is not a PyTorch file \(torch.save writes a zip or a pickle; it begins b'<html>4"
    ):
        read_state_dict(path)


def test_encoder_names_point_at_the_timm_spelling():
    from amalgam.teachers.model_sources import check_encoder_name

    with pytest.raises(
        AmalgamError, match=r"'mobilenetv3_small_100' is a timm model, not an smp encoder name: write tu-"
    ):
        check_encoder_name("mobilenetv3_small_100", "student.encoder")
    with pytest.raises(AmalgamError, match=r"unknown timm encoder 'tu-resnet_18' \(close: tu-resnet18"):
        check_encoder_name("tu-resnet_18", "student.encoder")


@pytest.mark.parametrize("beside", ["ema_model", "criterion"])
def test_a_prefixed_network_beside_other_parts_gets_the_command_that_keeps_it(tmp_path, beside):
    # Lightning with an EMA copy or a loss's buffers: not every key starts with 'model.', and no hint was given
    import re
    import subprocess
    import sys

    state = {f"model.{k}": v for k, v in tiny().state_dict().items()}
    state |= {f"{beside}.{k}": v for k, v in tiny().state_dict().items()} if beside == "ema_model" else {}
    state |= {"criterion.weight": torch.ones(3)} if beside == "criterion" else {}
    path = tmp_path / "lit.pt"
    torch.save({"state_dict": state, "epoch": 1}, path)
    said = (  # an EMA copy fits the model too: both are named, the choice left to the user
        r"the model's keys are found under each of 'model\.', 'ema_model\.', the model's own do not have them:"
        r" amalgam does not choose between two copies of the network; save the one meant"
        if beside == "ema_model"
        else r"the network's keys are those under 'model\.' \(beside criterion\.\), which the model's keys do not"
        r" start with: save the inner network's state_dict"
    )
    with pytest.raises(AmalgamError, match=said) as info:
        load_checkpoint(tiny(), path, "teacher 'x'")
    strip = re.search(r'python -c "([^"]+)"', str(info.value)).group(1)
    subprocess.run([sys.executable, "-c", strip], check=True)
    load_checkpoint(tiny(), tmp_path / "lit.pt.inner.pt", "teacher 'x'")


def test_a_model_entry_of_hyper_parameters_is_not_taken_for_the_weights(tmp_path):
    # {'model': {'arch': ..}, 'weights': state_dict}: 'model' was read, and the error named no entry
    torch.save({"model": {"arch": "tiny", "num_classes": 3}, "weights": tiny().state_dict()}, tmp_path / "c.pt")
    with pytest.raises(AmalgamError, match=r"does not hold a state dict of tensors .*state dicts under: weights\)"):
        load_checkpoint(tiny(), tmp_path / "c.pt", "teacher 'x'")


def test_a_head_built_for_another_number_of_classes_names_the_argument(tmp_path):
    # a trial's num_classes one short read "key '13.weight' has shape [7, 64] ..." with no word of the argument
    saved = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 7))
    torch.save(saved.state_dict(), tmp_path / "seven.pt")
    built = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 6))
    with pytest.raises(AmalgamError) as info:
        load_checkpoint(built, tmp_path / "seven.pt", "teacher 'h'", "teachers.h.model", {"num_classes": 6})
    assert str(info.value).endswith(
        "key '3.weight' has shape [7, 16] in the checkpoint, [6, 16] in the model (its last layer: 7 outputs in the"
        " checkpoint, 6 built: set teachers.h.model.num_classes to 7)"
    )
    with pytest.raises(AmalgamError, match=r"6 built: set its number of outputs in teachers.h.model to 7\)$"):
        load_checkpoint(built, tmp_path / "seven.pt", "teacher 'h'", "teachers.h.model", {"width": 4})
    wider = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.Flatten(), nn.Linear(16, 7))
    with pytest.raises(AmalgamError, match=r"in the model$"):  # not the last layer: no head hint
        load_checkpoint(wider, tmp_path / "seven.pt", "teacher 'h'", "teachers.h.model", {"num_classes": 7})


def test_a_position_embedding_of_another_size_points_at_the_input_size(tmp_path):
    # a trial: a ViT trained at 32 px loaded into one built at 224 said only "key 'pos_embed' has shape [1, 17, 192]"
    def vit(positions: int) -> nn.Module:
        model = nn.Linear(4, 3)
        model.register_parameter("pos_embed", nn.Parameter(torch.zeros(1, positions, 4)))
        return model

    torch.save(vit(17).state_dict(), tmp_path / "vit.pt")
    said = r"'pos_embed' has shape \[1, 17, 4\] .* 17 positions in the checkpoint, 785 built, .*v\.model\.img_size"
    with pytest.raises(AmalgamError, match=said):
        load_checkpoint(vit(785), tmp_path / "vit.pt", "teacher 'v'", "teachers.v.model", {})
    wide = nn.Linear(4, 3)
    wide.register_parameter("pos_embed", nn.Parameter(torch.zeros(1, 17, 8)))  # its width differs: no size hint
    with pytest.raises(AmalgamError) as info:
        load_checkpoint(wide, tmp_path / "vit.pt", "teacher 'v'", "teachers.v.model", {})
    assert "positions" not in str(info.value)
    # a patch size of another width too (review): the position embedding differs first, but not by the input size
    patched = nn.Module()
    patched.register_parameter("pos_embed", nn.Parameter(torch.zeros(1, 785, 4)))
    patched.add_module("proj", nn.Linear(8, 4))
    torch.save({"pos_embed": torch.zeros(1, 17, 4), **nn.Linear(4, 4).state_dict(prefix="proj.")}, tmp_path / "p.pt")
    with pytest.raises(AmalgamError) as info:
        load_checkpoint(patched, tmp_path / "p.pt", "teacher 'v'", "teachers.v.model", {})
    assert "'pos_embed' has shape" in str(info.value) and "positions" not in str(info.value)
