"""``checkpoint.pt``: written so a crash or a full disk never costs the last good one, read only if whole.

Writing goes to a temp file beside it (``.checkpoint.pt.<random>``), which is read back and its
zip CRCs checked before it replaces ``checkpoint.pt``; the replaced one is kept as
``checkpoint.prev.pt``. A full disk is one line naming the path and the bytes needed, and the
old checkpoint stays as it was. Temp files left by a killed process are removed on the next
start (:func:`clean_stale_temps`). Reading checks the zip CRCs (a file with a zeroed stretch
still unpickles, into wrong numbers) and that the state holds every key ``--resume`` needs; a
damaged ``checkpoint.pt`` falls back to ``checkpoint.prev.pt`` with one line saying why.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from amalgam.errors import AmalgamError, a_type, error_line
from amalgam.io import is_disk_full, no_room, zip_problem  # noqa: F401 - importable from here as before

PREVIOUS = "checkpoint.prev.pt"
#: what ``--resume`` reads from a training state
REQUIRED = ("epoch", "student", "objective", "optimizer", "scheduler", "torch_rng", "flip_rng", "history", "recipe")
#: what ``--resume`` reads from a peers build's state
PEERS_REQUIRED = ("kind", "epoch", "model", "optimizer", "scheduler", "sampler_rng", "torch_rng", "history", "recipe")


def state_bytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) state: what a checkpoint of it needs on disk, roughly."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_bytes(v) for v in obj)
    return 0


def _disk_full(path: Path, need: int, exc: BaseException, tmp: Optional[Path] = None) -> AmalgamError:
    written = tmp.stat().st_size if tmp is not None and tmp.is_file() else 0
    room = no_room(path.parent, exc, need, written)
    return AmalgamError(
        f"cannot write {path} (about {need:,} bytes): {room}: {error_line(exc)}; "
        + ("the previous checkpoint is intact" if path.is_file() else "no checkpoint was written yet")
    )


def write_checkpoint(state: dict, path: Path) -> None:
    """Saves ``state`` to ``path`` atomically, verified, keeping the one it replaces as ``checkpoint.prev.pt``.

    Raises:
        AmalgamError: one line when the disk is full (``path`` is untouched then).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    need = state_bytes(state) + (1 << 20)
    if need > shutil.disk_usage(path.parent).free:
        raise _disk_full(path, need, OSError(errno.ENOSPC, "not enough free space"))
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    tmp = Path(name)
    try:
        try:
            torch.save(state, tmp)
        except (OSError, RuntimeError) as exc:  # torch's zip writer reports a full disk as RuntimeError
            if is_disk_full(exc):
                raise _disk_full(path, need, exc, tmp) from None
            raise
        problem = zip_problem(tmp)
        if problem:
            raise AmalgamError(f"the checkpoint just written to {tmp} does not read back: {problem}")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files
        _keep_previous(path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _keep_previous(path: Path) -> None:
    """``path`` -> ``checkpoint.prev.pt`` without a moment where neither name holds a checkpoint."""
    if not path.is_file():
        return
    link = path.parent / f".{PREVIOUS}.link"
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)
    except OSError:  # no hard links on this file system: a copy does the same job
        shutil.copy2(path, link)
    os.replace(link, path.parent / PREVIOUS)


def clean_stale_temps(run_dir: Path, log: Callable[[str], None] = print) -> int:
    """Removes temp files of checkpoint writes a killed process left behind; returns how many."""
    stale = [p for p in run_dir.glob(".checkpoint*.pt.*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log(f"removed {len(stale)} temp file(s) of an interrupted checkpoint write in {run_dir}")
    return len(stale)


def load_state(path: Path, required: tuple[str, ...] = REQUIRED) -> dict:
    """A training state read from ``path`` after checking it is whole; raises one line saying what is wrong."""
    if not path.is_file():
        raise AmalgamError(f"no checkpoint {path}")
    problem = zip_problem(path)
    if problem:
        raise AmalgamError(f"checkpoint {path} is damaged: {problem}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - foreign or unsafe pickles land here
        first = error_line(exc)
        raise AmalgamError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(state, dict):
        raise AmalgamError(f"checkpoint {path} holds {a_type(state)}, not an amalgam training state")
    missing = [k for k in required if k not in state]
    if "flip_rng" in missing and "student" in state and "objective" in state:
        raise AmalgamError(f"checkpoint {path} was written by an older amalgam and cannot be resumed")
    if missing:
        raise AmalgamError(f"checkpoint {path} is not an amalgam training state: no {', '.join(missing)}")
    return state


def start_hint(run_dir: Path) -> str:
    """What to do when ``--resume`` finds no checkpoint (a run killed before its first epoch ended)."""
    cache = run_dir / "teacher_cache"
    kept = f" (the teacher outputs cached in {cache} are kept and reused)" if cache.is_dir() else ""
    return f"run without --resume to start the run{kept}"


def read_with_fallback(path: Path, warn: Callable[[str], None], required: tuple[str, ...] = REQUIRED) -> dict:
    """The state in ``path``, or, if that one is damaged, in ``checkpoint.prev.pt`` beside it (with a warning).

    Raises:
        AmalgamError: when neither is a whole training state (naming both problems).
    """
    previous = path.parent / PREVIOUS
    if not path.is_file() and not previous.is_file():
        raise AmalgamError(f"nothing to resume: no checkpoint {path}; {start_hint(path.parent)}")
    try:
        return load_state(path, required)
    except AmalgamError as exc:
        if not previous.is_file():
            raise
        problem = str(exc)
    try:
        state = load_state(previous, required)
    except AmalgamError as exc:
        raise AmalgamError(f"{problem}; and the previous one: {exc}") from None
    warn(f"{problem}: resuming from the previous one, {previous} (after epoch {state['epoch']})")
    return state
