"""The training loop's batch augmentation."""

import pytest
import torch

from amalgam.training.engine import random_hflip


def test_random_hflip_flips_images_and_dense_targets_together():
    images = torch.arange(8 * 3 * 2 * 4, dtype=torch.float).view(8, 3, 2, 4)
    masks = images[:, 0].long()
    out, out_masks = random_hflip(images, torch.Generator().manual_seed(0), masks)
    flipped = (out != images).flatten(1).any(1)
    assert 0 < flipped.sum() < 8  # some flipped, some not
    assert torch.equal(out[flipped], images[flipped].flip(-1))
    assert torch.equal(out_masks, out[:, 0].long())  # the same samples flipped in both
    assert torch.equal(random_hflip(images, torch.Generator().manual_seed(0)), out)


NAN_MODEL = """
import torch
from torch import nn


class NanDense(nn.Module):
    # finite on the checks' 1-2 images (NaN there stops the build at the teacher check), NaN in training
    def __init__(self, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(3, out_channels, 1)

    def forward(self, x):
        out = self.conv(x)
        return out * float("nan") if x.shape[0] > 2 else out


def nan_dense(out_channels):
    return NanDense(out_channels)
"""


def test_a_teacher_answering_nan_on_every_training_row_is_named_not_the_loss(fresh_world, capsys):
    import yaml

    from amalgam.cli import main

    (fresh_world.parent / "nanmodels.py").write_text(NAN_MODEL)
    raw = yaml.safe_load(fresh_world.read_text())
    raw["teachers"]["seg-b"]["model"] = {"from": "python", "factory": "nanmodels:nan_dense", "out_channels": 2}
    del raw["teachers"]["seg-b"]["checkpoint"]
    fresh_world.write_text(yaml.safe_dump(raw))
    args = ["build", str(fresh_world), "--quiet", "--set", "train.epochs=1", "--set", "train.samples_per_epoch=8"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("amalgam: error: epoch 1: teacher targets are NaN/inf on most rows (seg-b on "), err
    assert len(err.splitlines()) == 1


def test_non_finite_loss_names_epoch_step_teacher_and_task(world, tmp_path, monkeypatch, capsys):
    import amalgam.distill.objective as objective
    from amalgam.cli import main

    real = objective.distill

    def nan_for_seg_b(task, s_out, target, options):  # the student's loss, not the teacher's target
        loss = real(task, s_out, target, options)
        return loss * float("nan") if task.name == "segmentation" else loss

    monkeypatch.setattr(objective, "distill", nan_for_seg_b)
    args = ["build", str(world), "--quiet", "--output", str(tmp_path / "run"), "--set", "train.epochs=1"]
    assert main([*args, "--set", "train.samples_per_epoch=8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("amalgam: error: epoch 1 step 1: loss of teacher term 'seg-a' (segmentation) is nan"), err
    assert len(err.splitlines()) == 1


def test_tensorboard_logs_every_epoch_or_says_it_is_missing(world, tmp_path, capsys):
    from amalgam.cli import main

    out = tmp_path / "run"
    args = ["build", str(world), "--output", str(out), "--set", "train.tensorboard=true"]
    assert main(args + ["--set", "train.epochs=1", "--set", "train.samples_per_epoch=8"]) == 0
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert "the tensorboard package is not installed" in capsys.readouterr().out
    else:
        assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_compile_trains_through_the_compiled_student_and_saves_the_plain_one(world, tmp_path, monkeypatch):
    from amalgam.cli import main

    real, compiled = torch.compile, []

    def eager_compile(model):  # dynamo tracing without inductor's C++ build: seconds, not minutes
        compiled.append(model)
        return real(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    out = tmp_path / "run"
    args = ["build", str(world), "--output", str(out), "--set", "train.compile=true", "--quiet"]
    assert main(args + ["--set", "train.epochs=1", "--set", "train.samples_per_epoch=8"]) == 0
    assert len(compiled) == 1
    state = torch.load(out / "student.pt", weights_only=True)["state_dict"]
    assert not any("_orig_mod" in key for key in state)


@pytest.mark.parametrize("setting, expected", [([], True), (["--set", "train.student_channels_last=false"], False)])
def test_student_channels_last_trains_in_that_memory_format(world, tmp_path, monkeypatch, setting, expected):
    from amalgam.cli import main
    from amalgam.training import engine
    from amalgam.training.trainer import Trainer

    def conv_is_channels_last(student) -> bool:
        conv = next(m for m in student.modules() if isinstance(m, torch.nn.Conv2d))
        return conv.weight.is_contiguous(memory_format=torch.channels_last)

    during, after = [], []
    real_epoch, real_train = Trainer.train_one_epoch, engine.train

    def epoch_spy(self, epoch):
        during.append(conv_is_channels_last(self.student))
        return real_epoch(self, epoch)

    def train_spy(plan, student, *args, **kwargs):
        result = real_train(plan, student, *args, **kwargs)
        after.append(conv_is_channels_last(student))
        return result

    monkeypatch.setattr(Trainer, "train_one_epoch", epoch_spy)
    monkeypatch.setattr(engine, "train", train_spy)
    out = tmp_path / "run"
    args = ["build", str(world), "--output", str(out), *setting, "--quiet"]  # the default: channels_last
    assert main(args + ["--set", "train.epochs=1", "--set", "train.samples_per_epoch=8"]) == 0
    assert during == [expected]
    assert after == [False], "the student timed, saved and exported is the plain (contiguous) one"
