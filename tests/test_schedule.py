"""The schedule's optimizer steps and the warning for dense students trained too briefly."""

from __future__ import annotations

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
