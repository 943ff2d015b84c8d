"""Faults a demanding user meets (issue #17): each numbered item of the issue, tried on purpose.

Every test here failed on the code before the fix. The tiny world (tests/world.py) keeps each
one to a second or two; builds use 1 epoch of 8 images unless a test needs more.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_data import build, save_rgb
from test_teachers import teacher_of
from torch import nn

import amalgam.io as io_module
from amalgam.cli import main
from amalgam.config.recipe import SourceConfig
from amalgam.data import build_image_set
from amalgam.data.views import resize
from amalgam.errors import AmalgamError
from amalgam.teachers.checks import check_teacher_output

TINY = ["--set", "train.epochs=1", "--set", "train.samples_per_epoch=8", "--quiet"]


def on_grid(out: torch.Tensor) -> torch.Tensor:
    """A teacher's dense answer on the student's 32x32 grid, as the cache stores it (see views.py)."""
    return resize(out, (32, 32))


def one_error_line(capsys) -> str:
    """The single ``amalgam: error:`` line the last command printed (fails on a traceback or more lines)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("amalgam: error: "), "\n".join(err[-20:])
    return err[0][len("amalgam: error: ") :]


def edit_recipe(path: Path, edit) -> None:
    raw = yaml.safe_load(path.read_text())
    edit(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


# 10. what a recipe may execute -------------------------------------------------------------------


def test_a_factory_outside_the_recipe_folder_is_refused_before_it_runs(fresh_world, tmp_path, capsys):
    marker = tmp_path / "ran"

    def evil(raw):
        raw["teachers"]["cls"]["model"] = {"from": "python", "factory": "os:system", "command": f"touch {marker}"}

    edit_recipe(fresh_world, evil)
    assert main(["inspect", str(fresh_world), "--no-data"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("teachers.cls.model.factory: module 'os' is not in the recipe's folder"), line
    assert not marker.exists()


def test_only_modules_beside_the_recipe_plugins_or_allowed_ones_run(fresh_world, tmp_path, monkeypatch, capsys):
    from amalgam.teachers.model_sources import build_model

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "faults_outside.py").write_text("from torch import nn\ndef make():\n    return nn.Linear(2, 2)\n")
    monkeypatch.syspath_prepend(str(elsewhere))  # importable, but not from the recipe's folder
    edit_recipe(fresh_world, lambda raw: raw["teachers"]["cls"]["model"].update(factory="faults_outside:make"))
    assert main(["inspect", str(fresh_world), "--no-data"]) == 2
    assert "module 'faults_outside' is not in the recipe's folder" in one_error_line(capsys)
    monkeypatch.setenv("AMALGAM_ALLOW_MODULES", "numpy, faults_outside")
    model = build_model("python", {"factory": "faults_outside:make"}, fresh_world.parent)
    assert model.in_features == 2


def test_readme_says_a_recipe_naming_a_factory_is_code():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "a recipe that names a factory is code" in readme.lower()


def test_readme_nothing_lost_names_tests_that_exist():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("* **Nothing lost.**") : readme.index("* **Bad input**")]
    named = set(re.findall(r"`(test_\w+)`", section))
    assert len(named) >= 12
    assert named <= {name for name in globals() if name.startswith("test_")}, named - set(globals())
    # tests of other files are named with their file; the fault files' tests are all named
    for path, name in re.findall(r"`(tests/\w+\.py)::(test_\w+)`", section):
        assert f"def {name}(" in (Path(__file__).resolve().parents[1] / path).read_text(), (path, name)
    for path in ("tests/test_faults_data.py", "tests/test_faults_teachers.py"):
        text = (Path(__file__).resolve().parents[1] / path).read_text()
        assert set(re.findall(r"^def (test_\w+)\(", text, re.M)) == set(
            re.findall(rf"`{re.escape(path)}::(test_\w+)`", section)
        ), path


# 11. YAML alias bombs -------------------------------------------------------------------------------


def alias_bomb(levels: int = 9) -> str:
    """A flow list of anchored lists, each holding the previous one 9 times: 9^levels strings expanded."""
    items = ["&a0 [x, x, x, x, x, x, x, x, x]"]
    items += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "[" + ", ".join(items) + "]"


def test_an_alias_bomb_is_refused_quickly(fresh_world, capsys):
    edit_recipe(fresh_world, lambda raw: raw["teachers"]["cls"]["model"].update(bomb="BOMB"))
    fresh_world.write_text(fresh_world.read_text().replace("BOMB", alias_bomb()))  # 9^9 = 387M strings
    start = time.perf_counter()
    assert main(["inspect", str(fresh_world), "--no-data"]) == 2
    assert time.perf_counter() - start < 5
    assert "expands to more than 100,000 nodes" in one_error_line(capsys)


def test_a_bomb_in_an_override_and_a_recursive_alias_are_refused(fresh_world, capsys):
    assert main(["inspect", str(fresh_world), "--no-data", "--set", f"train.bomb={alias_bomb(7)}"]) == 2
    assert "expands to more than" in one_error_line(capsys)
    fresh_world.write_text(fresh_world.read_text() + "loop: &loop [*loop]\n")
    assert main(["inspect", str(fresh_world), "--no-data"]) == 2
    assert "recursive YAML alias" in one_error_line(capsys)


# 9. one line instead of a traceback --------------------------------------------------------------


def test_a_factory_returning_a_non_module_gives_one_line(fresh_world, capsys):
    models = fresh_world.parent / "models.py"
    models.write_text(models.read_text() + "\n\ndef not_a_model(num_classes, in_channels=3):\n    return 'resnet'\n")
    edit_recipe(fresh_world, lambda raw: raw["teachers"]["cls"]["model"].update(factory="models:not_a_model"))
    assert main(["inspect", str(fresh_world), "--no-data"]) == 2
    line = one_error_line(capsys)
    assert "'models:not_a_model' returned a str, not a torch.nn.Module" in line, line


# 1, 2, 4, 9. the teacher cache: keyed on what determines the outputs, damage found and repaired ------


def scene_batch(plan, count):
    sid = plan.sources.names.index("scenes")
    start = plan.sources.offsets[sid]
    samples = [plan.sources[i] for i in range(start, start + count)]
    images = torch.stack([s["image"] for s in samples])
    return images, torch.tensor([s["source"] for s in samples]), torch.tensor([s["index"] for s in samples])


def fill(plan, root, name, count=4, log=None, shared=False):
    """Opens the cache under ``root``, draws ``count`` scenes for teacher ``name``; (cache, targets)."""
    from amalgam.distill.cache import TeacherCache

    cache = TeacherCache(root, plan, log or (lambda msg: None), shared=shared)
    images, source, index = scene_batch(plan, count)
    out, _ = cache.targets(images, source, index, None)(name, torch.arange(count))
    cache.flush()
    return cache, out, images


def plan_of(recipe_path):
    from amalgam.config.recipe import load_recipe
    from amalgam.distill.plan import build_plan

    return build_plan(load_recipe(recipe_path), log=lambda msg: None)


def test_an_edited_factory_invalidates_the_cache(fresh_world, tmp_path):
    root = tmp_path / "cache"
    fill(plan_of(fresh_world), root, "seg-a")
    models = fresh_world.parent / "models.py"
    models.write_text(models.read_text().replace("y = self.head(self.body(x))", "y = 3 * self.head(self.body(x))"))
    plan = plan_of(fresh_world)  # same checkpoint, new code
    lines = []
    cache, out, images = fill(plan, root, "seg-a", log=lines.append)
    assert any("seg-a': rebuilding it: what its outputs depend on changed (code)" in line for line in lines), lines
    torch.testing.assert_close(out, on_grid(plan.teachers["seg-a"](images)), atol=2e-2, rtol=2e-3)


def test_images_rewritten_under_the_same_names_invalidate_the_cache(fresh_world, tmp_path):
    root = tmp_path / "cache"
    plan = plan_of(fresh_world)
    fill(plan, root, "depth")
    first = sorted((fresh_world.parent / "scenes" / "train" / "images").glob("*.png"))[0]
    Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8)).save(first)
    lines = []
    fill(plan_of(fresh_world), root, "depth", log=lines.append)
    assert any("depth': rebuilding it: what its outputs depend on changed (sources)" in line for line in lines), lines


def damage_cut(folder):
    path = folder / "outputs.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage_reshape(folder):
    old = np.load(folder / "outputs.npy")
    np.save(folder / "outputs.npy", old.reshape(old.shape[0], -1))


def damage_meta(folder):
    path = folder / "meta.json"
    path.write_text(path.read_text()[:40])


def damage_filled(folder):
    path = folder / "filled.npy"
    path.write_bytes(path.read_bytes()[:100])


def damage_deleted(folder):
    (folder / "outputs.npy").unlink()


DAMAGE = {
    "outputs cut in half": (damage_cut, "outputs.npy is damaged"),
    "outputs of another shape": (damage_reshape, "outputs.npy holds float16"),
    "torn meta.json": (damage_meta, "meta.json is unreadable"),
    "truncated filled.npy": (damage_filled, "filled.npy is damaged"),
    "deleted outputs.npy": (damage_deleted, "outputs.npy is missing"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_cache_file_is_found_and_that_teacher_rebuilt(case, world_plan, tmp_path):
    damage, why = DAMAGE[case]
    root = tmp_path / "cache"
    fill(world_plan, root, "seg-b")
    damage(root / "seg-b")
    lines = []
    cache, out, images = fill(world_plan, root, "seg-b", log=lines.append)
    assert [line for line in lines if "rebuilding" in line] == [f"teacher cache 'seg-b': rebuilding it: {why}"] or (
        why in " ".join(lines)
    ), lines
    assert sum("rebuilding" in line for line in lines) == 1, lines  # only the damaged teacher
    torch.testing.assert_close(out, on_grid(world_plan.teachers["seg-b"](images)), atol=2e-2, rtol=2e-3)


def test_zeroed_rows_fail_their_checksum_and_are_recomputed(world_plan, tmp_path):
    root = tmp_path / "cache"
    fill(world_plan, root, "depth")
    path = root / "depth" / "outputs.npy"
    data = bytearray(path.read_bytes())
    data[-len(data) // 2 :] = bytes(len(data) // 2)  # zero the second half of the rows, header intact
    data[200:1200] = bytes(1000)  # and a stretch of the first row
    path.write_bytes(bytes(data))
    lines = []
    cache, out, images = fill(world_plan, root, "depth", log=lines.append)
    assert any("rows failed their checksum" in line for line in lines), lines
    torch.testing.assert_close(out, on_grid(world_plan.teachers["depth"](images)), atol=2e-2, rtol=2e-3)


def test_outputs_beyond_fp16_are_kept_in_fp32(world_plan, tmp_path, monkeypatch):
    teacher = world_plan.teachers["depth"]
    real = teacher.forward
    monkeypatch.setattr(teacher, "forward", lambda x: real(x) * 3e5)  # metres of a far-away planet: > 65504
    root = tmp_path / "cache"
    lines = []
    cache, out, images = fill(world_plan, root, "depth", log=lines.append)
    assert torch.isfinite(out).all() and out.max() > 65504
    torch.testing.assert_close(out, on_grid(teacher(images)), rtol=1e-6, atol=0)
    assert any("beyond fp16's 65504: stored as fp32" in line for line in lines), lines
    again, later, _ = fill(world_plan, root, "depth", count=4)  # reopened: fp32, rows kept
    assert again.stores["depth"].outputs.dtype == np.float32 and int(again.stores["depth"].filled.sum()) == 4
    torch.testing.assert_close(later, out)


def test_a_store_several_processes_fill_keeps_fp16_and_leaves_rows_beyond_it_unstored(
    world_plan, tmp_path, monkeypatch
):
    # a trial under torchrun: each rank widened the store alone, swapping the file under the other; 13 rows
    # passed their checksum holding zeros, and a later build trained on them without a word
    teacher = world_plan.teachers["depth"]
    real = teacher.forward
    monkeypatch.setattr(teacher, "forward", lambda x: real(x) * 3e5)
    root, lines = tmp_path / "cache", []
    cache, out, images = fill(world_plan, root, "depth", log=lines.append, shared=True)
    torch.testing.assert_close(out, on_grid(teacher(images)), rtol=1e-6, atol=0)  # the answers, right
    store = cache.stores["depth"]
    assert store.outputs.dtype == np.float16 and int(store.filled.sum()) == 0  # nothing widened, nothing stored
    assert sum("several processes fill the store: those rows are computed each time" in line for line in lines) == 1


# 8. disk full -------------------------------------------------------------------------------------


def test_a_cache_that_cannot_fit_on_the_disk_is_one_line_before_filling(fresh_world, tmp_path, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    out = tmp_path / "run"
    assert main(["build", str(fresh_world), "--output", str(out), *TINY]) == 2
    line = one_error_line(capsys)
    assert "disk full: the cache needs" in line and str(out / "teacher_cache") in line and "1,000 are free" in line


def test_a_real_file_size_limit_is_said_as_one_for_the_student_file(tmp_path):
    # torch's writer says only "unexpected pos" under ulimit -f: it read "disk full" with 33 GB free
    import subprocess
    import sys

    script = (
        "import torch, sys; from pathlib import Path; from amalgam.io import atomic_save; from amalgam.errors import"
        " AmalgamError\ntry:\n    atomic_save({'w': torch.zeros(1 << 20)}, Path(sys.argv[1]))\nexcept AmalgamError"
        " as exc:\n    print(exc)"
    )
    cmd = f'ulimit -f 1024 && {sys.executable} -c "$SCRIPT" {tmp_path / "student.pt"}'
    done = subprocess.run(["bash", "-c", cmd], env={**os.environ, "SCRIPT": script}, capture_output=True, text=True)
    assert "file too large: this process may write files of 1,048,576 bytes at most (ulimit -f)" in done.stdout, (
        done.stdout + done.stderr
    )


def test_a_cache_file_past_a_file_size_limit_is_one_line(fresh_world, tmp_path, monkeypatch, capsys):
    # ulimit -f (or a FAT32 drive's 4 GiB): a raw "OSError: [Errno 27] File too large" traceback
    import errno

    import amalgam.distill.cache_store as store

    def too_large(*args, **kwargs):
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(store.np.lib.format, "open_memmap", too_large)
    assert main(["build", str(fresh_world), "--output", str(tmp_path / "run"), *TINY]) == 2
    line = one_error_line(capsys)
    assert line.startswith("teacher cache '") and "file too large for the file system" in line, line
    assert "FAT32 holds 4 GiB a file at most" in line and "train.cache_teachers: false" in line


# 3, 7, 8, 9: checkpoints and signals -------------------------------------------------------------

TWO_EPOCHS = ["--set", "train.epochs=2", "--set", "train.samples_per_epoch=8", "--set", "train.batch_size=4"]
TWO_EPOCHS += ["--set", "train.workers=0", "--quiet"]


def train_log(run) -> list[dict]:
    import csv

    volatile = ("seconds", "cache_hit_rate")
    with open(run / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if k not in volatile and not k.startswith("time_")} for r in rows]


@pytest.fixture(scope="module")
def whole2(world, tmp_path_factory):
    """An uninterrupted 2-epoch build (2 steps an epoch) of the session world."""
    out = tmp_path_factory.mktemp("faults") / "whole"
    assert main(["build", str(world), "--output", str(out), *TWO_EPOCHS]) == 0
    return out


def test_a_crc_broken_checkpoint_is_refused_and_the_previous_one_resumed(world, whole2, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(whole2, run)
    assert (run / "checkpoint.prev.pt").is_file()  # the epoch-1 checkpoint, kept
    (run / "report.json").unlink()  # as if killed during evaluation
    path = run / "checkpoint.pt"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 65536] = bytes(65536)  # same size, broken CRC
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["build", str(world), "--output", str(run), *TWO_EPOCHS, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "fails its CRC check: resuming from the previous one" in err and "after epoch 1" in err, err
    assert train_log(run) == train_log(whole2)


def test_sigterm_saves_mid_epoch_exits_143_and_resume_matches(world, whole2, tmp_path, monkeypatch):
    import os
    import signal

    from amalgam.training.trainer import Trainer

    real, calls = Trainer.step, []

    def step(self, batch):
        calls.append(1)
        if len(calls) == 3:  # epoch 2, step 1: what a scheduler's SIGTERM looks like to the loop
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, batch)

    def unhandled(signum, frame):  # instead of the default action, which would end pytest itself
        raise AssertionError("SIGTERM reached the process's default handler")

    monkeypatch.setattr(Trainer, "step", step)
    previous = signal.signal(signal.SIGTERM, unhandled)
    run = tmp_path / "run"
    try:
        assert main(["build", str(world), "--output", str(run), *TWO_EPOCHS]) == 143
    finally:
        signal.signal(signal.SIGTERM, previous)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and state["partial"] == {**state["partial"], "epoch": 2, "step": 1}
    monkeypatch.setattr(Trainer, "step", real)
    assert main(["build", str(world), "--output", str(run), *TWO_EPOCHS, "--resume"]) == 0
    assert train_log(run) == train_log(whole2)


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_old_one(world, tmp_path, monkeypatch, capsys):
    import amalgam.training.checkpoint as ckpt

    real, calls = torch.save, []
    run = tmp_path / "run"
    real_usage = shutil.disk_usage

    def save(obj, path):
        calls.append(1)
        if len(calls) == 2:  # the epoch-2 checkpoint: half written, then the disk is full
            Path(path).write_bytes(b"PK" + bytes(1000))
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 1024: file write failed")
        return real(obj, path)

    def usage(path):  # the run folder's disk as full as torch says once it failed (where asked to be)
        found = real_usage(path)
        return found._replace(free=1000) if full and len(calls) >= 2 and Path(path) == run else found

    monkeypatch.setattr(ckpt.torch, "save", save)
    monkeypatch.setattr(io_module.shutil, "disk_usage", usage)
    full = True
    assert main(["build", str(world), "--output", str(run), *TWO_EPOCHS]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"cannot write {run / 'checkpoint.pt'} (about "), line
    assert "): disk full (1,000 bytes free)" in line and "intact" in line, line
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not list(run.glob(".checkpoint.pt.*"))
    full, calls[:] = False, []  # the same failure under a file-size limit (ulimit -f): not a full disk
    monkeypatch.setattr(io_module, "file_size_limit", lambda: 1000)
    assert main(["build", str(world), "--output", str(tmp_path / "limited"), *TWO_EPOCHS]) == 2
    assert "file too large: this process may write files of 1,000 bytes at most (ulimit -f)" in one_error_line(capsys)
    monkeypatch.setattr(io_module, "file_size_limit", lambda: None)
    monkeypatch.setattr(ckpt.torch, "save", real)
    (run / ".checkpoint.pt.k1ll3d").write_bytes(b"PK")  # what a SIGKILL mid-write leaves
    assert main(["build", str(world), "--output", str(run), *TWO_EPOCHS, "--resume"]) == 0
    assert not list(run.glob(".checkpoint.pt.*"))


def test_a_full_disk_while_saving_the_student_is_one_line_and_resume_finishes(world, tmp_path, monkeypatch, capsys):
    real = torch.save

    def save(obj, path):
        if ".student.pt." in str(path):  # the training's checkpoints fit; the student file does not
            Path(path).write_bytes(b"PK" + bytes(100))
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64: file write failed")
        return real(obj, path)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    assert main(["build", str(world), "--output", str(run), *TWO_EPOCHS]) == 2
    line = one_error_line(capsys)
    # with the way on (a trial had none) and without the zip writer's internals
    assert line.startswith(f"disk full while writing the run's outputs into {run} (") and line.endswith("--resume"), (
        line
    )
    assert f"cannot write {run / 'student.pt'}: disk full (" in line and "enforce fail" not in line, line
    assert not (run / "student.pt").exists() and not list(run.glob(".student.pt.*"))
    monkeypatch.setattr(torch, "save", real)  # space freed: the trained checkpoint finishes the run
    assert main(["build", str(world), "--output", str(run), *TWO_EPOCHS, "--resume"]) == 0
    assert (run / "student.pt").is_file()


def test_a_full_disk_while_drawing_the_report_is_one_line_and_the_run_stays_unfinished(
    world, tmp_path, monkeypatch, capsys
):
    # a traceback, a truncated samples.png and a report.json that made the run "finished": --resume refused
    import errno

    import amalgam.pipeline as pipeline

    real = pipeline.render

    def render(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeline, "render", render)
    run = tmp_path / "run"
    assert main(["build", str(world), "--output", str(run), *TWO_EPOCHS]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"disk full while writing the run's outputs into {run} (") and "--resume" in line, line
    assert not (run / "report.json").exists() and (run / "checkpoint.pt").is_file()
    monkeypatch.setattr(pipeline, "render", real)
    assert main(["build", str(world), "--output", str(run), *TWO_EPOCHS, "--resume"]) == 0
    assert (run / "report.json").is_file() and (run / "report.html").is_file()


def test_a_picture_that_fails_to_draw_is_one_line_and_the_run_finishes(world, tmp_path, monkeypatch, capsys):
    # the figures are drawn before report.json now: a plotting bug must not cost the report
    import amalgam.evaluation.visual as visual

    def broken(*args, **kwargs):
        raise ValueError("a plotting bug")

    monkeypatch.setattr(visual, "plot_curves", broken)
    run = tmp_path / "run"
    assert main(["build", str(world), "--output", str(run), *TWO_EPOCHS[:-1]]) == 0
    assert "curves.png not drawn: " in (out := capsys.readouterr().out) and "a plotting bug" in out, out
    assert (run / "report.json").is_file() and not (run / "curves.png").exists()


def test_torchs_unexpected_pos_error_is_read_as_a_full_disk():
    from amalgam.io import is_disk_full

    assert is_disk_full(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3788544 vs 3788440"))
    assert not is_disk_full(RuntimeError("Expected all tensors to be on the same device"))


def bare_tensor(run, whole):
    torch.save(torch.zeros(3), run / "checkpoint.pt")


def zero_bytes(run, whole):
    (run / "checkpoint.pt").write_bytes(b"")


def no_objective(run, whole):
    state = torch.load(whole / "checkpoint.pt", weights_only=True)
    del state["objective"]
    torch.save(state, run / "checkpoint.pt")


CHECKPOINTS = {
    "zero-byte checkpoint": (zero_bytes, "is damaged: it is empty (0 bytes)"),
    "checkpoint without objective": (no_objective, "is not an amalgam training state: no objective"),
    "bare-tensor checkpoint": (bare_tensor, "holds a Tensor, not an amalgam training state"),
}


@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_a_broken_checkpoint_is_one_line(case, world, whole2, tmp_path, capsys):
    make, expected = CHECKPOINTS[case]
    run = tmp_path / "run"
    run.mkdir()
    make(run, whole2)
    assert main(["build", str(world), "--output", str(run), *TWO_EPOCHS, "--resume"]) == 2
    line = one_error_line(capsys)
    assert expected in line and str(run / "checkpoint.pt") in line, line


# 6. two builds, one run folder -----------------------------------------------------------------------


def test_a_second_build_into_a_locked_run_folder_is_refused_naming_the_holder(world, tmp_path, capsys):
    import os

    from amalgam.training.runlock import RunLock

    run = tmp_path / "run"
    with RunLock(run):  # another build holds it (flock: a second open file conflicts even in-process)
        assert main(["build", str(world), "--output", str(run), *TINY]) == 2
        line = one_error_line(capsys)
        assert line.startswith(f"{run} is in use by another build (pid {os.getpid()} on "), line
        assert not (run / "teacher_cache").exists()
    assert main(["build", str(world), "--output", str(run), *TINY]) == 0  # released: the next one runs


# 12. no run folder left by a run that fails at its first steps ----------------------------------


NAN_TEACHER = """

class NanDense(TinyDense):
    def forward(self, x):  # fine on the checks' 1-2 images, NaN on a training batch
        y = super().forward(x)
        return y * float("nan") if x.shape[0] > 2 else y


def nan_dense(out_channels):
    return NanDense(out_channels)
"""


def test_a_teacher_giving_nan_at_step_1_leaves_no_run_folder(fresh_world, tmp_path, capsys):
    models = fresh_world.parent / "models.py"
    models.write_text(models.read_text() + NAN_TEACHER)
    edit_recipe(fresh_world, lambda raw: raw["teachers"]["seg-a"]["model"].update(factory="models:nan_dense"))
    run = tmp_path / "run"
    more = ["--set", "train.samples_per_epoch=32", "--set", "train.batch_size=16"]  # all of >= 4 rows NaN stops
    assert main(["build", str(fresh_world), "--output", str(run), *TINY, *more]) == 2
    line = one_error_line(capsys)
    # the teacher's NaN targets are named as the teacher's, not read as a diverging student's loss
    assert re.match(r"epoch 1: teacher targets are NaN/inf on most rows \(seg-a on \d+ of \d+ rows\)", line), line
    assert not run.exists()


DIVERGED_TEACHER = """

class Diverged(TinyDense):
    def forward(self, x):  # NaN everywhere, the checks' images too
        return super().forward(x) * float("nan")


def diverged(out_channels):
    return Diverged(out_channels)
"""


def test_a_teacher_failing_on_one_of_the_checks_images_is_noted_not_stopped():
    # 4 NaN pixels of one image stopped the build as "0% of the output on a random batch is NaN or inf"
    from amalgam.teachers.checks import check_teacher_output

    class OddPatch(nn.Conv2d):
        def forward(self, x):
            out = super().forward(x)
            out[0, :, :2, :2] = float("nan")
            return out

    odd = teacher_of(OddPatch(3, 3, 1), task="segmentation", labels=["a", "b", "c"])
    check_teacher_output(odd, (16, 16))
    (note,) = [n for n in odd.notes if "NaN" in n]
    assert note.startswith("answered NaN or inf on 1 of 2 random images (12 of 6,144 values): training leaves")


def test_a_diverged_teacher_stops_at_the_teacher_check(fresh_world, capsys):
    models = fresh_world.parent / "models.py"
    models.write_text(models.read_text() + DIVERGED_TEACHER)
    edit_recipe(fresh_world, lambda raw: raw["teachers"]["seg-a"]["model"].update(factory="models:diverged"))
    assert main(["inspect", str(fresh_world), "--quiet", "--no-data"]) == 2
    line = one_error_line(capsys)
    assert re.match(r"teacher 'seg-a' \(segmentation\): ([\d,]+) of \1 values of its output on a random", line), line


# 5, 9. inputs read right, or refused with the file's name -----------------------------------------


def test_a_16_bit_grey_png_decodes_by_its_bit_depth(tmp_path):
    from amalgam.data.images import read_rgb, to_tensor

    path = tmp_path / "grey16.png"
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")  # stored 16-bit, not 8
    image = to_tensor(read_rgb(path))
    assert image.mean().item() == pytest.approx(0.5, abs=0.01)  # PIL's own convert gave 0.998
    assert image[:, 0, 0].tolist() == [0.0, 0.0, 0.0] and image[:, -1, -1].tolist() == [1.0, 1.0, 1.0]


def inspect_lines(recipe, capsys) -> tuple[int, list[str], list[str]]:
    code = main(["inspect", str(recipe)])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.strip().splitlines()


def val_maps(recipe, kind):
    return sorted((recipe.parent / "scenes" / "val" / kind).glob("*.png"))


def test_eval_labels_beyond_the_classes_are_counted_before_training(fresh_world, capsys):
    first = val_maps(fresh_world, "labels")[0]
    labels = np.array(Image.open(first))
    labels[:4, :] = 7  # 4 classes in classes.txt
    Image.fromarray(labels).save(first)
    code, out, err = inspect_lines(fresh_world, capsys)
    assert code == 0, err
    warning = [line for line in out if "label maps hold values beyond" in line]
    assert warning and "1 of 6 label maps hold values beyond the 4 classes (128 pixels, up to 7" in warning[0], out


def test_eval_sets_with_nothing_to_score_stop_before_training(fresh_world, capsys):
    for path in val_maps(fresh_world, "depth"):
        Image.fromarray(np.zeros((32, 32), dtype=np.uint16)).save(path)
    code, out, err = inspect_lines(fresh_world, capsys)
    assert code == 2 and len(err) == 1 and "every depth map holds no depth (all 0, NaN or infinite)" in err[0], err
    for path in val_maps(fresh_world, "labels"):
        Image.fromarray(np.full((32, 32), 255, dtype=np.uint8)).save(path)
    code, out, err = inspect_lines(fresh_world, capsys)
    assert code == 2 and len(err) == 1 and "no label pixel can be scored" in err[0], err


def test_some_all_zero_depth_maps_are_counted(fresh_world, capsys):
    Image.fromarray(np.zeros((32, 32), dtype=np.uint16)).save(val_maps(fresh_world, "depth")[2])
    code, out, err = inspect_lines(fresh_world, capsys)
    assert code == 0 and any("1 of 6 depth maps hold no depth (all 0, NaN or infinite;" in line for line in out), out


def test_infinite_depth_pixels_are_counted_as_no_depth_and_an_all_infinite_map_as_empty(fresh_world, capsys):
    # a trial: +inf pixels (sky) were scored as none, as documented, but the scan said neither them nor a map
    # of nothing else
    paths = val_maps(fresh_world, "depth")
    for path in paths[:2]:
        depth = np.full((32, 32), 2.5, np.float32)
        depth[:8] = np.inf if path == paths[0] else depth[:8]
        np.save(path.with_suffix(".npy"), np.full((32, 32), np.inf, np.float32) if path == paths[1] else depth)
        path.unlink()
    code, out, err = inspect_lines(fresh_world, capsys)
    assert code == 0, err
    assert any("1 of 6 depth maps hold no depth" in line for line in out), out
    assert any(re.search(r"of the pixels, .*are infinite", line) for line in out), out


def test_a_missing_label_png_is_found_when_the_eval_set_is_scanned(fresh_world, capsys):
    missing = val_maps(fresh_world, "labels")[3]
    missing.unlink()
    code, out, err = inspect_lines(fresh_world, capsys)
    assert code == 2 and len(err) == 1 and f"missing mask file {missing}" in err[0], err


def test_symlinked_folders_are_followed_once(fresh_world, tmp_path):
    from amalgam.data.images import list_images

    images = fresh_world.parent / "scenes" / "train" / "images"
    elsewhere = tmp_path / "more"
    elsewhere.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(elsewhere / f"m{i}.png")
    (images / "linked").symlink_to(elsewhere, target_is_directory=True)
    (images / "again").symlink_to(elsewhere, target_is_directory=True)  # the same folder twice
    (images / "loop").symlink_to(images, target_is_directory=True)  # a link loop
    found = list_images(images)
    assert len(found) == 12 + 3 and len({p.resolve() for p in found}) == 15


def png_header_only(path: Path, width: int, height: int) -> None:
    """A valid 1-bit grey PNG of ``width x height`` (all black): tiny on disk, huge in memory."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)
    pixels = zlib.compressobj(9)
    body = b"".join(pixels.compress(row) for _ in range(height)) + pixels.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_a_20000_by_20000_png_is_one_line_with_its_name(fresh_world, tmp_path, capsys):
    huge = fresh_world.parent / "scenes" / "train" / "images" / "huge.png"
    png_header_only(huge, 20000, 20000)
    run = tmp_path / "run"
    assert main(["build", str(fresh_world), "--output", str(run), *TINY]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"data.sources.scenes: image {huge} is too large to decode"), line
    assert not run.exists()


# 12. Photos, transparency, dense layouts, teachers exported in training mode -----------------------


def save_sideways_jpeg(path: Path) -> np.ndarray:
    """A phone photo: stored 8 wide and 4 tall with EXIF orientation 6 (shown turned a quarter, 4 x 8).
    Returns the upright pixels a viewer shows (left half red, right half blue as stored)."""
    stored = np.zeros((4, 8, 3), np.uint8)
    stored[:, :4, 0], stored[:, 4:, 2] = 255, 255
    exif = Image.Exif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(stored).save(path, quality=100, exif=exif)
    return np.rot90(stored, k=-1)  # orientation 6: turned 90 degrees clockwise for display


def test_a_jpeg_with_an_exif_orientation_is_read_upright_and_said(tmp_path):
    from amalgam.data.images import read_rgb

    upright = save_sideways_jpeg(tmp_path / "photo.jpg")
    got = read_rgb(tmp_path / "photo.jpg")
    assert got.shape == (8, 4, 3)
    assert np.abs(got.astype(int) - upright)[[0, 1, 6, 7]].max() < 40  # away from the edge JPEG blurs
    said = []
    build_image_set(
        "data.sources.x", SourceConfig(type="folder", path=tmp_path), lambda p: p, (32, 32), False, log=said.append
    )
    assert (
        "data.sources.x: 1 images carry an EXIF orientation: read upright, as viewers show them (maps must be drawn so;"
        " exif: stored reads the stored pixels)" in said
    )


def test_a_label_map_that_does_not_cover_its_image_as_shown_stops(tmp_path):
    # the map was drawn on the photo as shown (4 x 8); one of the stored shape (8 x 4) would be scored
    # against stretched, turned predictions
    save_sideways_jpeg(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((8, 4), np.uint8)).save(tmp_path / "labels" / "a.png")  # 4 wide, 8 tall: fits
    build({"type": "dense", "path": tmp_path}, with_targets=True)
    Image.fromarray(np.zeros((4, 8), np.uint8)).save(tmp_path / "labels" / "a.png")  # the stored shape
    with pytest.raises(
        AmalgamError,
        match=r"a\.png is 4 high x 8 wide but its image .*a\.jpg is 8 high x 4 wide as shown .*: set exif: stored on",
    ):
        build({"type": "dense", "path": tmp_path}, with_targets=True)


def test_exif_stored_reads_the_pixels_as_stored_for_maps_drawn_on_them(tmp_path):
    # a dataset whose maps were drawn on the stored pixels (tools that ignore the tag) says so per source
    save_sideways_jpeg(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels").mkdir()
    stored_map = np.zeros((4, 8), np.uint8)
    stored_map[:, :4] = 1  # the red half, as stored
    Image.fromarray(stored_map).save(tmp_path / "labels" / "a.png")
    said = []
    ds = build_image_set(
        "data.eval.x",
        SourceConfig(type="dense", path=tmp_path, exif="stored"),
        lambda p: p,
        (4, 8),
        True,
        log=said.append,
    )
    sample = ds[0]
    assert sample["image"].shape == (3, 4, 8)
    red = sample["image"][0] > 0.5
    assert torch.equal(red, sample["mask"] == 1)  # the map lies on the pixels it was drawn on
    assert any("1 images carry an EXIF orientation: read as stored (exif: stored)" in line for line in said)
    # the upright map now fails the stored image, with the way back named
    Image.fromarray(np.rot90(stored_map, k=-1).copy()).save(tmp_path / "labels" / "a.png")
    with pytest.raises(AmalgamError, match=r"as stored \(exif: stored\): it fits the image as shown: remove exif"):
        build({"type": "dense", "path": tmp_path, "exif": "stored"}, with_targets=True)


def test_torchvision_sets_are_built_with_the_arguments_their_signature_takes():
    import torchvision.datasets as tvd

    from amalgam.data.torchvision_sets import _torchvision_kwargs

    # FakeData takes no root, split or download (its first argument is a size): built, and read
    fake = {"type": "torchvision", "name": "FakeData", "root": "."}
    sample = build(fake, size=(8, 8), with_targets=True)[0]
    assert sample["image"].shape == (3, 8, 8) and isinstance(sample["label"], int)
    with pytest.raises(AmalgamError, match=r"torchvision FakeData cannot download"):
        build({**fake, "download": True})
    with pytest.raises(AmalgamError, match=r"torchvision FakeData has no split \(it is one set\): drop split: test"):
        build({**fake, "split": "test"})  # it would have scored the same images whatever the split
    with pytest.raises(AmalgamError, match=r"data.eval.x: exif: applies to image files"):
        build({**fake, "exif": "stored"})
    # QMNIST takes download through **kwargs
    assert _torchvision_kwargs(tvd.QMNIST, "QMNIST", Path("r"), "test", True) == {
        "root": "r",
        "train": False,
        "download": True,
    }


def write_coco(root: Path, width: int, height: int) -> Path:
    from pycocotools import mask as mask_utils

    top = np.zeros((height, width), np.uint8)
    top[: height // 2] = 1  # the top half: a misread layout shows
    encoded = mask_utils.encode(np.asfortranarray(top))
    instances = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": height, "width": width}],
        "categories": [{"id": 1, "name": "shirt"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")},
                "area": width * height,
                "bbox": [0, 0, width, height],
                "iscrowd": 0,
            }
        ],
    }
    (root / "instances.json").write_text(json.dumps(instances))
    return root / "instances.json"


def test_coco_sizes_that_do_not_fit_the_image_as_read_stop(tmp_path):
    # COCO's width/height are those the polygons were drawn on; a turned photo's stored 8x4 does not
    # fit it as shown (4x8), so its masks would have been stretched across the wrong axes
    save_sideways_jpeg(tmp_path / "images" / "a.jpg")
    cfg = {"type": "coco", "path": tmp_path / "images", "annotations": write_coco(tmp_path, width=8, height=4)}
    with pytest.raises(AmalgamError, match=r"COCO image 1's annotations is 4 high x 8 wide .* set exif: stored"):
        build(cfg, with_targets=True)
    assert len(build(cfg, with_targets=False)) == 1  # as a training source its annotations are never read
    assert build({**cfg, "exif": "stored"}, size=(4, 8), with_targets=True)[0]["mask"].shape == (4, 8)
    write_coco(tmp_path, width=4, height=8)  # drawn as shown
    mask = build(cfg, size=(8, 4), with_targets=True)[0]["mask"]
    assert (mask[:4] == 1).all() and (mask[4:] == 0).all()
    raw = json.loads(cfg["annotations"].read_text())
    raw["images"][0]["width"] = 4.0  # some exporters write floats
    cfg["annotations"].write_text(json.dumps(raw))
    assert build(cfg, size=(8, 4), with_targets=True)[0]["mask"].shape == (8, 4)
    raw["annotations"][0]["segmentation"]["size"] = [4, 8]  # an RLE drawn on another grid: IndexError mid-eval before
    cfg["annotations"].write_text(json.dumps(raw))
    with pytest.raises(AmalgamError, match=r"COCO annotation 1 of image 1 has an RLE of size \[4, 8\]"):
        build(cfg, with_targets=True)
    del raw["images"][0]["width"]  # pycocotools would fail on it mid-evaluation
    cfg["annotations"].write_text(json.dumps(raw))
    with pytest.raises(AmalgamError, match=r"COCO image 1 \(a\.jpg\) has no integer width and height"):
        build(cfg, with_targets=True)


def test_files_a_source_does_not_read_are_counted_by_type(tmp_path):
    # an iPhone folder of .heic beside .jpg would have trained on the jpgs alone without a word
    save_rgb(tmp_path / "a.png")
    for name in ("b.heic", "c.heic", "d.gif", "notes.txt", ".hidden"):
        (tmp_path / name).write_bytes(b"x")
    said = []
    build_image_set(
        "data.sources.x", SourceConfig(type="folder", path=tmp_path), lambda p: p, (4, 4), False, log=said.append
    )
    assert any(
        line.startswith("data.sources.x: 3 files are not read as images (2 .heic, 1 .gif): the types read are")
        for line in said
    ), said
    (tmp_path / "a.png").unlink()
    with pytest.raises(AmalgamError, match=r"contains no images: 3 files are not read as images \(2 \.heic, 1 \.gif\)"):
        build({"type": "folder", "path": tmp_path}, key="data.sources.x")


def test_links_to_nothing_and_images_outside_class_folders_are_counted(tmp_path):
    # a moved folder of images left links behind; a class-less image at an imagefolder's root is never read
    for cls in ("cat", "dog"):
        save_rgb(tmp_path / cls / "a.png")
    save_rgb(tmp_path / "loose.png")
    save_rgb(tmp_path / "loose2.jpg")
    (tmp_path / "cat" / "gone.png").symlink_to(tmp_path / "moved" / "gone.png")
    said = []
    build_image_set(
        "data.sources.x", SourceConfig(type="imagefolder", path=tmp_path), lambda p: p, (4, 4), False, log=said.append
    )
    assert (
        "data.sources.x: 1 links point to nothing; 2 images lie outside the class folders (read: <root>/<class>/*)"
        in said
    ), said
    for cls in ("cat", "dog"):
        (tmp_path / cls / "a.png").unlink()
    with pytest.raises(AmalgamError, match=r"contains no images: 1 links point to nothing; 2 images lie outside"):
        build({"type": "imagefolder", "path": tmp_path}, key="data.sources.x")


def test_a_coco_image_missing_on_disk_is_named_as_missing(tmp_path):
    (tmp_path / "images").mkdir()
    cfg = {"type": "coco", "path": tmp_path / "images", "annotations": write_coco(tmp_path, width=4, height=8)}
    with pytest.raises(AmalgamError, match=r"^data.eval.x: image not found: .*a\.jpg; remove it from the set"):
        build(cfg, with_targets=True)


def test_a_map_at_a_scale_of_its_image_is_resized_with_it(tmp_path):
    # the source check allows a map at half (or twice) its image's size; the resize must then not trip
    # over the differing shapes
    save_rgb(tmp_path / "images" / "a.png", size=(8, 8))
    (tmp_path / "labels").mkdir()
    half = np.zeros((4, 4), np.uint8)
    half[:2] = 1
    Image.fromarray(half).save(tmp_path / "labels" / "a.png")
    said = []
    cfg = SourceConfig(type="dense", path=tmp_path)
    mask = build_image_set("data.eval.x", cfg, lambda p: p, (16, 16), True, log=said.append)[0]["mask"]
    assert mask.shape == (16, 16) and (mask[:8] == 1).all() and (mask[8:] == 0).all()
    assert "data.eval.x: 1 maps are at a scale of their image's size: each is read as covering it" in said


@pytest.mark.parametrize("map_size", [(65, 64), (63, 64), (64, 63)])
def test_a_map_a_pixel_off_its_image_is_refused_not_stretched_as_a_scale(tmp_path, map_size):
    # a 65x64 map of a 64x64 image passed as "a scale of its image" and was stretched over it
    save_rgb(tmp_path / "images" / "a.png", size=(64, 64))
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros(map_size[::-1], np.uint8)).save(tmp_path / "labels" / "a.png")
    cfg = SourceConfig(type="dense", path=tmp_path)
    w, h = map_size
    said = rf"is {h} high x {w} wide but its image .* is 64x64 .*a pixel cropped or padded"  # [height, width]
    with pytest.raises(AmalgamError, match=said):
        build_image_set("data.eval.x", cfg, lambda p: p, (16, 16), True)


def test_a_map_of_a_nearly_square_photo_drawn_on_its_stored_pixels_gets_the_exif_hint(tmp_path):
    # a review: a 65x64 map of a 64x65 (as shown) EXIF-turned photo was refused as "cropped or padded"
    exif = Image.Exif()
    exif[0x0112] = 6  # turned 90 degrees: stored 65x64 (w x h), shown 64x65
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((64, 65, 3), np.uint8)).save(tmp_path / "images" / "a.jpg", exif=exif)
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((64, 65), np.uint8)).save(tmp_path / "labels" / "a.png")
    said = r"is 64 high x 65 wide but its image .* is 65 high x 64 wide as shown .*: set exif: stored"
    with pytest.raises(AmalgamError, match=said):
        build_image_set("data.eval.x", SourceConfig(type="dense", path=tmp_path), lambda p: p, (16, 16), True)


def test_a_photo_turned_180_degrees_is_said_to_fit_its_map_either_way(tmp_path):
    # the same size upright and stored: a map drawn on either passes the size check, so the log says so
    exif = Image.Exif()
    exif[0x0112] = 3
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((4, 8, 3), np.uint8)).save(tmp_path / "images" / "a.jpg", exif=exif)
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((4, 8), np.uint8)).save(tmp_path / "labels" / "a.png")
    said = []
    dataset = build_image_set(
        "data.eval.x", SourceConfig(type="dense", path=tmp_path), lambda p: p, (4, 8), True, log=said.append
    )
    assert any("1 of them (turned 180 degrees, mirrored, or square) fit their maps either way" in s for s in said)
    # a trial: a depth teacher scored on maps drawn on the stored pixels was told to read its depth as inverse;
    # the teacher checks now name exif: stored beside their fix
    from amalgam.distill.eval_checks import exif_doubt

    assert exif_doubt(dataset, "x") == (
        "; but first: 1 of 'x''s images are EXIF-turned and fit their maps either way: if its maps were drawn on the"
        " pixels as stored, set data.eval.x.exif: stored and check again"
    )
    stored = SourceConfig(type="dense", path=tmp_path, exif="stored")
    assert exif_doubt(build_image_set("data.eval.x", stored, lambda p: p, (4, 8), True), "x") == ""


def test_transparency_is_dropped_and_said(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255  # red under fully transparent pixels
    Image.fromarray(rgba, "RGBA").save(tmp_path / "product.png")
    said = []
    ds = build_image_set(
        "data.sources.x", SourceConfig(type="folder", path=tmp_path), lambda p: p, (4, 4), False, log=said.append
    )
    assert torch.allclose(ds[0]["image"][0], torch.ones(4, 4))  # the stored colour, as torchvision's RGB decoding gives
    assert any("1 images carry an alpha channel or a transparent colour (not read: they may be opaque): it is"
               " dropped" in line for line in said)  # fmt: skip


def test_a_folder_source_at_a_dense_sets_root_stops(tmp_path):
    # its label maps would have trained as images
    save_rgb(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(
        tmp_path.joinpath("labels").mkdir() or tmp_path / "labels" / "a.png"
    )
    with pytest.raises(
        AmalgamError, match=r"laid out as a dense set \(images/ beside labels/\): point path at .*images"
    ):
        build({"type": "folder", "path": tmp_path}, key="data.sources.x")
    assert len(build({"type": "folder", "path": tmp_path / "images"})) == 1


def test_a_folder_source_above_dense_sets_stops_naming_them(tmp_path):
    # one level up (nested/{train,val}/{images,labels,depth}) the maps trained as images, said only as grey images
    for split in ("train", "val"):
        save_rgb(tmp_path / split / "images" / "a.png")
        for maps in ("labels", "depth") if split == "val" else ("labels",):
            (tmp_path / split / maps).mkdir()
            Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / split / maps / "a.png")
    said = r"holds dense sets \(train, val: images/ beside labels/ or depth/\), whose 3 "
    with pytest.raises(AmalgamError, match=said):
        build({"type": "folder", "path": tmp_path}, key="data.sources.x")
    (tmp_path / "other" / "labels").mkdir(parents=True)  # a folder merely named labels, with no images/ beside it
    save_rgb(tmp_path / "other" / "labels" / "b.png")
    assert len(build({"type": "folder", "path": tmp_path / "other"})) == 1


class DropoutNet(nn.Module):
    def __init__(self, batchnorm: bool):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.norm = nn.BatchNorm2d(2) if batchnorm else nn.Dropout(0.5)

    def forward(self, x):
        return self.norm(self.conv(x))


@pytest.mark.parametrize(
    ("batchnorm", "why"),
    [
        (False, "answers the same images differently twice"),
        (True, "answers an image alone differently from the same image in a batch"),
    ],
)
def test_a_torchscript_teacher_traced_in_train_mode_stops(batchnorm, why):
    # eval() cannot reach the dropout or batch statistics a train()-mode trace baked in: the cache
    # would have held noisy, batch-dependent targets
    traced = torch.jit.trace(DropoutNet(batchnorm).train(), torch.rand(2, 3, 32, 32))
    with pytest.raises(AmalgamError, match=f"^teacher 't1' {why} .*: re-export it from model.eval"):
        check_teacher_output(teacher_of(traced, task="segmentation"), (32, 32))
    good = torch.jit.trace(DropoutNet(batchnorm).eval(), torch.rand(2, 3, 32, 32))
    check_teacher_output(teacher_of(good, task="segmentation"), (32, 32))


def test_a_module_the_factory_imports_is_part_of_the_cache_key(fresh_world, tmp_path):
    """Editing a recipe-folder helper the factory imports (not the factory's file) rebuilds the store."""
    folder = fresh_world.parent
    (folder / "teacher_scale.py").write_text("SCALE = 1.0\n")
    models = folder / "models.py"
    scaled = "y = teacher_scale.SCALE * self.head(self.body(x))"
    code = models.read_text().replace("y = self.head(self.body(x))", scaled)
    models.write_text("import teacher_scale\n" + code)
    root = tmp_path / "cache"
    fill(plan_of(fresh_world), root, "seg-a")
    (folder / "teacher_scale.py").write_text("SCALE = 3.0\n")
    plan = plan_of(fresh_world)  # same checkpoint and factory file, a new helper
    lines = []
    cache, out, images = fill(plan, root, "seg-a", log=lines.append)
    assert any("seg-a': rebuilding it: what its outputs depend on changed (code)" in line for line in lines), lines
    torch.testing.assert_close(out, on_grid(plan.teachers["seg-a"](images)), atol=2e-2, rtol=2e-3)


def test_a_folder_source_beside_masks_or_under_them_stops_and_an_annotations_folder_of_json_does_not(tmp_path):
    # a trial: images/ beside masks/ (not labels/) trained its 0-2 label maps as images, said only as grey images
    save_rgb(tmp_path / "images" / "a.png")
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(AmalgamError, match=r"\(images/ beside masks/\): point path at .*images, or use type: dense"
                       r" \(renaming masks/ to labels/\)$"):  # fmt: skip
        build({"type": "folder", "path": tmp_path}, key="data.sources.x")
    with pytest.raises(AmalgamError, match=r"holds dense sets \(set: images/ beside masks/\), whose 1 "):
        (tmp_path.parent / "up").mkdir()
        (tmp_path.parent / "up" / "set").symlink_to(tmp_path)
        build({"type": "folder", "path": tmp_path.parent / "up"}, key="data.sources.x")
    (tmp_path / "masks" / "a.png").unlink()
    (tmp_path / "masks").rmdir()
    (tmp_path / "annotations").mkdir()  # COCO's layout: its JSON beside the images is no map folder
    (tmp_path / "annotations" / "instances.json").write_text("{}")
    assert len(build({"type": "folder", "path": tmp_path})) == 1


def test_a_dense_eval_set_without_labels_names_where_it_reads_them_and_the_folders_it_holds(tmp_path):
    # a trial: masks/ in place of labels/ stopped with "has no 'mask' ground truth", naming neither
    from amalgam.data.sources import DenseSet

    save_rgb(tmp_path / "images" / "a.png")
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "masks" / "a.png")
    assert DenseSet(tmp_path).missing_target_hint("mask") == (
        f" (type: dense reads them from {tmp_path / 'labels'}/; {tmp_path} holds images/, masks/: rename masks/ to"
        " labels/ if it holds them)"
    )
    assert DenseSet(tmp_path).missing_target_hint("depth").endswith("holds images/, masks/)")


def test_coco_file_names_that_repeat_the_folder_path_names_are_said_with_the_path_to_give(tmp_path):
    # a trial: file_name 'images/a.jpg' under path .../images was "not found, remove them from the set"
    for name in ("a", "b"):
        save_rgb(tmp_path / "images" / f"{name}.jpg")
    instances = json.loads(write_coco(tmp_path, width=12, height=10).read_text())
    instances["images"] = [
        {"id": i + 1, "file_name": f"images/{n}.jpg", "height": 10, "width": 12} for i, n in enumerate("ab")
    ]
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    cfg = {"type": "coco", "path": tmp_path / "images", "annotations": tmp_path / "instances.json"}
    said = rf"a\.jpg is at {tmp_path}/images/a\.jpg: the names repeat the folder images/: point path at {tmp_path} "
    with pytest.raises(AmalgamError, match=said):
        build(cfg, with_targets=True)
    cfg["path"] = tmp_path
    assert len(build(cfg, with_targets=True)) == 2


def test_cmyk_images_are_said_converted_without_their_colour_profile(tmp_path):
    # a trial: CMYK JPEGs went through PIL's plain conversion without a word
    (tmp_path / "a").mkdir()
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "a" / "x.jpg")
    said = []
    ds = build_image_set(
        "data.sources.x", SourceConfig(type="folder", path=tmp_path / "a"), lambda p: p, (8, 8), False, log=said.append
    )
    assert len(ds) == 1
    assert any("1 images are CMYK: converted to RGB by PIL's plain formula" in line for line in said), said
