"""Where a training step's time goes: data loading, teacher forward, student, optimizer."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional, TypeVar

import torch

from amalgam.distill.targets import Targets

T = TypeVar("T")


class StepTimer:
    """Accumulates wall seconds per named section; synchronises CUDA so GPU work is counted.

    ``enabled=False`` makes every section free (the default timer of :func:`amalgam.training.engine.train`).
    """

    def __init__(self, device: Optional[torch.device] = None, enabled: bool = True):
        self.device = device
        self.enabled = enabled
        self.seconds: dict[str, float] = defaultdict(float)

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - start

    def iterate(self, iterable: Iterable[T], name: str = "data") -> Iterator[T]:
        """Yields from ``iterable``, timing each ``next`` (the wait for the data loader)."""
        it = iter(iterable)
        while True:
            with self.section(name):
                item = next(it, _END)
            if item is _END:
                return
            yield item

    def wrap(self, targets: Targets, name: str = "teachers") -> Targets:
        """``targets`` with its calls (teacher forward or cache reads) timed as ``name``."""
        if not self.enabled:
            return targets

        def timed(teacher: str, idx: torch.Tensor):
            with self.section(name):
                return targets(teacher, idx)

        return timed


_END = object()
