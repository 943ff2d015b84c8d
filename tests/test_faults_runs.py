"""Faults of run folders (audit 2): ``--force`` over a finished run, folders that cannot be written,
a file where the teacher cache needs a folder.

Every test here failed before its fix. A read-only folder is simulated (``os.access`` says no, or
the write raises PermissionError): the tests run as root, for whom chmod prevents nothing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_faults import one_error_line

from amalgam.cli import main
from amalgam.distill.cache_store import open_store
from amalgam.errors import AmalgamError
from amalgam.training import runlock
from amalgam.training.runlock import RunLock

TINY = ["--set", "train.epochs=1", "--set", "train.samples_per_epoch=8"]


def read_only(monkeypatch, *paths: Path) -> None:
    """``os.access`` answers that ``paths`` cannot be written (what it says to a user without the right)."""
    real = os.access
    denied = {Path(p).absolute() for p in paths}

    def access(path, mode, *args, **kwargs) -> bool:
        if mode & os.W_OK and Path(path).absolute() in denied:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def copy_of(run: Path, tmp_path: Path) -> Path:
    """A copy of the session's finished run that a test may change."""
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


# 3. --force over a finished run ------------------------------------------------------------------


def test_force_removes_the_finished_runs_outputs_and_says_it_overwrites(world, built_run, tmp_path, capsys):
    out = copy_of(built_run, tmp_path)
    assert main(["export", str(out), "--format", "torchscript", "--quiet"]) == 0
    shutil.copy(out / "checkpoint.pt", out / "checkpoint.prev.pt")  # as a run of 2 epochs leaves
    (out / "student-seg-a.onnx.json").write_text("{}")  # a per-task export of another format
    (out / "notes.txt").write_text("mine")  # not amalgam's: stays
    capsys.readouterr()
    assert main(["build", str(world), "--output", str(out), "--force", *TINY]) == 0
    printed = capsys.readouterr().out
    # 1 epoch writes no checkpoint.prev.pt; the student.ts of the old student would pass for the new one's
    gone = ["student.ts", "student.ts.json", "student-seg-a.onnx.json", "checkpoint.prev.pt"]
    assert [name for name in gone if (out / name).exists()] == []
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / ".lock").exists() and (out / "teacher_cache").is_dir()
    assert f"overwriting the finished run in {out} (--force): removed " in printed, printed
    assert "unfinished run" not in printed


def test_force_with_resume_keeps_the_checkpoint_it_resumes(world, built_run, tmp_path, capsys):
    out = copy_of(built_run, tmp_path)
    (out / "student.ts").write_bytes(b"stale")
    capsys.readouterr()
    assert main(["build", str(world), "--output", str(out), "--force", "--resume", *TINY]) == 0
    printed = capsys.readouterr().out
    assert not (out / "student.ts").exists()
    assert (out / "checkpoint.pt").exists() and (out / "student.pt").exists()
    assert "(--force): removed " in printed and "kept checkpoint.pt, train_log.csv for --resume" in printed, printed


# 5. folders that cannot be written ---------------------------------------------------------------


def test_a_read_only_output_folder_stops_in_one_line_before_the_teachers_load(world, tmp_path, monkeypatch, capsys):
    import amalgam.pipeline

    def no_plan(*args, **kwargs):
        raise AssertionError("the teachers were loaded for a run that cannot be written")

    monkeypatch.setattr(amalgam.pipeline, "build_plan", no_plan)
    (tmp_path / "ro").mkdir()
    read_only(monkeypatch, tmp_path / "ro")
    out = tmp_path / "ro" / "out"
    assert main(["build", str(world), "--output", str(out), *TINY]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"run folder {out} is not writable ({tmp_path / 'ro'} is not"), line
    assert not out.exists()


def test_a_run_folder_whose_write_is_refused_is_one_line(tmp_path, monkeypatch):
    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(runlock, "open", refused, raising=False)  # os.access said yes, the write says no
    with pytest.raises(AmalgamError, match=r"run folder .*/run is not writable \(Permission denied\)"):
        with RunLock(tmp_path / "run"):
            pass


@pytest.mark.parametrize("denied", ["folder", "file"])
def test_export_into_a_read_only_run_folder_is_one_line(built_run, tmp_path, monkeypatch, capsys, denied):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(built_run / "student.pt", run / "student.pt")
    target = run / "student.ts"
    if denied == "file":
        target.write_bytes(b"an older export")
    read_only(monkeypatch, run if denied == "folder" else target)
    assert main(["export", str(run), "--format", "torchscript", "--quiet"]) == 2
    line = one_error_line(capsys)
    assert f"{run if denied == 'folder' else target} is not writable" in line, line
    assert not (run / "student.ts.json").exists()


def test_export_output_in_a_new_folder_is_made(built_run, tmp_path):
    target = tmp_path / "new" / "deep" / "s.ts"
    assert main(["export", str(built_run), "--format", "torchscript", "--output", str(target), "--quiet"]) == 0
    assert target.is_file() and Path(str(target) + ".json").is_file()


# 9. a file where a teacher-cache folder should be ------------------------------------------------


def test_a_file_where_a_teachers_cache_folder_should_be_is_one_line(world, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "teacher_cache").mkdir(parents=True)
    (out / "teacher_cache" / "depth").write_text("x")
    assert main(["build", str(world), "--output", str(out), "--quiet", *TINY]) == 2
    line = one_error_line(capsys)
    expected = f"teacher cache 'depth': {out / 'teacher_cache' / 'depth'} is a file where the cache needs a folder"
    assert line.startswith(expected) and "move or delete it" in line, line


def test_a_file_named_teacher_cache_is_named(tmp_path):
    (tmp_path / "teacher_cache").write_text("x")
    with pytest.raises(AmalgamError, match=r"'seg-a': .*/teacher_cache is a file where the cache needs a folder"):
        open_store(
            tmp_path / "teacher_cache" / "seg-a", {}, 2, (3,), None, {0: 0}, False, "teacher cache 'seg-a'", print
        )


KILLED_BUILD = """
import os, sys
import torch
from torch.utils.data import DataLoader
from amalgam.training.loader import _worker_init
from amalgam.training.runlock import RunLock

lock = RunLock(sys.argv[1]).__enter__()
loader = DataLoader(list(range(64)), batch_size=1, num_workers=1, persistent_workers=True, worker_init_fn=_worker_init)
next(iter(loader))  # a worker runs, forked while the lock is held
print("held", flush=True)
os._exit(9)  # as SIGKILL: no cleanup, the worker left behind for seconds
"""


def test_a_killed_builds_lock_is_free_at_once_though_its_worker_lingers(tmp_path):
    # a trial: right after kill -9 the orphaned DataLoader worker still held the flock: a requeued --resume was
    # refused naming the dead build
    import subprocess
    import sys

    script = tmp_path / "killed.py"
    script.write_text(KILLED_BUILD)
    log = tmp_path / "log"
    with log.open("w") as out:  # not a pipe: the lingering worker would hold it, and run() wait for it
        done = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], stdout=out, stderr=out)
    assert done.returncode == 9 and "held" in log.read_text(), log.read_text()[-2000:]
    with RunLock(tmp_path / "run"):  # at once, while the orphaned worker may still run
        pass


def test_sigterm_outside_training_is_said_and_exits_143(world):
    # a trial: SIGTERM during the teacher checks or the final evaluation killed amalgam with no word (exit -15),
    # a build leaving a folder holding only its lock
    import signal
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "amalgam", "inspect", str(world)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    proc.stdout.readline()  # it has started checking
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "amalgam: interrupted (SIGTERM)" in err, (proc.returncode, err[-2000:])
