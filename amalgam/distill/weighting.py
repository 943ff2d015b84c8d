"""How the objective weighs its distillation terms against each other (``amalgamation.task_weights``).

Each scheme is a small module the :class:`~amalgam.distill.objective.Objective` owns, so whatever it
learns or measures is checkpointed with the student:

- ``fixed``: the recipe's ``{task or teacher: weight}``;
- ``uncertainty``: Kendall et al.'s learned ``exp(-s) * L + s``, whose balance ends at ``1 / L``: a
  term whose loss stays high (a dense task) ends with the least say;
- ``initial_loss``: each term divided by its own mean over the first epoch, so every term starts
  with an equal say and keeps it, whatever the scale of its loss.

Registered schemes are built with the term names and the steps of one epoch.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from amalgam.errors import AmalgamError
from amalgam.registry import Registry


class FixedWeights(nn.Module):
    """The recipe's weights, resolved per term (a teacher's name first, then its task's, else 1)."""

    name = "fixed"

    def __init__(self, weights: dict[str, float]):
        super().__init__()
        self.fixed = dict(weights)

    def forward(self, term: str, loss: torch.Tensor) -> torch.Tensor:
        return self.fixed[term] * loss

    def weights(self) -> dict[str, float]:
        """Each term's weight now."""
        return dict(self.fixed)

    def describe(self) -> str:
        """What the build log says at the start."""
        return "task weights (fixed): " + ", ".join(f"{t} {w:g}" for t, w in self.fixed.items())


#: ``amalgamation.task_weights`` names -> scheme; each is built with the objective's term names
TASK_WEIGHTINGS = Registry("task weighting")


@TASK_WEIGHTINGS.register("uncertainty")
class UncertaintyWeights(nn.Module):
    """Kendall et al.'s ``exp(-s) * L + s`` with a learned log-variance ``s`` per term (from 0)."""

    name = "uncertainty"

    def __init__(self, terms: list[str], epoch_steps: Optional[int] = None):
        super().__init__()
        self.log_vars = nn.ParameterDict({n: nn.Parameter(torch.zeros(())) for n in terms})

    def forward(self, term: str, loss: torch.Tensor) -> torch.Tensor:
        s = self.log_vars[term]
        return torch.exp(-s) * loss + s

    def weights(self) -> dict[str, float]:
        return {n: math.exp(-float(s.detach())) for n, s in self.log_vars.items()}

    def describe(self) -> str:
        return "task weights (uncertainty): learned, each from 1 (it ends near 1 / the term's loss)"


@TASK_WEIGHTINGS.register("initial_loss")
class InitialLossWeights(nn.Module):
    """Each term divided by its mean over the first ``epoch_steps`` batches it appears in.

    Until then the mean so far is used, this batch's loss included (detached), so the first step
    already weighs every term at 1. The sums are buffers: a resumed run keeps its weights. Meant
    for losses >= 0 that start away from 0 (every built-in task's); under several processes each
    keeps its own sums, and rank 0's are the checkpoint's.
    """

    name = "initial_loss"

    def __init__(self, terms: list[str], epoch_steps: Optional[int]):
        super().__init__()
        if epoch_steps is None:
            raise AmalgamError("task_weights 'initial_loss' averages over one epoch: give Objective its epoch_steps")
        self.index = {n: i for i, n in enumerate(terms)}
        self.steps = max(1, epoch_steps)
        self.register_buffer("loss_sum", torch.zeros(len(terms)))
        self.register_buffer("loss_count", torch.zeros(len(terms)))

    def forward(self, term: str, loss: torch.Tensor) -> torch.Tensor:
        i = self.index[term]
        # tensor arithmetic, not a Python if: no host sync per step on an accelerator
        counting = (self.loss_count[i] < self.steps).to(loss.dtype)
        self.loss_sum[i] += counting * loss.detach().float()
        self.loss_count[i] += counting
        return loss * (self.loss_count[i] / self.loss_sum[i].clamp_min(1e-12))

    def weights(self) -> dict[str, float]:
        count, total = self.loss_count.tolist(), self.loss_sum.tolist()
        return {n: count[i] / total[i] if count[i] else 1.0 for n, i in self.index.items()}

    def describe(self) -> str:
        steps = f"{self.steps:,} steps (one epoch)"
        return f"task weights (initial_loss): each term divided by its mean loss over its first {steps}"
