"""Sub-teacher wrappers: hand-checked aggregates, per-draw variation, the exact teacher when disabled."""

from __future__ import annotations

import pytest
import torch
import torchvision
import yaml
from torch import nn

from amalgam.cli import main
from amalgam.config.recipe import load_recipe
from amalgam.distill.plan import build_plan
from amalgam.errors import AmalgamError, RecipeError
from amalgam.task import get_task
from amalgam.teachers.subteachers import SUBTEACHERS, build_subteacher, residual_blocks

SEG, CLS, DEPTH = get_task("segmentation"), get_task("classification"), get_task("depth")


def dense_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv2d(3, 4, 3, padding=1).eval()


def call(kind: str, model: nn.Module, task, x: torch.Tensor, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return build_subteacher(kind, kwargs)(model, model, task, x)


def test_multi_transform_averages_probabilities_of_the_flipped_input_flipped_back():
    net, x = dense_net(), torch.rand(2, 3, 8, 8)
    out = call("multi_transform", net, SEG, x, flip=True)
    with torch.no_grad():
        p = (net(x).softmax(1) + net(x.flip(-1)).flip(-1).softmax(1)) / 2
    torch.testing.assert_close(out, p.log())
    assert not torch.allclose(out.softmax(1), net(x).softmax(1))  # the conv is not mirror-symmetric


def test_a_wrap_takes_a_tasks_name_and_refuses_anything_else_in_one_line():
    # a user's own loop passed None ('NoneType' object has no attribute 'name'); a name is all it may hold
    net, x = dense_net(), torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(call("multi_transform", net, "segmentation", x), call("multi_transform", net, SEG, x))
    with torch.no_grad():  # by keyword too
        by_name = build_subteacher("multi_transform", {})(net, net, task="segmentation", x=x)
    torch.testing.assert_close(by_name, call("multi_transform", net, SEG, x))
    with pytest.raises(
        AmalgamError, match=r"wrap\(run, model, task, x\): task is a Task or a task's name .* got NoneType"
    ):
        call("multi_transform", net, None, x)


def test_multi_transform_scales_resize_back_and_depth_averages_values():
    net, x = dense_net(), torch.rand(1, 3, 8, 8)
    run = lambda t: net(t)[:, :1].exp()  # noqa: E731 - a positive one-channel "depth"
    out = build_subteacher("multi_transform", {"flip": False, "scales": [1.0, 0.5]})(run, net, DEPTH, x)
    small = nn.functional.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
    back = nn.functional.interpolate(run(small), size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, (run(x) + back) / 2)


def test_multi_transform_without_transforms_is_the_teacher_and_hard_gives_one_hot():
    net, x = dense_net(), torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        logits = net(x)
    torch.testing.assert_close(call("multi_transform", net, SEG, x, flip=False).softmax(1), logits.softmax(1))
    hard = call("multi_transform", net, SEG, x, flip=False, hard=True)
    assert torch.equal(hard.argmax(1), logits.argmax(1))
    assert (hard.softmax(1).amax(1) > 0.99).all()


def test_averaged_probabilities_keep_their_small_values_for_a_softened_target():
    # a trial: the mean's log was floored at 1e-8, which a temperature of 4 turns into 0.01 of the top
    # label: 29% of a confident teacher's targets moved by over 0.01 through a multi_transform doing nothing
    logits = torch.tensor([[30.0, 0.0, -10.0], [0.0, 5.0, -40.0]])
    merged = CLS.ensemble([logits, logits])
    torch.testing.assert_close(merged, logits.log_softmax(1))  # the same teacher twice: itself, exactly
    torch.testing.assert_close((merged / 4).softmax(1), (logits / 4).softmax(1))
    two = CLS.ensemble([logits, logits.flip(1)])
    torch.testing.assert_close(two.exp(), (logits.softmax(1) + logits.flip(1).softmax(1)) / 2)
    tiny = torch.tensor([[1.0 - 2e-12, 1e-12, 1e-12]])
    read = get_task("classification").convert_output(tiny, "probabilities")  # a teacher answering probabilities
    torch.testing.assert_close(read, tiny.log())
    assert get_task("classification").convert_output(torch.tensor([[1.0, 0.0]]), "probabilities").isfinite().all()


def mlp_with_dropout() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3)).eval()


def test_mc_dropout_draws_differ_p0_is_the_teacher_and_modes_are_restored():
    net, x = mlp_with_dropout(), torch.rand(4, 6)
    a, b = call("mc_dropout", net, CLS, x, samples=2), call("mc_dropout", net, CLS, x, samples=2)
    assert not torch.allclose(a, b)
    exact = call("mc_dropout", net, CLS, x, samples=3, p=0.0)
    torch.testing.assert_close(exact.softmax(1), net(x).softmax(1))
    assert not net[2].training and net[2].p == 0.5
    with pytest.raises(AmalgamError, match="no dropout layers"):
        call("mc_dropout", dense_net(), SEG, torch.rand(1, 3, 4, 4))


def small_resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=5).eval()


def test_stochastic_depth_drop0_is_the_teacher_drop1_skips_every_branch_and_hooks_go_away():
    net, x = small_resnet(), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = net(x)
    torch.testing.assert_close(call("stochastic_depth", net, CLS, x, drop=0.0), ref)
    # every residual branch dropped: the network reduces to stem -> downsample convs -> pool -> fc
    with torch.no_grad():
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        for block in residual_blocks(net):
            h = torch.relu(h if block.downsample is None else block.downsample(h))
        skip = net.fc(torch.flatten(net.avgpool(h), 1))
    torch.testing.assert_close(call("stochastic_depth", net, CLS, x, drop=1.0), skip)
    draws = [call("stochastic_depth", net, CLS, x, drop=0.5, seed=s) for s in range(4)]
    assert any(not torch.allclose(draws[0], d) for d in draws[1:])
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref)  # no hook left behind
    assert len(residual_blocks(net)) == 8


def test_noise_follows_z_times_one_plus_xi_with_probability_alpha():
    torch.manual_seed(0)
    net = nn.Identity()
    z = torch.rand(4000, 10) + 1.0
    assert torch.equal(call("noise", net, CLS, z, sigma=0.5, alpha=0.0), z)
    noisy = call("noise", net, CLS, z, sigma=0.2, alpha=1.0)
    xi = noisy / z - 1
    assert abs(xi.std().item() - 0.2) < 0.01 and abs(xi.mean().item()) < 0.01
    half = call("noise", net, CLS, z, sigma=0.2, alpha=0.5)
    touched = (half != z).any(1).float().mean().item()
    assert 0.45 < touched < 0.55


def test_wrappers_are_registered_and_bad_arguments_are_named():
    assert {"multi_transform", "mc_dropout", "stochastic_depth", "noise"} <= set(SUBTEACHERS.names())
    with pytest.raises(AmalgamError, match="sub-teacher 'noise': .*unexpected keyword argument 'sigmaa'"):
        build_subteacher("noise", {"sigmaa": 1})
    with pytest.raises(AmalgamError, match="alpha"):
        build_subteacher("noise", {"alpha": 2})


def with_wrap(world, tmp_path, teacher: str, wrap: dict):
    raw = yaml.safe_load(world.read_text())
    raw["teachers"][teacher]["wrap"] = wrap
    path = world.parent / f"wrap-{tmp_path.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_recipe_wrap_errors_name_the_key(world, tmp_path):
    with pytest.raises(RecipeError, match=r"teachers\.seg-a\.wrap\.type: unknown sub-teacher 'flips'"):
        load_recipe(with_wrap(world, tmp_path, "seg-a", {"type": "flips"}))
    with pytest.raises(RecipeError, match=r"teachers\.seg-a\.wrap\.scales: expected positive factors, got \[\]"):
        load_recipe(with_wrap(world, tmp_path, "seg-a", {"type": "multi_transform", "scales": []}))
    with pytest.raises(RecipeError, match=r"teachers\.seg-a\.wrap: bad arguments for sub-teacher 'noise'"):
        load_recipe(with_wrap(world, tmp_path, "seg-a", {"type": "noise", "sigmaa": 1}))


def test_wrapped_teachers_in_a_build_deterministic_ones_cached(world, tmp_path, capsys):
    recipe = with_wrap(world, tmp_path, "seg-a", {"type": "multi_transform", "flip": True})
    raw = yaml.safe_load(recipe.read_text())
    raw["teachers"]["seg-b"]["wrap"] = {"type": "noise", "sigma": 0.1}
    recipe.write_text(yaml.safe_dump(raw))
    plan = build_plan(load_recipe(recipe), log=lambda m: None)
    assert plan.teachers["seg-a"].deterministic and not plan.teachers["seg-b"].deterministic
    out = tmp_path / "run"
    assert main(["build", str(recipe), "--output", str(out), "--set", "train.epochs=1"]) == 0
    log = capsys.readouterr().out
    assert "teacher cache 'seg-b': not cached, its noise sub-teachers vary" in log
    assert (out / "teacher_cache" / "seg-a" / "meta.json").exists()
    assert not (out / "teacher_cache" / "seg-b").exists()
    assert all(not p.requires_grad for t in plan.teachers.values() for p in t.model.parameters())


@pytest.mark.parametrize(
    "wrap", [{"type": "multi_transform", "flip": True, "scales": [1.0, 0.5]}, {"type": "noise", "sigma": 0.5}]
)
def test_a_wrapped_teacher_taps_the_feature_of_the_unchanged_input(world, tmp_path, wrap):
    """Feature adapters compare the student's map with the teacher's tap: it must be the feature of
    the image the student sees, not of the wrapper's last (mirrored, rescaled, noisy) run."""
    from amalgam.teachers.taps import FeatureTap

    plan = build_plan(load_recipe(with_wrap(world, tmp_path, "seg-a", wrap)), with_data=False, log=lambda m: None)
    teacher = plan.teachers["seg-a"]
    teacher.tap = FeatureTap("body")
    teacher.tap.attach(teacher.model, "test")
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = teacher.model.body(teacher.prepare(images))
    out = teacher(images)
    assert out.shape == (3, 3, 16, 16)
    torch.testing.assert_close(teacher.tap.value, expected)


@pytest.mark.parametrize("kind", ["multi_transform", "noise"])
def test_a_wraps_targets_carry_no_gradient_to_the_teacher(kind):
    # called from a user's loop as its docstring shows, a loss on its targets trained the teacher
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    wrap = build_subteacher(kind, {})
    target = wrap(lambda x: model(x), model, get_task("classification"), torch.rand(2, 3, 8, 8))
    assert not target.requires_grad


def test_multi_transform_does_not_spread_a_depth_teachers_holes_when_it_rescales():
    # a review: at scales other than 1 the answers were resized plainly, each hole (no depth) over its kernel
    from amalgam.task import get_task
    from amalgam.teachers.subteachers import SUBTEACHERS

    gen = torch.Generator().manual_seed(0)
    holes = torch.rand(1, 1, 128, 128, generator=gen) < 0.01

    def run(x):  # depth 1-2 m, with 1% holes at the 2x scale's own resolution
        depth = 1.0 + x[:, :1]
        return torch.where(holes[..., : depth.shape[-2], : depth.shape[-1]], torch.zeros_like(depth), depth)

    out = SUBTEACHERS.get("multi_transform")(flip=False, scales=[2.0])(
        run, torch.nn.Identity(), get_task("depth"), torch.rand(1, 3, 64, 64)
    )
    assert out.shape[-2:] == (64, 64)
    assert (~(out > 0)).float().mean() < 0.005  # no depth (the ensemble says 0) where a hole spread
