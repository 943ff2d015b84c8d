"""The training loop: a plain loop over epochs; progress goes through a ``log`` callable."""

from __future__ import annotations

import csv
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from amalgam.config.recipe import TrainConfig, recipe_changes
from amalgam.data import mixing_sampler
from amalgam.distill.cache import TeacherCache, apply_flip, live_targets
from amalgam.distill.mixup import mix_batch, with_live_rows
from amalgam.distill.objective import Objective
from amalgam.distill.plan import Plan
from amalgam.errors import AmalgamError
from amalgam.io import atomic_save
from amalgam.training.distributed import DistContext, GlobalBatchShard
from amalgam.training.interrupt import StopRequest
from amalgam.training.profiling import StepTimer
from amalgam.training.progress import bar_for


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch; deterministic algorithms where torch has them."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AmalgamError(f"device: '{name}' requested but CUDA is not available")
    return torch.device(name)


def autocast_for(device: torch.device):
    """Mixed precision on CUDA only: measured here, bf16 convolutions on CPU are ~20x slower."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    plan: Plan, cfg: TrainConfig, seed: int, device: torch.device, ctx: DistContext = DistContext()
) -> DataLoader:
    """Loader over the mixed sources, sampled by source weight, with the source id of each sample.

    Under torchrun each rank loads its contiguous slice of every global batch.
    """
    weights = [plan.recipe.data.sources[n].weight for n in plan.sources.names]
    samples = cfg.samples_per_epoch or len(plan.sources)
    sampler = mixing_sampler(plan.sources, weights, samples, seed)
    drop_last = samples >= 2 * cfg.batch_size  # no 1-sample batch for BatchNorm
    if ctx.enabled:
        sampler = GlobalBatchShard(sampler, cfg.batch_size, ctx, drop_last)
    return DataLoader(
        plan.sources,
        batch_size=ctx.local_batch(cfg.batch_size),
        sampler=sampler,
        num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0,
        pin_memory=device.type == "cuda",
        drop_last=drop_last and not ctx.enabled,
        worker_init_fn=_worker_init,
        generator=torch.Generator().manual_seed(seed),
    )


def flip_mask(batch: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Which samples of a batch to flip left-right: a random half, drawn from ``generator``."""
    return (torch.rand(batch, generator=generator) < 0.5).to(device)


def random_hflip(images: torch.Tensor, generator: torch.Generator, *dense: torch.Tensor):
    """Flips a random half of the batch left-right (teachers and student see the same images).

    Dense targets given in ``dense`` (``[B, ..., H, W]``) flip with their images; with none, the
    flipped images are returned alone, else a tuple ``(images, *dense)``.
    """
    flip = flip_mask(images.shape[0], generator, images.device)
    return apply_flip(images, flip) if not dense else (apply_flip(images, flip), *(apply_flip(t, flip) for t in dense))


def open_cache(plan: Plan, run_dir: Path, log: Callable[[str], None]) -> Optional[TeacherCache]:
    """The teacher cache when ``train.cache_teachers`` is on and it fits ``train.cache_max_gb``."""
    cfg = plan.recipe.train
    if not cfg.cache_teachers:
        log("teacher cache: off (train.cache_teachers: false): teachers run on every batch")
        return None
    need = TeacherCache.estimate_bytes(plan) / 1e9
    if need > cfg.cache_max_gb:
        log(f"teacher cache: off, it would take {need:.1f} GB > train.cache_max_gb {cfg.cache_max_gb}")
        return None
    log(
        f"teacher cache: on, up to {need:.2f} GB under {run_dir / 'teacher_cache'}; augmentation is the horizontal"
        " flip only (geometric), applied to the cached outputs as to the images"
    )
    return TeacherCache(run_dir / "teacher_cache", plan, log)


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps: int):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    if cfg.schedule == "step":
        every = max(1, steps // 3)
        return torch.optim.lr_scheduler.StepLR(opt, step_size=every, gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)


@dataclass
class TrainResult:
    """What :func:`train` measured."""

    epochs: int
    seconds: float
    images: int
    history: list[dict] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def train(
    plan: Plan,
    student: nn.Module,
    run_dir: Path,
    device: torch.device,
    log: Callable[[str], None] = print,
    ctx: DistContext = DistContext(),
    timer: Optional[StepTimer] = None,
    resume: Optional[dict] = None,
) -> TrainResult:
    """Trains the student from the teachers' outputs alone (no ground truth is read).

    Writes ``train_log.csv`` (per-epoch mean of every loss term) and ``checkpoint.pt`` (the
    training state, atomically, after every epoch) into ``run_dir``. Under torchrun (``ctx``) the
    student runs in DistributedDataParallel and only rank 0 writes. ``timer`` (tools/bench.py)
    splits each step's time into data / teachers / student (forward, loss, backward) / optimizer.
    ``resume`` (a ``checkpoint.pt``) continues after its last finished epoch (or, after Ctrl-C,
    from the step where it stopped) with every state and random stream restored, so a resumed run
    ends where an uninterrupted one would. The first Ctrl-C finishes the current step, saves the
    checkpoint and raises ``KeyboardInterrupt``; a second one stops at once.
    """
    timer = timer or StepTimer(enabled=False)
    cfg = plan.recipe.train
    seed_everything(plan.recipe.seed)
    objective = Objective(plan, student)
    student.to(device)
    objective.to(device)
    for teacher in plan.teachers.values():
        teacher.to(device)
    loader = make_loader(plan, cfg, plan.recipe.seed, device, ctx)
    cache = open_cache(plan, run_dir, log) if ctx.is_main else None
    ctx.barrier()  # rank 0 made the cache files; the others open them
    if not ctx.is_main:
        cache = open_cache(plan, run_dir, lambda msg: None)
    if cfg.student_channels_last:
        student.to(memory_format=torch.channels_last)
    model = student
    if ctx.enabled:
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(student, device_ids=ids, find_unused_parameters=True)
    if cfg.compile:  # the plain student stays the one that is saved and evaluated
        log("train.compile: compiling the student (the first steps are slow)")
        model = torch.compile(model)
    local = slice(ctx.rank * ctx.local_batch(cfg.batch_size), (ctx.rank + 1) * ctx.local_batch(cfg.batch_size))
    params = [p for p in list(student.parameters()) + list(objective.parameters()) if p.requires_grad]
    opt = build_optimizer(params, cfg)
    steps = max(1, cfg.epochs * len(loader))
    sched = build_scheduler(opt, cfg, steps)
    use_scaler = device.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    result = TrainResult(cfg.epochs, 0.0, 0)
    flip_rng = torch.Generator().manual_seed(plan.recipe.seed + 1)  # flips and mixup draws
    mix_ids = [plan.sources.names.index(n) for n in cfg.mixup.sources] if cfg.mixup is not None else []
    first = 1
    if resume is not None:
        first = _restore(resume, student, objective, opt, sched, flip_rng, loader, result) + 1
        stopped = resume.get("partial")
        at = f", from step {stopped['step']} of epoch {stopped['epoch']}" if stopped else ""
        log(f"resuming after epoch {first - 1} of {cfg.epochs}{at}")
    start = time.perf_counter() - result.seconds
    board = open_tensorboard(run_dir, log) if cfg.tensorboard and ctx.is_main else None
    partial = (resume or {}).get("partial")
    with StopRequest(enabled=not ctx.enabled) as stop:
        for epoch in range(first, cfg.epochs + 1):
            student.train()
            sums: dict[str, float] = {}
            count = done = 0
            batches = iter(loader)
            if partial is not None and partial["epoch"] == epoch:
                # continue an epoch stopped by Ctrl-C: draw its first batches again, unused
                done, sums, count = partial["step"], dict(partial["sums"]), partial["count"]
                for _ in range(done):
                    next(batches)
                torch.set_rng_state(resume["torch_rng"])
            bar = bar_for(log, len(loader), f"epoch {epoch}/{cfg.epochs}")
            bar.skip(done)
            # this epoch's pace, not the run's average: a resumed or once-slowed run shows its speed now
            epoch_start, images_before = time.perf_counter(), result.images
            for step, batch in enumerate(timer.iterate(batches), done + 1):
                raw = batch["image"].to(device, non_blocking=True)
                source = batch["source"].to(device, non_blocking=True)
                # the global batch's flips, sliced: N processes flip what one process would
                flip = flip_mask(cfg.batch_size, flip_rng, device)[local][: raw.shape[0]] if cfg.augment else None
                images = apply_flip(raw, flip)
                mixed = None
                if cfg.mixup is not None:
                    draws = tuple(
                        torch.rand(cfg.batch_size, generator=flip_rng)[local][: raw.shape[0]] for _ in range(3)
                    )
                    images, mixed = mix_batch(images, source, mix_ids, cfg.mixup.fraction, draws)
                if cfg.student_channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                if cache is not None:
                    targets = cache.targets(raw, batch["source"], batch["index"], flip)
                    if mixed is not None:  # blends are new images: their teachers run live
                        targets = with_live_rows(targets, plan.teachers, images, mixed)
                else:
                    targets = live_targets(plan.teachers, images)
                with timer.section("student"):  # minus "teachers", which runs inside
                    with autocast_for(device):
                        out = model(images)
                        try:
                            loss, parts = objective(out, images, source, timer.wrap(targets))
                        except AmalgamError as exc:
                            kept = f"; last good checkpoint: {run_dir / 'checkpoint.pt'}" if epoch > 1 else ""
                            raise AmalgamError(f"epoch {epoch} step {step}: {exc}{kept}") from None
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    ctx.average_grads(p for p in objective.parameters() if p.requires_grad)
                with timer.section("optimizer"):
                    scaler.step(opt)
                    scaler.update()
                    sched.step()
                for key, value in {"loss": loss.item(), **parts}.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
                result.images += images.shape[0] * ctx.world
                pace = (result.images - images_before) / (time.perf_counter() - epoch_start)
                bar.update(1, loss=loss.item(), img_s=pace)
                if stop.requested:
                    bar.close()
                    if cache is not None:
                        cache.flush()
                    result.seconds = time.perf_counter() - start
                    state = _state(epoch - 1, student, objective, opt, sched, flip_rng, result, plan)
                    state["partial"] = {"epoch": epoch, "step": step, "sums": sums, "count": count}
                    atomic_save(state, run_dir / "checkpoint.pt")
                    log(
                        f"stopped by Ctrl-C in epoch {epoch} after step {step}/{len(loader)}: "
                        f"saved {run_dir / 'checkpoint.pt'}; continue with --resume"
                    )
                    raise KeyboardInterrupt
            bar.close()
            elapsed = time.perf_counter() - start
            result.seconds = elapsed
            row = {"epoch": epoch, "seconds": round(elapsed, 2), "lr": opt.param_groups[0]["lr"]}
            row.update({k: v / max(count, 1) for k, v in sums.items()})
            row.update({f"time_{k}": round(v, 3) for k, v in timer.seconds.items()})  # cumulative
            result.history.append(row)
            epoch_seconds = time.perf_counter() - epoch_start
            seconds_per_step = epoch_seconds / max(1, len(loader) - done)  # steps this process ran
            eta = seconds_per_step * len(loader) * (cfg.epochs - epoch)
            if cache is not None:
                hits, misses = cache.flush()
                row["cache_hit_rate"] = round(hits / max(1, hits + misses), 4)
            terms = ", ".join(
                f"{k} {v:.4f}"
                for k, v in row.items()
                if k not in ("epoch", "seconds", "lr", "loss", "cache_hit_rate") and not k.startswith("time_")
            )
            if cache is not None:
                terms += f"; teacher cache hits {row['cache_hit_rate']:.0%}"
            log(
                f"epoch {epoch}/{cfg.epochs} loss {row.get('loss', float('nan')):.4f} ({terms}) "
                f"{(result.images - images_before) / epoch_seconds:.1f} img/s, eta {eta:.0f}s"
            )
            if not ctx.is_main:
                continue
            if board is not None:
                for key, value in row.items():
                    if key != "epoch" and isinstance(value, (int, float)):
                        board.add_scalar(key, value, epoch)
                board.flush()
            state = _state(epoch, student, objective, opt, sched, flip_rng, result, plan)
            atomic_save(state, run_dir / "checkpoint.pt")
            _write_log(run_dir / "train_log.csv", result.history)  # after the checkpoint: a row means it is saved
    result.seconds = time.perf_counter() - start
    return result


def _state(epoch: int, student, objective, opt, sched, flip_rng, result: TrainResult, plan: Plan) -> dict:
    """Everything ``--resume`` needs to continue after ``epoch`` finished epochs."""
    return {
        "epoch": epoch,
        "student": student.state_dict(),
        "objective": objective.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "flip_rng": flip_rng.get_state(),
        "history": result.history,
        "images": result.images,
        "seconds": result.seconds,
        "recipe": plan.recipe.model_dump(mode="json", exclude={"output"}),
    }


def open_tensorboard(run_dir: Path, log: Callable[[str], None]):
    """A SummaryWriter under ``run_dir/tensorboard``, or None (with a note) when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log("train.tensorboard: the tensorboard package is not installed (pip install tensorboard); not logging")
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _restore(state: dict, student, objective, opt, sched, flip_rng, loader, result: TrainResult) -> int:
    """Loads a checkpoint's training state; returns the number of finished epochs."""
    student.load_state_dict(state["student"])
    objective.load_state_dict(state["objective"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    flip_rng.set_state(state["flip_rng"])
    result.history, result.images, result.seconds = list(state["history"]), state["images"], state["seconds"]
    epochs = state["epoch"]
    # the sampler's generator advances once per epoch: replay the finished epochs' draws
    sampler = loader.sampler.sampler if isinstance(loader.sampler, GlobalBatchShard) else loader.sampler
    for _ in range(epochs):
        list(sampler)
        if loader.generator is not None:  # the loader draws one base seed per epoch
            torch.empty((), dtype=torch.int64).random_(generator=loader.generator)
    return epochs


def read_checkpoint(path: Path, recipe) -> dict:
    """A run's ``checkpoint.pt`` for ``--resume``; refuses one written by a different recipe."""
    if not path.is_file():
        raise AmalgamError(f"nothing to resume: no checkpoint {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated or foreign file
        raise AmalgamError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if "flip_rng" not in state:
        raise AmalgamError(f"checkpoint {path} was written by an older amalgam and cannot be resumed")
    changed = recipe_changes(state["recipe"], recipe)
    if changed:
        raise AmalgamError(f"cannot resume {path}: the recipe changed since (keys: {', '.join(changed)})")
    return state


def _write_log(path: Path, history: list[dict]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
