"""The schedule's optimizer steps and the warning for dense students trained too briefly."""

from __future__ import annotations

from amalgam.cli import main
from amalgam.config.schema import TrainConfig
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
