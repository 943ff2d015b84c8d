"""One build per run folder: an exclusive lock, and no folder left behind by a build that failed early.

Two builds writing one run folder corrupt each other (the second rewrites the teacher cache under
the first, which dies of SIGBUS, and their checkpoints overwrite each other). :class:`RunLock`
holds an ``flock`` on ``<run>/.lock`` for the life of the build; the file says who holds it, and
the second build stops with one line naming that process. The kernel releases the lock when its
holder dies, even by SIGKILL, so a stale lock never blocks a later build.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Optional

from amalgam.errors import AmalgamError

try:
    import fcntl
except ImportError:  # Windows: no flock; builds there are not guarded
    fcntl = None

LOCK_NAME = ".lock"
#: the descriptors of the locks this process holds: a forked DataLoader worker closes its copies
#: (:func:`drop_in_child`), or it holds a SIGKILLed build's lock for seconds after (a requeued --resume
#: was refused naming the dead build)
_HELD: dict[int, tuple[int, int]] = {}  # descriptor -> (device, inode) of the lock file it names


def drop_in_child() -> None:
    """Closes, in a forked child (a DataLoader worker), its copies of the parent's lock descriptors: the flock
    then dies with the parent, as the parent's own copy is the last. A descriptor now naming another file
    (its number reused) is left alone."""
    for fd, identity in list(_HELD.items()):
        try:
            stat = os.fstat(fd)
            if (stat.st_dev, stat.st_ino) == identity:
                os.close(fd)
        except OSError:
            pass
    _HELD.clear()


def release_in_worker(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn`` that only lets go of the run folder's lock (:func:`drop_in_child`)."""
    drop_in_child()


class RunLock:
    """An exclusive lock on a run folder, taken on ``__enter__`` (the folder is created if needed).

    Args:
        run_dir: the run folder.

    Raises:
        AmalgamError: on enter, when another process holds the lock (naming its pid, host, start and
            command), or when the folder cannot be written.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._file = None

    def __enter__(self) -> "RunLock":
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a+")
        except PermissionError as exc:  # os.access said yes (ACLs, network file systems), the write says no
            why = f"run folder {self.run_dir} is not writable ({exc.strerror})"
            raise AmalgamError(f"{why}: fix its permissions or choose another path") from None
        if fcntl is not None:
            try:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(self.path)
                self._file.close()
                self._file = None
                raise AmalgamError(
                    f"{self.run_dir} is in use by another build ({holder}): wait for it, stop it, or pass --output"
                ) from None
        stat = os.fstat(self._file.fileno())
        _HELD[self._file.fileno()] = (stat.st_dev, stat.st_ino)
        try:
            self._file.seek(0)
            self._file.truncate()
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            holder["command"] = " ".join(sys.argv)
            self._file.write(json.dumps(holder))
            self._file.flush()
        except BaseException:  # a full disk, a signal: the lock is let go, its descriptor forgotten
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            # closing releases the flock; the file stays: unlinking it would let a waiting build lock
            # the old file while a third one locks a new one
            _HELD.pop(self._file.fileno(), None)
            self._file.close()
            self._file = None


def _describe(path: Path) -> str:
    try:
        holder = json.loads(path.read_text())
        return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}: {holder['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"


class NewRunFolder:
    """Removes the run folder on failure when this build created it and saved nothing resumable in it.

    A bad run (a teacher giving NaN at step 1, a full disk before the first checkpoint) then
    leaves no folder behind, like a bad input; once ``checkpoint.pt`` exists the folder stays,
    since ``--resume`` can continue it.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.created = not self.run_dir.exists()

    def __enter__(self) -> "NewRunFolder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None or not self.created or not self.run_dir.is_dir():
            return
        if resumable(self.run_dir):
            return
        shutil.rmtree(self.run_dir, ignore_errors=True)


#: what a run folder a build left unfinished holds, and what to do with it (export, eval and report say it)
UNFINISHED = "a checkpoint.pt, no student.pt"
RESUME_FIX = "finish it with amalgam build <recipe> --resume"


def unfinished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a build that stopped before its student: a checkpoint to resume, no student.pt."""
    run_dir = Path(run_dir)
    return run_dir.is_dir() and not (run_dir / "student.pt").is_file() and resumable(run_dir) is not None


def resumable(run_dir: Path) -> Optional[Path]:
    """The checkpoint a run folder holds, if any."""
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        if (run_dir / name).is_file():
            return run_dir / name
    return None
