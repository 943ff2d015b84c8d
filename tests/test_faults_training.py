"""Faults of training runs (trial D): a diverging student hidden by task weighting, a plain rebuild
over an unfinished run, the cache hit rate after a mid-epoch resume, CUDA-only state (nccl's flag,
the search's teachers, the loss scaler and the GPU's random stream), and two resume messages.

Every test here failed before its fix. There is no GPU in CI: the CUDA paths are tested through
the small functions that choose the device or the state, with a fake backend where needed.
"""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch
from test_faults import one_error_line
from world import trainer_for

from amalgam.cli import main
from amalgam.training import distributed
from amalgam.training.checkpoint import load_state
from amalgam.training.distributed import DistContext, collective_device
from amalgam.training.divergence import DivergenceWatch

SHORT = ["--set", "train.epochs=2", "--set", "train.samples_per_epoch=8", "--set", "train.batch_size=4"]
SHORT += ["--set", "train.workers=0", "--quiet"]
QUIET = lambda message: None  # noqa: E731
#: the session build's schedule (built_run)
ONE_EPOCH_OF_8 = ["--set", "train.epochs=1", "--set", "train.samples_per_epoch=8", "--quiet"]


def rows(run) -> list[dict]:
    with open(run / "train_log.csv") as f:
        return list(csv.DictReader(f))


# F2: a diverging student ------------------------------------------------------------------------


def test_a_diverging_student_is_said_in_the_log_and_the_report(world, built_run, tmp_path, capsys):
    out = tmp_path / "run"
    blown = ["--set", "train.lr=10", "--set", "amalgamation.task_weights=initial_loss"]
    capsys.readouterr()
    assert main(["build", str(world), "--output", str(out), *SHORT[:-1], *blown]) == 0
    printed = capsys.readouterr().out
    said = [line for line in printed.splitlines() if line.startswith("warning: the student diverged")]
    assert len(said) == 1 and "lower train.lr (10)" in said[0], printed  # once, in the epoch it is found
    assert "initial_loss-weighted; unweighted " in printed  # the epoch line says which loss is which
    warnings = json.loads((out / "report.json").read_text())["warnings"]
    assert warnings[0].startswith("the student diverged: its unweighted loss rose over 10x"), warnings
    first = rows(out)[0]  # beside the weighted total, the plain sum of the terms
    assert float(first["loss_unweighted"]) == pytest.approx(
        sum(float(first[t]) for t in ("cls", "seg-a", "seg-b", "depth"))
    )
    # the healthy session build stays far from it (and its log has the new column beside the old ones)
    healthy = json.loads((built_run / "report.json").read_text())["warnings"]
    assert not any("diverged" in w for w in healthy)
    assert {"epoch", "loss", "loss_unweighted"} <= set(rows(built_run)[0])


def test_a_term_starting_near_zero_may_grow_without_being_called_diverged():
    watch = DivergenceWatch()
    watch.see({"cls": 0.001, "seg": 1.0})
    assert watch.line([{"epoch": 1, "cls": 0.05, "seg": 0.8}], "initial_loss", 1e-3) is None  # 50x of nothing
    line = watch.line([{"epoch": 2, "cls": 0.05, "seg": 12.0}], "initial_loss", 1e-3)
    assert line and "seg 12x (12 in epoch 2 vs 1 at its first step)" in line and "cls" not in line


# F4: a plain rebuild over an unfinished run -------------------------------------------------------


def test_a_plain_build_refuses_an_unfinished_run_and_force_starts_it_over(world, built_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(built_run, out)
    (out / "report.json").unlink()  # as if killed during its evaluation
    saved = (out / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert main(["build", str(world), "--output", str(out), "--set", "train.epochs=1", "--quiet"]) == 2
    assert one_error_line(capsys) == (
        f"{out} holds an unfinished run (epoch 1 of 1): pass --resume to continue it or --force to start over"
        " (resume=True, force=True from Python)"
    )
    assert (out / "checkpoint.pt").read_bytes() == saved
    tiny = ["--set", "train.epochs=1", "--set", "train.samples_per_epoch=8"]
    assert main(["build", str(world), "--output", str(out), *tiny, "--force"]) == 0
    assert f"overwriting the unfinished run in {out} (--force)" in capsys.readouterr().out
    assert (out / "report.json").is_file()


# F5: the cache hit rate of an epoch stopped and resumed ----------------------------------------


def test_the_cache_hit_rate_of_a_resumed_epoch_is_the_uninterrupted_ones(world, tmp_path, monkeypatch):
    from amalgam.training.trainer import Trainer

    cached = ["train.cache_teachers=true", "train.samples_per_epoch=16"]
    whole = trainer_for(world, tmp_path / "whole", cached).fit()
    real, calls = Trainer.step, []

    def step(self, batch):  # epoch 2, step 2 of 4: what Ctrl-C looks like to the loop
        calls.append(1)
        if len(calls) == 6:
            self.stop.requested = True
        return real(self, batch)

    monkeypatch.setattr(Trainer, "step", step)
    with pytest.raises(KeyboardInterrupt):
        trainer_for(world, tmp_path / "stopped", cached).fit()
    monkeypatch.setattr(Trainer, "step", real)
    state = load_state(tmp_path / "stopped" / "checkpoint.pt")
    assert state["partial"]["epoch"] == 2 and state["partial"]["step"] == 2
    resumed = trainer_for(world, tmp_path / "stopped", cached).fit(resume=state)
    assert [r["cache_hit_rate"] for r in resumed.history] == [r["cache_hit_rate"] for r in whole.history]


def test_a_stop_asked_at_the_last_epochs_end_stops_instead_of_passing_for_none(world, tmp_path):
    # a Ctrl-C during the last epoch's checkpoint was taken for none: the build evaluated, exit 0
    from amalgam.training.interrupt import Stopped

    said: list[str] = []
    trainer = trainer_for(world, tmp_path / "run", ["train.epochs=2"], log=said.append)

    def asks(trainer, row):  # what a Ctrl-C during the last epoch's checkpoint looks like to the loop
        if row["epoch"] == 2:
            trainer.stop.requested = True

    trainer.callbacks.append(asks)
    with pytest.raises(Stopped):
        trainer.fit()
    assert any(line.startswith("stopped by Ctrl-C after the last epoch: ") for line in said)
    assert load_state(tmp_path / "run" / "checkpoint.pt")["epoch"] == 2  # --resume has it whole


# F6: nccl reduces CUDA tensors only -------------------------------------------------------------


def test_the_stop_flag_is_made_on_the_device_the_backend_reduces(monkeypatch):
    assert collective_device("nccl", 1) == torch.device("cuda", 1)
    assert collective_device("gloo", 1) == torch.device("cpu")
    assert collective_device("cpu:gloo,cuda:nccl", 0) == torch.device("cpu")
    asked, reduced = [], []

    def device_for(backend, local_rank):  # stands for cuda:3, which this machine may not have
        asked.append((backend, local_rank))
        return torch.device("cpu")

    def all_reduce(tensor, op=None):
        reduced.append(tensor)
        tensor.fill_(15)

    monkeypatch.setattr(distributed, "collective_device", device_for)
    monkeypatch.setattr(distributed.dist, "get_backend", lambda *args: "nccl")
    monkeypatch.setattr(distributed.dist, "all_reduce", all_reduce)
    assert DistContext(rank=1, world=2, local_rank=3).agree(0) == 15
    assert asked == [("nccl", 3)] and len(reduced) == 1


# F7: the search's teachers run where its images are ---------------------------------------------


def test_the_search_moves_the_teachers_to_its_device(world, tmp_path, monkeypatch):
    from amalgam.config.recipe import load_recipe
    from amalgam.distill.affinity import measure_affinity
    from amalgam.distill.plan import build_plan

    quick = ["student.search.steps=1", "student.search.every=1", "student.budget.params=1000"]
    plan = build_plan(load_recipe(world, quick), log=QUIET)
    moved = []
    for name, teacher in plan.teachers.items():
        real = teacher.to

        def to(*args, _name=name, _real=real, **kwargs):
            moved.append((_name, torch.device(args[0]) if args else kwargs.get("device")))
            return _real(*args, **kwargs)

        monkeypatch.setattr(teacher, "to", to)
    cpu = torch.device("cpu")
    measure_affinity(plan, cpu, tmp_path / "warmup.pt", QUIET)
    assert sorted(moved) == sorted((name, cpu) for name in plan.teachers)


# F8: the loss scaler and the GPU's random stream are part of the checkpoint ------------------------


def test_the_loss_scaler_state_is_saved_and_restored(world, tmp_path):
    first = trainer_for(world, tmp_path / "a")
    assert "scaler" not in first.state_dict()  # fp32 on a CPU: no scaler, and old checkpoints have none
    # an fp16 run's scaler (a CPU one here: CUDA's disables itself without a GPU) after it backed off
    first.scaler = torch.amp.GradScaler("cpu", init_scale=512.0, growth_interval=7)
    state = first.state_dict()
    assert state["scaler"]["scale"] == 512.0
    second = trainer_for(world, tmp_path / "b")
    second.scaler = torch.amp.GradScaler("cpu")
    second.load_state_dict(state)
    assert second.scaler.get_scale() == 512.0 and second.scaler.get_growth_interval() == 7


def test_a_checkpoint_without_the_new_entries_still_loads(world, tmp_path):
    first = trainer_for(world, tmp_path / "a")
    first.callbacks.clear()
    first.train_one_epoch(1)
    state = first.state_dict()
    assert "cuda_rng" not in state and state["divergence"]  # a CPU run has no GPU stream
    for key in ("divergence", "scaler", "cuda_rng"):  # what checkpoints before them lack
        state.pop(key, None)
    second = trainer_for(world, tmp_path / "b")
    second.load_state_dict(state)
    assert second.epoch == 1 and second.divergence.first == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_gpu_random_stream_is_saved_and_restored(world, tmp_path):
    trainer = trainer_for(world, tmp_path / "a")
    trainer.device = torch.device("cuda", 0)
    state = trainer.state_dict()
    expected = torch.rand(4, device="cuda")
    trainer.load_state_dict(state)
    assert torch.equal(torch.rand(4, device="cuda"), expected)


# F9.4 / F9.5: what to do when a resume is refused -----------------------------------------------


def test_a_resume_without_a_checkpoint_says_to_run_without_it(world, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "teacher_cache").mkdir(parents=True)  # killed during epoch 1: the cache filled so far stays
    assert main(["build", str(world), "--output", str(out), "--resume", "--quiet"]) == 2
    assert one_error_line(capsys) == (
        f"nothing to resume: no checkpoint {out}/checkpoint.pt; run without --resume to start the run "
        f"(the teacher outputs cached in {out}/teacher_cache are kept and reused)"
    )


def test_a_resume_asking_for_more_epochs_says_how_to_train_longer(world, built_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(built_run, out)
    (out / "report.json").unlink()
    capsys.readouterr()
    assert (
        main(["build", str(world), "--output", str(out), "--set", "train.epochs=5", *ONE_EPOCH_OF_8[2:], "--resume"])
        == 2
    )
    line = one_error_line(capsys)
    assert "the recipe changed since (keys: train.epochs (1 in the run, 5 now))" in line
    assert line.endswith(
        f"start a new one from its student with --set student.init={out}/student.pt (and another --output)"
    )


def test_initial_loss_waits_out_a_term_with_nothing_to_learn_yet_and_refuses_a_negative_one():
    # a first batch with no valid depth target (loss 0) stopped the build naming the weighting
    from amalgam.distill.weighting import InitialLossWeights
    from amalgam.errors import AmalgamError

    weights = InitialLossWeights(["depth", "seg"], epoch_steps=30)
    for _ in range(20):
        assert weights("depth", torch.tensor(0.0)).item() == 0.0  # no scale yet: unweighted, no stop
    assert weights("depth", torch.tensor(0.5)).item() == pytest.approx(1.0)  # the zeros did not count
    assert weights.weights()["depth"] == pytest.approx(2.0)
    with pytest.raises(AmalgamError, match=r"below 0, so it has no scale .* fixed weights as a mapping"):
        weights("seg", torch.tensor(-1.0))


def test_a_teacher_raising_in_training_is_one_line_naming_it(world, tmp_path):
    # a ~95-line traceback through amalgam's frames named neither the teacher nor what it was doing
    from amalgam.errors import AmalgamError

    trainer = trainer_for(world, tmp_path / "run", ["train.cache_teachers=false"])
    model = trainer.plan.teachers["seg-a"].model

    def broken(*args, **kwargs):
        raise ValueError("an odd image this network cannot take")

    model.forward = broken
    with pytest.raises(AmalgamError) as info:
        trainer.fit()
    said = str(info.value)
    assert said.startswith("epoch 1 step 1: teacher 'seg-a' failed on a batch of 1 image: an odd image this network")
    assert "\n" not in said and "--debug shows where" in said


def test_a_resume_asking_for_fewer_epochs_is_told_it_cannot_end_sooner(world, tmp_path):
    # a trial: lowering train.epochs on resume was told how to "train longer"
    from amalgam.config.recipe import load_recipe
    from amalgam.config.schema import recipe_differences
    from amalgam.training.engine import longer_hint

    stored = load_recipe(world, ["train.epochs=3"]).model_dump(mode="json")
    fewer = longer_hint(recipe_differences(stored, load_recipe(world, ["train.epochs=2"])), tmp_path)
    assert fewer == (
        "; its learning-rate schedule was laid over 3 epochs, so it cannot end after 2: resume with"
        " --set train.epochs=3, or start over with --force"
    )
    more = longer_hint(recipe_differences(stored, load_recipe(world, ["train.epochs=5"])), tmp_path)
    assert more.startswith("; to train longer, finish this run")


def test_a_refused_resume_says_the_values_the_run_had_as_compared(world):
    # a review: a key added since the run (its old behaviour) was said "null in the run"; a reordered mapping
    # "(order) null in the run, null now"
    from amalgam.config.recipe import load_recipe
    from amalgam.config.schema import recipe_differences
    from amalgam.training.engine import _then_and_now

    recipe = load_recipe(world)
    stored = recipe.model_dump(mode="json")
    stored["teachers"] = dict(reversed(list(stored["teachers"].items())))
    said = _then_and_now(recipe_differences(stored, recipe))
    then, now = ", ".join(reversed(list(recipe.teachers))), ", ".join(recipe.teachers)
    assert said == f"keys: teachers.(order) ({then} in the run, {now} now)"
