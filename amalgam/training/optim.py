"""``train.optimizer`` and ``train.schedule``: the optimiser and its per-step learning-rate schedule."""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import torch
from torch import nn

from amalgam.config.schema import TrainConfig
from amalgam.errors import RecipeError

#: devices whose parameters torch's fused AdamW and SGD kernels update
FUSED_DEVICES = ("cpu", "cuda")


def build_optimizer(params: Iterable, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW, at ``cfg.lr`` with ``cfg.weight_decay``, over parameters or the
    groups of :func:`parameter_groups` (a group's own ``lr`` overrides ``cfg.lr``). Fused where every
    parameter is a float on the CPU or a GPU: one kernel for all of them (the quickstart student's
    AdamW step took 5.2 ms on one CPU thread a step, 1.6 fused)."""
    groups = list(params)
    fused = _fusable(groups)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def _fusable(groups: list) -> Optional[bool]:
    """True where the fused kernels take every parameter, else None (torch's own choice)."""
    tensors = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    ok = bool(tensors) and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in tensors)
    return True if ok else None


def parameter_groups(student: nn.Module, extra: Iterable[torch.nn.Parameter], cfg: TrainConfig) -> list[dict]:
    """The trainable parameters of ``student`` and ``extra`` (the objective's own) as optimizer groups:
    one at ``cfg.lr``, and with ``cfg.encoder_lr_scale`` other than 1 a second group of the student's
    encoder stages at that multiple of it. The first group is the one at ``cfg.lr`` (train_log.csv's lr)."""
    scale = cfg.encoder_lr_scale
    encoder = {id(p) for m in _encoder_modules(student) for p in m.parameters()} if scale != 1 else set()
    params = [p for p in [*student.parameters(), *extra] if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in encoder]}]
    slow = [p for p in params if id(p) in encoder]
    return groups + ([{"params": slow, "lr": cfg.lr * scale}] if slow else [])


def _encoder_modules(student: nn.Module) -> list[nn.Module]:
    """``student.encoder_modules()``; a student class of a plugin without it is refused by name."""
    modules = getattr(student, "encoder_modules", None)
    if modules is None:
        raise RecipeError("train.encoder_lr_scale", f"{type(student).__name__} has no encoder_modules() to slow down")
    return modules()


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine to zero over ``steps``, x0.1 every third of them (``step``), or constant (``none``);
    with ``cfg.warmup_epochs`` the rate first rises linearly from a hundredth of itself over that
    share of the steps (the schedule itself still counts from step 0)."""
    warm = warmup_steps(cfg, steps)
    if cfg.schedule == "step" and not warm:  # kept a StepLR: checkpoints of earlier runs resume into it
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, steps // 3), gamma=0.1)
    base = SCHEDULES[cfg.schedule](steps)
    if not warm:
        return torch.optim.lr_scheduler.LambdaLR(opt, base)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: base(s) * min(1.0, 0.01 + 0.99 * s / warm))


def warmup_steps(cfg: TrainConfig, steps: int) -> int:
    """Steps of the linear warm-up: ``train.warmup_epochs`` of the ``train.epochs`` that ``steps`` cover."""
    epochs = getattr(cfg, "warmup_epochs", 0.0)  # teacher-training configs (tools/train_teacher.py) have none
    return 0 if not epochs else max(1, round(steps * min(1.0, epochs / cfg.epochs)))


def _cosine(steps: int) -> Callable[[int], float]:
    return lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))


def _step(steps: int) -> Callable[[int], float]:
    every = max(1, steps // 3)
    return lambda s: 0.1 ** (s // every)


def _constant(steps: int) -> Callable[[int], float]:
    return lambda s: 1.0


#: ``train.schedule`` -> (steps -> learning-rate factor of each step)
SCHEDULES: dict[str, Callable[[int], Callable[[int], float]]] = {"cosine": _cosine, "step": _step, "none": _constant}
