"""Where and how reproducibly a run computes: seeds, the device, mixed precision."""

from __future__ import annotations

import functools
import random
from contextlib import AbstractContextManager, contextmanager
from typing import Callable, Iterator, Optional, ParamSpec, TypeVar

import numpy as np
import torch

from amalgam.errors import AmalgamError
from amalgam.precision import full_precision

P = ParamSpec("P")
R = TypeVar("R")


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch; deterministic algorithms where torch has them."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # that mode also fills every new tensor with NaN, a debugging aid that cost a tenth of a CPU
    # training step (profiled; docs/benchmarks.md): kernels that write their whole output need no fill
    if hasattr(torch.utils, "deterministic"):  # torch >= 2.2
        torch.utils.deterministic.fill_uninitialized_memory = False


@contextmanager
def callers_state_kept() -> Iterator[None]:
    """Runs the block in the state a build computes in and gives the caller back its own afterwards,
    however the block ends: the random streams (Python, NumPy, torch; a build seeds them, so a search
    drawing its settings from them drew the same one after every build), the deterministic-algorithms
    mode a build turns on, torch's default dtype (float32 inside: a float64 default made a float64
    student that report.json called bf16) and grad mode (on inside: a build called under ``no_grad``
    or ``inference_mode`` failed in its first backward)."""
    streams = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    seed = torch.initial_seed()  # what the caller's manual_seed gave CUDA's streams, had they not started yet
    mode = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    fill = getattr(getattr(torch.utils, "deterministic", None), "fill_uninitialized_memory", None)
    dtype = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float32)
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        torch.set_default_dtype(dtype)
        torch.use_deterministic_algorithms(mode[0], warn_only=mode[1])
        if fill is not None:
            torch.utils.deterministic.fill_uninitialized_memory = fill
        random.setstate(streams[0])
        np.random.set_state(streams[1])
        torch.random.set_rng_state(streams[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        elif torch.cuda.is_available() and torch.cuda.is_initialized():  # started inside, seeded by the build
            torch.cuda.manual_seed_all(seed)


def keeps_callers_state(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` run inside :func:`callers_state_kept`: the public verbs that seed or train."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with callers_state_kept():
            return fn(*args, **kwargs)

    return wrapper


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AmalgamError(f"device: '{name}' requested but CUDA is not available")
    return torch.device(name)


def device_text(name: str, device: torch.device) -> str:
    """Inspect's line: the device a build of ``device: name`` runs on here, its CPU threads, and why."""
    why = f"auto: {'a CUDA GPU' if device.type == 'cuda' else 'no CUDA GPU'} here" if name == "auto" else name
    threads = torch.get_num_threads()
    return f"device: {device}, {threads} CPU thread{'s' * (threads != 1)} (device: {why}; OMP_NUM_THREADS sets them)"


#: ``train.precision`` -> the autocast dtype it names (``auto``: see :func:`autocast_dtype`)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@functools.cache  # asked on every step
def cpu_bf16_units() -> str:
    """This CPU's bf16 units: ``amx`` (tile units: measured 1.85x a plain-convolution student's fp32
    training step, docs/benchmarks.md), ``avx512_bf16`` (dot-product instructions only, not
    measured here) or ``""`` (none: oneDNN emulates bf16, measured far slower than fp32)."""
    for name, probe in (("amx", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported")):
        if getattr(torch.cpu, probe, lambda: False)():
            return name
    return ""


def cuda_computes_bf16(device: torch.device) -> bool:
    """Native bf16 on this GPU (compute capability 8.0 or newer); ``is_bf16_supported`` also counts
    emulation, which older GPUs run slower than fp16."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def autocast_dtype(device: torch.device, precision: str = "auto") -> Optional[torch.dtype]:
    """The dtype the student's training forward runs in (None: fp32, no autocast).

    ``auto`` is bf16 on a GPU with bf16 (fp16 on older ones) and on a CPU with AMX, fp32 on any other
    CPU. Asking for a dtype the device cannot compute natively is refused rather than emulated.
    """
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if cuda_computes_bf16(device) else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_bf16_units() == "amx" else None
    if precision not in PRECISIONS:
        raise AmalgamError(f"train.precision: expected auto, {', '.join(PRECISIONS)}; got '{precision}'")
    dtype = PRECISIONS[precision]
    if dtype is torch.float16 and device.type != "cuda":
        raise AmalgamError("train.precision: fp16 autocast is for CUDA; on this device use bf16 or fp32")
    if dtype is torch.bfloat16 and device.type == "cuda" and not cuda_computes_bf16(device):
        raise AmalgamError("train.precision: this GPU has no native bf16 (compute capability < 8.0); use fp16 or auto")
    if dtype is torch.bfloat16 and device.type == "cpu" and not cpu_bf16_units():
        raise AmalgamError(
            "train.precision: this CPU has no bf16 units (AMX or AVX512-BF16), so bf16 would be emulated "
            "and slower than fp32; use fp32 or auto"
        )
    return dtype


def precision_name(device: torch.device, precision: str = "auto") -> str:
    """``fp32``, ``bf16`` or ``fp16``: what ``train.precision`` comes to on ``device``."""
    dtype = autocast_dtype(device, precision)
    return next(name for name, d in PRECISIONS.items() if d is dtype)


def precision_text(device: torch.device, precision: str = "auto") -> str:
    """The build log's line: what the student trains in, and why (``auto`` decides per machine)."""
    name = precision_name(device, precision)
    if precision != "auto":
        why = f"train.precision: {precision}"
    elif device.type == "cuda":
        why = "auto: mixed precision on CUDA"
    elif name == "fp32":
        units = cpu_bf16_units()
        why = f"auto: this CPU has {'only AVX512-BF16' if units else 'no bf16 units'}, bf16 is used on AMX only"
    else:
        why = "auto: this CPU has AMX bf16 units; train.precision: fp32 turns it off"
    kind = "fp32" if name == "fp32" else f"{name} autocast, fp32 weights"
    return f"precision: {kind} ({why})"


def autocast_for(device: torch.device, precision: str = "auto") -> AbstractContextManager:
    """Computes in ``precision`` (:func:`autocast_dtype`), also inside another autocast: fp32 turns an
    enclosing one off (the teacher cache computes in the precision its key names)."""
    dtype = autocast_dtype(device, precision)
    if dtype is not None:
        return torch.autocast(device.type, dtype=dtype)
    return full_precision(device)


def device_rng_state(device: torch.device) -> Optional[torch.Tensor]:
    """``device``'s own random stream when it has one apart from the CPU's (CUDA: noise and dropout
    sub-teachers draw from it there), else None."""
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_rng_state(device)
    return None


def set_device_rng_state(device: torch.device, state: Optional[torch.Tensor]) -> None:
    """Restores :func:`device_rng_state`'s ``state`` (nothing when None, or on a device without one:
    a CUDA run resumed on a CPU draws from the CPU stream, which is restored apart)."""
    if state is not None and device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.set_rng_state(state, device)


def grad_scaler_for(device: torch.device, precision: str = "auto") -> torch.amp.GradScaler:
    """Loss scaling for fp16 autocast; a no-op scaler for bf16 and fp32."""
    enabled = device.type == "cuda" and autocast_dtype(device, precision) is torch.float16
    return torch.amp.GradScaler("cuda", enabled=enabled)
