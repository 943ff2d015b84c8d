"""``student.encoder_weights``: a student encoder started from a pretrained classifier or encoder."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from world import TINY_BUILD

from amalgam.cli import main
from amalgam.errors import RecipeError
from amalgam.students.build import StudentSpec, build_student
from amalgam.students.pretrained import EncoderWeights, match_encoder_weights, pretrained_encoder

HEADS = {"classification": 3, "segmentation": 4, "depth": 1}


def _randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights unlike a fresh model's, so a copy that did not happen shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(
                    torch.rand(t.shape, generator=g) * 0.2 + 0.9
                    if t.dim() == 1
                    else torch.randn(t.shape, generator=g) * 0.1
                )
    return model


@pytest.fixture
def timm_classifier(tmp_path):
    model = _randomised(timm.create_model("test_resnet", num_classes=3), 0)
    path = tmp_path / "classifier.pt"
    torch.save(model.state_dict(), path)
    return path


def _stage_outputs(student, task: str, x: torch.Tensor) -> list[torch.Tensor]:
    path = student.task_path(task).eval()
    features = [(x - path.mean) / path.std]
    for stage in path.encoder:
        features.append(stage(features[-1]))
    return features[1:]


@pytest.mark.parametrize("branch_at", [0, 2, {"classification": 1, "segmentation": 4, "depth": 5}])
def test_every_stage_of_a_tree_starts_from_the_classifier(timm_classifier, branch_at):
    weights = match_encoder_weights("tu-test_resnet", timm_classifier)
    assert weights.rename == ("", "model.", False)  # a timm model inside smp's tu- wrapper
    assert {"fc.weight", "fc.bias"} <= set(weights.unused)
    student = build_student(StudentSpec("branched", "tu-test_resnet", branch_at, [16, 16, 8, 8, 8], HEADS)).eval()
    student.load_encoder(pretrained_encoder("tu-test_resnet", weights))
    reference = pretrained_encoder("tu-test_resnet", weights).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        wanted = reference((x - student.mean) / student.std)[1:]
        for task in HEADS:
            got = _stage_outputs(student, task, x)
            for k, (a, b) in enumerate(zip(got, wanted)):
                assert torch.allclose(a, b, atol=1e-5), (task, k)


def test_a_compact_student_and_an_smp_models_state_dict(tmp_path):
    model = _randomised(smp.Unet("tu-test_resnet", encoder_weights=None, classes=2), 1)
    path = tmp_path / "unet.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    weights = match_encoder_weights("tu-test_resnet", path)
    assert weights.rename == ("encoder.", "", False) and any(k.startswith("decoder.") for k in weights.unused)
    student = build_student(StudentSpec("compact", "tu-test_resnet", 0, [16, 16, 8, 8, 8], HEADS))
    student.load_encoder(pretrained_encoder("tu-test_resnet", weights))
    for key, value in student.encoder.state_dict().items():
        assert torch.equal(value, model.encoder.state_dict()[key]), key


def test_a_torchvision_resnet_fits_smps_resnet_as_it_is(tmp_path):
    import torchvision

    path = tmp_path / "resnet18.pth"
    torch.save(_randomised(torchvision.models.resnet18(num_classes=5), 2).state_dict(), path)
    weights = match_encoder_weights("resnet18", path)
    assert weights.rename == ("", "", False) and weights.unused == ["fc.weight", "fc.bias"]
    assert "left out 2 tensors (fc.weight, fc.bias)" in weights.describe()
    # smp's own encoders override load_state_dict (returning None; MiT's takes no strict): the build crashed
    encoder = pretrained_encoder("resnet18", weights)
    source = torch.load(path, weights_only=True)
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, source[key]), key


def test_an_smp_mit_encoder_takes_its_weights(tmp_path):
    mit = smp.encoders.get_encoder("mit_b0", in_channels=3, depth=5, weights=None)
    weights = EncoderWeights(_randomised(mit, 3).state_dict(), tmp_path / "mit.pt", ("", "", False), [])
    encoder = pretrained_encoder("mit_b0", weights)
    assert all(torch.equal(v, weights.state[k]) for k, v in encoder.state_dict().items())


def test_a_checkpoint_of_another_network_is_refused_in_one_line(timm_classifier, tmp_path):
    with pytest.raises(RecipeError) as err:
        match_encoder_weights("tu-resnet10t", timm_classifier)
    msg = str(err.value)
    assert msg.startswith("student.encoder_weights: ") and "does not fit encoder 'tu-resnet10t'" in msg
    assert "closest renaming ('" in msg and "\n" not in msg
    with pytest.raises(RecipeError, match="student.encoder_weights: checkpoint not found"):
        match_encoder_weights("tu-test_resnet", tmp_path / "nowhere.pt")


def test_build_and_inspect_say_where_the_encoder_comes_from(world, timm_classifier, tmp_path, capsys):
    key = f"student.encoder_weights={timm_classifier}"
    assert main(["inspect", str(world), "--no-data", "--set", key]) == 0
    line = f"  encoder weights (student.encoder_weights): 90 encoder tensors from {timm_classifier}"
    assert line in capsys.readouterr().out
    out = tmp_path / "run"
    args = ["build", str(world), "--output", str(out), *TINY_BUILD, "--set", "train.lr=1e-12", "--set", key]
    assert main([a for a in args if a != "--quiet"]) == 0
    assert (
        f"student: encoder tu-test_resnet starts from 90 encoder tensors from {timm_classifier}"
        in capsys.readouterr().out
    )
    from amalgam.students.serialize import load_student

    student, _ = load_student(out / "student.pt")
    stem = timm.create_model("test_resnet", num_classes=3)
    stem.load_state_dict(torch.load(timm_classifier))
    first = next(student.trunk.parameters())  # the stem's first convolution, trained at lr ~0
    assert torch.allclose(first, next(stem.parameters()), atol=1e-6)


def test_init_and_encoder_weights_are_refused_together(world, built_run, timm_classifier, capsys):
    args = ["inspect", str(world), "--no-data", "--set", f"student.encoder_weights={timm_classifier}"]
    assert main([*args, "--set", f"student.init={built_run / 'student.pt'}"]) == 2
    assert "student.encoder_weights: not with student.init" in capsys.readouterr().err


def test_the_auto_warm_up_starts_from_the_encoder_weights_as_the_build_does(world, timm_classifier, tmp_path):
    from amalgam.config.recipe import load_recipe
    from amalgam.distill.affinity import measure_affinity, search_key
    from amalgam.distill.plan import build_plan

    quick = ["student.search.steps=2", "student.search.every=1"]
    plain = load_recipe(world, quick)
    recipe = load_recipe(world, [*quick, f"student.encoder_weights={timm_classifier}"])
    assert search_key(recipe) != search_key(plain)  # a stored warm-up of random weights is not reused
    said: list[str] = []
    pretrained = measure_affinity(
        build_plan(recipe, log=said.append), torch.device("cpu"), tmp_path / "a.pt", said.append
    )
    assert any(s.startswith("student: encoder tu-test_resnet starts from 90 encoder tensors") for s in said)
    random = measure_affinity(build_plan(plain, log=said.append), torch.device("cpu"), tmp_path / "b.pt", said.append)
    assert pretrained.table != random.table


def test_reading_the_weights_leaves_the_seeded_random_stream_alone(timm_classifier):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    pretrained_encoder("tu-test_resnet", match_encoder_weights("tu-test_resnet", timm_classifier))
    assert torch.equal(torch.rand(3), expected)


def test_timm_encoders_that_flatten_their_blocks_and_checkpoints_without_batch_counters(tmp_path):
    model = _randomised(timm.create_model("repghostnet_050", num_classes=4), 3)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "ghost.pt"
    torch.save(state, path)
    weights = match_encoder_weights("tu-repghostnet_050", path)  # smp names blocks.0 as blocks_0
    assert weights.rename == ("", "model.", True) and "blocks.N. -> blocks_N." in weights.describe()
    encoder = pretrained_encoder("tu-repghostnet_050", weights)
    own = encoder.state_dict()
    assert torch.equal(
        own["model.blocks_0.0.ghost1.primary_conv.0.weight"], state["blocks.0.0.ghost1.primary_conv.0.weight"]
    )
    # the same inside a wrapper (Lightning's self.model, an smp model): refused, the 'closest' renaming missing all
    for prefix in ("model.", "encoder."):
        torch.save({prefix + k: v for k, v in state.items()}, path)
        wrapped = match_encoder_weights("tu-repghostnet_050", path)
        assert wrapped.rename == (prefix, "model.", True)
        assert torch.equal(
            wrapped.state["model.blocks_0.0.ghost1.primary_conv.0.weight"],
            own["model.blocks_0.0.ghost1.primary_conv.0.weight"],
        )


def test_a_file_of_no_matching_names_shows_both_first_names(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"net.conv.weight": torch.zeros(1)}, path)
    with pytest.raises(
        RecipeError,
        match=r"no renaming supplies any of its \d+ tensors \(its first: 'model\.conv1[^']*'"
        r"; the file's first: 'net\.conv\.weight'\)",
    ):
        match_encoder_weights("tu-test_resnet", path)


def test_encoder_weights_need_a_named_encoder_and_inspect_reports_them_with_auto_trees(
    world, timm_classifier, built_run, tmp_path, capsys
):
    key = f"student.encoder_weights={timm_classifier}"
    assert main(["inspect", str(world), "--no-data", "--set", key, "--set", "student.encoder=auto"]) == 2
    assert "student.encoder_weights: needs a named student.encoder" in capsys.readouterr().err
    auto = ["--set", "student.branch_at=auto", "--set", "student.budget.params=1000"]  # a tree must fit
    assert main(["inspect", str(world), "--no-data", "--set", key, *auto]) == 0
    assert "encoder weights (student.encoder_weights): 90 encoder tensors" in capsys.readouterr().out


def test_the_auto_warm_up_takes_no_previous_student(world, built_run, tmp_path):
    from amalgam.config.recipe import load_recipe
    from amalgam.distill.affinity import measure_affinity
    from amalgam.distill.plan import build_plan

    quick = ["student.search.steps=1", "student.search.every=1", f"student.init={built_run / 'student.pt'}"]
    said: list[str] = []
    plan = build_plan(load_recipe(world, quick), log=said.append)
    measure_affinity(plan, torch.device("cpu"), tmp_path / "a.pt", said.append)  # a tree at 3 is not the warm-up's 5
    assert not any("starting from" in s for s in said)


@pytest.mark.parametrize("deeper, student", [("resnet34", "tu-resnet18"), ("efficientnet_b1", "tu-efficientnet_b0")])
def test_a_deeper_network_of_the_family_is_refused_not_half_loaded(tmp_path, deeper, student):
    # every tensor of the smaller encoder has its name and shape in the deeper one's file: it loaded the
    # first blocks of each stage, dropped the rest, and called them "left out" like a classifier's head
    path = tmp_path / f"{deeper}.pt"
    torch.save(timm.create_model(deeper, num_classes=10).state_dict(), path)
    with pytest.raises(RecipeError, match=rf"fits encoder '{student}', but it holds \d+ more tensors inside"):
        match_encoder_weights(student, path)
    torch.save(timm.create_model(student.removeprefix("tu-"), num_classes=10).state_dict(), path)
    assert match_encoder_weights(student, path).unused  # its own family member: only the head left out


def test_an_encoder_smp_cannot_pyramid_is_refused_naming_student_encoder():
    from amalgam.students.encoders import build_encoder

    # a plain ViT: smp's "Unsupported model downsampling pattern" came as a raw traceback
    with pytest.raises(RecipeError, match=r"^student.encoder: smp cannot build a U-Net encoder of 'tu-vit_tiny"):
        build_encoder("tu-vit_tiny_patch16_224")


def test_a_student_that_cannot_take_the_recipes_size_stops_before_training():
    from amalgam.students.build import check_student_runs

    class FixedSize(torch.nn.Module):  # a Swin built for 224: it crashed at the first training step
        def forward(self, x):
            if x.shape[-1] != 224:
                raise AssertionError(f"Input height ({x.shape[-1]}) doesn't match model (224).")
            return {"seg": x}

    student = FixedSize().train()
    with pytest.raises(RecipeError, match=r"does not run on 32x32 images .*encoder_args: \{img_size: \[H, W\]\}"):
        check_student_runs(student, (32, 32))
    assert student.training  # left as it came
    check_student_runs(student, (224, 224))


def test_a_batch_of_one_over_a_1x1_map_stops_before_training_naming_the_batch_norm():
    # a trial: --set train.batch_size=1 with a 32 px student crashed in its first step, after the data scan
    from amalgam.students.build import check_student_runs

    student = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=32, padding=1), torch.nn.BatchNorm2d(4))
    with pytest.raises(RecipeError, match=r"^train.batch_size: 1: the student's batch norm 1 sees a 1x1 map at 32x32"):
        check_student_runs(student, (32, 32), batch_size=1)
    check_student_runs(student, (32, 32), batch_size=2)
    check_student_runs(student, (64, 64), batch_size=1)  # a 2x2 map: four values a channel
    assert not any(m._forward_pre_hooks for m in student.modules())  # no hook left behind


def test_inspect_refuses_an_init_of_another_student_as_the_build_does(world, built_run, capsys):
    init = f"student.init={built_run / 'student.pt'}"
    assert main(["inspect", str(world), "--set", init, "--set", "student.encoder=tu-test_efficientnet"]) == 2
    assert "student.init: " in capsys.readouterr().err  # inspect said nothing; the build refused it
    assert main(["inspect", str(world), "--set", init, "--quiet"]) == 0  # its own student: fine


def test_a_student_without_encoder_weights_is_said_to_start_from_random_weights(world):
    # a newcomer could not tell from the log whether the student started pretrained
    from amalgam.config.recipe import load_recipe
    from amalgam.students.start import start_weights

    said = []
    start_weights(None, load_recipe(world), {}, said.append)
    assert said == [
        "student: starts from random weights (no student.encoder_weights: amalgam downloads none; a pretrained"
        " encoder of yours, such as an ImageNet classifier's state dict, usually trains faster)"
    ]


def test_a_checkpoint_of_another_width_is_said_by_its_shapes(tmp_path):
    # a trial: a narrower resnet10t (every name right, under 'model.') read "the closest renaming ('' -> '')
    # misses 70 of its 84 tensors"
    import timm

    narrow = timm.create_model("resnet10t", channels=[16, 32, 64, 128], stem_width=16, num_classes=0)
    path = tmp_path / "narrow.pt"
    torch.save(narrow.state_dict(), path)
    with pytest.raises(RecipeError) as err:
        match_encoder_weights("tu-resnet10t", path)
    msg = str(err.value)
    assert "the closest renaming ('' -> 'model.') finds every name, but" in msg
    assert "'conv1.0.weight' [12, 3, 3, 3] in the file, [24, 3, 3, 3] in the encoder: another width" in msg


def test_encoder_weights_from_a_wrapped_checkpoint_say_which_entry_was_read(tmp_path):
    # a trial: a {state_dict, ema} file loaded its state_dict without a word of the EMA beside it
    encoder = smp.encoders.get_encoder("tu-test_resnet", in_channels=3, depth=5, weights=None)
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": encoder.state_dict(), "ema": encoder.state_dict()}, path)
    said = match_encoder_weights("tu-test_resnet", path).describe()
    assert "entry 'state_dict'" in said and "ema" in said


def test_a_grey_network_and_a_wrapped_torchvision_network_fit_smps_resnet(tmp_path):
    # a trial: a ResNet pretrained on grey images (conv1 [64, 1, 7, 7]) was refused as "another width or depth?",
    # and a torchvision ResNet saved as Lightning's self.model ('model.conv1.weight') fitted tu-resnet18, not resnet18
    import torchvision

    grey = _randomised(torchvision.models.resnet18(num_classes=5), 3)
    grey.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    path = tmp_path / "grey.pth"
    torch.save({"model": {f"model.{k}": v for k, v in grey.state_dict().items()}}, path)
    weights = match_encoder_weights("resnet18", path)
    assert weights.rename == ("model.", "", False)
    said = "model.conv1.weight: a one-channel first convolution (grey-pretrained?), spread over R, G and B (a third"
    assert said in weights.describe()
    encoder = pretrained_encoder("resnet18", weights).eval()
    grey.eval()
    image = torch.rand(2, 1, 64, 64)
    with torch.no_grad():  # the grey network's answer on grey images, fed as R = G = B
        got, expected = encoder(image.expand(-1, 3, -1, -1))[-1], _features(grey, image)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()  # float rounding of the random weights


def _features(net, x: torch.Tensor) -> torch.Tensor:
    """A torchvision ResNet's last feature map."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))
