"""Per-task evaluation of the student beside each teacher, plus size and latency."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from amalgam.labels import LabelSpace, apply_lookup, lookup, projection
from amalgam.plan import Plan
from amalgam.task import Task


@dataclass
class TaskResult:
    """One teacher's row: its metrics and the student's on the teacher's eval set and labels."""

    teacher: str
    task: Task
    eval: str
    teacher_metrics: dict
    student_metrics: dict

    def row(self) -> dict:
        """The ``tasks[]`` entry of report.json."""
        metric = self.task.metric
        t, s = self.teacher_metrics.get(metric), self.student_metrics.get(metric)
        ratio = s / t if t else float("nan")
        return {
            "teacher": self.teacher,
            "task": self.task.name,
            "eval": self.eval,
            "metric": metric,
            "higher_is_better": self.task.higher_is_better,
            "teacher_value": t,
            "student_value": s,
            "ratio": ratio,
            "teacher_metrics": self.teacher_metrics,
            "student_metrics": self.student_metrics,
        }


@dataclass
class Evaluation:
    tasks: list[TaskResult] = field(default_factory=list)
    unified: list[dict] = field(default_factory=list)


def _loader(dataset, batch_size: int, limit: Optional[int]) -> DataLoader:
    if limit is not None and limit < len(dataset):
        dataset = Subset(dataset, range(limit))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


@torch.no_grad()
def evaluate(
    plan: Plan,
    student: nn.Module,
    device: torch.device,
    spaces: Optional[dict[str, Optional[LabelSpace]]] = None,
    log: Callable[[str], None] = print,
) -> Evaluation:
    """Scores every teacher and the student on each teacher's eval set.

    The student is scored restricted to the teacher's labels (with the teacher's background
    semantics), and once per (task, eval set) over its whole unified label space.

    Args:
        spaces: the student's unified spaces (default: the plan's; pass the stored ones when
            evaluating a saved student).
    """
    spaces = spaces or plan.spaces
    cfg = plan.recipe.train
    student.eval().to(device)
    result = Evaluation()
    unified_done: set[tuple[str, str]] = set()
    for name, teacher in plan.teachers.items():
        if not teacher.eval_name:
            continue
        task, dataset = teacher.task, plan.eval_sets[teacher.eval_name]
        teacher.to(device)
        log(f"evaluating teacher '{name}' and the student on '{teacher.eval_name}' ({task.name})")
        space = spaces[task.name]
        proj = projection(teacher.space, space).to(device) if teacher.space else None
        t_lut = lookup(dataset.classes, teacher.space) if teacher.space else None
        key = (task.name, teacher.eval_name)
        with_unified = key not in unified_done
        unified_done.add(key)
        u_lut = lookup(dataset.classes, space) if space is not None else None
        n = len(teacher.space) if teacher.space else None
        meters = [task.new_meter(n), task.new_meter(n), task.new_meter(len(space) if space else None)]
        for batch in _loader(dataset, cfg.eval_batch_size, cfg.max_eval_images):
            images = batch["image"].to(device)
            target = batch[task.target_key].to(device)
            size = tuple(target.shape[-2:]) if target.dim() > 1 else tuple(images.shape[-2:])
            s_out = student(images)[task.name]
            t_target = apply_lookup(target, t_lut.to(device)) if t_lut is not None else target
            meters[0].update(task.predict(teacher(images), size), t_target)
            meters[1].update(task.predict(s_out, size, proj), t_target)
            if with_unified:
                u_target = apply_lookup(target, u_lut.to(device)) if u_lut is not None else target
                meters[2].update(task.predict(s_out, size), u_target)
        result.tasks.append(TaskResult(name, task, teacher.eval_name, meters[0].compute(), meters[1].compute()))
        if with_unified:
            result.unified.append({"task": task.name, "eval": teacher.eval_name, "metrics": meters[2].compute()})
    return result


def count_params(module: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def latency_ms(fn: Callable[[torch.Tensor], object], shape: tuple[int, ...], device: torch.device, repeats: int = 5) -> float:
    """Median wall time in ms per *image* of ``fn`` on random input of ``shape`` (after a warm-up)."""
    x = torch.rand(*shape, device=device)
    fn(x)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times.sort()
    return 1000.0 * times[len(times) // 2] / shape[0]


def size_and_speed(plan: Plan, student: nn.Module, device: torch.device, repeats: int = 5) -> dict:
    """Parameters and latency (ms per image at batch 1 and 32) of the student and of all teachers together."""
    h, w = plan.recipe.data.image_size
    student.eval().to(device)

    def teachers(x: torch.Tensor) -> None:
        for t in plan.teachers.values():
            t(x)

    out = {}
    for key, fn, params in (
        ("student", student, count_params(student)),
        ("teachers", teachers, sum(t.num_params() for t in plan.teachers.values())),
    ):
        out[key] = {
            "params": params,
            "latency_ms": {f"b{b}": round(latency_ms(fn, (b, 3, h, w), device, repeats), 3) for b in (1, 32)},
        }
    return out
