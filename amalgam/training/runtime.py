"""Where and how reproducibly a run computes: seeds, the device, mixed precision."""

from __future__ import annotations

import functools
import random
from contextlib import AbstractContextManager, nullcontext
from typing import Optional

import numpy as np
import torch

from amalgam.errors import AmalgamError


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch; deterministic algorithms where torch has them."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # that mode also fills every new tensor with NaN, a debugging aid that cost a tenth of a CPU
    # training step (profiled; docs/benchmarks.md): kernels that write their whole output need no fill
    torch.utils.deterministic.fill_uninitialized_memory = False


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AmalgamError(f"device: '{name}' requested but CUDA is not available")
    return torch.device(name)


#: ``train.precision`` -> the autocast dtype it names (``auto``: see :func:`autocast_dtype`)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@functools.cache  # asked on every step
def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 units (AMX or AVX512-BF16); without them oneDNN emulates bf16,
    which was measured far slower than fp32."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def autocast_dtype(device: torch.device, precision: str = "auto") -> Optional[torch.dtype]:
    """The dtype the student's training forward runs in (None: fp32, no autocast).

    ``auto`` is bf16 on CUDA (fp16 where the GPU has no bf16) and on a CPU with bf16 units, fp32 on
    any other CPU. Asking for a dtype the device cannot compute is refused rather than emulated.
    """
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_computes_bf16() else None
    if precision not in PRECISIONS:
        raise AmalgamError(f"train.precision: expected auto, {', '.join(PRECISIONS)}; got '{precision}'")
    dtype = PRECISIONS[precision]
    if dtype is torch.float16 and device.type != "cuda":
        raise AmalgamError("train.precision: fp16 autocast is for CUDA; on this device use bf16 or fp32")
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise AmalgamError("train.precision: this GPU has no bf16; use fp16 or auto")
    if dtype is torch.bfloat16 and device.type == "cpu" and not cpu_computes_bf16():
        raise AmalgamError(
            "train.precision: this CPU has no bf16 units (AMX or AVX512-BF16), so bf16 would be emulated "
            "and slower than fp32; use fp32 or auto"
        )
    return dtype


def precision_name(device: torch.device, precision: str = "auto") -> str:
    """``fp32``, ``bf16`` or ``fp16``: what ``train.precision`` comes to on ``device``."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[autocast_dtype(device, precision)]


def precision_text(device: torch.device, precision: str = "auto") -> str:
    """The build log's line: what the student trains in, and why (``auto`` decides per machine)."""
    name = precision_name(device, precision)
    if precision != "auto":
        why = f"train.precision: {precision}"
    elif device.type == "cuda":
        why = "auto: mixed precision on CUDA"
    elif name == "fp32":
        why = "auto: this CPU has no bf16 units"
    else:
        why = "auto: this CPU has bf16 units (AMX or AVX512-BF16); train.precision: fp32 turns it off"
    kind = "fp32" if name == "fp32" else f"{name} autocast, fp32 weights"
    return f"precision: {kind} ({why})"


def autocast_for(device: torch.device, precision: str = "auto") -> AbstractContextManager:
    """The student's forward in ``train.precision`` (:func:`autocast_dtype`)."""
    dtype = autocast_dtype(device, precision)
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def grad_scaler_for(device: torch.device, precision: str = "auto") -> torch.amp.GradScaler:
    """Loss scaling for fp16 autocast; a no-op scaler for bf16 and fp32."""
    enabled = device.type == "cuda" and autocast_dtype(device, precision) is torch.float16
    return torch.amp.GradScaler("cuda", enabled=enabled)
