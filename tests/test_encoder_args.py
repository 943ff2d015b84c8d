"""``student.encoder_args``: a named encoder built with its constructor's keyword arguments (a narrow
timm ResNet for a small world), stored with the student, checked against a pretrained file."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from world import TINY_BUILD

from amalgam.cli import main
from amalgam.errors import RecipeError
from amalgam.labels import LabelSpace
from amalgam.students.build import StudentSpec, build_student
from amalgam.students.encoders import build_encoder
from amalgam.students.pretrained import match_encoder_weights
from amalgam.students.serialize import init_student, load_student, save_student

HEADS = {"classification": 3, "segmentation": 4, "depth": 1}
NARROW = {"channels": [8, 8, 16, 16]}  # test_resnet is (32, 64, 128, 256) wide: a different state dict
SPACES = {"classification": LabelSpace(["a", "b", "c"]), "segmentation": LabelSpace(list("wxyz")), "depth": None}


def spec(kind: str = "branched", args: dict | None = None) -> StudentSpec:
    return StudentSpec(kind, "tu-test_resnet", 3, [8, 8, 8, 8, 8], dict(HEADS), {}, dict(args or {}))


@pytest.mark.parametrize("kind", ["branched", "compact"])
def test_the_args_reach_the_encoder_of_either_student(kind):
    plain, narrow = build_student(spec(kind)), build_student(spec(kind, NARROW))
    n_plain, n_narrow = (sum(p.numel() for p in m.parameters()) for m in (plain, narrow))
    assert n_narrow < n_plain / 3
    out = narrow.eval()(torch.rand(2, 3, 32, 32))
    assert out["segmentation"].shape == (2, 4, 32, 32) and out["classification"].shape == (2, 3)
    assert build_encoder("tu-test_resnet", NARROW).out_channels[-1] == 16


def test_the_spec_stores_and_describes_the_args_and_reads_old_files_as_before(tmp_path):
    assert "encoder_args" not in spec().to_dict()  # files written before the key compare equal
    assert spec(args=NARROW).describe_encoder() == "tu-test_resnet(channels=[8, 8, 16, 16])"
    assert spec().describe_encoder() == "tu-test_resnet"
    model = build_student(spec(args=NARROW)).eval()
    save_student(model, SPACES, {}, tmp_path / "student.pt")
    again, _ = load_student(tmp_path / "student.pt")
    assert again.spec.encoder_args == NARROW
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(again(x)["depth"], model(x)["depth"])
    with pytest.raises(RecipeError, match="holds a student with .*encoder_args"):
        init_student(build_student(spec()), SPACES, tmp_path / "student.pt")


def test_a_constructor_that_refuses_the_args_names_the_key():
    with pytest.raises(RecipeError, match=r"student.encoder_args: encoder 'tu-test_resnet' does not take \{'chanels'"):
        build_encoder("tu-test_resnet", {"chanels": [8, 8, 16, 16]})


def test_recipe_checks_refuse_args_with_auto_and_args_the_encoder_does_not_take(world, capsys):
    args = ["inspect", str(world), "--no-data", "--set", "student.encoder_args={chanels: [8, 8, 16, 16]}"]
    assert main(args) == 2
    assert "student.encoder_args: encoder 'tu-test_resnet' does not take" in capsys.readouterr().err
    assert main([*args[:-1], "student.encoder_args={channels: [8, 8, 16, 16]}", "--set", "student.encoder=auto"]) == 2
    assert "student.encoder_args: needs a named student.encoder" in capsys.readouterr().err


def test_pretrained_weights_are_matched_against_the_encoder_the_args_build(tmp_path):
    path = tmp_path / "narrow.pt"
    torch.save(timm.create_model("test_resnet", num_classes=3, **NARROW).state_dict(), path)
    assert len(match_encoder_weights("tu-test_resnet", path, NARROW).state) > 0
    with pytest.raises(RecipeError, match=r"does not fit encoder 'tu-test_resnet' with student.encoder_args"):
        match_encoder_weights("tu-test_resnet", path, {"channels": [8, 8, 16, 32]})
    with pytest.raises(RecipeError, match=r"does not fit encoder 'tu-test_resnet':"):
        match_encoder_weights("tu-test_resnet", path)


def test_a_build_with_args_starts_from_matching_weights_and_reports_the_encoder(world, tmp_path, capsys):
    weights = tmp_path / "narrow.pt"
    classifier = timm.create_model("test_resnet", num_classes=3, **NARROW)
    torch.save(classifier.state_dict(), weights)
    out = tmp_path / "run"
    keys = ["student.encoder_args={channels: [8, 8, 16, 16]}", f"student.encoder_weights={weights}", "train.lr=1e-12"]
    args = ["build", str(world), "--output", str(out), *TINY_BUILD, *[a for k in keys for a in ("--set", k)]]
    assert main([a for a in args if a != "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "student: encoder tu-test_resnet(channels=[8, 8, 16, 16]) starts from" in said
    report = json.loads((out / "report.json").read_text())
    assert report["student"]["encoder"] == "tu-test_resnet(channels=[8, 8, 16, 16])"
    assert "Student encoder: tu-test_resnet(channels=[8, 8, 16, 16])" in (out / "report.md").read_text()
    student, _ = load_student(out / "student.pt")
    first = next(student.trunk.parameters())  # trained at lr ~0: still the classifier's stem
    assert torch.allclose(first, next(classifier.parameters()), atol=1e-6)


@pytest.mark.parametrize(
    "name, args, said",
    [
        ("resnet18", NARROW, "only tu-\\* \\(timm\\) encoders take arguments; smp's own 'resnet18' would ignore"),
        ("tu-test_resnet", {"output_stride": 8}, "output_stride: set by amalgam"),
        ("tu-test_resnet", {"pretrained": True}, "pretrained: set by amalgam .*weights are never downloaded"),
        ("tu-test_resnet", {"num_classes": 5}, "num_classes: these set timm's classifier head"),
        # a trial: in_chans stopped with smp's raw "'{'in_chans'}' already specified internally"
        ("tu-test_resnet", {"in_chans": 1}, "in_chans: set by amalgam .*the student always takes RGB"),
        ("tu-test_resnet", {"features_only": False}, "features_only: set by amalgam"),
        # timm's ResNet drops out before its classifier only: an encoder would train without it
        ("tu-test_resnet", {"drop_rate": 0.2}, "drop_rate: 'tu-test_resnet' applies it before its classifier"),
        (
            "tu-test_resnet",
            {"channels": [8, 8, 16]},
            "encoder 'tu-test_resnet' does not take \\{'channels': \\[8, 8, 16\\]\\}: ",
        ),  # IndexError
    ],
)
def test_args_an_encoder_cannot_take_stop_in_one_line_naming_the_key(name, args, said):
    with pytest.raises(RecipeError, match="^student.encoder_args: " + said) as info:
        build_encoder(name, args)
    assert "\n" not in str(info.value)


def test_a_drop_rate_the_encoder_keeps_inside_its_blocks_passes():
    from amalgam.students.encoders import _check_drop_rate

    held = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.Sequential(torch.nn.Dropout(0.3)))
    _check_drop_rate("tu-x", {"drop_rate": 0.3}, held)  # a Dropout below the root: used
    encoder = build_encoder("tu-test_resnet", {"drop_path_rate": 0.1})  # stochastic depth is in the blocks
    assert any(type(m).__name__ == "DropPath" for m in encoder.modules())


def test_the_tree_search_key_and_the_tree_pricing_see_the_args(world):
    from amalgam.config.recipe import load_recipe
    from amalgam.distill.affinity import search_key
    from amalgam.students.budget import measure_costs
    from amalgam.students.build import count_params

    plain = load_recipe(world)
    narrow = load_recipe(world, ["student.encoder_args={channels: [8, 8, 16, 16]}"])
    assert "encoder_args" not in search_key(plain)["student"]  # keys stored before it stay valid
    assert search_key(narrow)["student"]["encoder_args"] == NARROW
    costs = measure_costs(spec(args=NARROW), (32, 32), repeats=1)
    shared = {t: 5 for t in HEADS}
    assert costs.params(shared) == count_params(
        build_student(StudentSpec(**{**spec(args=NARROW).to_dict(), "branch_at": 5}))
    )


def test_an_encoder_that_cannot_be_built_is_blamed_not_its_args():
    # a trial: a ViT with img_size, and a bad pretrained tag, were said as args the encoder "does not take"
    from amalgam.errors import RecipeError
    from amalgam.students.encoders import build_encoder

    with pytest.raises(RecipeError, match=r"^student\.encoder: smp cannot build a U-Net encoder of 'tu-vit_tiny"):
        build_encoder("tu-vit_tiny_patch16_224", {"img_size": 64})
    with pytest.raises(RecipeError, match=r"^student\.encoder: 'tu-resnet10t\.nosuchtag': Invalid pretrained tag .*"
                       r"a tag names pretrained weights"):  # fmt: skip
        build_encoder("tu-resnet10t.nosuchtag", {"stem_width": 16})
