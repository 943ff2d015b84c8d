"""Atomic writes of run artefacts: a crash never leaves half a file behind."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Optional

import torch

from amalgam.errors import AmalgamError


class DiskFull(AmalgamError):
    """A write that failed for want of room (said in one line by :func:`atomic_save`)."""


def atomic_save(obj: object, path: Path, save: Optional[Callable[[object, str], None]] = None) -> None:
    """Saves to a temp file in the same folder, then renames: a crash never leaves half a file.

    Args:
        obj: what to save.
        path: the destination.
        save: the writer, ``torch.save`` by default (``torch.jit.save`` for TorchScript).

    Raises:
        AmalgamError: one line when the disk is full (``path`` is untouched then).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        try:
            (save or torch.save)(obj, tmp)
        except (OSError, RuntimeError) as exc:
            if is_disk_full(exc):
                room = no_room(path.parent, exc, written=os.path.getsize(tmp) if os.path.exists(tmp) else 0)
                raise DiskFull(f"cannot write {path}: {room}; it was not replaced") from None  # no zip-writer internals
            raise
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def is_disk_full(exc: BaseException) -> bool:
    """Whether a write failed for want of room (torch's zip writer reports it as a RuntimeError:
    "write failed", or "unexpected pos" when the disk filled between two of its records); a file past
    the file system's or the process's file-size limit (EFBIG) counts: :func:`no_room` tells them apart."""
    text = str(exc)
    full = ("write failed", "No space", "unexpected pos", "File too large")
    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EFBIG) or any(words in text for words in full)


#: the largest file FAT32 holds (exFAT holds more): a write stopped near it met that limit
FAT32_MAX = 4 * 1024**3 - 1


def file_size_limit() -> Optional[int]:
    """This process's file-size limit in bytes (``ulimit -f``), or None without one."""
    try:
        import resource
    except ImportError:  # not on this platform (Windows)
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def no_room(folder: Path, exc: BaseException, need: int = 0, written: int = 0) -> str:
    """``disk full``, or the file-size limit that stopped a write of ``need`` bytes (``written`` of them
    on disk when it failed): the process's (``ulimit -f``), or FAT32's 4 GiB. torch's zip writer reports
    either as "write failed" without an error number, so the limits are looked at, not the error."""
    free = shutil.disk_usage(folder).free
    limit = file_size_limit()
    if limit is not None and max(need, written) >= limit:
        return f"file too large: this process may write files of {limit:,} bytes at most (ulimit -f); lift it"
    if getattr(exc, "errno", None) == errno.EFBIG or "File too large" in str(exc) or written >= FAT32_MAX:
        return (
            f"file too large for the file system ({free:,} bytes free: FAT32 holds 4 GiB a file at most);"
            " write the run elsewhere"
        )
    return f"disk full ({free:,} bytes free)"


def gb_text(gigabytes: float) -> str:
    """A size in GB as a log line says it: in MB under 0.1 GB (a cache of 3 MB read "0.00 GB")."""
    return f"{gigabytes:.2f} GB" if gigabytes >= 0.1 else f"{gigabytes * 1000:.3g} MB"


def write_json(obj: object, path: Path) -> None:
    """Writes ``obj`` as indented, strict JSON, atomically, creating the parent folders. A float
    that is not finite (a ratio over a teacher that scored 0) is written as ``null``: Python's
    ``NaN`` is not JSON, and strict parsers (JavaScript's, jq's) refuse the whole file."""
    text = json.dumps(finite(obj), indent=2, allow_nan=False) + "\n"
    atomic_save(obj, Path(path), lambda o, tmp: Path(tmp).write_text(text))


def finite(obj: object) -> object:
    """``obj`` with every float that is not finite replaced by None, in dicts, lists and tuples."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (checkpoints are tens of MB: well under a second)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_writable(path: Path, what: str) -> None:
    """Raises one line when ``path`` (a folder, made if missing) could not be written.

    Checked before any work starts: a read-only folder otherwise surfaces as a raw
    PermissionError traceback (an export's only after its tracing).

    Args:
        path: the folder to write into; when it does not exist yet, the nearest existing folder
            above it is checked (that is where it would be made).
        what: how the folder is named in the message, e.g. ``run folder``.

    Raises:
        AmalgamError: naming the path, when it or a folder above it is a file or is not writable.
    """
    path = Path(path).absolute()
    # os.path.exists, not Path.exists: a folder we may not enter is False here, not a PermissionError
    existing = next(p for p in (path, *path.parents) if os.path.exists(p))
    if not existing.is_dir():
        raise AmalgamError(f"{what} {path}: {existing} is a file, not a folder: move it or choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == path else f" ({existing} is not, and {path} would be made in it)"
        raise AmalgamError(f"{what} {path} is not writable{where}: fix its permissions or choose another path")


def zip_problem(path: Path) -> Optional[str]:
    """Why ``path`` is not a whole torch zip file (bad CRC, cut short, empty), or None: ``torch.load`` reads
    a zeroed stretch of one into wrong weights without a word. A whole file's answer is kept by its path, size
    and time, so a big teacher is read through once a process, not at every check."""
    try:
        stat = path.stat()
    except OSError as exc:
        return f"it is not a whole zip file ({exc or type(exc).__name__})"
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _WHOLE:
        return None
    problem = _zip_problem(path, stat.st_size)
    if problem is None:
        _WHOLE.add(key)
    return problem


#: (path, size, mtime) of the files :func:`zip_problem` found whole
_WHOLE: set[tuple[str, int, int]] = set()


def _zip_problem(path: Path, size: int) -> Optional[str]:
    if size == 0:
        return "it is empty (0 bytes)"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every entry and checks its CRC-32
        return f"entry '{bad}' fails its CRC check" if bad else None
    except (NotImplementedError, RuntimeError) as exc:  # a compression or encryption zipfile cannot read: no torch file
        return f"it is no torch file ({exc or type(exc).__name__})"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f"it is not a whole zip file ({exc or type(exc).__name__})"
