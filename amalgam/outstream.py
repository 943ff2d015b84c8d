"""Standard output that a command outlives: a reader gone (``amalgam build | head``) or a full disk under a
redirected log ended a finished build with a traceback, or stopped a build mid-way and removed its run folder
(a trial). The command goes on, says once on stderr that its output is lost, and writes its run folder whole."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator, TextIO


class SurvivingStream:
    """``stream`` whose writes stop at its first failure (an ``OSError``: broken pipe, disk full), said once."""

    def __init__(self, stream: TextIO):
        self.stream, self.lost = stream, False

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                return self.stream.write(text)
            except OSError as exc:
                self._lose(exc)
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self.stream.flush()
            except OSError as exc:
                self._lose(exc)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)

    def _lose(self, exc: OSError) -> None:
        self.lost = True
        try:  # Python's flush at exit would fail again, with an "Exception ignored" note
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self.stream.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError, AttributeError):  # no file descriptor (a test's capture)
            pass
        try:
            print(
                f"amalgam: standard output lost ({exc.strerror or exc}): the command goes on without it (what a"
                " build, report or export writes to files is whole; a command that only prints exits 1)",
                file=sys.stderr,
                flush=True,
            )
        except OSError:
            pass


@contextmanager
def surviving_stdout() -> Iterator[SurvivingStream]:
    """``sys.stdout`` as a :class:`SurvivingStream` while the block runs."""
    before = sys.stdout
    sys.stdout = SurvivingStream(before)
    try:
        yield sys.stdout
    finally:
        sys.stdout = before
