"""Blocks that compute in fp32 inside a mixed-precision region.

Autocast runs matrix products in half precision even on fp32 inputs: probabilities under about 6e-8
become 0 in fp16 (their log -inf), and sums of many squares pass fp16's 65504. A loss part that
multiplies probabilities or sums long vectors runs inside :func:`full_precision`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def full_precision(device: torch.device) -> AbstractContextManager:
    """Autocast off for the block on ``device`` (CPU and CUDA; a no-op where torch has no autocast)."""
    return torch.autocast(device.type, enabled=False) if device.type in ("cpu", "cuda") else nullcontext()
