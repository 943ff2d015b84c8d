"""The teacher-output cache: same targets as the live teachers, read back instead of recomputed."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from amalgam.cli import main
from amalgam.config.recipe import load_recipe
from amalgam.data.views import resize
from amalgam.distill.cache import TeacherCache, apply_flip, teacher_key
from amalgam.distill.plan import build_plan

QUIET = lambda msg: None  # noqa: E731


def batch_of(plan, indices):
    samples = [plan.sources[i] for i in indices]
    images = torch.stack([s["image"] for s in samples])
    return images, torch.tensor([s["source"] for s in samples]), torch.tensor([s["index"] for s in samples])


def scene_indices(plan, count):
    sid = plan.sources.names.index("scenes")
    start = plan.sources.offsets[sid]
    return list(range(start, start + count))


def test_cached_targets_are_the_teachers_outputs_flipped_like_the_images(world_plan, tmp_path):
    cache = TeacherCache(tmp_path / "cache", world_plan, QUIET)
    images, source, index = batch_of(world_plan, scene_indices(world_plan, 4))
    flip = torch.tensor([True, False, True, False])
    idx = torch.arange(4)
    for name in ("seg-a", "depth"):
        teacher = world_plan.teachers[name]
        cached, _ = cache.targets(images, source, index, flip)(name, idx)
        expected = apply_flip(resize(teacher(images), images.shape[-2:]), flip)  # stored on the student's grid
        assert cached.dtype == torch.float32 and cached.shape == expected.shape
        torch.testing.assert_close(cached, expected, atol=2e-2, rtol=2e-3)  # stored in fp16
        assert not torch.allclose(cached[0], resize(teacher(images), (32, 32))[0], atol=1e-3)  # the flip did apply


def test_pooled_outputs_do_not_flip(world_plan, tmp_path):
    cache = TeacherCache(tmp_path / "cache", world_plan, QUIET)
    sid = world_plan.sources.names.index("items")
    images, source, index = batch_of(world_plan, [world_plan.sources.offsets[sid], world_plan.sources.offsets[sid] + 1])
    cached, _ = cache.targets(images, source, index, torch.tensor([True, True]))("cls", torch.arange(2))
    torch.testing.assert_close(cached, world_plan.teachers["cls"](images), atol=2e-2, rtol=2e-3)


def test_second_draw_reads_the_cache_without_running_the_teacher(world_plan, tmp_path, monkeypatch):
    cache = TeacherCache(tmp_path / "cache", world_plan, QUIET)
    images, source, index = batch_of(world_plan, scene_indices(world_plan, 3))
    teacher = world_plan.teachers["seg-b"]
    calls = []
    real = teacher.forward
    monkeypatch.setattr(teacher, "forward", lambda x: calls.append(x.shape[0]) or real(x))
    first, _ = cache.targets(images, source, index, None)("seg-b", torch.arange(3))
    assert calls == [3] and cache.flush() == (0, 3)
    # a new batch with two old images and one new: only the new one runs the teacher
    images2, source2, index2 = batch_of(world_plan, scene_indices(world_plan, 4)[1:])
    again, _ = cache.targets(images2, source2, index2, None)("seg-b", torch.arange(3))
    assert calls == [3, 1] and cache.flush() == (2, 1)
    torch.testing.assert_close(again[:2], first[1:])


def test_store_survives_reopening_and_is_rebuilt_when_its_key_changes(world_plan, tmp_path):
    root = tmp_path / "cache"
    cache = TeacherCache(root, world_plan, QUIET)
    images, source, index = batch_of(world_plan, scene_indices(world_plan, 2))
    cache.targets(images, source, index, None)("depth", torch.arange(2))
    cache.flush()
    assert int(TeacherCache(root, world_plan, QUIET).stores["depth"].filled.sum()) == 2
    meta = root / "depth" / "meta.json"
    key = json.loads(meta.read_text())
    key["files"] = {"depth.ts": "0" * 64}  # as if the teacher's file had changed
    meta.write_text(json.dumps(key))
    assert int(TeacherCache(root, world_plan, QUIET).stores["depth"].filled.sum()) == 0


def test_changing_a_source_weight_keeps_the_filled_rows(fresh_world, tmp_path):
    recipe = load_recipe(fresh_world)
    plan = build_plan(recipe, log=QUIET)
    root = tmp_path / "cache"
    images, source, index = batch_of(plan, scene_indices(plan, 2))
    TeacherCache(root, plan, QUIET).targets(images, source, index, None)("depth", torch.arange(2))
    meta = root / "depth" / "meta.json"
    old_style = json.loads(meta.read_text())  # stores written before weights left the key had them
    old_style["sources"]["scenes"]["config"]["weight"] = 1.0
    del old_style["sources"]["scenes"]["config"]["exif"]  # and before exif: (every image read upright)
    del old_style["sources"]["scenes"]["config"]["args"]  # and before a torchvision set's args
    del old_style["teacher"]["unused_outputs"]  # and before a teacher's unused_outputs
    meta.write_text(json.dumps(old_style))
    reweighted = load_recipe(fresh_world, overrides=["data.sources.scenes.weight=5.0"])
    assert int(TeacherCache(root, build_plan(reweighted, log=QUIET), QUIET).stores["depth"].filled.sum()) == 2


def test_reading_images_as_stored_is_a_new_key(fresh_world):
    before = teacher_key(build_plan(load_recipe(fresh_world), log=QUIET), "depth")
    stored = load_recipe(fresh_world, overrides=["data.sources.scenes.exif=stored"])
    assert teacher_key(build_plan(stored, log=QUIET), "depth")["sources"] != before["sources"]


def test_key_follows_the_checkpoint_bytes(fresh_world):
    plan = build_plan(load_recipe(fresh_world), log=QUIET)
    before = teacher_key(plan, "seg-a")
    checkpoint = load_recipe(fresh_world).resolve(plan.recipe.teachers["seg-a"].checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes() + b"\0")
    assert teacher_key(plan, "seg-a")["files"] != before["files"]
    assert teacher_key(plan, "seg-a")["sources"] == before["sources"]


def read_log(run):
    with open(run / "train_log.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("augment", [False, True])
def test_cached_and_live_builds_train_the_same_student(world, tmp_path, augment):
    common = ["--quiet", "--set", "train.epochs=2", "--set", "train.samples_per_epoch=8", "--set"]
    common += [f"train.augment={str(augment).lower()}"]
    runs = {}
    for cached in (True, False):
        out = tmp_path / f"cache-{cached}"
        flag = f"train.cache_teachers={cached}"
        assert main(["build", str(world), "--output", str(out), *common, "--set", flag]) == 0
        runs[cached] = out
    assert (runs[True] / "teacher_cache").is_dir() and not (runs[False] / "teacher_cache").exists()
    log = read_log(runs[True])
    assert float(log[1]["cache_hit_rate"]) > 0  # epoch 2 re-draws images seen in epoch 1
    reports = {k: json.loads((v / "report.json").read_text()) for k, v in runs.items()}
    # without a flip the targets differ only by fp16 rounding; the flipped cache reads flipped
    # outputs where the live teacher sees flipped images, which is close but not equal
    tol = 0.05 if augment else 0.01
    for a, b in zip(reports[True]["tasks"], reports[False]["tasks"]):
        assert a["student_value"] == pytest.approx(b["student_value"], abs=tol, rel=tol), a["teacher"]


def test_sources_given_in_another_order_are_a_new_key(fresh_world, tmp_path):
    # the store's rows follow the sources' order: reordered, a teacher was handed other images' answers
    import yaml

    raw = yaml.safe_load(fresh_world.read_text())
    del raw["teachers"]["depth"]["sources"]  # taught on every source, in the recipe's order
    keys = []
    for order in (["scenes", "items"], ["items", "scenes"]):
        raw["data"]["sources"] = {name: raw["data"]["sources"][name] for name in order}
        path = fresh_world.parent / f"order-{'-'.join(order)}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        keys.append(teacher_key(build_plan(load_recipe(path), log=QUIET), "depth"))
    assert keys[0]["source_order"] == ["scenes", "items"] and keys[1]["source_order"] == ["items", "scenes"]
    assert keys[0] != keys[1] and keys[0]["sources"] == keys[1]["sources"]  # equal as mappings: order alone


def test_the_disk_is_checked_for_every_store_at_once_and_a_few_draws_run_is_told(world, tmp_path, monkeypatch):
    # each store checked in turn named the last one's shortfall; a 64-image run reserved rows for 100,000 unsaid
    import re
    import shutil
    from collections import namedtuple

    from amalgam.distill.cache import open_cache
    from amalgam.errors import AmalgamError

    plan = build_plan(load_recipe(world, ["train.samples_per_epoch=2", "train.epochs=1"]), log=QUIET)
    said: list[str] = []
    assert open_cache(plan, tmp_path / "a", {}, said.append) is not None
    (line,) = [s for s in said if "of which this run draws at most 2" in s]
    assert line.startswith("teacher cache: reserves ") and "a source's limit: keeps it to what is drawn" in line
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(AmalgamError) as info:
        open_cache(plan, tmp_path / "b", {}, QUIET)
    needs = int(re.search(r"the cache needs ([\d,]+) bytes", str(info.value)).group(1).replace(",", ""))
    assert needs == int(TeacherCache.estimate_bytes(plan, {}) / 1e9 * 1e9)  # every store's, not the last one's


def test_the_cache_line_says_the_augmentation_the_run_has(world):
    # a trial: "augmentation is the horizontal flip only" was said with train.augment false, and mixup unsaid
    from amalgam.config.recipe import load_recipe
    from amalgam.distill.cache import _augment_note
    from amalgam.distill.plan import build_plan

    plan = build_plan(load_recipe(world, ["train.augment=false"]), with_data=False, log=lambda m: None)
    assert _augment_note(plan) == "; no augmentation (train.augment: false)"
    source = next(iter(plan.recipe.data.sources))
    plan = build_plan(load_recipe(world, [f"train.mixup={{sources: [{source}]}}"]), with_data=False, log=lambda m: None)
    note = _augment_note(plan)
    assert note.startswith("; augmentation is the horizontal flip only") and f"mixup's blends of {source} are" in note


def test_the_timm_tag_note_is_said_not_keyed():
    # review: the note lists the installed timm's tags; in the cache key, another timm (or this change) rebuilt every
    # cache with nothing fed otherwise
    import dataclasses

    from amalgam.config.schema import TeacherConfig
    from amalgam.task import get_task
    from amalgam.teachers.inputs import ResolvedInput
    from amalgam.teachers.model_sources import build_model
    from amalgam.teachers.teacher import Teacher

    config = TeacherConfig(task="classification", model={"from": "timm", "name": "efficientnet_b0"}, labels=["a", "b"])
    teacher = Teacher(
        "t", get_task("classification"), build_model("timm", config.model.kwargs(), None), config, (32, 32)
    )
    assert teacher.input_note and teacher.input_line().endswith(teacher.input_note)
    key = json.loads(json.dumps(dataclasses.asdict(teacher.input_spec)))  # the cache key's "input", as teacher_key
    assert "timm_note" not in key and "efficientnet_b0" not in json.dumps(key)
    assert set(key) == {f.name for f in dataclasses.fields(ResolvedInput)}
