"""Checks of what a loss is handed as logits or probabilities, for the parts a user's own loop calls.

A check reads its answer back from the tensor's device: on the CPU that is free, on an accelerator it
waits for the device, so off the CPU each call site checks its first call of the process only.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch

from amalgam.errors import AmalgamError

#: how far probabilities may fall below 0 and their sums over dim 1 stray from 1 (fp16 softmaxes)
TOLERANCE = 1e-2
#: call sites that checked a tensor off the CPU in this process (:func:`should_check`)
_checked_on_device: set[str] = set()


def should_check(tensor: torch.Tensor, check: Optional[bool], site: str) -> bool:
    """Whether call site ``site`` checks ``tensor`` now: ``check`` when given; else never while
    compiling or tracing (a data-dependent branch would break the graph), every call on the CPU,
    the first call of the process on an accelerator."""
    if check is not None:
        return check
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or tensor.numel() == 0:
        return False
    if tensor.device.type == "cpu":
        return True
    first = site not in _checked_on_device
    _checked_on_device.add(site)
    return first


def refuse_probabilities(logits: torch.Tensor, owner: str, what: str, check: Optional[bool] = None) -> None:
    """Raises where ``logits`` (classes on dim 1) are probabilities: >= 0 and summing to 1 at every
    position, not all of them 0 or 1. Softened again at T they made a near-uniform target (an ensemble
    of softmaxes gave 0.10-0.12 a class of 10) or a loss 57x too small, without a word. ``check``: see
    :func:`should_check` (the site is ``owner`` and ``what``).
    """
    if logits.dim() < 2 or logits.shape[1] < 2 or not should_check(logits, check, f"{owner}: {what}"):
        return
    t = logits.detach().float()
    fractions = ((t > 0) & (t < 1)).sum()  # one-hot rows are as plausible as logits as they are as probabilities
    low, stray, between = torch.stack([t.min(), (t.sum(1) - 1).abs().max(), fractions.float()]).tolist()  # one read
    if low >= 0 and stray <= TOLERANCE and between:
        raise AmalgamError(
            f"{owner}: {what} are probabilities (>= 0, summing to 1 over dim 1), not logits: pass the logits"
            " before the softmax (or their log: log-probabilities are logits)"
        )


def temperature_value(temperature: object, owner: str) -> float:
    """``temperature`` as a float: a Python or NumPy number or a 0-d tensor, finite and > 0.

    Raises:
        AmalgamError: naming ``owner`` (T = 0 gave NaN targets, T < 0 turned them upside down, a bool
            passed for 1).
    """
    if isinstance(temperature, torch.Tensor):
        if temperature.numel() != 1 or temperature.requires_grad or temperature.device.type != "cpu":
            raise AmalgamError(
                f"{owner}: temperature must be a number > 0 (a one-value CPU tensor without grad at most: a learned"
                f" or device temperature is not supported), got a tensor {list(temperature.shape)} on"
                f" {temperature.device}{' requiring grad' if temperature.requires_grad else ''}"
            )
        temperature = temperature.item()
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise AmalgamError(f"{owner}: temperature must be a number > 0, got {temperature!r}")
    value = float(temperature)
    if not (math.isfinite(value) and value > 0):
        raise AmalgamError(f"{owner}: temperature must be > 0, got {value}")
    return value
