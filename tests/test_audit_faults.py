"""Faults a real user brings, found by an audit: each must stop in one line naming the file or key."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from amalgam.config.recipe import SourceConfig
from amalgam.data import build_image_set
from amalgam.errors import AmalgamError, RecipeError


def save_jpeg(path, size=(48, 64), seed=0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, quality=90)
    return path.read_bytes()


def test_a_truncated_jpeg_is_found_when_the_source_is_checked(tmp_path):
    # JPEG's verify() reads only the headers: a download cut short used to pass and fail mid-training
    save_jpeg(tmp_path / "a.jpg")
    whole = save_jpeg(tmp_path / "b.jpg", seed=1)
    (tmp_path / "b.jpg").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(AmalgamError) as info:
        build_image_set("data.sources.s", SourceConfig(type="folder", path=tmp_path), lambda p: p, (32, 32), False)
    assert str(info.value).startswith(f"data.sources.s: corrupt image {tmp_path / 'b.jpg'}")


def test_a_jpeg_with_data_after_its_end_marker_is_accepted(tmp_path):
    # motion photos append a video after the JPEG: whole, so not refused
    whole = save_jpeg(tmp_path / "a.jpg")
    (tmp_path / "a.jpg").write_bytes(whole + b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    found = build_image_set("data.sources.s", SourceConfig(type="folder", path=tmp_path), lambda p: p, (32, 32), False)
    assert found[0]["image"].shape == (3, 32, 32)


@pytest.mark.parametrize("suffix", ["bmp", "tif", "webp", "png"])
def test_a_truncated_image_of_any_format_is_found_when_the_source_is_checked(tmp_path, suffix):
    # verify() reads only the headers of BMP and TIFF: cut short, they passed it (PNG and WebP are
    # caught by verify() itself: kept so that a Pillow that changes it cannot let them through)
    arr = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    for name in ("a", "b"):
        Image.fromarray(arr).save(tmp_path / f"{name}.{suffix}")
    source = SourceConfig(type="folder", path=tmp_path)
    assert len(build_image_set("data.sources.s", source, lambda p: p, (32, 32), False)) == 2  # whole: accepted
    whole = (tmp_path / f"b.{suffix}").read_bytes()
    (tmp_path / f"b.{suffix}").write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(AmalgamError) as info:
        build_image_set("data.sources.s", source, lambda p: p, (32, 32), False)
    assert str(info.value).startswith(f"data.sources.s: corrupt image {tmp_path / f'b.{suffix}'}")


class Failing(Dataset):
    def __init__(self, error: Exception):
        self.error = error

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise self.error


@pytest.mark.parametrize(
    "error, line",
    [
        (AmalgamError("corrupt image x.jpg: image file is truncated"), "corrupt image x.jpg: image file is truncated"),
        (RecipeError("data.sources.s", "bad"), "data.sources.s: bad"),
    ],
)
def test_an_error_in_a_loader_worker_stays_one_line(error, line):
    # torch re-raises a worker's error with the worker's whole traceback as its message
    with pytest.raises(AmalgamError) as info:
        next(iter(DataLoader(Failing(error), num_workers=1)))
    assert str(info.value) == line


def test_a_wrapped_checkpoint_amalgam_does_not_read_names_its_teacher_and_the_state_dicts_inside(tmp_path):
    # PyTorch's own checkpoint recipe saves {"model_state_dict": ..., "optimizer_state_dict": ...}
    import torch
    from torch import nn

    from amalgam.teachers.model_sources import load_checkpoint

    model = nn.Linear(2, 2)
    path = tmp_path / "ck.pt"
    torch.save({"net": model.state_dict(), "epoch": 3}, path)
    with pytest.raises(AmalgamError) as info:
        load_checkpoint(model, path, "teacher 'seg'")
    assert str(info.value).startswith(f"teacher 'seg': checkpoint {path} does not hold a state dict of tensors")
    assert "(state dicts under: net); to use 'net': python -c" in str(info.value)
    # the command it gives makes a file that loads
    command = str(info.value).split('python -c "')[1].split('" and point')[0]
    exec(command)  # noqa: S102 - the line a user would paste
    load_checkpoint(model, path.with_suffix(".state.pt"), "teacher 'seg'")


def test_pytorchs_own_checkpoint_layout_is_read_and_said(tmp_path):
    # a user trial: {"model_state_dict", "optimizer_state_dict", "epoch"} (PyTorch's tutorial) was refused
    import torch
    from torch import nn

    from amalgam.teachers.model_sources import load_checkpoint

    model = nn.Linear(2, 2)
    trained = nn.Linear(2, 2)
    path = tmp_path / "ck.pt"
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1)
    torch.save(
        {"model_state_dict": trained.state_dict(), "optimizer_state_dict": optimizer.state_dict(), "epoch": 3}, path
    )
    note = load_checkpoint(model, path, "teacher 'seg'")
    assert torch.equal(model.weight, trained.weight)
    assert "entry 'model_state_dict' (state_dict, else model, else model_state_dict, is read)" in str(note)


def test_a_checkpoint_whose_keys_all_carry_one_extra_name_says_so(tmp_path):
    # a Lightning checkpoint holds the network under the module's attribute: every key 'model.*'
    import torch
    from torch import nn

    from amalgam.teachers.model_sources import load_checkpoint

    model = nn.Sequential(nn.Linear(2, 2))
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    with pytest.raises(AmalgamError) as info:
        load_checkpoint(model, path, "teacher 'seg'")
    assert "missing key '0.weight' (every checkpoint key starts with 'model.'" in str(info.value)
    torch.save({"state_dict": {"model.0.weight": torch.zeros(2, 2)}}, path)  # not the model's keys: no hint
    with pytest.raises(AmalgamError) as info:
        load_checkpoint(model, path, "teacher 'seg'")
    assert str(info.value).endswith("missing key '0.weight'; 2 keys are missing")


def test_the_entry_read_from_a_checkpoint_wrapper_is_said_with_the_others(tmp_path):
    # {model, ema}: the documented rule reads 'model'; the log and inspect must say so and name 'ema'
    import torch
    from torch import nn

    from amalgam.teachers.model_sources import load_checkpoint

    model = nn.Linear(2, 2)
    path = tmp_path / "ck.pt"
    torch.save({"model": model.state_dict(), "ema": model.state_dict(), "epoch": 3}, path)
    note = load_checkpoint(model, path, "teacher 'seg'")
    assert (
        note == "entry 'model' (state_dict, else model, else model_state_dict, is read);"
        " it also holds state dicts under: ema"
    )
    torch.save(model.state_dict(), path)
    assert load_checkpoint(model, path, "teacher 'seg'") == ""  # a bare state dict: nothing to say


def test_inspect_says_which_entry_of_a_wrapped_teacher_checkpoint_it_read(fresh_world, capsys):
    import torch
    import yaml

    from amalgam.cli import main

    raw = yaml.safe_load(fresh_world.read_text())
    ck = fresh_world.parent / raw["teachers"]["seg-a"]["checkpoint"]
    state = torch.load(ck, weights_only=True)
    torch.save({"model": state, "ema": state}, ck)
    assert main(["inspect", str(fresh_world), "--quiet", "--no-data"]) == 0
    out = capsys.readouterr().out
    assert (
        "checkpoint: entry 'model' (state_dict, else model, else model_state_dict, is read);"
        " it also holds state dicts under: ema" in out
    )


def test_a_chained_worker_error_keeps_its_own_last_line():
    # the traceback of an error raised while handling another names the earlier one first
    message = (
        "Caught AmalgamError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\namalgam.errors.AmalgamError: inner problem\n\nDuring handling of the above'
        " exception, another exception occurred:\n\n"
        '  File "x.py", line 2, in g\namalgam.errors.AmalgamError: outer: inner problem\n'
    )
    assert str(AmalgamError(message)) == "outer: inner problem"


def test_the_build_log_says_a_plain_depth_teachers_reading(world):
    from amalgam.config.recipe import load_recipe
    from amalgam.distill.plan import build_plan

    said: list[str] = []
    plan = build_plan(load_recipe(world), with_data=False, log=said.append)
    depth = [n for n, t in plan.teachers.items() if t.task.name == "depth"]
    assert depth and any(f"teacher '{depth[0]}': distilling" in m and "read as metric" in m for m in said), said


def test_a_state_dict_nested_under_model_then_state_dict_is_read_and_said(tmp_path):
    import torch
    from torch import nn

    from amalgam.teachers.model_sources import load_checkpoint

    model = nn.Linear(2, 2)
    path = tmp_path / "ck.pt"
    torch.save({"model": {"state_dict": model.state_dict()}, "epoch": 1}, path)
    assert load_checkpoint(model, path, "teacher 'seg'").startswith("entry 'model.state_dict'")
