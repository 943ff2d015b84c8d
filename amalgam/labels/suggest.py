"""``amalgam inspect --suggest-labels``: label relations proposed from how teachers' predictions co-occur.

Two teachers of one task are run on the same unlabeled images. For every pair of labels
``(a of teacher A, b of teacher B)`` we count the samples (images, or pixels for dense tasks)
where A says ``a`` and B says ``b``. Label ``a`` of A is proposed to stand for B's labels
``b1..bk`` when

* each ``b_i`` mostly lands in ``a``: ``P(A says a | B says b_i) >= member_share``, and
* together they explain ``a``: ``sum_i P(B says b_i | A says a) >= cover_share``,

and the recipe does not already say so. One member is a rename (``{tvmonitor: tv}``), several a
group (``{vehicle: [car, bus, truck]}``). Both conditions are needed: a teacher forced to name an
image it does not know (a ``Bag`` for a teacher of clothes) sends it to some label ``a``, but then
``a`` is not explained by ``Bag`` alone, or ``Bag`` does not land in ``a`` only. Backgrounds are
never proposed (they already cover everything a teacher lacks). Each proposal carries its counts.

Counts alone cannot tell a coarse label from a teacher forced to name what it never saw (a
clothes classifier calling every bag a shirt *is* a shirt-or-bag label on these images). Samples
where either teacher is unsure (top probability under ``min_confidence``) are left out, which
removes many forced answers; docs/results/suggest_labels.md measures what remains.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable

import torch

from amalgam.data.views import BatchViews
from amalgam.distill.plan import Plan
from amalgam.labels.algebra import LabelSpace
from amalgam.teachers.inputs import answer_views

MIN_CONFIDENCE = 0.5  # see docs/results/suggest_labels.md for its effect
DENSE_SIDE = 64  # dense predictions are counted on a grid of about this many pixels a side


@dataclass(frozen=True)
class Suggestion:
    """A relation to write in ``teachers.<teacher>.labels``: its ``label`` stands for ``covers``.

    Attributes:
        task: the task both teachers do.
        teacher: whose labels entry changes.
        label: that teacher's label.
        covers: the unified classes it is proposed to stand for (the other teacher's names).
        other: the teacher whose predictions are the evidence.
        evidence: ``P(a | b)`` per member and the share of ``a`` they explain, with counts.
    """

    task: str
    teacher: str
    label: str
    covers: tuple[str, ...]
    other: str
    evidence: str

    def entry(self) -> str:
        """The labels entry, ready to paste: ``{tvmonitor: tv}`` or ``{vehicle: [car, bus]}``."""
        value = _q(self.covers[0]) if len(self.covers) == 1 else f"[{', '.join(_q(c) for c in self.covers)}]"
        return f"{{{_q(self.label)}: {value}}}"


def cooccurrence(pred_a: torch.Tensor, pred_b: torch.Tensor, size_a: int, size_b: int) -> torch.Tensor:
    """``[size_a, size_b]`` counts of samples where A predicts row and B predicts column (-1: not counted)."""
    pred_a, pred_b = pred_a.reshape(-1).long(), pred_b.reshape(-1).long()
    sure = (pred_a >= 0) & (pred_b >= 0)
    index = pred_a[sure] * size_b + pred_b[sure]
    return torch.bincount(index, minlength=size_a * size_b).view(size_a, size_b)


def propose(
    counts: torch.Tensor,
    space_a: LabelSpace,
    space_b: LabelSpace,
    member_share: float = 0.6,
    cover_share: float = 0.7,
    min_count: int = 20,
) -> list[tuple[str, tuple[str, ...], str]]:
    """Relations for A's labels from A x B counts: ``(label of A, unified classes, evidence)``.

    Args:
        counts: ``[len(space_a), len(space_b)]`` from :func:`cooccurrence`.
        member_share: least ``P(A says a | B says b)`` for ``b`` to be part of ``a``.
        cover_share: least share of ``a``'s samples its members explain together.
        min_count: labels predicted fewer times than this are not judged.
    """
    counts = counts.double()
    n_b = counts.sum(0)
    col = {b: space_b.names.index(b) for b in space_b.known()}
    found = []
    for a in space_a.known():
        row = counts[space_a.names.index(a)]
        total = row.sum().item()
        if total < min_count:
            continue
        share = {b: row[k].item() / n_b[k].item() for b, k in col.items() if n_b[k] >= min_count}
        members = [b for b, v in share.items() if v >= member_share]
        if not members:
            continue
        explained = sum(row[col[b]].item() for b in members) / total
        covers = tuple(c for b in members for c in space_b.covered(b))
        if explained < cover_share or set(covers) == set(space_a.covered(a)):
            continue
        shares = ", ".join(f"{share[b]:.0%} of {b} ({int(n_b[col[b]])})" for b in members)
        found.append((a, covers, f"{shares} are {a}; they are {explained:.0%} of its {int(total)}"))
    return found


@dataclass
class Predictions:
    """Every labelled teacher's answers on the same source images.

    Attributes:
        labels: teacher -> ``[N]`` (pooled tasks) or ``[N, H, W]`` (dense, at the student's size).
        confidence: teacher -> its top probability at each of those samples.
        sources: ``[N]`` the source index of each image.
    """

    labels: dict[str, torch.Tensor]
    confidence: dict[str, torch.Tensor]
    sources: torch.Tensor

    def sure(self, teacher: str, min_confidence: float) -> torch.Tensor:
        """The teacher's labels, -1 where its top probability is under ``min_confidence``."""
        return torch.where(self.confidence[teacher] >= min_confidence, self.labels[teacher], -1)


@torch.inference_mode()
def predictions(
    plan: Plan, max_images: int = 512, batch_size: int = 32, log: Callable[[str], None] = print
) -> Predictions:
    """Runs every labelled teacher on up to ``max_images`` source images (evenly spread over all)."""
    teachers = {n: t for n, t in plan.teachers.items() if t.space is not None}
    step = max(1, len(plan.sources) // max_images)
    chosen = list(range(0, len(plan.sources), step))[:max_images]
    log(f"suggest-labels: running {len(teachers)} teachers on {len(chosen)} source images")
    labels: dict[str, list[torch.Tensor]] = {n: [] for n in teachers}
    confidence: dict[str, list[torch.Tensor]] = {n: [] for n in teachers}
    sources = []
    for start in range(0, len(chosen), batch_size):
        samples = [plan.sources[i] for i in chosen[start : start + batch_size]]
        images = torch.stack([s["image"] for s in samples])
        sources += [s["source"] for s in samples]
        originals = [s["original"] for s in samples] if plan.needs_originals else None
        views, rows = BatchViews(images, plan.student_view, originals), torch.arange(len(samples))
        for name, teacher in teachers.items():
            # each teacher on its own view, as training asks it; dense answers come back on the student's grid
            logits, _ = answer_views(teacher, views, rows, images.shape[-2:], augmented=False)
            top, label = logits.float().softmax(1).max(1)
            if label.dim() == 3:  # dense: every 1 in stride^2 pixels keeps memory at ~64x64 per image
                stride = max(1, -(-max(label.shape[-2:]) // DENSE_SIDE))
                top, label = top[:, ::stride, ::stride], label[:, ::stride, ::stride]
            labels[name].append(label.cpu())
            confidence[name].append(top.cpu())
    return Predictions(
        {n: torch.cat(v) for n, v in labels.items()},
        {n: torch.cat(v) for n, v in confidence.items()},
        torch.tensor(sources),
    )


def suggest_labels(
    plan: Plan,
    max_images: int = 512,
    log: Callable[[str], None] = print,
    min_confidence: float = MIN_CONFIDENCE,
    **thresholds,
) -> list[Suggestion]:
    """Proposed relations between the labels of every pair of teachers of one task.

    Args:
        plan: a prepared plan with its sources scanned.
        max_images: source images the teachers are run on.
        min_confidence: samples where either teacher's top probability is lower are not counted
            (a teacher forced to name what it does not know is often unsure).
        thresholds: ``member_share``, ``cover_share``, ``min_count`` of :func:`propose`.
    """
    return suggest_from(plan, predictions(plan, max_images, log=log), min_confidence, **thresholds)


def suggest_from(
    plan: Plan, preds: Predictions, min_confidence: float = MIN_CONFIDENCE, **thresholds
) -> list[Suggestion]:
    """:func:`suggest_labels` on predictions already made (to try several thresholds).

    Only images of sources both teachers teach on are counted; the proposals are made one
    coherent edit by :func:`consistent`.
    """
    names = list(preds.labels)
    found: list[Suggestion] = []
    for a in names:
        for b in names:
            ta, tb = plan.teachers[a], plan.teachers[b]
            if a == b or ta.task.name != tb.task.name:
                continue
            shared = torch.tensor(sorted(set(plan.source_ids[a]) & set(plan.source_ids[b])))
            if len(shared) == 0:
                continue
            keep = torch.isin(preds.sources, shared)
            pa, pb = preds.sure(a, min_confidence)[keep], preds.sure(b, min_confidence)[keep]
            counts = cooccurrence(pa, pb, len(ta.space), len(tb.space))
            for label, covers, evidence in propose(counts, ta.space, tb.space, **thresholds):
                found.append(Suggestion(ta.task.name, a, label, covers, b, evidence))
    return consistent(found, {n: plan.teachers[n].space for n in names}, names)


def consistent(found: list[Suggestion], spaces: dict[str, LabelSpace], order: list[str]) -> list[Suggestion]:  # noqa: C901 - union-find closures; split it when it next changes
    """The proposals as one coherent edit of the recipe.

    Labels joined by a rename proposal or by an equal name form one class; it takes the name the
    earliest teacher (recipe order) gives it, and only labels with another name are renamed (a
    ``tv``/``tvmonitor`` pair found from both sides is one rename, a chain of renames agrees on one
    name). Groups name their members by those names; a group found against several teachers is
    kept once.

    Args:
        found: raw proposals of :func:`propose` over teacher pairs (one task per call is enough:
            names of different tasks never meet).
        spaces: teacher -> label space.
        order: teachers in recipe order.
    """
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(node: tuple[str, str]) -> tuple[str, str]:
        while parent.setdefault(node, node) != node:
            node = parent[node]
        return node

    def join(a: tuple[str, str], b: tuple[str, str]) -> None:
        ra, rb = sorted((find(a), find(b)), key=rank)
        parent[rb] = ra

    def rank(node: tuple[str, str]) -> tuple[int, int]:
        return order.index(node[0]), spaces[node[0]].names.index(node[1])

    def label_of(teacher: str, cls: str) -> tuple[str, str]:
        space = spaces[teacher]
        return teacher, next((n for n in space.known() if space.covered(n) == (cls,)), cls)

    single = {(t, n): s.covered(n)[0] for t, s in spaces.items() for n in s.known() if len(s.covered(n)) == 1}
    by_class: dict[str, tuple[str, str]] = {}
    for node in sorted(single, key=rank):  # equal unified names are one class already
        join(node, by_class.setdefault(single[node], node))
    renames = [s for s in found if len(s.covers) == 1 and (s.teacher, s.label) in single]
    for s in renames:
        join((s.teacher, s.label), label_of(s.other, s.covers[0]))
    name = {node: single[find(node)] for node in single}
    out: list[Suggestion] = []
    for node in sorted(single, key=rank):
        if name[node] == single[node]:
            continue
        why = next((s for s in renames if node in ((s.teacher, s.label), label_of(s.other, s.covers[0]))), None)
        if why is not None:
            other = why.other if why.teacher == node[0] else why.teacher
            out.append(Suggestion(why.task, node[0], node[1], (name[node],), other, why.evidence))
    seen = set()
    for s in found:
        if len(s.covers) == 1 and (s.teacher, s.label) in single:
            continue
        covers = tuple(dict.fromkeys(name.get(label_of(s.other, c), c) for c in s.covers))
        key = (s.teacher, s.label, frozenset(covers))
        if key in seen or set(covers) == set(spaces[s.teacher].covered(s.label)):
            continue
        seen.add(key)
        out.append(Suggestion(s.task, s.teacher, s.label, covers, s.other, s.evidence))
    return out


def suggestion_lines(plan: Plan, found: list[Suggestion]) -> list[str]:
    """The proposals with their evidence, then each changed teacher's ``labels`` ready to paste."""
    if not found:
        return ["suggest-labels: no relation to propose (every co-occurring label pair already matches)"]
    lines = ["suggested label relations (evidence: how often one teacher's label is the other's):"]
    for s in found:
        kind = "rename" if len(s.covers) == 1 else "group"
        lines.append(f"  {kind}: teachers.{s.teacher}.labels {s.entry()}  (vs {s.other}: {s.evidence})")
    lines.append("\nready to paste (the first proposal for each label):")
    for teacher in dict.fromkeys(s.teacher for s in found):
        first: dict[str, Suggestion] = {}
        for s in found:
            if s.teacher == teacher:
                first.setdefault(s.label, s)
        entries = plan.recipe.teachers[teacher].labels or []
        written = [first[e].entry() if isinstance(e, str) and e in first else _yaml(e) for e in entries]
        lines.append(f"  {teacher}:\n    labels: [{', '.join(written)}]")
    return lines


def _yaml(entry: object) -> str:
    if isinstance(entry, dict):
        ((name, value),) = entry.items()
        shown = _q(value) if isinstance(value, str) else f"[{', '.join(_q(v) for v in value)}]"
        return f"{{{_q(name)}: {shown}}}"
    return _q(str(entry))


def _q(name: str) -> str:
    """A name as a YAML flow scalar: plain when safe, else double-quoted."""
    return name if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_ ./-]*(?<! )", name) else json.dumps(name)
