"""Ctrl-C and SIGTERM as a request: the training loop finishes its step, saves, then stops.

SIGTERM is what schedulers (Slurm, Kubernetes) and ``timeout`` send before they kill; it is
treated like the first Ctrl-C, and the process exits 143 (128 + 15) instead of 130.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Iterator, Optional

#: signals that ask the loop to stop after the current step
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """Raised after a requested stop was saved; ``exit_code`` is 128 + the signal's number.

    A ``KeyboardInterrupt``, so code that catches Ctrl-C catches it too.
    """

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + int(signum)


class StopRequest:
    """While active, the first SIGINT or SIGTERM only sets :attr:`requested`; a second one interrupts at once.

    Stopping between steps (not inside ``backward`` or ``optimizer.step``) is what makes a
    mid-epoch checkpoint consistent; under torchrun the ranks agree on the step (:meth:`agree`).
    Outside the main thread, or when ``enabled`` is false, the signals keep their usual effect.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self.signum: int = signal.SIGINT
        self._previous: dict[int, object] = {}

    @property
    def name(self) -> str:
        """How the stop is named in messages: ``Ctrl-C`` or the signal's name."""
        return "Ctrl-C" if self.signum == signal.SIGINT else signal.Signals(self.signum).name

    def agree(self, ctx) -> bool:
        """Whether any rank of ``ctx`` was asked to stop (every rank then stops at this step,
        with the signal one of them received)."""
        signum = ctx.agree(self.signum if self.requested else 0)
        if signum:
            self.requested, self.signum = True, signum
        return bool(signum)

    def stopped(self) -> Stopped:
        """The exception to raise once the stop is saved."""
        return Stopped(self.signum)

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.requested:
            raise Stopped(signum)
        self.requested = True
        self.signum = signum

    def __enter__(self) -> "StopRequest":
        if self.enabled:
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)


def _terminated(signum: int, frame: Optional[FrameType]) -> None:
    raise Stopped(signum)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM outside the training loop stops as Ctrl-C does there (``Stopped``, exit 143,
    said in one line, a run folder that holds nothing resumable removed): it killed a build in its checks or
    final evaluation with no word, leaving a folder holding only its lock. Main thread only; the loop's own
    handler takes over inside it; the previous handler is put back after."""
    # under torchrun a rank blocked in a collective cannot run a Python handler: SIGTERM keeps ending it at once
    if threading.current_thread() is not threading.main_thread() or "TORCHELASTIC_RUN_ID" in os.environ:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
