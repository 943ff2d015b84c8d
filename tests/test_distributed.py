"""torchrun: two CPU processes (gloo) train what one process would, and only rank 0 writes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from torch.utils.data import SequentialSampler

from amalgam.cli import main
from amalgam.errors import AmalgamError
from amalgam.training.distributed import DistContext, GlobalBatchShard

SETTINGS = ["--quiet", "--set", "train.epochs=2", "--set", "train.samples_per_epoch=16", "--set", "train.batch_size=8"]
SETTINGS += ["--set", "train.workers=0"]


@pytest.mark.parametrize("drop_last", [True, False])
def test_shards_of_every_global_batch_add_up_to_the_single_process_batches(drop_last):
    sampler = SequentialSampler(range(21))
    shards = [list(GlobalBatchShard(sampler, 6, DistContext(r, 3), drop_last)) for r in range(3)]
    assert all(len(s) == len(GlobalBatchShard(sampler, 6, DistContext(r, 3), drop_last)) for r, s in enumerate(shards))
    batches = len(shards[0]) // 2
    merged = [x for b in range(batches) for s in shards for x in s[2 * b : 2 * b + 2]]
    expected = list(range(18)) if drop_last else list(range(21)) + [0, 1, 2]  # the last batch is padded
    assert merged == expected
    with pytest.raises(AmalgamError, match="train.batch_size: 7 must be divisible by the 3 processes"):
        GlobalBatchShard(sampler, 7, DistContext(0, 3), True)


def test_torchrun_two_processes_match_one_process(world, tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert main(["build", str(world), "--output", str(single), *SETTINGS]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "amalgam", "build", str(world), "--output", str(multi), *SETTINGS[1:]]  # not quiet
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torchrun: 2 processes (gloo)" in done.stdout
    assert done.stdout.count("# amalgam report") == 1  # rank 1 writes and prints nothing
    one = json.loads((single / "report.json").read_text())
    two = json.loads((multi / "report.json").read_text())
    assert two["train"]["epochs"] == 2
    # same samples, flips and global batch; only BatchNorm sees half batches per process
    for a, b in zip(one["tasks"], two["tasks"]):
        assert b["student_value"] == pytest.approx(a["student_value"], abs=0.05, rel=0.05), a["teacher"]
    assert (multi / "checkpoint.pt").exists() and (multi / "teacher_cache").is_dir()


# SIGTERM reaches rank 1 only, at epoch 2 step 1 (what a scheduler killing one worker's process looks like)
LAUNCHER = """
import os, signal, sys
from amalgam.cli import main
from amalgam.training.trainer import Trainer
real, calls = Trainer.step, []
def step(self, batch):
    calls.append(1)
    if len(calls) == 3 and os.environ["RANK"] == "1":
        os.kill(os.getpid(), signal.SIGTERM)
    return real(self, batch)
Trainer.step = step
sys.exit(main(sys.argv[1:]))
"""


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def launched(script: str, world, run) -> tuple[list[str], subprocess.CompletedProcess]:
    """The build's arguments, and the build of ``world`` into ``run`` by two processes running ``script``."""
    launcher = run.parent / "launch.py"
    launcher.write_text(script)
    args = ["build", str(world), "--output", str(run), *SETTINGS[1:]]
    return args, subprocess.run([*TORCHRUN, str(launcher), *args], env=ENV, capture_output=True, text=True, timeout=300)


def test_sigterm_on_one_rank_stops_every_rank_at_that_step_and_resume_finishes(world, tmp_path):
    run = tmp_path / "run"
    args, stopped = launched(LAUNCHER, world, run)
    said = stopped.stdout[-2000:] + stopped.stderr[-2000:]
    assert stopped.returncode != 0 and "stopped by SIGTERM in epoch 2 after step 1/2" in stopped.stdout, said
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and state["partial"]["epoch"] == 2 and state["partial"]["step"] == 1
    cmd = [*TORCHRUN, "-m", "amalgam", *args, "--resume"]
    resumed = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "from step 1 of epoch 2" in resumed.stdout
    assert json.loads((run / "report.json").read_text())["train"]["epochs"] == 2


class _Rank:
    """A stand-in for a torchrun rank: ``share`` returns what rank 0 sent."""

    def __init__(self, rank: int, sent=None):
        self.enabled, self.is_main, self.sent, self.calls = True, rank == 0, sent, 0

    def share(self, value):
        self.calls += 1
        return value if self.is_main else self.sent


def test_every_rank_takes_rank_0s_auto_rung_under_a_latency_budget(world, monkeypatch):
    from amalgam.config.recipe import load_recipe
    from amalgam.distill import plan as plan_module
    from amalgam.distill.plan import build_plan
    from amalgam.pipeline import same_rung_everywhere

    keys = ["student.encoder=auto", "student.decoder_channels=null", "student.budget.latency_ms=1000000"]
    keys += ["student.budget.params=null"]  # the tiny teachers: no share of theirs fits a rung
    plan = build_plan(load_recipe(world, keys), with_data=False, log=lambda m: None)
    monkeypatch.setattr(plan_module, "choose_encoder", lambda *a: pytest.fail("rank 1 must not time the ladder"))
    rank1 = _Rank(1, ("ok", ("tu-test_efficientnet", [8, 8, 8, 8, 8])))  # what rank 0 sends (decided_on_main)
    same_rung_everywhere(plan, rank1)
    assert rank1.calls == 1 and plan.student_spec().encoder == "tu-test_efficientnet"
    assert plan.student_spec().decoder_channels == [8, 8, 8, 8, 8]
    with pytest.raises(AmalgamError, match="student.budget: no rung fits"):  # rank 0 failed: rank 1 stops too
        same_rung_everywhere(build_plan(load_recipe(world, keys), with_data=False, log=lambda m: None),
                             _Rank(1, ("error", "student.budget: no rung fits")))  # fmt: skip
    monkeypatch.undo()
    rank0 = _Rank(0)
    plan0 = build_plan(load_recipe(world, keys), with_data=False, log=lambda m: None)
    same_rung_everywhere(plan0, rank0)  # rank 0 chooses (times the ladder) and sends its rung
    assert rank0.calls == 1 and plan0.encoder_choice() is not None


def test_every_rank_takes_rank_0s_searched_tree(monkeypatch, tmp_path):
    # each rank searched alone: timings and warm-up affinities differ, and DDP refused the different trees
    from amalgam import pipeline

    chosen = object()  # rank 0's SearchResult, as the broadcast hands it over
    monkeypatch.setattr(pipeline, "search_tree", lambda *a: pytest.fail("rank 1 must not search"))
    rank1 = _Rank(1, ("ok", chosen))
    assert pipeline.searched_tree(None, torch.device("cpu"), tmp_path, print, rank1) is chosen
    monkeypatch.setattr(pipeline, "search_tree", lambda *a: chosen)
    rank0 = _Rank(0)
    assert pipeline.searched_tree(None, torch.device("cpu"), tmp_path, print, rank0) is chosen and rank0.calls == 1


# rank 1's teachers answer NaN/inf on every row it draws, rank 0's on none (one GPU's bad kernel, one
# shard of bad images): the counts are summed over the ranks, so that both take one decision
NAN_ON_RANK_1 = """
import os, sys, torch
import amalgam.distill.targets as targets
from amalgam.cli import main
if os.environ["RANK"] == "1":
    targets.nonfinite_rows = lambda task, outs: torch.ones(len(outs), outs[0].shape[0], dtype=torch.bool)
sys.exit(main(sys.argv[1:]))
"""


def test_nonfinite_counts_are_summed_over_the_ranks_so_every_rank_decides_alike(world, tmp_path):
    _, done = launched(NAN_ON_RANK_1, world, tmp_path / "run")
    said = done.stdout[-3000:] + done.stderr[-3000:]
    # about half of every teacher's rows (rank 1's, all of them): warned, not a stop of rank 1 alone
    assert done.returncode == 0, said
    lines = [line for line in done.stdout.splitlines() if "answered NaN/inf on" in line]
    assert lines, said
    for line in lines:  # the two ranks' rows counted, rank 0's fine ones among them
        bad, rows = map(int, re.search(r"on (\d+) of (\d+) training rows", line).groups())
        assert 0 < bad < rows, line


def test_the_epoch_end_stop_reads_the_counts_of_every_rank(world_plan):
    from amalgam.distill.targets import NonFiniteRows

    task = world_plan.teachers["seg-a"].task
    counts = NonFiniteRows(stop_mid_epoch=False)
    for _ in range(64):  # this rank: every row fine
        counts.keep("seg-a", ["seg-a"], [torch.zeros(1, 3, 2, 2)], task)
    other_rank = [65, 65]  # the other rank: 65 of 65 rows NaN/inf
    with pytest.raises(AmalgamError, match=r"NaN/inf on most rows \(seg-a on 65 of 129 rows\)"):
        counts.epoch_lines(lambda own: [a + b for a, b in zip(own, other_rank)], ["seg-a"])


def test_no_mid_epoch_stop_where_the_processes_decide_together(world_plan):
    from amalgam.distill.targets import NONFINITE_MIN_ROWS, NonFiniteRows

    task = world_plan.teachers["seg-a"].task
    alone, together = NonFiniteRows(), NonFiniteRows(stop_mid_epoch=False)
    nan = [torch.full((NONFINITE_MIN_ROWS, 3, 2, 2), float("nan"))]
    with pytest.raises(AmalgamError, match="NaN/inf on most rows"):
        alone.keep("seg-a", ["seg-a"], nan, task)
    assert together.keep("seg-a", ["seg-a"], nan, task).numel() == 0  # left out, counted: decided at the end


def test_a_mirror_check_failing_on_rank_0_stops_every_rank_with_its_error(world_plan, monkeypatch):
    # rank 0 alone runs the check: its error, kept to itself, left rank 1 waiting in share() for ever
    import amalgam.pipeline as pipeline

    def broken(plan, log):
        raise RuntimeError("teacher 'seg-a' ran out of memory")

    monkeypatch.setattr(pipeline, "unflipped_sources", broken)
    rank0 = _Rank(0)
    with pytest.raises(AmalgamError, match="the mirror check failed on rank 0: .*ran out of memory"):
        pipeline.run_flips(world_plan, None, rank0, lambda m: None)
    assert rank0.calls == 1  # it shared the error before raising
    monkeypatch.setattr(pipeline, "unflipped_sources", lambda *a: pytest.fail("rank 1 must not run the check"))
    rank1 = _Rank(1, ("error", "RuntimeError: teacher 'seg-a' ran out of memory"))
    with pytest.raises(AmalgamError, match="the mirror check failed on rank 0"):
        pipeline.run_flips(world_plan, None, rank1, lambda m: None)
    assert pipeline.run_flips(world_plan, None, _Rank(1, ("ok", {"items": "why"})), lambda m: None) == {"items": "why"}


MIRROR_FAILS_ON_RANK_0 = """
import os, sys
import amalgam.pipeline as pipeline
from amalgam.cli import main
if os.environ["RANK"] == "0":
    def broken(plan, log):
        raise RuntimeError("teacher ran out of memory")
    pipeline.unflipped_sources = broken
sys.exit(main(sys.argv[1:]))
"""


def test_under_torchrun_a_mirror_check_error_on_rank_0_ends_both_processes(world, tmp_path):
    _, done = launched(MIRROR_FAILS_ON_RANK_0, world, tmp_path / "run")  # 300 s: a wait for ever fails the test
    said = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode != 0 and "the mirror check failed on rank 0" in said, said


def test_the_process_group_waits_for_rank_0_alone_longer_than_nccls_default(monkeypatch):
    from datetime import timedelta

    from amalgam.training import distributed

    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: seen.update(kw))
    ctx = distributed.init_distributed("cpu")
    assert ctx.world == 2 and not ctx.is_main
    assert seen["backend"] == "gloo" and seen["timeout"] >= timedelta(minutes=60)


def test_ranks_draw_their_own_dropout_and_noise_but_rank_0_the_seeds():
    # seeded alike, every rank drew the same masks for its rows
    from amalgam.training.distributed import DistContext, own_streams

    def draws(ctx, epoch=0):
        torch.manual_seed(5)
        own_streams(5, ctx, epoch)
        return torch.rand(4)

    alone, rank0, rank1 = draws(DistContext()), draws(DistContext(0, 2, 0)), draws(DistContext(1, 2, 1))
    assert torch.equal(alone, rank0) and not torch.equal(rank0, rank1)
    assert torch.equal(rank1, draws(DistContext(1, 2, 1))) and not torch.equal(rank1, draws(DistContext(1, 2, 1), 3))
