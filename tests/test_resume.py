"""--resume: a build killed with SIGKILL mid-epoch continues and ends where an uninterrupted one does."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from amalgam.cli import main

SETTINGS = ["--set", "train.epochs=3", "--set", "train.samples_per_epoch=48", "--set", "train.batch_size=4"]
SETTINGS += ["--set", "train.workers=0", "--quiet"]
# the killed build runs in a subprocess, where conftest's fp32 pin does not reach: both halves say it
SETTINGS += ["--set", "train.precision=fp32"]


def finished_epochs(run) -> int:
    path = run / "train_log.csv"
    if not path.exists():
        return 0
    try:
        with open(path) as f:
            return len(list(csv.DictReader(f)))
    except (OSError, csv.Error):
        return 0


@pytest.fixture(scope="module")
def whole(world, tmp_path_factory):
    """An uninterrupted run: what every interrupted-then-resumed run must end as."""
    out = tmp_path_factory.mktemp("resume") / "whole"
    assert main(["build", str(world), "--output", str(out), *SETTINGS]) == 0
    return out


def interrupt_in_epoch_2(world, out, sig: int) -> int:
    """Starts a build in a child process, sends it ``sig`` early in epoch 2; its exit code."""
    cmd = [sys.executable, "-m", "amalgam", "build", str(world), "--output", str(out), *SETTINGS]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 240
    while finished_epochs(out) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # into epoch 2
    proc.send_signal(sig)
    proc.wait()
    assert finished_epochs(out) == 1, "the signal should land in epoch 2"
    assert not (out / "report.json").exists()
    return proc.returncode


def assert_same_run(whole, resumed) -> None:
    a = json.loads((whole / "report.json").read_text())
    b = json.loads((resumed / "report.json").read_text())
    for x, y in zip(a["tasks"], b["tasks"]):
        assert y["student_value"] == pytest.approx(x["student_value"], rel=0.01), x["teacher"]
    # Timings differ, and so does the cache hit rate: teacher outputs cached before the kill stay on disk.
    volatile = ("seconds", "cache_hit_rate")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in volatile and not k.startswith("time_")} for r in rows]  # noqa: E731
    with open(whole / "train_log.csv") as f1, open(resumed / "train_log.csv") as f2:
        assert strip(list(csv.DictReader(f1))) == strip(list(csv.DictReader(f2)))


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(world, whole, tmp_path):
    killed = tmp_path / "killed"
    assert interrupt_in_epoch_2(world, killed, signal.SIGKILL) == -signal.SIGKILL
    assert main(["build", str(world), "--output", str(killed), *SETTINGS, "--resume"]) == 0
    assert_same_run(whole, killed)


def test_ctrl_c_saves_mid_epoch_and_resume_continues_from_that_step(world, whole, tmp_path):
    stopped = tmp_path / "stopped"
    assert interrupt_in_epoch_2(world, stopped, signal.SIGINT) == 130
    state = torch.load(stopped / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and state["partial"]["epoch"] == 2
    steps = state["partial"]["step"]
    assert 1 <= steps < 12, "stopped inside epoch 2 (12 steps of 4 images)"
    assert main(["build", str(world), "--output", str(stopped), *SETTINGS, "--resume"]) == 0
    assert_same_run(whole, stopped)


def test_resume_refuses_a_changed_recipe_or_a_missing_checkpoint(world, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["build", str(world), "--output", str(out), "--resume", "--quiet"]) == 2
    assert f"nothing to resume: no checkpoint {out}/checkpoint.pt" in capsys.readouterr().err
    short = ["--set", "train.epochs=1", "--set", "train.samples_per_epoch=8", "--quiet"]
    assert main(["build", str(world), "--output", str(out), *short]) == 0
    (out / "report.json").unlink()  # as if it had been killed during evaluation
    assert main(["build", str(world), "--output", str(out), *short, "--set", "train.lr=0.5", "--resume"]) == 2
    err = capsys.readouterr().err  # what it was and is, and what to do (a trial was told the key only)
    said = r"the recipe changed since \(keys: train\.lr \([0-9.e-]+ in the run, 0\.5 now\)\): set them back"
    assert re.search(said, err), err


def test_a_resume_may_change_runtime_settings_only(world, whole, tmp_path, capsys):
    # another machine: another eval batch, the student not channels_last; what it learns stays the same
    killed = tmp_path / "killed"
    interrupt_in_epoch_2(world, killed, signal.SIGKILL)
    runtime = ["--set", "train.student_channels_last=false", "--set", "train.eval_batch_size=7"]
    assert main(["build", str(world), "--output", str(killed), *SETTINGS, *runtime, "--resume"]) == 0
    err = capsys.readouterr().err
    said = "runtime settings (or their defaults) changed since (train.eval_batch_size, train.student_channels_last)"
    assert said in err, err
    a = json.loads((whole / "report.json").read_text())["tasks"]
    b = json.loads((killed / "report.json").read_text())["tasks"]
    assert [y["student_value"] for y in b] == pytest.approx([x["student_value"] for x in a], rel=0.01)
    killed_again = ["--set", "train.lr=0.5", "--set", "train.workers=1", "--set", "train.cache_max_gb=0.001"]
    (killed / "report.json").unlink()
    assert main(["build", str(world), "--output", str(killed), *SETTINGS, *killed_again, "--resume"]) == 2
    assert re.search(r"\(keys: train\.cache_max_gb \(.* now\), train\.lr \(.*0\.5 now\)\)", capsys.readouterr().err)


def test_resume_refuses_a_teacher_whose_checkpoint_changed_since(fresh_world, tmp_path, capsys):
    # the recipe is unchanged, so only the files' bytes can tell: the cache would quietly rebuild
    out = tmp_path / "run"
    short = ["--set", "train.epochs=1", "--set", "train.samples_per_epoch=8", "--quiet"]
    assert main(["build", str(fresh_world), "--output", str(out), *short]) == 0
    (out / "report.json").unlink()
    checkpoint = fresh_world.parent / "zoo" / "seg-a.pt"
    weights = torch.load(checkpoint, weights_only=True)
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}, checkpoint)
    assert main(["build", str(fresh_world), "--output", str(out), *short, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "teachers changed since the run started (seg-a: zoo/seg-a.pt changed)" in err, err
    torch.save(weights, checkpoint)  # the same bytes again: resumable
    assert main(["build", str(fresh_world), "--output", str(out), *short, "--resume"]) == 0


def test_a_checkpoint_from_before_a_new_recipe_key_still_resumes(world, tmp_path):
    out = tmp_path / "run"
    short = ["--set", "train.epochs=2", "--set", "train.samples_per_epoch=8", "--quiet"]
    assert main(["build", str(world), "--output", str(out), *short]) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["epoch"] = 1  # as if stopped after epoch 1 by an amalgam that had neither key yet
    del state["recipe"]["train"]["mixup"], state["recipe"]["train"]["compile"]
    torch.save(state, out / "checkpoint.pt")
    (out / "report.json").unlink()
    assert main(["build", str(world), "--output", str(out), *short, "--resume"]) == 0
    assert (out / "report.json").is_file()


def test_a_resumed_run_reports_the_pace_of_its_own_epochs(world, tmp_path, capsys):
    out = tmp_path / "run"
    short = ["--set", "train.epochs=3", "--set", "train.samples_per_epoch=8", "--set", "train.workers=0"]
    assert main(["build", str(world), "--output", str(out), *short, "--quiet"]) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["epoch"], state["seconds"] = 1, 1.0e6  # as if epoch 1 had been slowed to a crawl
    state["history"] = state["history"][:1]
    torch.save(state, out / "checkpoint.pt")
    (out / "report.json").unlink()
    capsys.readouterr()
    assert main(["build", str(world), "--output", str(out), *short, "--resume"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch 2/3 "))
    rate, eta = float(line.split(" img/s")[0].split()[-1]), float(line.split("eta ")[1].rstrip("s"))
    assert rate > 0.5 and eta < 1000, line  # the run's average would say 0.0 img/s and eta 500000s


def test_a_resumed_auto_student_keeps_the_checkpoints_rung(world, tmp_path, monkeypatch, capsys):
    from amalgam.distill import plan as plan_module

    out = tmp_path / "run"
    auto = [
        "--set",
        "student.encoder=auto",
        "--set",
        "student.decoder_channels=null",
        "--set",
        "student.budget.params=null",
    ]
    short = ["--set", "train.epochs=2", "--set", "train.samples_per_epoch=8", *auto]
    assert main(["build", str(world), "--output", str(out), *short, "--quiet"]) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["spec"]["encoder"] == "resnet18"  # no limit: the top rung
    state["epoch"], state["history"] = 1, state["history"][:1]
    torch.save(state, out / "checkpoint.pt")
    (out / "report.json").unlink()

    def another_rung(*args, **kwargs):  # as a latency budget measured again on a busier machine might
        raise AssertionError("a resume must not choose the rung again")

    monkeypatch.setattr(plan_module, "choose_encoder", another_rung)
    assert main(["build", str(world), "--output", str(out), *short, "--resume"]) == 0
    assert (
        "resume: student.encoder auto keeps the checkpoint's resnet18 [128, 64, 32, 16, 16]" in capsys.readouterr().out
    )
    report = json.loads((out / "report.json").read_text())
    assert report["encoder_choice"]["encoder"] == "resnet18"


def test_resume_refuses_a_checkpoint_of_another_student(world, tmp_path, capsys):
    out = tmp_path / "run"
    short = ["--set", "train.epochs=2", "--set", "train.samples_per_epoch=8", "--quiet"]
    assert main(["build", str(world), "--output", str(out), *short]) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["epoch"], state["spec"]["decoder_channels"] = 1, [1, 2, 3, 4, 5]
    torch.save(state, out / "checkpoint.pt")
    (out / "report.json").unlink()
    assert main(["build", str(world), "--output", str(out), *short, "--resume"]) == 2
    assert (
        "cannot resume: the checkpoint holds another student (differs in decoder_channels)" in capsys.readouterr().err
    )


def test_runtime_changes_split_what_a_resume_may_change_from_the_rest():
    from amalgam.config.schema import runtime_changes

    changed = ["train.workers", "train.lr", "train.compile", "train.cache_max_gb", "train.precision"]
    assert runtime_changes(changed) == (
        ["train.workers", "train.compile", "train.precision"],
        ["train.lr", "train.cache_max_gb"],
    )
    # a peers build has no compiled student: that change is neither said nor refused
    assert runtime_changes(changed, peers=True) == (["train.workers"], ["train.lr", "train.cache_max_gb"])


def test_a_run_with_a_slower_encoder_resumes_with_both_groups_and_refuses_another_scale(world, tmp_path, capsys):
    out = tmp_path / "run"
    short = ["--set", "train.epochs=1", "--set", "train.samples_per_epoch=8", "--quiet"]
    slow = ["--set", "train.encoder_lr_scale=0.5"]
    assert main(["build", str(world), "--output", str(out), *short, *slow]) == 0
    groups = torch.load(out / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"]
    assert [g["initial_lr"] for g in groups] == pytest.approx([1e-3, 5e-4])  # the world's lr, and half of it
    (out / "report.json").unlink()  # as if it had been killed during evaluation
    assert (
        main(["build", str(world), "--output", str(out), *short, "--set", "train.encoder_lr_scale=0.25", "--resume"])
        == 2
    )
    said = "the recipe changed since (keys: train.encoder_lr_scale (0.5 in the run, 0.25 now))"
    assert said in capsys.readouterr().err
    assert main(["build", str(world), "--output", str(out), *short, *slow, "--resume"]) == 0
