"""Views: each teacher sees the original at its own input, and dense answers come back where they belong."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from amalgam.config.recipe import parse_recipe
from amalgam.data.views import BatchViews, ViewSpec, make_view, resize, undo
from amalgam.errors import RecipeError
from amalgam.teachers.inputs import answer_views


def coordinates(h: int, w: int) -> torch.Tensor:
    """``[3, h, w]``: each pixel holds its own centre (y, x) as fractions of the frame, and 1."""
    y = (torch.arange(h) + 0.5) / h
    x = (torch.arange(w) + 0.5) / w
    return torch.stack([y.view(-1, 1).expand(h, w), x.view(1, -1).expand(h, w), torch.ones(h, w)])


CASES = [((48, 80), (32, 32), (40, 40)), ((30, 20), (64, 64), (16, 24)), ((33, 77), (224, 224), (64, 64))]


@pytest.mark.parametrize("mode", ["stretch", "letterbox", "center_crop"])
@pytest.mark.parametrize("original, view, frame", CASES)
def test_undone_dense_answers_land_on_the_right_pixels(mode, original, view, frame):
    # an identity "teacher" answers each view pixel with the original position it shows: undone onto
    # the frame, every seen pixel must hold its own position (to within a pixel of the coarser grid)
    seen, placement = make_view(coordinates(*original), ViewSpec(view, mode, (9.0, 9.0, 9.0)))
    back = undo(seen[None], [placement], frame)[0]
    valid = ~back[0].isnan()
    pixel = max(1 / min(frame), 1 / min(original))
    assert ((back - coordinates(*frame)).abs()[:, valid] <= pixel).all()
    if mode == "center_crop":  # the cropped-away borders are unknown, never guessed
        long_axis = 1 if original[1] / original[0] > view[1] / view[0] else 0
        assert not valid.all() and valid.any(dim=long_axis).all()
    else:
        assert valid.all()  # letterbox padding never leaks in (it holds 9s)


def test_letterbox_and_center_crop_boxes():
    image = torch.rand(3, 30, 60)
    boxed, p = make_view(image, ViewSpec((40, 40), "letterbox", (0.5, 0.5, 0.5)))
    assert p.dst == (10 / 40, 0.0, 30 / 40, 1.0) and p.src == (0.0, 0.0, 1.0, 1.0)
    assert (boxed[:, :10] == 0.5).all() and (boxed[:, 30:] == 0.5).all()  # padded with the fill colour
    torch.testing.assert_close(boxed[:, 10:30], resize(image, (20, 40)))
    cropped, p = make_view(image, ViewSpec((40, 40), "center_crop"))
    assert p.src == (0.0, 15 / 60, 1.0, 45 / 60) and p.dst == (0.0, 0.0, 1.0, 1.0)
    torch.testing.assert_close(cropped, resize(image[:, :, 15:45], (40, 40)))


def test_stretch_undo_is_the_plain_resize():
    dense = torch.randn(2, 4, 16, 16)
    torch.testing.assert_close(undo(dense, [make_view(torch.rand(3, 9, 7), ViewSpec((32, 32)))[1]] * 2, (32, 32)),
                               resize(dense, (32, 32)))  # fmt: skip


class Blur(nn.Module):
    """A dense 'teacher' whose answer depends on the detail it is given: a 3x3 local contrast."""

    def forward(self, x):
        return (x - nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)).abs().mean(1, keepdim=True)


def test_a_224_teacher_under_a_64_student_sees_the_original(tmp_path):
    # the teacher fed the original directly is the reference; the old way (student image upsampled)
    # loses the detail a 224-px teacher was trained on
    from amalgam.teachers.teacher import Teacher

    recipe = _recipe(tmp_path, {"size": [224, 224], "mean": [0, 0, 0], "std": [1, 1, 1]})
    teacher = Teacher("t", _task("depth"), Blur(), recipe.teachers["t"], (64, 64))
    original = (torch.rand(3, 224, 224) * 255).to(torch.uint8)
    student = resize(original.float()[None] / 255, (64, 64))
    views = BatchViews(student, ViewSpec((64, 64)), [original])
    got, _ = answer_views(teacher, views, torch.tensor([0]), (64, 64), augmented=False)
    reference = resize(Blur()(original.float()[None] / 255), (64, 64))
    old_way = resize(teacher(student), (64, 64))
    torch.testing.assert_close(got, reference)
    assert (old_way - reference).abs().mean() > 10 * (got - reference).abs().mean() + 0.01


def test_letterboxed_teacher_answer_is_un_letterboxed_on_the_student_grid(tmp_path):
    from amalgam.teachers.teacher import Teacher

    recipe = _recipe(tmp_path, {"size": [64, 64], "mean": [0, 0, 0], "std": [1, 1, 1], "resize": "letterbox"})
    teacher = Teacher("t", _task("depth"), _FirstChannel(), recipe.teachers["t"], (32, 32))
    original = coordinates(80, 39)  # a tall original, letterboxed into 64x64 with 16 columns left, 17 right
    views = BatchViews(resize(original[None], (32, 32)), ViewSpec((32, 32)), [original], flip=torch.tensor([True]))
    plain, _ = answer_views(teacher, views, torch.tensor([0]), (32, 32), augmented=False)
    flipped, _ = answer_views(teacher, views, torch.tensor([0]), (32, 32), augmented=True)
    expected = coordinates(32, 32)[1:2] + 1.0
    assert (plain[0] - expected).abs().max() < 1 / 16
    torch.testing.assert_close(flipped, plain.flip(-1))  # answers on mirrored views come back mirrored


class _FirstChannel(nn.Module):
    def forward(self, x):
        return x[:, 1:2] + 1.0  # each pixel's x position in the original (depth must be positive)


def _task(name):
    from amalgam.task import get_task

    return get_task(name)


def _recipe(tmp_path, input_spec: dict, task: str = "depth", model: dict | None = None):
    (tmp_path / "images").mkdir(exist_ok=True)
    teacher = {"task": task, "model": model or {"from": "timm", "name": "resnet10t"}, "input": input_spec}
    if task == "segmentation":
        teacher |= {"labels": ["background", "thing"], "background": "background"}
    if task == "classification":
        teacher |= {"labels": ["cat", "dog"]}
    raw = {
        "name": "v",
        "data": {"image_size": [32, 32], "sources": {"s": {"type": "folder", "path": "images"}}},
        "teachers": {"t": teacher},
    }
    return parse_recipe(raw, tmp_path)


def test_center_crop_is_refused_for_dense_teachers_and_unknown_modes_list_the_choices(tmp_path):
    with pytest.raises(RecipeError, match=r"teachers\.t\.input\.resize: center_crop hides .* use letterbox"):
        _recipe(tmp_path, {"resize": "center_crop"}, task="segmentation")
    with pytest.raises(RecipeError, match=r"teachers\.t\.input\.resize: .*'squash'.*center_crop, letterbox, stretch"):
        _recipe(tmp_path, {"resize": "squash"})


def test_a_centre_crop_share_shows_the_teacher_the_middle_of_what_its_mode_keeps(tmp_path):
    # a classifier evaluated on Resize(256) + CenterCrop(224) scored 0.68 fed the whole image (0.93 cropped)
    original = torch.arange(64 * 64, dtype=torch.float32).view(1, 1, 64, 64).expand(1, 3, 64, 64)[0] / 4096
    view, placement = make_view(original, ViewSpec((28, 28), "stretch", crop=0.875))
    expected = resize(original[:, 4:60, 4:60], (28, 28))  # the centre 56 of 64 pixels of each side
    torch.testing.assert_close(view, expected)
    assert placement.src == (4 / 64, 4 / 64, 60 / 64, 60 / 64)
    wide = torch.rand(3, 40, 80)  # center_crop keeps the middle 40x40; 0.5 of it: 20x20 around the centre
    view, placement = make_view(wide, ViewSpec((20, 20), "center_crop", crop=0.5))
    torch.testing.assert_close(view, wide[:, 10:30, 30:50])
    recipe = _recipe(tmp_path, {"crop": 0.875}, task="classification", model={"from": "timm", "name": "resnet10t"})
    assert recipe.teachers["t"].input.crop == 0.875
    with pytest.raises(RecipeError, match=r"teachers\.t\.input\.crop: 0\.875 hides the image's borders"):
        _recipe(tmp_path, {"crop": 0.875}, task="segmentation")
    with pytest.raises(RecipeError, match=r"teachers\.t\.input\.crop"):
        _recipe(tmp_path, {"crop": 1.5}, task="classification")


def test_timm_teacher_without_input_takes_its_pretrained_cfg(tmp_path):
    from amalgam.teachers.inputs import resolve_input
    from amalgam.teachers.model_sources import build_model

    recipe = _recipe(tmp_path, {}, task="classification", model={"from": "timm", "name": "vit_tiny_patch16_224"})
    cfg = recipe.teachers["t"]
    model = build_model("timm", {"name": "vit_tiny_patch16_224"}, tmp_path)
    spec = resolve_input(cfg, model, (32, 32))
    assert spec.size == (224, 224) and spec.mean == [0.5, 0.5, 0.5] and spec.std == [0.5, 0.5, 0.5]
    assert spec.resize == "stretch" and spec.origin["resize"] == "default"
    line = spec.describe()
    assert "size 224x224 (timm pretrained_cfg)" in line and "resize stretch (default)" in line
    vit = {"from": "timm", "name": "vit_tiny_patch16_224"}
    given = _recipe(tmp_path, {"size": [96, 96], "resize": "letterbox"}, "classification", vit)
    spec = resolve_input(given.teachers["t"], model, (32, 32))
    assert spec.size == (96, 96) and spec.origin["size"] == "recipe" and spec.mean == [0.5, 0.5, 0.5]
    from amalgam.task import get_task
    from amalgam.teachers.teacher import Teacher

    teacher = Teacher("t", get_task("classification"), model, given.teachers["t"], (32, 32))
    line = teacher.input_line()  # the recipe's resize untagged, then the tag the timm values are of
    assert "resize letterbox (" not in line and "resize letterbox; timm pretrained_cfg: vit_tiny_patch16_224." in line


def test_dense_eval_is_scored_at_each_label_maps_own_resolution(fresh_world, tmp_path):
    # the student sees 32x32; the eval set's label maps are 48x48 and 40x40: every labelled pixel counts
    import shutil

    from amalgam.config.recipe import load_recipe
    from amalgam.distill.plan import build_plan
    from amalgam.evaluation.evaluate import evaluate
    from amalgam.students.build import build_student
    from tests.world import write_dense

    val = fresh_world.parent / "scenes" / "val"
    shutil.rmtree(val)
    write_dense(val, 6, size=48, seed=1)
    write_dense(tmp_path / "small", 3, size=40, seed=2)
    for sub in ("images", "labels", "depth"):
        for f in (tmp_path / "small" / sub).iterdir():
            shutil.copy(f, val / sub / f.name)  # rows 0-2 now 40x40, rows 3-5 48x48
    plan = build_plan(load_recipe(fresh_world), log=lambda msg: None)
    torch.manual_seed(0)
    result = evaluate(plan, build_student(plan.student_spec()), torch.device("cpu"), log=lambda msg: None)
    depth = next(r for r in result.tasks if r.teacher == "depth")
    assert depth.teacher_metrics["pixels"] == depth.student_metrics["pixels"] == 3 * 48 * 48 + 3 * 40 * 40


def test_a_fully_cached_batch_makes_no_teacher_view(world_plan, tmp_path, monkeypatch):
    from amalgam.data import views as views_module
    from amalgam.distill.cache import TeacherCache

    sid = world_plan.sources.names.index("items")  # the cls teacher's 28x28 view differs from the student's
    samples = [
        world_plan.sources[i] for i in range(world_plan.sources.offsets[sid], world_plan.sources.offsets[sid] + 3)
    ]
    assert all("original" in s for s in samples)
    images = torch.stack([s["image"] for s in samples])
    source, index = torch.tensor([s["source"] for s in samples]), torch.tensor([s["index"] for s in samples])
    cache = TeacherCache(tmp_path / "cache", world_plan, lambda msg: None)

    def targets():
        views = BatchViews(images, world_plan.student_view, [s["original"] for s in samples])
        return cache.targets(views, source, index, None)("cls", torch.arange(3))[0]

    made = []
    real = views_module.make_view
    monkeypatch.setattr(views_module, "make_view", lambda *a: made.append(1) or real(*a))
    first = targets()
    assert len(made) == 3  # a miss: the teacher ran on its views
    torch.testing.assert_close(targets(), first)
    assert len(made) == 3  # all cached: no view was made


def test_views_are_flipped_and_blended_exactly_as_the_students_images():
    from amalgam.config.recipe import MixupConfig, TrainConfig
    from amalgam.training.augment import BatchAugment

    cfg = TrainConfig(batch_size=8, augment=True, mixup=MixupConfig(sources=["a"], fraction=1.0))
    raw, source = torch.rand(8, 3, 16, 16), torch.zeros(8, dtype=torch.long)
    aug = BatchAugment(cfg, ["a"], seed=0, local=slice(0, 8))(raw, source)
    assert aug.mixed is not None and aug.flip.any()
    views = BatchViews(raw, ViewSpec((16, 16)), None, aug.flip)
    views.blend(aug.partner, aug.weight)
    same, _ = views.get(ViewSpec((16, 16)), torch.arange(8))
    assert torch.equal(same, aug.images)  # a teacher sharing the student's view sees its very input


def test_mixup_pairs_only_rows_of_one_source_and_original_size():
    from amalgam.distill.mixup import mix_pairs

    source = torch.zeros(6, dtype=torch.long)
    groups = torch.tensor([0, 1, 0, 1, 0, 1])  # two original sizes in one source
    draws = (torch.zeros(6), torch.full((6,), 0.3), torch.rand(6, generator=torch.Generator().manual_seed(0)))
    partner, weight, mixed = mix_pairs(source, [0], 1.0, draws, groups)
    assert mixed.all() and (groups[partner] == groups).all() and (partner != torch.arange(6)).all()


def test_suggest_labels_asks_each_teacher_on_its_own_view_as_training_does(world_plan):
    # the world's cls teacher takes 28x28 views of its 28x28 originals; the student sees 32x32
    from amalgam.labels.suggest import predictions

    found = predictions(world_plan, max_images=len(world_plan.sources), log=lambda msg: None)
    sid = world_plan.sources.names.index("items")
    rows = list(range(world_plan.sources.offsets[sid], world_plan.sources.offsets[sid] + 3))
    samples = [world_plan.sources[i] for i in rows]
    images = torch.stack([s["image"] for s in samples])
    views = BatchViews(images, world_plan.student_view, [s["original"] for s in samples])
    teacher = world_plan.teachers["cls"]
    trained_on, _ = answer_views(teacher, views, torch.arange(3), images.shape[-2:], augmented=False)
    torch.testing.assert_close(found.confidence["cls"][rows], trained_on.softmax(1).max(1).values)
    assert (teacher(images).softmax(1) - trained_on.softmax(1)).abs().max() > 1e-5  # the student's view differs


def test_holes_in_dense_answers_do_not_spread_over_a_shrinking_resize():
    # a review: 1% of scattered "no depth" pixels shrunk 256 -> 64 made 45% of the pixels holes, scored
    # against the teacher (the student has none), so the student could seem to beat it
    from amalgam.data.views import resize, resize_with_holes

    gen = torch.Generator().manual_seed(0)
    depth = 1.0 + torch.rand(1, 1, 256, 256, generator=gen)
    depth[torch.rand(depth.shape, generator=gen) < 0.01] = float("nan")
    out = resize_with_holes(depth, (64, 64))
    assert torch.isnan(out).float().mean() < 0.01
    valid = ~torch.isnan(out)
    assert bool(((out[valid] >= 1.0) & (out[valid] <= 2.0)).all())  # averages of real answers only
    assert torch.isnan(resize(depth, (64, 64))).float().mean() > 0.3  # what a plain resize did
    logits = torch.randn(1, 3, 64, 64, generator=gen)  # no holes: the plain resize, up to rounding
    torch.testing.assert_close(resize_with_holes(logits, (16, 16)), resize(logits, (16, 16)))


def test_a_segmenters_own_nan_still_spreads_to_be_found_holes_are_for_tasks_that_mark_them():
    # a review: a segmenter's scattered NaN logits were averaged away by the hole-aware shrink, and the
    # broken row trained on instead of being left out and counted
    from amalgam.data.views import Placement, undo

    logits = torch.randn(1, 3, 64, 64)
    logits[0, :, 5, 5] = float("nan")
    identity = [Placement()]  # a stretched view: the whole original, the whole view
    assert torch.isnan(undo(logits, identity, (32, 32))).any()  # the default: spreads, found
    assert not torch.isnan(undo(logits, identity, (32, 32), holes=True)).any()


def test_the_students_image_is_the_view_a_teacher_of_its_size_would_get(tmp_path):
    # a trial: the student's image was OpenCV's bilinear without antialiasing, every teacher view antialiased; a
    # teacher whose view matched the student's was handed the student's image, so the same teacher on the same
    # set scored 0.5966 beside a 64x64 student and 0.5935 beside a 64x96 one
    import numpy as np
    from PIL import Image

    from amalgam.config.schema import SourceConfig
    from amalgam.data import build_image_set

    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    cfg = SourceConfig(type="folder", path=tmp_path / "images")
    for size in ((32, 32), (40, 64), (160, 192)):  # shrinking, another aspect, growing
        sample = build_image_set("data.sources.x", cfg, lambda p: p, size, False, originals=True)[0]
        view, _ = make_view(sample["original"], ViewSpec(size))
        torch.testing.assert_close(sample["image"], view, rtol=0, atol=0)
