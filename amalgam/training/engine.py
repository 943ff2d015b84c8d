"""Training entry points: :func:`train` (one call, a whole run) and :func:`read_checkpoint` (``--resume``).

The loop itself is :class:`amalgam.training.trainer.Trainer`; the names below that live in their
own modules are re-exported here because tools and older code import them from this one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from amalgam.config.schema import Change, recipe_differences, resume_hint, runtime_changes
from amalgam.distill.cache import open_cache
from amalgam.distill.plan import Plan
from amalgam.errors import AmalgamError
from amalgam.teachers.fingerprint import fingerprint_changes
from amalgam.training.augment import flip_mask, random_hflip
from amalgam.training.callbacks import EpochEnd, open_tensorboard
from amalgam.training.checkpoint import PEERS_REQUIRED, REQUIRED, read_with_fallback
from amalgam.training.distributed import DistContext
from amalgam.training.loader import make_loader
from amalgam.training.optim import build_optimizer, build_scheduler
from amalgam.training.profiling import StepTimer
from amalgam.training.result import TrainResult
from amalgam.training.runtime import autocast_for, grad_scaler_for, resolve_device, seed_everything
from amalgam.training.trainer import Trainer

__all__ = [
    "TrainResult",
    "Trainer",
    "autocast_for",
    "build_optimizer",
    "build_scheduler",
    "flip_mask",
    "grad_scaler_for",
    "make_loader",
    "open_cache",
    "open_tensorboard",
    "random_hflip",
    "read_checkpoint",
    "resolve_device",
    "seed_everything",
    "train",
]


def train(
    plan: Plan,
    student: nn.Module,
    run_dir: Path,
    device: torch.device,
    log: Callable[[str], None] = print,
    ctx: DistContext = DistContext(),
    timer: Optional[StepTimer] = None,
    resume: Optional[dict] = None,
    callbacks: Sequence[EpochEnd] = (),
) -> TrainResult:
    """Trains the student from the teachers' outputs alone (no ground truth is read).

    Writes ``train_log.csv`` (per-epoch mean of every loss term) and ``checkpoint.pt`` (the
    training state, atomically, after every epoch) into ``run_dir``. Under torchrun (``ctx``) the
    student runs in DistributedDataParallel and only rank 0 writes. ``timer`` (tools/bench.py)
    splits each step's time into data / teachers / student (forward, loss, backward) / optimizer.
    ``resume`` (a ``checkpoint.pt``) continues after its last finished epoch (or, after Ctrl-C,
    from the step where it stopped) with every state and random stream restored, so a resumed run
    ends where an uninterrupted one would. The first Ctrl-C finishes the current step, saves the
    checkpoint and raises ``KeyboardInterrupt``; a second one stops at once. ``callbacks`` run after
    each epoch, before the checkpoint (e.g. ``train.eval_every``'s scoring).
    """
    return Trainer(plan, student, run_dir, device, log=log, ctx=ctx, timer=timer, callbacks=callbacks).fit(resume)


def read_checkpoint(path: Path, recipe, warn: Callable[[str], None] = print) -> dict:
    """A run's ``checkpoint.pt`` for ``--resume``, checked whole (falling back to ``checkpoint.prev.pt``
    with a warning when it is not); refuses one written by a different recipe (but for the
    :data:`~amalgam.config.schema.RUNTIME_KEYS`, said in ``warn``) or whose teachers' files
    or factory code changed since (checkpoints older than that record pass that check)."""
    peers = recipe.peers is not None
    state = read_with_fallback(path, warn, PEERS_REQUIRED if peers else REQUIRED)
    if peers and state.get("kind") != "peers":
        raise AmalgamError(f"checkpoint {path} is not a peers build's of this amalgam and cannot be resumed")
    differences = {change.key: change for change in recipe_differences(state["recipe"], recipe)}
    runtime, changed = runtime_changes(list(differences), peers)
    if runtime:
        warn(
            f"resuming {path} with runtime settings (or their defaults) changed since ({', '.join(runtime)}): "
            "the same training up to floating-point rounding"
        )
    if changed:
        changes = [differences[key] for key in changed]
        hint = resume_hint(changes) + longer_hint(changes, path.parent)
        raise AmalgamError(
            f"cannot resume {path}: the recipe changed since ({_then_and_now(changes)})"
            f"{hint or ': set them back as they were, or start over with --force'}"
        )
    changed = fingerprint_changes(state.get("teachers", {}), recipe)
    if changed:  # half a run from each version of a teacher is neither one's student
        raise AmalgamError(
            f"cannot resume {path}: teachers changed since the run started ({'; '.join(changed)}): "
            "restore them or start over with --force"
        )
    return state


def longer_hint(changes: list[Change], run_dir: Path) -> str:
    """For a resume refused over ``train.epochs``: how to train longer, or that a run cannot end sooner ('' for
    other keys).

    The schedule (warm-up, cosine) is laid over the epochs the run started with, so a run cannot
    grow or shrink mid-way; a finished student continues in a new run with a fresh schedule.
    """
    epochs = next((change for change in changes if change.key == "train.epochs"), None)
    if epochs is None:
        return ""
    then, now = epochs.then, epochs.now
    if isinstance(then, int) and isinstance(now, int) and now < then:  # told how to "train longer" (a trial)
        return (
            f"; its learning-rate schedule was laid over {then} epochs, so it cannot end after {now}: resume with"
            f" --set train.epochs={then}, or start over with --force"
        )
    return (
        "; to train longer, finish this run (--resume with its train.epochs), then start a new one from its "
        f"student with --set student.init={run_dir / 'student.pt'} (and another --output)"
    )


def _then_and_now(changes: list[Change]) -> str:
    """``keys: train.lr (0.004 in the run, 0.001 now), ...`` for the changed keys (values of the first five), the
    run's values as compared (a key added since at its old behaviour)."""
    shown = [
        f"{c.key} ({_short(c.then)} in the run, {_short(c.now)} now)" if i < 5 else c.key for i, c in enumerate(changes)
    ]
    return "keys: " + ", ".join(shown)


def _short(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."
