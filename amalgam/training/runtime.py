"""Where and how reproducibly a run computes: seeds, the device, mixed precision."""

from __future__ import annotations

import random
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from amalgam.errors import AmalgamError


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


def autocast_for(device: torch.device) -> AbstractContextManager:
    """Mixed precision on CUDA only: measured here, bf16 convolutions on CPU are ~20x slower."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def grad_scaler_for(device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 autocast (CUDA without bf16); a no-op scaler elsewhere."""
    use_scaler = device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler("cuda", enabled=use_scaler)
