"""The Trainer's shape: fit / train_one_epoch / step / state_dict / load_state_dict, callbacks as plain callables."""

from __future__ import annotations

import torch
from world import SMALL_TRAIN as SMALL
from world import trainer_for

from amalgam.config.recipe import load_recipe
from amalgam.distill.plan import build_plan

QUIET = lambda msg: None  # noqa: E731


def test_fit_runs_every_epoch_and_calls_the_callbacks_after_each(world, tmp_path):
    trainer = trainer_for(world, tmp_path)
    rows = []
    trainer.callbacks.append(lambda t, row: rows.append((t.epoch, row["epoch"], "loss" in row)))
    result = trainer.fit()
    assert rows == [(1, 1, True), (2, 2, True)] and len(result.history) == 2 and result.images == 16
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "train_log.csv").is_file()


def test_state_dict_round_trips_into_a_fresh_trainer(world, tmp_path):
    first = trainer_for(world, tmp_path / "a")
    first.callbacks.clear()  # nothing written: the state comes from state_dict alone
    first.train_one_epoch(1)
    state = first.state_dict()
    assert state["epoch"] == 1 and "partial" not in state and not (tmp_path / "a" / "checkpoint.pt").exists()
    second = trainer_for(world, tmp_path / "b")
    second.load_state_dict(state)
    assert second.epoch == 1 and second.result.history == first.result.history
    for a, b in zip(first.student.state_dict().values(), second.student.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(second.augment.rng.get_state(), first.augment.rng.get_state())


def test_step_trains_the_student_on_one_batch(world, tmp_path):
    trainer = trainer_for(world, tmp_path)
    batch = next(iter(trainer.loader))
    before = [p.detach().clone() for p in trainer.student.parameters()]
    trainer.student.train()
    loss, parts = trainer.step(batch)
    assert loss > 0 and parts and set(parts) <= set(trainer.objective.terms)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.student.parameters()))
    assert trainer.result.images == batch["image"].shape[0]


def test_eval_every_writes_the_ratio_curve_without_changing_training(world, tmp_path):
    """train.eval_every scores the student into each scored epoch's row; the training stream is the same."""
    from amalgam.evaluation.during import eval_callback

    plain = trainer_for(world, tmp_path / "plain")
    plain.fit()
    scored = trainer_for(world, tmp_path / "scored")
    scored.callbacks.insert(0, eval_callback(scored.plan, torch.device("cpu"), every=2))
    scored.fit()
    teachers = list(scored.plan.teachers)
    first, last = scored.result.history
    assert not any(k.startswith("ratio_") for k in first)  # epoch 1 of 2: not scored
    assert {f"ratio_{t}" for t in teachers} <= set(last) and all(last[f"ratio_{t}"] > 0 for t in teachers)
    assert "ratio_" in (tmp_path / "scored" / "train_log.csv").read_text().splitlines()[0]
    for a, b in zip(plain.student.state_dict().values(), scored.student.state_dict().values()):
        assert torch.equal(a, b)


def test_eval_every_is_a_recipe_key(world, tmp_path):
    from amalgam.cli import main

    out = tmp_path / "run"
    args = ["build", str(world), "--output", str(out), "--quiet", *[f"--set={s}" for s in SMALL]]
    assert main([*args, "--set", "train.eval_every=1"]) == 0
    header = (out / "train_log.csv").read_text().splitlines()[0]
    assert header.count("ratio_") == len(build_plan(load_recipe(world), log=QUIET).teachers)


def test_eval_every_scores_the_teachers_once(world, tmp_path, monkeypatch):
    """The teachers do not change during training: only the first scoring runs them."""
    import amalgam.evaluation.evaluate as evaluation
    from amalgam.evaluation.during import eval_callback

    calls = []
    real = evaluation.answer_views
    monkeypatch.setattr(evaluation, "answer_views", lambda *a, **k: calls.append(1) or real(*a, **k))
    trainer = trainer_for(world, tmp_path)
    epochs_seen = []
    trainer.callbacks.insert(0, eval_callback(trainer.plan, torch.device("cpu"), every=1))
    trainer.callbacks.insert(1, lambda t, row: epochs_seen.append(len(calls)))
    trainer.fit()
    first, second = trainer.result.history
    assert epochs_seen[0] > 0 and epochs_seen[1] == epochs_seen[0]  # no teacher answer in epoch 2's scoring
    assert {k for k in first if k.startswith("ratio_")} == {k for k in second if k.startswith("ratio_")} != set()


def test_a_resume_says_a_source_folder_that_changed_since(fresh_world, tmp_path):
    from world import write_dense

    first = trainer_for(fresh_world, tmp_path / "a")
    first.callbacks.clear()
    first.train_one_epoch(1)
    state = first.state_dict()
    said = []
    same = trainer_for(fresh_world, tmp_path / "b", log=said.append)
    same.load_state_dict(state)
    assert not [line for line in said if "changed since the run started" in line]
    scenes = fresh_world.parent / "scenes"
    write_dense(scenes / "more", 4, seed=5)
    for path in (scenes / "more" / "images").iterdir():  # four new images in the scenes source
        path.rename(scenes / "train" / "images" / f"new_{path.name}")
    said.clear()
    grown = trainer_for(fresh_world, tmp_path / "c", log=said.append)
    grown.load_state_dict(state)
    expected = "warning: data.sources.scenes changed since the run started (12 -> 16 images): the resumed epochs"
    assert any(line.startswith(expected) for line in said), said
    # report.json's warnings too: it was said in the log only, and the report read as an uninterrupted run's
    resumed = trainer_for(fresh_world, tmp_path / "d")
    result = resumed.fit(resume=state)
    assert any(line.startswith(expected.removeprefix("warning: ")) for line in result.warnings), result.warnings
    # a second resume compares with the sources as the first left them: the warning is kept, not lost
    again = trainer_for(fresh_world, tmp_path / "e").fit(resume=resumed.state_dict())
    assert any(line.startswith(expected.removeprefix("warning: ")) for line in again.warnings), again.warnings


def test_resuming_a_checkpoint_from_before_spread_limits_warns_where_a_limit_is_set(world, tmp_path):
    # a trial: a checkpoint of 2026-12-01 trained on the first 400 scenes; resumed, it drew every 20th, unsaid
    first = trainer_for(world, tmp_path / "a")
    first.callbacks.clear()
    first.train_one_epoch(1)
    state = first.state_dict()
    del state["sources"]  # as a checkpoint written before sources were recorded
    said = []
    trainer_for(world, tmp_path / "b", log=said.append).load_state_dict(state)
    assert not [line for line in said if ".limit keeps its images spread" in line]  # no limit: the same images
    said.clear()
    limited = trainer_for(world, tmp_path / "c", ["data.sources.scenes.limit=8"], log=said.append)
    limited.load_state_dict(state)
    expected = (
        "warning: data.sources.scenes.limit keeps its images spread evenly over the sorted files since 2026-12-03"
    )
    assert any(line.startswith(expected) for line in said), said
    assert any(line.startswith(expected) for line in limited.resume_warnings)  # kept for report.json


def test_every_epoch_renews_the_other_ranks_streams_from_the_seed_and_epoch(world, tmp_path, monkeypatch):
    # seeded once, a resumed rank drew other dropout masks than the uninterrupted run's
    from amalgam.training import trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "own_streams", lambda seed, ctx, epoch=0: calls.append(epoch))
    trainer = trainer_for(world, tmp_path, ["train.epochs=2"])
    trainer.fit()
    assert calls == [1, 2]


def test_workers_whose_batches_do_not_fit_the_shared_memory_are_turned_off_and_said(world, tmp_path, monkeypatch):
    # a trial: 1600x1200 photos with workers 2 and Docker's 64 MB /dev/shm: each worker dropped its batch and the
    # build waited forever
    from collections import namedtuple

    from amalgam.training import loader as loader_module

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(loader_module, "SHARED_MEMORY", tmp_path)
    monkeypatch.setattr(loader_module.shutil, "disk_usage", lambda path: usage(2**20, 2**20 - 1000, 1000))
    said = []
    trainer = trainer_for(world, tmp_path / "a", ["train.workers=2"], log=said.append)
    assert trainer.loader.num_workers == 0
    assert any(
        line.startswith("train.workers 2 -> 0: the batches they would prepare ahead take about") for line in said
    )
    monkeypatch.setattr(loader_module.shutil, "disk_usage", lambda path: usage(2**40, 0, 2**40))
    assert trainer_for(world, tmp_path / "b", ["train.workers=2"]).loader.num_workers == 2  # room: as set
    # torchrun's processes on one machine share it (a review): room for one process's workers, not for eight
    need = loader_module.batch_bytes(trainer.plan, trainer.plan.recipe.train.batch_size) * 2 * 2
    monkeypatch.setattr(loader_module.shutil, "disk_usage", lambda path: usage(2**40, 0, 3 * need))
    assert trainer_for(world, tmp_path / "c", ["train.workers=2"]).loader.num_workers == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert trainer_for(world, tmp_path / "d", ["train.workers=2"]).loader.num_workers == 0


def test_a_resume_on_another_number_of_processes_is_said_and_reported(world, tmp_path):
    # a trial: a 2-process run resumed on 1 went unsaid, its student neither run's; report.json named no count
    first = trainer_for(world, tmp_path / "a")
    first.callbacks.clear()
    first.train_one_epoch(1)
    state = first.state_dict()
    assert state["processes"] == 1 and first.result.processes == 1
    said = []
    trainer_for(world, tmp_path / "b", log=said.append).load_state_dict(state)
    assert not [line for line in said if "processes before the resume" in line]
    state["processes"] = 2  # as a torchrun run's checkpoint
    resumed = trainer_for(world, tmp_path / "c", log=said.append)
    resumed.load_state_dict(state)
    expected = "warning: this run trained on 2 processes before the resume and continues on 1: each normalises"
    assert any(line.startswith(expected) for line in said) and any(
        w.startswith(expected) for w in resumed.resume_warnings
    )
