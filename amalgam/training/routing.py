"""Row routing: a dense task's decoder and head run only on the batch rows its teachers label.

When a dense task's teachers teach on some of the sources only (segmenters on scenes beside a
classifier on item crops), the other sources' rows give that task no loss, so its decoder and
head need not run on them; decoders at full resolution are most of a dense student's step. The
task's own encoder stages still run on every row, since their batch norm sees small maps, where a
few rows are too few. The loss is the same except for the decoder's batch-norm statistics, which
come from the routed rows. Pooled tasks (classification) are not routed: their branches are cheap,
and a routed classifier branch lost top-1 on the shapes world (docs/benchmarks.md, "Speed of a
dense step"). ``train.route_rows: false`` turns it off. The ``branch_at: auto`` warm-up
(distill/affinity.py) runs its student unrouted.
"""

from __future__ import annotations

import inspect
from typing import Callable, Optional

import torch
from torch import nn

from amalgam.distill.plan import Plan
from amalgam.teachers.taps import FeatureTap

#: task name -> indices of the batch rows it runs on; a task not named runs on every row
Rows = dict[str, torch.Tensor]


def task_sources(plan: Plan) -> dict[str, list[int]]:
    """Task name -> the source indices any of its teachers teaches on."""
    ids: dict[str, set[int]] = {name: set() for name in plan.tasks}
    for name, teacher in plan.teachers.items():
        ids[teacher.task.name].update(plan.source_ids[name])
    return {task: sorted(s) for task, s in ids.items()}


class Router:
    """Computes each step's :data:`Rows` from the batch's source ids.

    Args:
        plan: the resolved amalgamation (its teachers' sources).
        device: where the batches' source ids live.
    """

    def __init__(self, plan: Plan, device: torch.device):
        everything = set(range(len(plan.sources.names)))
        self.names = plan.sources.names
        self.ids = {
            task: torch.tensor(ids, device=device)
            for task, ids in task_sources(plan).items()
            if plan.tasks[task].dense and set(ids) != everything
        }

    @property
    def active(self) -> bool:
        """Some dense task runs on part of the sources only."""
        return bool(self.ids)

    def rows(self, source: torch.Tensor) -> Rows:
        """The rows of each routed task in a batch whose rows come from ``source``."""
        return {task: torch.isin(source, ids).nonzero().flatten() for task, ids in self.ids.items()}

    def describe(self) -> str:
        """One line: which task runs on which sources."""
        parts = [f"{task} on {', '.join(self.names[i] for i in ids.tolist())}" for task, ids in self.ids.items()]
        return "row routing: " + "; ".join(parts) + " (each branch skips the other rows; train.route_rows)"


def routing_line(plan: Plan, student: nn.Module, tap_module: Optional[str]) -> Optional[str]:
    """What :func:`make_router` will log for ``plan`` and ``student`` (for ``amalgam inspect``), None
    when nothing is routed; ``tap_module`` is the student module the objective will tap, if any."""
    return planned_router(plan, student, tap_module, torch.device("cpu"))[1]


def planned_router(
    plan: Plan, student: nn.Module, tap_module: Optional[str], device: torch.device
) -> tuple[Optional[Router], Optional[str]]:
    """The router a build of ``plan`` will use (None: none) and the line it logs, before training
    starts (for ``inspect`` and tools/bench.py); ``tap_module`` as in :func:`routing_line`."""
    if plan.sources is None:
        return None, None
    tap = FeatureTap.on(student, tap_module, "amalgamation.student_tap") if tap_module else None
    try:
        return _decide(plan, student, tap, device)
    finally:
        if tap is not None:
            tap.detach()


def make_router(
    plan: Plan, student: nn.Module, tap: Optional[FeatureTap], device: torch.device, log: Callable[[str], None]
) -> Optional[Router]:
    """The run's router, or None when routing is off, has nothing to skip, or would change what the
    objective reads (a student feature tap inside a routed part)."""
    router, line = _decide(plan, student, tap, device)
    if line is not None:
        log(line)
    return router


def _decide(
    plan: Plan, student: nn.Module, tap: Optional[FeatureTap], device: torch.device
) -> tuple[Optional[Router], Optional[str]]:
    """The router to use (None: none) and the line that says so (None: nothing to say)."""
    if not plan.recipe.train.route_rows:
        return None, None
    router = Router(plan, device)
    if not router.active:
        return None, None
    why = _why_not(plan, student, tap, router, device)
    return (None, f"row routing: off, {why}") if why else (router, router.describe())


def takes_rows(student: nn.Module) -> bool:
    """Whether the student's ``forward`` has the optional ``rows`` keyword (built-in types do; a
    registered plugin type may not, and then runs every task on every row)."""
    return "rows" in inspect.signature(student.forward).parameters


def _why_not(
    plan: Plan, student: nn.Module, tap: Optional[FeatureTap], router: Router, device: torch.device
) -> Optional[str]:
    """Why routing cannot be used with this student and feature tap, or None."""
    if not takes_rows(student):
        return f"the student type '{plan.recipe.student.type}' has no forward(images, rows=...)"
    size = tuple(plan.recipe.data.image_size)
    if tap is not None and not _tap_sees_every_row(student, tap, router, size, device):
        return f"the student feature tap '{tap.module_name}' lies in a routed part of the student"
    return None


@torch.no_grad()
def _tap_sees_every_row(
    student: nn.Module, tap: FeatureTap, router: Router, size: tuple[int, int], device: torch.device
) -> bool:
    """Whether the tapped student feature keeps the whole batch when every routed task drops a row."""
    images = torch.rand(3, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)
    rows = {task: torch.tensor([1, 2], device=device) for task in router.ids}
    was_training = student.training
    student.eval()
    student(images, rows=rows)
    student.train(was_training)
    return tap.value.shape[0] == images.shape[0]
