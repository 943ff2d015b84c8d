"""The distillation Trainer: one object holding a run's state, one method per level of the loop.

``fit`` runs the epochs, ``train_one_epoch`` the steps of one epoch, ``step`` one optimiser step
on one batch; ``state_dict``/``load_state_dict`` are all ``--resume`` needs; ``callbacks`` are
plain callables run after each epoch (:mod:`amalgam.training.callbacks`). Shaped after
torchvision's classification reference, smaller.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from amalgam.data.views import RESIZE_KIND, RESIZE_VERSION, BatchViews, same_size_groups
from amalgam.distill.cache import open_cache
from amalgam.distill.objective import Objective
from amalgam.distill.plan import Plan
from amalgam.distill.targets import Targets, live_targets, with_live_rows
from amalgam.errors import AmalgamError
from amalgam.teachers.fingerprint import teacher_fingerprints
from amalgam.training.augment import AugmentedBatch, BatchAugment
from amalgam.training.callbacks import EpochEnd, save_checkpoint, tensorboard_writer, write_train_log
from amalgam.training.checkpoint import write_checkpoint
from amalgam.training.distributed import DistContext, own_streams
from amalgam.training.divergence import DivergenceWatch
from amalgam.training.interrupt import StopRequest
from amalgam.training.loader import make_loader, replay_epochs
from amalgam.training.optim import build_optimizer, build_scheduler, parameter_groups
from amalgam.training.profiling import StepTimer
from amalgam.training.progress import bar_for
from amalgam.training.result import TrainResult, weights_text
from amalgam.training.routing import make_router
from amalgam.training.runtime import (
    autocast_for,
    device_rng_state,
    grad_scaler_for,
    precision_name,
    precision_text,
    seed_everything,
    set_device_rng_state,
)


class Trainer:
    """Trains a student from the teachers' outputs alone (no ground truth is read).

    Args:
        plan: the resolved amalgamation (teachers, sources, recipe).
        student: the student; it is trained in place and stays the module that is saved.
        run_dir: where ``checkpoint.pt``, ``train_log.csv`` and the teacher cache go.
        device: where the student, the objective and the teachers run.
        log: progress lines.
        ctx: torchrun's process group (the student runs in DistributedDataParallel; rank 0 writes).
        timer: splits each step's time into data / teachers / student / optimizer (tools/bench.py).
        callbacks: more epoch-end callbacks, run (on rank 0) before the checkpoint and the CSV row
            are written, so what they add to the row is saved with it.
    """

    def __init__(
        self,
        plan: Plan,
        student: nn.Module,
        run_dir: Path,
        device: torch.device,
        log: Callable[[str], None] = print,
        ctx: DistContext = DistContext(),
        timer: Optional[StepTimer] = None,
        callbacks: Sequence[EpochEnd] = (),
    ):
        self.plan, self.student, self.run_dir = plan, student, run_dir
        self.device, self.log, self.ctx = device, log, ctx
        self.timer = timer or StepTimer(enabled=False)
        self.cfg = cfg = plan.recipe.train
        self.fingerprints = teacher_fingerprints(plan.recipe)
        self.source_prints = plan.sources.fingerprints()  # once: a source of 1M files takes a second
        seed_everything(plan.recipe.seed)
        self.objective = Objective(plan, student)  # initial_loss's window: one epoch of plan.sources
        # under torchrun the NaN/inf counts stop training at an epoch's end, summed over the processes
        self.objective.nonfinite.stop_mid_epoch = not ctx.enabled
        self.precision = precision_name(device, cfg.precision)  # what this process computes in
        if ctx.is_main:
            log(self.objective.weighting.describe())
            log(precision_text(device, cfg.precision))
        for module in (student, self.objective, *plan.teachers.values()):
            module.to(device)
        self.loader = make_loader(plan, cfg, plan.recipe.seed, device, ctx, log)
        taps = self.objective.teacher_taps  # the cache stores (and is keyed by) what the objective reads
        shared = ctx.enabled  # several processes fill the stores (no widening to fp32 then)
        self.cache = open_cache(plan, run_dir, taps, log, self.precision, shared) if ctx.is_main else None
        ctx.barrier()  # rank 0 made the cache files; the others open them
        if not ctx.is_main:
            self.cache = open_cache(plan, run_dir, taps, lambda msg: None, self.precision, shared)
        self.router = make_router(plan, student, self.objective.student_tap, device, log if ctx.is_main else _quiet)
        self.model = self._wrap(student)
        local = ctx.local_batch(cfg.batch_size)
        self.optimizer = build_optimizer(parameter_groups(student, self.objective.parameters(), cfg), cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, max(1, cfg.epochs * len(self.loader)))
        self.scaler = grad_scaler_for(device, self.precision)
        self.result = TrainResult(cfg.epochs, 0.0, 0, precision=self.precision, processes=ctx.world)
        self.result.teachers = self.fingerprints
        self.augment = BatchAugment(
            cfg, plan.sources.names, plan.recipe.seed, slice(ctx.rank * local, (ctx.rank + 1) * local), plan.unflipped
        )
        self.epoch = 0  # finished epochs
        self.resume_warnings: list[str] = []  # what changed under a resumed run (its sources' images)
        self.partial: Optional[dict] = None  # where Ctrl-C stopped the next epoch: {epoch, step, sums, count}
        self.partial_rng: Optional[torch.Tensor] = None  # the global RNG where ``partial`` stopped
        self.stop: Optional[StopRequest] = None
        self.divergence = DivergenceWatch()  # each raw term's first value: what a diverged student rose from
        self._clock = time.perf_counter()
        self.callbacks: list[EpochEnd] = self._default_callbacks(callbacks)

    def _wrap(self, student: nn.Module) -> nn.Module:
        """The module the steps call: the student, in DDP under torchrun, compiled if asked."""
        if self.cfg.student_channels_last:
            student.to(memory_format=torch.channels_last)
        model = student
        if self.ctx.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(student, device_ids=ids, find_unused_parameters=True)
        if self.cfg.compile:  # the plain student stays the one that is saved and evaluated
            self.log("train.compile: compiling the student (the first steps are slow)")
            model = torch.compile(model)
        return model

    def _default_callbacks(self, extra: Sequence[EpochEnd]) -> list[EpochEnd]:
        if not self.ctx.is_main:
            return []
        board = tensorboard_writer(self.run_dir, self.log) if self.cfg.tensorboard else None
        return [cb for cb in (*extra, board, save_checkpoint, write_train_log) if cb is not None]

    def fit(self, resume: Optional[dict] = None) -> TrainResult:
        """Trains the remaining epochs (all of them, or those after ``resume``'s checkpoint).

        The first Ctrl-C or SIGTERM finishes the current step, saves the checkpoint and raises
        :class:`~amalgam.training.interrupt.Stopped` (a ``KeyboardInterrupt``); a second one stops at once.
        """
        if resume is not None:
            self.load_state_dict(resume)
            at = f", from step {self.partial['step']} of epoch {self.partial['epoch']}" if self.partial else ""
            self.log(f"resuming after epoch {self.epoch} of {self.cfg.epochs}{at}")
        self._clock = time.perf_counter() - self.result.seconds
        with StopRequest() as self.stop:
            for epoch in range(self.epoch + 1, self.cfg.epochs + 1):
                row = self.train_one_epoch(epoch)
                for callback in self.callbacks:
                    callback(self, row)
            if self.stop.agree(self.ctx):  # asked during the last epoch's end: it was taken for none, exit 0
                self.log(
                    f"stopped by {self.stop.name} after the last epoch: {self.run_dir / 'checkpoint.pt'} holds it;"
                    " --resume evaluates and writes the student"
                )
                raise self.stop.stopped()
        self.stop = None
        if self.cfg.student_channels_last:  # what is timed, saved and exported is the plain student
            self.student.to(memory_format=torch.contiguous_format)
        self.result.seconds = time.perf_counter() - self._clock
        self.result.task_weights = self.objective.task_weights()
        self.result.task_weighting = self.objective.weighting.name
        diverged = self.divergence.line(self.result.history, self.result.task_weighting, self.cfg.lr)
        changed = [line.removeprefix("warning: ") for line in self.resume_warnings]
        self.result.warnings = ([diverged] if diverged else []) + changed
        if self.result.task_weights:  # a term starved by its weight shows here before any ratio does
            self.log(weights_text(self.result.task_weighting, self.result.task_weights))
        return self.result

    def train_one_epoch(self, epoch: int) -> dict:
        """One epoch (or the rest of one stopped by Ctrl-C); returns its row of ``train_log.csv``."""
        self.student.train()
        # ranks but 0 draw from streams of their own, renewed each epoch so a resumed run draws as an uninterrupted one
        own_streams(self.plan.recipe.seed, self.ctx, epoch)
        batches = iter(self.loader)
        done, sums, count = self._skip_done_steps(batches, epoch)
        bar = bar_for(self.log, len(self.loader), f"epoch {epoch}/{self.cfg.epochs}")
        bar.skip(done)
        # this epoch's pace, not the run's average: a resumed or once-slowed run shows its speed now
        started, images_before = time.perf_counter(), self.result.images
        for step, batch in enumerate(self.timer.iterate(batches), done + 1):
            try:
                loss, parts = self.step(batch)
            except AmalgamError as exc:
                kept = (
                    f"; last good checkpoint: {self.run_dir / 'checkpoint.pt'} (--resume; resume=True from Python)"
                    if epoch > 1
                    else ""
                )
                raise AmalgamError(f"epoch {epoch} step {step}: {exc}{kept}") from exc  # --debug: the cause's frames
            for key, value in {"loss": loss, **parts}.items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
            self.divergence.see(parts)
            bar.update(1, loss=loss, img_s=(self.result.images - images_before) / (time.perf_counter() - started))
            if self.stop is not None and self.stop.agree(self.ctx):
                bar.close()
                self._save_stopped(epoch, step, sums, count)
        bar.close()
        return self._finish_epoch(epoch, sums, count, len(self.loader) - done, started, images_before)

    def _skip_done_steps(self, batches, epoch: int) -> tuple[int, dict, int]:
        """Continues an epoch stopped by Ctrl-C: draws its finished batches again, unused."""
        if self.partial is None or self.partial["epoch"] != epoch:
            return 0, {}, 0
        done = self.partial["step"]
        for _ in range(done):
            next(batches)
        torch.set_rng_state(self.partial_rng)
        own_streams(self.plan.recipe.seed, self.ctx, epoch)  # rank 0's state was saved; the others' renew
        if self.cache is not None:  # the stopped steps' lookups count in this epoch's hit rate
            self.cache.add_counts(self.partial.get("cache_hits", 0), self.partial.get("cache_misses", 0))
        return done, dict(self.partial["sums"]), self.partial["count"]

    def step(self, batch: dict) -> tuple[float, dict[str, float]]:
        """One optimiser step on one batch; returns the loss and each term's unweighted value."""
        raw = batch["image"].to(self.device, non_blocking=True)
        source = batch["source"].to(self.device, non_blocking=True)
        aug = self.augment(raw, source, same_size_groups(batch))
        images = aug.images
        if self.cfg.student_channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = self._targets(aug, batch)
        with self.timer.section("student"):  # minus "teachers", which runs inside
            with autocast_for(self.device, self.precision):
                out = self.model(images, rows=self.router.rows(source)) if self.router else self.model(images)
                loss, parts = self.objective(out, images, source, self.timer.wrap(targets))
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.ctx.average_grads(p for p in self.objective.parameters() if p.requires_grad)
        with self.timer.section("optimizer"):
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
        self.result.images += images.shape[0] * self.ctx.world
        return loss.item(), parts

    def _targets(self, aug: AugmentedBatch, batch: dict) -> Targets:
        """The teachers' answers: cached for plain rows when the cache is on, live for blends."""
        views = BatchViews(aug.raw, self.plan.student_view, batch.get("original"), aug.flip)
        if aug.mixed is not None:
            views.blend(aug.partner, aug.weight)
        if self.cache is None:
            return live_targets(self.plan.teachers, views, self.objective.teacher_taps)
        targets = self.cache.targets(views, batch["source"], batch["index"], aug.flip)
        if aug.mixed is not None:  # blends are new images: their teachers run live
            targets = with_live_rows(targets, self.plan.teachers, views, aug.mixed, self.objective.teacher_taps)
        return targets

    def _finish_epoch(self, epoch: int, sums: dict, count: int, steps: int, started: float, images_before: int) -> dict:
        """The epoch's row (mean of each term, timings, cache hit rate), logged and kept in the history."""
        elapsed = time.perf_counter() - self._clock
        self.result.seconds = elapsed
        row = {"epoch": epoch, "seconds": round(elapsed, 2), "lr": self.optimizer.param_groups[0]["lr"]}
        means = {k: v / max(count, 1) for k, v in sums.items()}
        if "loss" in means:  # the weighted total, then the plain sum of the terms beside it
            row["loss"] = means.pop("loss")
            row["loss_unweighted"] = sum(means.values())
        row.update(means)
        row.update({f"time_{k}": round(v, 3) for k, v in self.timer.seconds.items()})  # cumulative
        self.result.history.append(row)
        epoch_seconds = time.perf_counter() - started
        eta = epoch_seconds / max(1, steps) * len(self.loader) * (self.cfg.epochs - epoch)
        if self.cache is not None:
            hits, misses = self.cache.flush()
            row["cache_hit_rate"] = round(hits / max(1, hits + misses), 4)
        try:  # one line per teacher whose targets were NaN/inf this epoch (its rows were left out)
            for line in self.objective.nonfinite.epoch_lines(self.ctx.total, self.plan.teachers):
                self.log(line)
        except AmalgamError as exc:
            raise AmalgamError(f"epoch {epoch}: {exc}") from None
        weighting = self.objective.weighting.name
        self.log(
            f"epoch {epoch}/{self.cfg.epochs} loss {row.get('loss', float('nan')):.4f} ({_terms(row, weighting)}) "
            f"{(self.result.images - images_before) / epoch_seconds:.1f} img/s, eta {eta:.0f}s"
        )
        diverged = self.divergence.new_line(self.result.history, weighting, self.cfg.lr)
        if diverged and self.ctx.is_main:
            self.log(f"warning: {diverged}")
        self.epoch, self.partial = epoch, None
        return row

    def _save_stopped(self, epoch: int, step: int, sums: dict, count: int) -> None:
        """After Ctrl-C or SIGTERM: saves the state mid-epoch (resume continues after ``step``) and stops."""
        self.partial = {"epoch": epoch, "step": step, "sums": sums, "count": count}
        if self.cache is not None:  # the resumed rest of the epoch adds to them (its hit rate is the epoch's)
            hits, misses = self.cache.flush()
            self.partial |= {"cache_hits": hits, "cache_misses": misses}
        self.result.seconds = time.perf_counter() - self._clock
        if self.ctx.is_main:  # every rank stops at this step; one writes, as at an epoch's end
            write_checkpoint(self.state_dict(), self.run_dir / "checkpoint.pt")
        self.ctx.barrier()
        self.log(
            f"stopped by {self.stop.name} in epoch {epoch} after step {step}/{len(self.loader)}: "
            f"saved {self.run_dir / 'checkpoint.pt'}; continue with --resume"
        )
        raise self.stop.stopped()

    def state_dict(self) -> dict:
        """Everything ``--resume`` needs to continue after ``self.epoch`` finished epochs
        (and, after Ctrl-C, from the step in ``partial``)."""
        state = {
            "epoch": self.epoch,
            "student": self.student.state_dict(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "flip_rng": self.augment.rng.get_state(),
            "history": self.result.history,
            "images": self.result.images,
            "seconds": self.result.seconds,
            "recipe": self.plan.recipe.model_dump(mode="json", exclude={"output"}),
            "teachers": self.fingerprints,  # what the recipe dump cannot see: --resume refuses changed teachers
            "sources": self.source_prints,  # nor this: a resume says a changed folder
            "spec": self.student.spec.to_dict(),  # what auto chose: a resume must build the same student
            "precision": self.result.precision,  # auto decides per machine: a resume elsewhere may differ
            "processes": self.ctx.world,  # each trains on its slice of a batch: another count is another run
            "divergence": self.divergence.state_dict(),
            "unflipped": dict(self.plan.unflipped),  # the mirror check's decision: a resume keeps it, not redone
            "resize_version": RESIZE_VERSION,  # the images it trained on: another resize is said on resume
            "resume_warnings": self.resume_warnings,  # a second resume compares with the sources as they are
        }
        if self.partial is not None:
            state["partial"] = self.partial
        if self.scaler.is_enabled():  # fp16: a resume must not start again at scale 65536 and skip steps
            state["scaler"] = self.scaler.state_dict()
        cuda_rng = device_rng_state(self.device)
        if cuda_rng is not None:  # noise and dropout sub-teachers draw from the GPU's stream there
            state["cuda_rng"] = cuda_rng
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restores a checkpoint's state, random streams included, so the run ends as an uninterrupted one."""
        self.student.load_state_dict(state["student"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        set_device_rng_state(self.device, state.get("cuda_rng"))  # absent: a CPU run, or an older checkpoint
        self.augment.rng.set_state(state["flip_rng"])
        if "scaler" in state and self.scaler.is_enabled():  # a run resumed in another precision starts afresh
            self.scaler.load_state_dict(state["scaler"])
        self.result.history, self.result.images = list(state["history"]), state["images"]
        self.result.seconds = state["seconds"]
        self.epoch = state["epoch"]
        self._resume_precision(state.get("precision"))
        self._resume_resize(state.get("resize_version"))
        found = source_changes(state.get("sources"), self.source_prints, limited_sources(self.plan.recipe))
        for line in found:  # and in report.json: the student is not the uninterrupted one
            self.log(line)
        found += self._resume_processes(state.get("processes"))
        self.resume_warnings = list(state.get("resume_warnings", [])) + found  # an earlier resume's kept
        self.partial = state.get("partial")
        # without stored first values, the rows trained before the resume (a stopped epoch's too) are not judged
        judged_from = len(self.result.history) + (self.partial is not None)
        self.divergence.load_state_dict(state.get("divergence"), judged_from)
        self.partial_rng = state["torch_rng"]  # set again once a stopped epoch's finished batches are redrawn
        replay_epochs(self.loader, self.epoch)

    def _resume_resize(self, before: Optional[int]) -> None:
        """Says when the epochs before a resume may have trained on images resized otherwise than now."""
        if before == RESIZE_VERSION:
            return
        then = f"resize version {before}" if before is not None else "a resize the checkpoint does not record"
        self.log(
            f"resize: the epochs before the resume trained on {then}; the rest trains on version {RESIZE_VERSION}"
            f" ({RESIZE_KIND}): a build without --resume trains on one"
        )

    def _resume_processes(self, before: Optional[int]) -> list[str]:
        """The line when a resumed run continues on another number of processes (a trial's 2 -> 1 went unsaid):
        batch norm then sees other slices, and the run is not the one it would have been uninterrupted."""
        if before is None or before == self.ctx.world:
            return []
        line = (
            f"warning: this run trained on {before} process{'es' if before > 1 else ''} before the resume and"
            f" continues on {self.ctx.world}: each normalises its own slice of a batch, so the run is not the one"
            " it would have been uninterrupted"
        )
        self.log(line)
        return [line]

    def _resume_precision(self, before: Optional[str]) -> None:
        """Says when a resumed run continues in another precision than it trained in (``auto`` decides
        per machine); the report then says ``mixed``."""
        now = self.precision
        if before is None:  # a checkpoint from before train.precision: fp32 on CPUs, autocast on CUDA
            before = now if self.device.type == "cuda" else "fp32"
        if before != now:
            self.log(f"precision: this run trained in {before} before the resume and continues in {now}")
            self.result.precision = "mixed"


#: since when ``limit`` keeps N files spread evenly (the first N before), and sources are recorded in checkpoints
SPREAD_LIMIT_SINCE = "2026-12-03"


def limited_sources(recipe) -> list[str]:
    """The training sources whose ``limit`` is set, by name."""
    return [name for name, source in recipe.data.sources.items() if source.limit is not None]


def source_changes(before: Optional[dict], now: dict, limited: Sequence[str] = ()) -> list[str]:
    """A line per source whose images changed since a resumed run started: the rest of the run draws
    from the sources as they are now. A checkpoint from before sources were recorded is from before
    ``limit`` spread its images: a line per ``limited`` source, which may draw other images now."""
    if before is None:
        return [
            f"warning: data.sources.{name}.limit keeps its images spread evenly over the sorted files since"
            f" {SPREAD_LIMIT_SINCE}; this checkpoint, which records no sources, is older, when it kept the first"
            " ones: the resumed epochs may draw other images than the epochs before"
            for name in limited
        ]
    lines = []
    for name, then in (before or {}).items():
        current = now.get(name)
        if current is not None and current != then:
            count = (
                f"{then['images']:,} -> {current['images']:,} images"
                if then["images"] != current["images"]
                else "the same number of images; other files, or the same written again: names, sizes or times differ"
            )
            lines.append(
                f"warning: data.sources.{name} changed since the run started ({count}): the resumed epochs"
                " draw from it as it is now, so the run is not the one it would have been uninterrupted"
            )
    return lines


def _quiet(message: str) -> None:
    """Log of the processes other than rank 0."""


def _terms(row: dict, weighting: str = "") -> str:
    """The loss terms of an epoch row as ``name value`` pairs (plus the cache hit rate), after which
    weighting the total before them is and the plain sum of the terms (``initial_loss`` keeps the
    total near 1 even when the terms grow 100x)."""
    skip = ("epoch", "seconds", "lr", "loss", "loss_unweighted", "cache_hit_rate")
    terms = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in skip and not k.startswith("time_"))
    if "loss_unweighted" in row:
        weighted = f"{weighting}-weighted" if weighting else "weighted"
        terms = f"{weighted}; unweighted {row['loss_unweighted']:.4f}: {terms}"
    if "cache_hit_rate" in row:
        terms += f"; teacher cache hits {row['cache_hit_rate']:.0%}"
    return terms
