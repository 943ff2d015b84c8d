"""Mixup for distillation: blends stay within a source, and their targets come from live teachers."""

from __future__ import annotations

import pytest
import torch

from amalgam.cli import main
from amalgam.config.recipe import load_recipe
from amalgam.data.views import make_view
from amalgam.distill.mixup import mix_batch
from amalgam.distill.plan import build_plan
from amalgam.distill.targets import with_live_rows
from amalgam.errors import RecipeError
from amalgam.teachers.teacher import Teacher


def one_hot_rows(count: int) -> torch.Tensor:
    """Row i is 1 in channel i and 0 elsewhere, so a blend shows which rows went into it."""
    images = torch.zeros(count, count, 2, 2)
    for i in range(count):
        images[i, i] = 1.0
    return images


def draws(count: int, pick: float = 0.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.full((count,), pick), torch.rand(count, generator=g) * 0.8 + 0.1, torch.rand(count, generator=g)


def test_blends_pair_rows_of_the_same_named_source_only():
    source = torch.tensor([0, 0, 0, 1, 1, 2])
    images = one_hot_rows(6)
    out, mixed = mix_batch(images, source, [0, 1], fraction=1.0, draws=draws(6))
    assert mixed.tolist() == [True, True, True, True, True, False]
    torch.testing.assert_close(out[5], images[5])  # source 2 is not named
    for row in range(5):
        weights = out[row, :, 0, 0]
        (used,) = torch.nonzero(weights > 0, as_tuple=True)
        assert len(used) == 2 and row in used.tolist()
        partner = [u for u in used.tolist() if u != row][0]
        assert source[partner] == source[row]
        assert weights.sum().item() == pytest.approx(1.0)


def test_a_lone_row_of_its_source_and_unpicked_rows_stay_as_they_are():
    source = torch.tensor([0, 1, 1, 1])
    pick = torch.tensor([0.0, 0.0, 0.9, 0.9])  # fraction 0.5: only rows 0 and 1 are picked
    _, weight, order = draws(4)
    out, mixed = mix_batch(one_hot_rows(4), source, [0, 1], fraction=0.5, draws=(pick, weight, order))
    assert mixed.tolist() == [False, True, False, False]
    torch.testing.assert_close(out[[0, 2, 3]], one_hot_rows(4)[[0, 2, 3]])


def test_nothing_blended_returns_the_batch_itself():
    images = one_hot_rows(3)
    out, mixed = mix_batch(images, torch.tensor([0, 1, 2]), [0, 1, 2], fraction=1.0, draws=draws(3))
    assert mixed is None and out is images


class FakeTeacher:
    """Answers each image's mean, twice; counts the images it ran on."""

    tap = None

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return x.mean(dim=(1, 2, 3)).unsqueeze(1).repeat(1, 2)


def test_live_rows_replace_only_the_blended_rows_targets():
    teacher = FakeTeacher()
    images = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 3, 2, 2).contiguous()
    asked = []

    def cached(name, idx):
        asked.append(idx.tolist())
        return torch.full((len(idx), 2), -1.0), None

    live = torch.tensor([False, True, False, True, True])
    out, feat = with_live_rows(cached, {"cls": teacher}, images, live)("cls", torch.tensor([0, 1, 3]))
    assert feat is None and teacher.calls == [2]  # rows 1 and 3: the blended rows asked for
    assert out[:, 0].tolist() == [-1.0, 1.0, 3.0]
    assert asked == [[0]]  # the cache is not asked about the blends' raw images


def test_a_mixup_source_that_does_not_exist_is_named(world):
    with pytest.raises(RecipeError, match=r"train\.mixup\.sources\.0.*'itemz' is not a source"):
        load_recipe(world, overrides=["train.mixup={sources: [itemz]}"])


def test_with_the_cache_the_teacher_still_answers_for_the_blends(world, tmp_path, monkeypatch):
    """Cached rows come from raw images; a blend is none of them, so the teacher must run on it."""
    seen = []
    real = Teacher.forward

    def recording(self, images):
        if self.name == "cls":
            seen.append(images.detach().clone())
        return real(self, images)

    monkeypatch.setattr(Teacher, "forward", recording)
    args = ["--quiet", "--set", "train.epochs=1", "--set", "train.samples_per_epoch=16", "--set", "train.augment=false"]
    args += ["--set", "train.mixup={sources: [items], fraction: 1.0}", "--set", "train.max_eval_images=1"]
    args += ["--set", "train.batch_size=8", "--set", "data.sources.items.weight=2.0"]  # ~11 items drawn
    assert main(["build", str(world), "--output", str(tmp_path / "run"), *args]) == 0
    plan = build_plan(load_recipe(world), log=lambda msg: None)
    sid = plan.sources.names.index("items")
    view = plan.teachers["cls"].input_spec.view  # the teacher sees blends of its own views of the originals
    raw = torch.stack(
        [
            make_view(plan.sources[i]["original"], view)[0]
            for i in range(plan.sources.offsets[sid], plan.sources.offsets[sid + 1])
        ]
    )
    rows = torch.cat([x for x in seen if x.shape[1:] == raw.shape[1:]]).flatten(1)  # not the shape checks
    a, b = raw.flatten(1)[:, None], raw.flatten(1)[None, :]  # every pair of raw items
    diff = a - b
    lam = ((rows[:, None, None] - b) * diff).sum(-1) / diff.pow(2).sum(-1).clamp_min(1e-12)
    residual = (rows[:, None, None] - (lam[..., None] * a + (1 - lam[..., None]) * b)).norm(dim=-1)
    blend = (residual < 1e-3) & (lam > 0.02) & (lam < 0.98)
    assert blend.flatten(1).any(dim=1).sum() >= 6  # the blended items, answered live
