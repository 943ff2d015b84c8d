"""Ctrl-C as a request: the training loop finishes its step, saves, then stops."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Optional


class StopRequest:
    """While active, the first SIGINT only sets :attr:`requested`; a second one interrupts at once.

    Stopping between steps (not inside ``backward`` or ``optimizer.step``) is what makes a
    mid-epoch checkpoint consistent. Outside the main thread, or when ``enabled`` is false
    (several processes under torchrun, which must stop together), Ctrl-C keeps its usual effect.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous = None

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopRequest":
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)
