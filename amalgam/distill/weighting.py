"""How the objective weighs its distillation terms against each other (``amalgamation.task_weights``).

Each scheme is a small module the :class:`~amalgam.distill.objective.Objective` owns, so whatever it
learns or measures is checkpointed with the student:

- ``fixed``: the recipe's ``{task or teacher: weight}``;
- ``uncertainty``: Kendall et al.'s learned ``exp(-s) * L + s``, whose balance ends at ``1 / L``: a
  term whose loss stays high (a dense task) ends with the least say;
- ``initial_loss`` (the default): each term divided by its own mean over the first epoch, so every
  term starts at 1 and then counts by how far its loss has come down, whatever its scale.

A registered scheme (:data:`TASK_WEIGHTINGS`) is a module class built as ``(terms, epoch_steps)``
that follows :class:`TaskWeighting`.
"""

from __future__ import annotations

import math
from typing import Optional, Protocol

import torch
from torch import nn

from amalgam.errors import AmalgamError
from amalgam.registry import Registry


class TaskWeighting(Protocol):
    """What the objective asks of a weighting scheme."""

    name: str  #: what report.json's ``train.task_weighting`` says

    def __call__(self, term: str, loss: torch.Tensor) -> torch.Tensor:
        """The term's weighted loss (what joins the total)."""

    def weights(self) -> dict[str, float]:
        """Each term's weight now (report.json's ``train.task_weights``)."""

    def describe(self) -> str:
        """One line for the build log and ``inspect``."""


#: ``amalgamation.task_weights`` names -> scheme class, built as ``(terms, epoch_steps)``
TASK_WEIGHTINGS = Registry("task weighting")


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
        """One line for the build log and ``inspect``."""
        return "task weights (fixed): " + ", ".join(f"{t} {w:g}" for t, w in self.fixed.items())


@TASK_WEIGHTINGS.register("uncertainty")
class UncertaintyWeights(nn.Module):
    """Kendall et al.'s ``exp(-s) * L + s`` with a learned log-variance ``s`` per term (from 0).

    ``epoch_steps`` is not used: it learns all along.
    """

    name = "uncertainty"

    def __init__(self, terms: list[str], epoch_steps: Optional[int] = None):
        super().__init__()
        self.log_vars = nn.ParameterDict({n: nn.Parameter(torch.zeros(())) for n in terms})

    def forward(self, term: str, loss: torch.Tensor) -> torch.Tensor:
        s = self.log_vars[term]
        return torch.exp(-s) * loss + s

    def weights(self) -> dict[str, float]:
        """Each term's learned ``exp(-s)``."""
        return {n: math.exp(-float(s.detach())) for n, s in self.log_vars.items()}

    def describe(self) -> str:
        """One line for the build log and ``inspect``."""
        return "task weights (uncertainty): learned, each from 1 (it ends near 1 / the term's loss)"


@TASK_WEIGHTINGS.register("initial_loss")
class InitialLossWeights(nn.Module):
    """Each term divided by its mean over the first ``epoch_steps`` batches it appears in.

    Until then the mean so far is used, this batch's loss included (detached), so the first step
    weighs every term at 1. The sums are buffers: a resumed run keeps its weights. A term whose
    mean is not above 0 has no scale to divide by and is refused. Under several processes each
    keeps its own sums (of its slice of each batch), and rank 0's are the checkpoint's.
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
        if self.loss_count[i] < self.steps:
            # a zero loss (no valid target in the batch) says nothing of the term's scale: not counted
            value = loss.detach().float()
            seen = (value != 0).float()
            self.loss_sum[i] += value * seen
            self.loss_count[i] += seen
        count, total = self.loss_count[i], self.loss_sum[i]
        if count == 0:  # nothing to learn yet: no scale to divide by
            return loss
        mean = total / count
        if mean < 0:
            raise AmalgamError(
                f"task_weights 'initial_loss': the mean loss of '{term}' so far is {float(mean):.3g}, below 0,"
                " so it has no scale to divide by: set task_weights: uncertainty, or fixed weights as a mapping"
                " ({<task>: <weight>, ...})"
            )
        return loss / mean

    def weights(self) -> dict[str, float]:
        """Each term's ``1 / mean`` (1 for a term not seen yet)."""
        count, total = self.loss_count.tolist(), self.loss_sum.tolist()
        return {n: count[i] / total[i] if count[i] and total[i] > 0 else 1.0 for n, i in self.index.items()}

    def describe(self) -> str:
        """One line for the build log and ``inspect``."""
        steps = f"{self.steps:,} steps (one epoch)"
        return f"task weights (initial_loss): each term divided by its mean loss over its first {steps}"
