"""``train.optimizer`` and ``train.schedule``: the optimiser and its per-step learning-rate schedule."""

from __future__ import annotations

import math
from typing import Iterable

import torch

from amalgam.config.schema import TrainConfig


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW, at ``cfg.lr`` with ``cfg.weight_decay``."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine to zero over ``steps``, x0.1 every third of them (``step``), or constant (``none``)."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    if cfg.schedule == "step":
        every = max(1, steps // 3)
        return torch.optim.lr_scheduler.StepLR(opt, step_size=every, gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
