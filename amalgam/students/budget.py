"""The student's size budget (``student.budget``) and the cost of any branched tree.

Default: half the teachers' parameters, no latency limit. A tree's cost is additive over its
parts: the spine's stages once, each task's own stages, decoder and head once per task. So one
measurement of a fully branched student (every part once per task) prices all the trees
exactly in parameters, and in batch-1 latency as a sum of the parts' timings.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from typing import Mapping, Optional

import torch
from torch import nn

from amalgam.errors import RecipeError
from amalgam.students.build import (
    BranchedStudent,
    StudentSpec,
    count_params,
    dense_output,
    evaluating,
    has_branches,
)
from amalgam.students.tree import STAGES, spine_depth

DEFAULT_PARAMS_SHARE = 0.5  # of all teachers' parameters: the documented default of student.budget.params


@dataclass
class Budget:
    """Resolved limits: absolute parameters and batch-1 latency (None: no limit)."""

    params: Optional[int]
    latency_ms: Optional[float]
    share: Optional[float] = None  # the recipe's share of the teachers' parameters
    teacher_params: int = 0

    def describe(self) -> str:
        """One line, e.g. ``params <= 1,234 (50% of the teachers'), latency b1 <= 20 ms``."""
        parts = []
        if self.params is not None:
            parts.append(f"params <= {self.params:,} ({self.share:.0%} of the teachers' {self.teacher_params:,})")
        if self.latency_ms is not None:
            parts.append(f"latency b1 <= {self.latency_ms:g} ms")
        return ", ".join(parts) or "none"

    def excess(self, params: int, latency_ms: Optional[float] = None) -> list[str]:
        """What a student of this size exceeds (empty when it fits)."""
        over = []
        if self.params is not None and params > self.params:
            over.append(f"{params:,} params > {self.params:,} ({params / self.teacher_params:.0%} of the teachers')")
        if self.latency_ms is not None and latency_ms is not None and latency_ms > self.latency_ms:
            over.append(f"latency b1 {latency_ms:.2f} ms > {self.latency_ms:g} ms")
        return over


def resolve_budget(cfg, teacher_params: int) -> Budget:
    """``student.budget`` in absolute numbers for teachers of ``teacher_params`` parameters."""
    share = cfg.params
    # a share of teachers without parameters (fixed filters, oracles) limits nothing
    limit = None if share is None or not teacher_params else int(share * teacher_params)
    return Budget(limit, cfg.latency_ms, share, teacher_params)


def budget_warning(
    budget: Budget, params: int, latency_ms: Optional[float] = None, branched: bool = True
) -> Optional[str]:
    """The warning for a hand-set student over its budget, or None (``branched``: a student of task
    branches, which sharing more encoder stages shrinks)."""
    over = budget.excess(params, latency_ms)
    if not over:
        return None
    fixes = "raise student.branch_at (more encoder stages shared), " if branched else ""
    fixes += "use a smaller student.encoder or decoder_channels" + (" or student.type: compact" if branched else "")
    return f"warning: the student exceeds student.budget ({'; '.join(over)}): {fixes}, or raise student.budget"


@dataclass
class TreeCosts:
    """Parameters and batch-1 latency of every part a branched student is built from."""

    stage_params: list[int]  # stage k+1
    stage_ms: list[float]
    task_params: dict[str, int]  # decoder + head
    task_ms: dict[str, float]

    def params(self, points: Mapping[str, int]) -> int:
        """Exact parameter count of the tree with these (effective) branch points."""
        spine = sum(self.stage_params[: spine_depth(points)])
        return spine + sum(sum(self.stage_params[p:]) + self.task_params[t] for t, p in points.items())

    def latency_ms(self, points: Mapping[str, int]) -> float:
        """Estimated batch-1 latency: the parts run one after another."""
        spine = sum(self.stage_ms[: spine_depth(points)])
        return spine + sum(sum(self.stage_ms[p:]) + self.task_ms[t] for t, p in points.items())


def _fastest_ms(fn, repeats: int) -> float:
    # the fastest run, not the median: on a shared machine the others measure the neighbours
    with torch.no_grad():
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return 1000.0 * min(times)


def batch1_ms(student: nn.Module, image_size: tuple[int, int], repeats: int = 7) -> float:
    """A whole student's batch-1 CPU latency, measured as its parts are (the fastest of ``repeats``)."""
    x = torch.rand(1, 3, *image_size)
    return _fastest_ms(lambda: student(x), repeats)


def latency_if_budgeted(cfg, student: nn.Module, image_size: tuple[int, int]) -> Optional[float]:
    """The student's batch-1 latency (eval mode, left as it came) where ``student.budget`` (``cfg``) has a
    latency limit, else None: what ``inspect`` and the build log check a hand-named student against."""
    if cfg.latency_ms is None:
        return None
    on_cpu = student if all(p.device.type == "cpu" for p in student.parameters()) else copy.deepcopy(student).cpu()
    with evaluating(on_cpu):  # the budget is a CPU latency: a student trained on a GPU is timed on a CPU copy
        return batch1_ms(on_cpu, image_size)


def measure_costs(spec: StudentSpec, image_size: tuple[int, int], repeats: int = 7, timed: bool = True) -> TreeCosts:
    """Prices every part of ``spec``'s branched student (batch 1, CPU, eval mode); ``timed=False`` counts
    parameters only (every latency 0), where no latency limit needs them."""
    shared = replace(spec, type="branched", branch_at=0)
    full = BranchedStudent(shared).eval()
    first = next(iter(spec.heads))
    stages = full.branches[first]
    if not timed:
        task_params = {
            n: count_params(full.heads[n]) + (count_params(full.decoders[n]) if n in full.decoders else 0)
            for n in spec.heads
        }
        zeros = {n: 0.0 for n in spec.heads}
        return TreeCosts([count_params(s) for s in stages], [0.0] * len(stages), task_params, zeros)
    x = torch.rand(1, 3, *image_size)
    with torch.no_grad():
        features = [full.normalise(x)]
        for stage in stages:
            features.append(stage(features[-1]))
    stage_ms = [_fastest_ms(lambda s=s, f=f: s(f), repeats) for s, f in zip(stages, features)]
    task_params, task_ms = {}, {}
    for name in spec.heads:
        parts: list[nn.Module] = [full.heads[name]] + ([full.decoders[name]] if name in full.decoders else [])
        task_params[name] = sum(count_params(m) for m in parts)
        if name in full.decoders:
            run = lambda n=name: dense_output(full.heads[n](full.decoders[n](features)), x, False)  # noqa: E731
        else:
            run = lambda n=name: full.heads[n](features[-1])  # noqa: E731
        task_ms[name] = _fastest_ms(run, repeats)
    return TreeCosts([count_params(s) for s in stages], stage_ms, task_params, task_ms)


def unmeetable(budget: Budget, costs: TreeCosts, tasks: list[str], measured_ms: Optional[float] = None) -> RecipeError:
    """The one-line error for a budget no tree meets, naming the smallest tree's size and its batch-1
    latency: ``measured_ms`` where it was measured, else the estimate (a sum of its parts' timings)."""
    smallest = {t: STAGES for t in tasks}  # everything shared: the fewest parameters and the least time
    params = costs.params(smallest)
    estimate = costs.latency_ms(smallest)
    ms = f"{measured_ms:.1f} ms measured" if measured_ms is not None else f"~{estimate:.1f} ms"
    timed = measured_ms is not None or estimate > 0  # inspect prices parts untimed without a latency limit
    return RecipeError(
        "student.budget",
        f"no branched tree fits ({budget.describe()}): the smallest, branch_at {STAGES} (the whole encoder "
        f"shared), has {params:,} params ({params / max(budget.teacher_params, 1):.0%} of the teachers')"
        f"{f' and {ms} at batch 1' if timed else ''}; raise the budget or use a smaller student.encoder",
    )


def decoder_lines(spec: StudentSpec) -> list[str]:
    """The dense tasks' own decoder widths, and which outputs train at half resolution (4 blocks)."""
    dense = spec.dense_decoders()
    lines = []
    if spec.task_decoders:
        widths = ", ".join(f"{t} {w}" for t, w in dense.items())
        lines.append(f"  decoders (student.task_decoder_channels): {widths}")
    half = [t for t, w in dense.items() if len(w) < 5]
    if half:  # a choice that changes what the losses compare: said where the student is described
        who = "dense outputs are" if len(half) == len(dense) else f"the outputs of {', '.join(half)} are"
        lines.append(
            f"  decoders: 4 blocks, so {who} at half the input's resolution while training (teachers' outputs"
            " are resized to them) and upsampled in eval mode and exports"
        )
    if spec.hypercolumn:
        lines.append(
            f"  hypercolumn (student.hypercolumn): the heads of {', '.join(spec.hypercolumn)} also read the decoder's"
            " second block's map (1/8 of the input), upsampled"
        )
    return lines


def student_lines(
    spec: StudentSpec, params: int, teacher_params: int, cfg, latency_ms: Optional[float] = None
) -> list[str]:
    """What ``inspect`` and the build log say about a student's tree and budget (``cfg``: ``student.budget``;
    ``latency_ms``: its measured batch-1 latency, :func:`latency_if_budgeted`)."""
    from amalgam.students.tree import describe

    lines = [f"  {line}" for line in describe(spec.branch_at, list(spec.heads))] if has_branches(spec.type) else []
    lines += decoder_lines(spec)
    budget = resolve_budget(cfg, teacher_params)
    measured = f"; measured b1 {latency_ms:.2f} ms on this CPU" if latency_ms is not None else ""
    lines.append(f"  budget (student.budget): {budget.describe()}{measured}")
    warning = budget_warning(budget, params, latency_ms, branched=has_branches(spec.type))
    if warning:
        lines.append(f"  {warning}")
    if params > teacher_params:  # said by the build log too, not by inspect alone (a trial)
        lines.append(
            f"  warning: the student has more parameters than all teachers together ({params:,} > {teacher_params:,}):"
            " amalgamation is meant to compress; a smaller student.encoder or decoder_channels fits the usual aim"
        )
    return lines
