"""Scoring the student during training (``train.eval_every``): the curve of ratio against epochs.

An epoch-end callback (see :mod:`amalgam.training.callbacks`) that, every N epochs and after the
last, evaluates the student as the final report does and adds to the epoch's row of
``train_log.csv`` each teacher row's student metric and ratio (``eval_<teacher>_<metric>``,
``ratio_<teacher>``), with the ratio inverted where lower is better so higher always means closer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from amalgam.distill.plan import Plan
from amalgam.evaluation.evaluate import evaluate, relative_to_teacher

if TYPE_CHECKING:
    from amalgam.training.callbacks import EpochEnd
    from amalgam.training.trainer import Trainer


def scores_row(
    plan: Plan,
    student: torch.nn.Module,
    device: torch.device,
    reference: dict[str, float],
    left_out: Optional[dict[str, list[int]]] = None,
) -> dict[str, float]:
    """The student's metric and its ratio to each teacher, as ``train_log.csv`` columns.

    ``reference`` holds each teacher's metric: empty on the first call, which scores the teachers
    too and fills it; later calls run the student alone (the teachers do not change). ``left_out``
    (filled on that first call) keeps the images each teacher answered NaN/inf on out of the
    student's later scores too, as they are out of the teacher's.
    """
    quiet = lambda line: None  # noqa: E731
    columns: dict[str, float] = {}
    left_out = {} if left_out is None else left_out
    for result in evaluate(plan, student, device, log=quiet, teachers=not reference, left_out=left_out).tasks:
        metric = result.task.metric
        if result.teacher not in reference:
            reference[result.teacher] = result.teacher_metrics[metric]
            left_out[result.teacher] = result.left_out
        value, base = result.student_metrics[metric], reference[result.teacher]
        ratio = relative_to_teacher(base, value, result.task.higher_is_better)
        columns[f"eval_{result.teacher}_{metric}"] = round(value, 4)
        columns[f"ratio_{result.teacher}"] = round(ratio, 4)
    return columns


def eval_callback(plan: Plan, device: torch.device, every: int) -> "EpochEnd":
    """An epoch-end callback scoring the student every ``every`` epochs and after the last one."""
    reference: dict[str, float] = {}  # each teacher's metric, scored once
    left_out: dict[str, list[int]] = {}  # the eval images each teacher answered NaN/inf on

    def score(trainer: "Trainer", row: dict) -> None:
        epoch, last = row["epoch"], trainer.cfg.epochs
        if epoch % every and epoch != last:
            return
        # the same training stream with or without the curve: evaluation's loaders draw a seed
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            row.update(scores_row(plan, trainer.student, device, reference, left_out))
        trainer.student.train()
        ratios = ", ".join(f"{k[6:]} {v:.3f}" for k, v in row.items() if k.startswith("ratio_"))
        trainer.log(f"epoch {epoch}/{last} eval: student/teacher {ratios}")

    return score
