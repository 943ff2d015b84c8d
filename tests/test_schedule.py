"""The schedule's optimizer steps and the warning for dense students trained too briefly."""

from __future__ import annotations

import json

import pytest
import torch

from amalgam.cli import main
from amalgam.config.schema import TrainConfig
from amalgam.training.optim import build_scheduler
from amalgam.training.schedule import DENSE_MIN_STEPS, optimizer_steps, schedule_lines, short_schedule_warning


def test_steps_count_full_batches_as_the_loader_does():
    assert optimizer_steps(TrainConfig(epochs=3, batch_size=32, samples_per_epoch=1600), 0) == 150
    assert optimizer_steps(TrainConfig(epochs=2, batch_size=32, samples_per_epoch=100), 0) == 6  # last 4 dropped
    assert optimizer_steps(TrainConfig(epochs=1, batch_size=32), 40) == 2  # under two batches: none dropped
    assert optimizer_steps(TrainConfig(epochs=4, batch_size=32), 3000) == 4 * 93  # every image when not set


def test_only_a_dense_student_under_the_threshold_is_warned():
    assert short_schedule_warning(DENSE_MIN_STEPS, ["segmentation"]) is None
    assert short_schedule_warning(10, []) is None  # classification alone learns in few steps
    warning = short_schedule_warning(150, ["segmentation", "depth"])
    assert warning.startswith("warning: the schedule gives the student 150 optimizer steps for its dense tasks")
    assert schedule_lines(TrainConfig(epochs=3), None, ["segmentation"]) == []  # images unknown: nothing said


def test_inspect_says_the_steps_and_warns(world, capsys):
    assert main(["inspect", str(world), "--set", "train.samples_per_epoch=64", "--set", "train.batch_size=4"]) == 0
    out = capsys.readouterr().out
    assert "schedule: 2 epochs of 64 images, 32 steps" in out
    assert "warning: the schedule gives the student 32 optimizer steps for its dense tasks (segmentation, depth)" in out
    assert "task weights (uncertainty): learned, each from 1" in out


def test_inspect_and_the_build_say_over_how_many_steps_initial_loss_averages(world, tmp_path, capsys):
    args = ["--set", "train.samples_per_epoch=64", "--set", "train.batch_size=4", "--set", "train.epochs=1"]
    args += ["--set", "amalgamation.task_weights=initial_loss"]
    assert main(["inspect", str(world), *args]) == 0
    said = "task weights (initial_loss): each term divided by its mean loss over its first 16 steps (one epoch)"
    assert said in capsys.readouterr().out
    assert main(["build", str(world), "--output", str(tmp_path / "run"), *args]) == 0
    assert said in capsys.readouterr().out
    train = json.loads((tmp_path / "run" / "report.json").read_text())["train"]
    assert train["task_weighting"] == "initial_loss"
    assert all(w > 0 and w != 1 for w in train["task_weights"].values())  # 1 / the first epoch's mean loss


def _rates(cfg: TrainConfig, steps: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, cfg, steps)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def test_warmup_rises_linearly_then_follows_the_schedule():
    steps = 100  # 10 epochs of 10 steps; one epoch of warm-up = 10 steps
    plain = _rates(TrainConfig(epochs=10), steps)
    warm = _rates(TrainConfig(epochs=10, warmup_epochs=1), steps)
    assert warm[0] == pytest.approx(0.01)
    assert warm[5] == pytest.approx(plain[5] * (0.01 + 0.99 * 5 / 10))
    assert warm[10:] == pytest.approx(plain[10:])  # the cosine counts from step 0, not from the warm-up's end
    assert plain[0] == 1.0 and plain[50] == pytest.approx(0.5)


def test_step_schedule_with_warmup_still_divides_by_ten_each_third():
    warm = _rates(TrainConfig(epochs=3, schedule="step", warmup_epochs=0.5), 30)
    assert warm[0] == pytest.approx(0.01) and warm[4] == pytest.approx(0.01 + 0.99 * 4 / 5)
    assert warm[9] == pytest.approx(1.0) and warm[10] == pytest.approx(0.1) and warm[29] == pytest.approx(0.01)
    assert isinstance(
        build_scheduler(
            torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), TrainConfig(schedule="step"), 30
        ),
        torch.optim.lr_scheduler.StepLR,
    )


def test_the_schedule_line_says_the_warmup_steps():
    cfg = TrainConfig(epochs=4, batch_size=32, samples_per_epoch=3200, warmup_epochs=1)
    assert schedule_lines(cfg, None, [])[0] == "schedule: 4 epochs of 3,200 images, 400 steps (the first 100 warm up)"


@pytest.mark.parametrize("student_type", ["branched", "compact"])
def test_encoder_lr_scale_puts_every_encoder_stage_in_a_slower_group(student_type):
    from amalgam.students import StudentSpec, build_student
    from amalgam.training.optim import build_optimizer, parameter_groups

    spec = StudentSpec(
        type=student_type,
        encoder="resnet18",
        heads={"classification": 3, "segmentation": 4},
        branch_at={"classification": 4, "segmentation": 2} if student_type == "branched" else 0,
        decoder_channels=[8, 8, 8, 8, 8],
    )
    student = build_student(spec)
    extra = [torch.nn.Parameter(torch.zeros(2))]  # e.g. the objective's learned task weights
    cfg = TrainConfig(lr=1e-2, encoder_lr_scale=0.25, warmup_epochs=1, epochs=2)
    opt = build_optimizer(parameter_groups(student, extra, cfg), cfg)
    fast, slow = opt.param_groups
    encoder = {id(p) for m in student.encoder_modules() for p in m.parameters()}
    assert {id(p) for p in slow["params"]} == encoder and len(encoder) > 0
    by_name = {id(p) for n, p in student.named_parameters() if n.split(".")[0] in ("trunk", "branches", "encoder")}
    assert encoder == by_name  # every encoder stage, the tasks' own copies too; no decoder or head
    assert all(id(p) not in encoder for p in fast["params"]) and any(p is extra[0] for p in fast["params"])
    assert len(fast["params"]) + len(slow["params"]) == len(list(student.parameters())) + 1
    assert (fast["lr"], slow["lr"]) == (1e-2, pytest.approx(2.5e-3))  # train_log.csv's lr is group 0's
    sched = build_scheduler(opt, cfg, 10)  # warm-up and schedule scale both groups alike
    for _ in range(3):
        opt.step(), sched.step()
    assert slow["lr"] == pytest.approx(0.25 * fast["lr"]) and fast["lr"] < 1e-2
    assert len(parameter_groups(student, extra, TrainConfig(lr=1e-2))) == 1


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_the_optimizer_is_fused_on_the_cpu_and_steps_as_torchs_plain_loop_does(optimizer):
    # the quickstart student's AdamW step took 5.2 ms a step on one CPU thread, 1.6 fused
    from amalgam.training.optim import build_optimizer

    cfg = TrainConfig(lr=1e-2, optimizer=optimizer, weight_decay=1e-2)
    torch.manual_seed(0)
    fused, plain = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    plain.load_state_dict(fused.state_dict())
    opt = build_optimizer(fused.parameters(), cfg)
    assert opt.defaults["fused"] is True
    kind = torch.optim.SGD if optimizer == "sgd" else torch.optim.AdamW
    extra = {"momentum": cfg.momentum} if optimizer == "sgd" else {}
    reference = kind(plain.parameters(), lr=1e-2, weight_decay=1e-2, foreach=False, **extra)
    x = torch.randn(8, 4)
    for model, o in ((fused, opt), (plain, reference)):
        for _ in range(3):
            o.zero_grad()
            model(x).square().sum().backward()
            o.step()
    for a, b in zip(fused.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b)


def test_the_schedule_line_says_the_encoder_rate():
    cfg = TrainConfig(epochs=1, samples_per_epoch=64, batch_size=32, lr=4e-3, encoder_lr_scale=0.3)
    assert schedule_lines(cfg, None, [])[2] == "  the student's encoder stages learn at 0.3 x train.lr (0.0012)"


def test_a_build_trains_the_encoder_in_its_own_group(world, tmp_path, monkeypatch):
    from amalgam.training import trainer

    made = []
    real = trainer.build_optimizer
    monkeypatch.setattr(trainer, "build_optimizer", lambda groups, cfg: made.append(real(groups, cfg)) or made[-1])
    args = ["build", str(world), "--output", str(tmp_path / "run"), "--quiet", "--set", "train.epochs=1"]
    assert main(args + ["--set", "train.samples_per_epoch=8", "--set", "train.encoder_lr_scale=0.5"]) == 0
    (fast, slow), lr = made[0].param_groups, made[0].defaults["lr"]
    assert slow["initial_lr"] == pytest.approx(0.5 * lr) and fast["initial_lr"] == lr


def test_encoder_lr_scale_refuses_a_student_that_does_not_name_its_encoder():
    from amalgam.errors import RecipeError
    from amalgam.training.optim import parameter_groups

    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 2, 1))  # e.g. a plugin's student
    with pytest.raises(RecipeError, match="train.encoder_lr_scale: Sequential has no encoder_modules"):
        parameter_groups(plain, [], TrainConfig(encoder_lr_scale=0.5))
    assert len(parameter_groups(plain, [], TrainConfig())[0]["params"]) == 4  # at scale 1 nothing is asked


def test_fixed_task_weights_are_reported_as_given(world, tmp_path, capsys):
    import json

    out = tmp_path / "run"
    args = ["build", str(world), "--output", str(out), "--set", "train.epochs=1", "--set", "train.samples_per_epoch=8"]
    assert main(args + ["--set", "amalgamation.task_weights={segmentation: 2.5e-5, cls: 0.5}"]) == 0
    train = json.loads((out / "report.json").read_text())["train"]
    assert train["task_weighting"] == "fixed"
    # a teacher's name before its task's; a tiny weight keeps its figures (a starved term must not read 0)
    assert train["task_weights"] == {"cls": 0.5, "seg-a": 2.5e-5, "seg-b": 2.5e-5, "depth": 1.0}
    assert "task weights at the end (fixed): cls 0.5, seg-a 2.5e-05, seg-b 2.5e-05, depth 1" in capsys.readouterr().out
    assert "Task weights at the end (fixed): cls 0.5, seg-a 2.5e-05" in (out / "report.md").read_text()


def test_a_source_drawn_over_and_over_is_warned_about():
    # a trial: a one-image source took about 270 of an epoch's 400 draws without a word
    from amalgam.training.schedule import repeat_warnings

    train = TrainConfig(samples_per_epoch=400)
    (line,) = repeat_warnings(train, {"one": 1, "many": 1000}, {"one": 1.0, "many": 0.5})
    assert line.startswith("warning: data.sources.one: its 1 image take 267 of each epoch's 400 draws, each about 267")
    assert repeat_warnings(train, {"a": 400, "b": 400}, {"a": 1.0, "b": 1.0}) == []
