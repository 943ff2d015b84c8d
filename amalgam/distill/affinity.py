"""Inter-task affinity from the teachers' distillation terms alone (no labels), per encoder stage.

A fully shared student (``branch_at: 5``) is warmed up on the plain sum of the tasks' distillation
terms. Every ``every`` steps, TAG's lookahead (Fifty et al., NeurIPS 2021) is taken per stage:
stage ``k`` alone is moved one step along task ``i``'s gradient and each task ``j``'s term is
measured again on the same batch::

    Z[k, i, j] = 1 - L_j(stage k stepped along grad L_i) / L_j(now)

Positive: a step for ``i`` in stage ``k`` helps ``j`` (they gain from sharing it); negative: it
hurts. The step moves each parameter by ``lookahead_lr`` on average (the size of an Adam step),
whatever the gradient's scale. A task's term is the sum of its teachers' logit terms (feature
terms and ensembles are left out: they are not per task). The warm-up checkpoints itself, so a
killed search continues where it stopped.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from amalgam.config.schema import Recipe
from amalgam.data import mixing_sampler
from amalgam.data.views import BatchViews
from amalgam.distill.plan import Plan
from amalgam.distill.targets import NonFiniteRows
from amalgam.errors import AmalgamError
from amalgam.io import atomic_save
from amalgam.kd.class_balance import pixel_weight_options
from amalgam.students.build import build_student
from amalgam.students.start import start_weights
from amalgam.students.tree import STAGES
from amalgam.task import DistillOptions, distill
from amalgam.teachers.inputs import answer_views


@dataclass
class Affinity:
    """Mean lookahead affinities ``table[k][i][j]`` (stage k+1, from task i to task j) and the cost."""

    tasks: list[str]
    table: list[list[list[float]]]
    measurements: int
    steps: int
    seconds: float
    images: int  # images through the student (warm-up and lookaheads, each lookahead counted as one)

    def pair(self, stage: int, i: str, j: str) -> float:
        """Symmetric affinity of tasks ``i`` and ``j`` at 1-based ``stage``."""
        a, b = self.tasks.index(i), self.tasks.index(j)
        return 0.5 * (self.table[stage - 1][a][b] + self.table[stage - 1][b][a])

    def to_dict(self) -> dict:
        return {
            "tasks": self.tasks, "table": self.table, "measurements": self.measurements,
            "steps": self.steps, "seconds": round(self.seconds, 2), "images": self.images,
        }  # fmt: skip


@dataclass
class _State:
    step: int = 0
    sums: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    counts: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    measurements: int = 0
    seconds: float = 0.0
    images: int = 0


def search_key(recipe: Recipe) -> dict:
    """Every recipe setting the affinities depend on (a stored warm-up with another key starts over)."""
    dump = recipe.model_dump(mode="json")
    s = dump["student"]
    # with student.encoder: auto the budget chooses the encoder, so the affinities depend on it too
    student = ("encoder", "decoder_channels", "search", "encoder_weights")
    student += ("budget",) if s["encoder"] == "auto" else ()
    own = {t: w for t, w in s["task_decoder_channels"].items() if w != s["decoder_channels"]}  # as StudentSpec
    extra = {"task_decoder_channels": own} if own else {}
    extra |= {"encoder_args": s["encoder_args"]} if s["encoder_args"] else {}
    pseudo = dump["amalgamation"]["pseudo_labels"]
    added = {"pseudo_labels": pseudo} if pseudo else {}
    return {
        "seed": dump["seed"], "data": dump["data"], "teachers": dump["teachers"],
        "student": {k: s[k] for k in student} | extra,  # keys added later only when set: old keys stay valid
        "temperature": dump["amalgamation"]["temperature"], "class_balance": dump["amalgamation"]["class_balance"],
        "focal": dump["amalgamation"]["focal"],
        "lr": dump["train"]["lr"], "batch_size": dump["train"]["batch_size"],
    } | added  # fmt: skip


def task_losses(plan: Plan, out: dict[str, torch.Tensor], targets: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """Each task's term: the sum of its teachers' distillation losses on their own rows."""
    losses: dict[str, torch.Tensor] = {}
    for name, (idx, target) in targets.items():
        teacher = plan.teachers[name]
        task, amal = teacher.task, plan.recipe.amalgamation  # the build's loss, as trained
        weights = pixel_weight_options(task, amal)
        options = DistillOptions(plan.projections[name], amal.temperature, **weights, output_kind=teacher.output_kind)
        loss = distill(task, out[task.name][idx], target, options)
        losses[task.name] = losses[task.name] + loss if task.name in losses else loss
    return losses


def _teacher_targets(
    plan: Plan, views: BatchViews, source: torch.Tensor, nonfinite: Optional[NonFiniteRows] = None
) -> dict[str, tuple]:
    """Each teacher's answers on its rows, on its own views of the originals (as training asks them).

    Rows a teacher answers NaN/inf on are left out and counted in ``nonfinite``, as training does
    (one NaN would make every affinity NaN, and the tree be chosen on NaN comparisons); a teacher
    with no row left is not in the result.

    Raises:
        AmalgamError: when a teacher answered NaN/inf on most of its rows (:class:`NonFiniteRows`).
    """
    targets = {}
    nonfinite = nonfinite if nonfinite is not None else NonFiniteRows()
    with torch.no_grad():
        for name, teacher in plan.teachers.items():
            ids = torch.tensor(plan.source_ids[name], device=source.device)
            idx = torch.isin(source, ids).nonzero().flatten()
            if idx.numel():
                out, _ = answer_views(teacher, views, idx, views.student.shape[-2:], augmented=False)
                kept = nonfinite.keep(name, [name], [out], teacher.task)
                if kept is not None:
                    idx, out = idx[kept], out[kept]
                if idx.numel():
                    targets[name] = (idx, out)
    return targets


def _batches(plan: Plan, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    weights = [plan.recipe.data.sources[n].weight for n in plan.sources.names]
    order = list(mixing_sampler(plan.sources, weights, steps * batch_size, seed))
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


def _lookahead(student, plan, images, targets, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``Z[k, i, j]`` on this batch and which entries were measured (tasks absent from it are not)."""
    tasks = list(student.spec.heads)
    t_count = len(tasks)
    features = student._trunk(images)
    before = task_losses(plan, {t: student._branch(features, t) for t in tasks}, targets)
    params = [list(stage.parameters()) for stage in student.trunk]
    flat = [p for stage in params for p in stage]
    grads = {t: torch.autograd.grad(before[t], flat, retain_graph=True, allow_unused=True) for t in before}
    z = torch.zeros(STAGES, t_count, t_count)
    seen = torch.zeros(STAGES, t_count, t_count)
    buffers = {n: b.clone() for n, b in student.named_buffers()}
    start = 0
    with torch.no_grad():
        for k, stage_params in enumerate(params):
            stop = start + len(stage_params)
            saved = [p.clone() for p in stage_params]
            n = sum(p.numel() for p in stage_params)
            for i, ti in enumerate(tasks):
                if ti not in grads:
                    continue
                g = [torch.zeros_like(p) if x is None else x for p, x in zip(stage_params, grads[ti][start:stop])]
                norm = math.sqrt(sum(float(x.pow(2).sum()) for x in g))
                if norm == 0:
                    continue
                for p, x in zip(stage_params, g):
                    p.sub_(x * (lr * math.sqrt(n) / norm))
                feats = [f.detach() for f in features[: k + 1]]
                for stage in student.trunk[k:]:
                    feats.append(stage(feats[-1]))
                after = task_losses(plan, {t: student._branch(feats, t) for t in tasks}, targets)
                for j, tj in enumerate(tasks):
                    if tj in after and tj in before:
                        z[k, i, j] = 1.0 - float(after[tj]) / max(float(before[tj]), 1e-12)
                        seen[k, i, j] = 1.0
                for p, s in zip(stage_params, saved):
                    p.copy_(s)
            start = stop
        for name, b in student.named_buffers():
            b.copy_(buffers[name])
    return z, seen


def _warm_up_step(plan: Plan, student, opt: torch.optim.Optimizer, images: torch.Tensor, targets: dict) -> None:
    """One optimiser step of the shared student on the plain sum of the tasks' terms."""
    losses = task_losses(plan, student(images), targets)
    if losses:  # none: every teacher's rows of this batch were NaN/inf
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()


def _say_nonfinite(nonfinite: NonFiniteRows, log: Callable[[str], None]) -> None:
    """One line per teacher whose targets were NaN/inf in the warm-up (rows left out, as training
    does; a resumed warm-up counts its steps after the resume).

    Raises:
        AmalgamError: when a teacher's were on most of its rows (:meth:`NonFiniteRows.epoch_lines`).
    """
    try:
        for line in nonfinite.epoch_lines():
            log(f"search: {line.replace(' this epoch', ' of the warm-up')}")
    except AmalgamError as exc:
        raise AmalgamError(f"search: {exc}") from None


def measure_affinity(
    plan: Plan, device: torch.device, state_path: Path, log: Callable[[str], None] = print
) -> Affinity:
    """Warms up a fully shared student and averages the per-stage lookahead affinities.

    Deterministic given ``recipe.seed``; resumes from ``state_path`` when it holds a warm-up of the
    same settings (:func:`search_key`). The plan's teachers are moved to ``device`` (and stay there).
    """
    recipe = plan.recipe
    cfg = recipe.student.search
    batch_size = cfg.batch_size or recipe.train.batch_size
    lr = cfg.lookahead_lr or recipe.train.lr
    torch.manual_seed(recipe.seed)
    spec = plan.student_spec(STAGES)
    student = build_student(spec)
    start_weights(student, recipe, plan.spaces, log, whole=False)  # the build's encoder: the affinities of that student
    student = student.to(device).train()
    for teacher in plan.teachers.values():  # build_plan loads them on the CPU; the images go to ``device``
        teacher.to(device)
    opt = torch.optim.AdamW(student.parameters(), lr=recipe.train.lr, weight_decay=recipe.train.weight_decay)
    tasks = list(spec.heads)
    state = _State(sums=torch.zeros(STAGES, len(tasks), len(tasks)), counts=torch.zeros(STAGES, len(tasks), len(tasks)))
    key = search_key(recipe)
    if state_path.is_file():
        saved = torch.load(state_path, map_location="cpu", weights_only=True)
        if saved.get("key") == key:
            student.load_state_dict(saved["student"])
            opt.load_state_dict(saved["optimizer"])
            state = _State(**saved["state"])
            log(f"search: continuing the warm-up from step {state.step}/{cfg.steps} ({state_path})")
        else:
            log(f"search: {state_path} holds a warm-up of other settings: starting over")
    batches = _batches(plan, cfg.steps, batch_size, recipe.seed)
    start = time.perf_counter() - state.seconds
    nonfinite = NonFiniteRows()  # the rows training would leave out are left out of the search too
    for step in range(state.step, cfg.steps):
        batch = [plan.sources[i] for i in batches[step]]
        images = torch.stack([b["image"] for b in batch]).to(device)
        source = torch.tensor([b["source"] for b in batch], device=device)
        originals = [b["original"] for b in batch] if plan.needs_originals else None
        try:
            targets = _teacher_targets(plan, BatchViews(images, plan.student_view, originals), source, nonfinite)
        except AmalgamError as exc:
            raise AmalgamError(f"search: warm-up step {step + 1}: {exc}") from None
        if step % cfg.every == 0:
            z, seen = _lookahead(student, plan, images, targets, lr)
            state.sums += z * seen
            state.counts += seen
            state.measurements += 1
            state.images += images.shape[0] * (1 + STAGES * len(tasks))
        _warm_up_step(plan, student, opt, images, targets)
        state.images += images.shape[0]
        state.step = step + 1
        state.seconds = time.perf_counter() - start
        if state.step % cfg.every == 0 or state.step == cfg.steps:
            atomic_save({"key": key, "student": student.state_dict(), "optimizer": opt.state_dict(),
                         "state": state.__dict__}, state_path)  # fmt: skip
    _say_nonfinite(nonfinite, log)
    mean = (state.sums / state.counts.clamp_min(1)).tolist()
    log(f"search: warm-up of {cfg.steps} steps, {state.measurements} lookaheads, {state.seconds:.1f} s")
    return Affinity(tasks, mean, state.measurements, cfg.steps, state.seconds, state.images)
