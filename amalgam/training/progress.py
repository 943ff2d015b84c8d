"""Progress on long work: a tqdm bar on a terminal, a few plain lines otherwise (CI logs), nothing
with ``--quiet``. ``Console`` is also the ``log`` callable the engine prints its lines through."""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO


class Bar:
    """Counts steps of one task; ``update`` may carry values shown beside the count."""

    def __init__(self, total: int, desc: str, stream: Optional[TextIO], tty: bool, lines: int = 4):
        self.total, self.desc, self.stream, self.n, self.skipped = total, desc, stream, 0, 0
        self.start = time.perf_counter()
        self.marks = {max(1, round(total * k / lines)) for k in range(1, lines)} if total > 1 else set()
        self.tqdm = None
        if stream is not None and tty:
            from tqdm import tqdm

            self.tqdm = tqdm(total=total, desc=desc, file=stream, leave=False, dynamic_ncols=True)

    def skip(self, n: int) -> None:
        """Counts ``n`` steps done before (a resumed epoch) without taking them into the pace."""
        self.n += n
        self.skipped += n
        if self.tqdm is not None:
            self.tqdm.update(n)

    def update(self, n: int = 1, **values: float) -> None:
        self.n += n
        shown = {k: f"{v:.4g}" for k, v in values.items()}
        if self.tqdm is not None:
            self.tqdm.set_postfix(shown, refresh=False)
            self.tqdm.update(n)
        elif self.stream is not None and self.n in self.marks:
            rate = max(self.n - self.skipped, 1) / max(time.perf_counter() - self.start, 1e-9)
            eta = (self.total - self.n) / rate
            extra = " ".join(f"{k} {v}" for k, v in shown.items())
            print(f"  {self.desc}: {self.n}/{self.total} {extra} eta {eta:.0f}s".rstrip(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()


class Console:
    """Lines (``console("...")``) and bars (``console.bar(total, desc)``), both silenced by ``quiet``."""

    def __init__(self, quiet: bool = False, stream: Optional[TextIO] = None):
        self.quiet, self._stream = quiet, stream

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout  # looked up late: callers (and tests) may swap sys.stdout

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.stream, flush=True)

    def bar(self, total: int, desc: str) -> Bar:
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        return Bar(total, desc, None if self.quiet else self.stream, tty)


def bar_for(log: Callable[[str], None], total: int, desc: str) -> Bar:
    """A bar through ``log`` when it is a :class:`Console`, else a silent one (plain callables)."""
    return log.bar(total, desc) if isinstance(log, Console) else Bar(total, desc, None, False)
