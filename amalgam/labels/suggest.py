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

A "rename" onto a class the teacher already has under another label, or one that would put two
of one teacher's labels in one class, is not proposed: the two teachers disagree on which output
is which name (one lists its labels out of the order of its outputs), and counts cannot say which;
it is reported as an :class:`OrderConflict` instead. A labels list is offered for pasting only
if it passes the recipe's own check (:func:`pasted`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from amalgam.config.label_entries import parse_entry, space_of
from amalgam.data.views import BatchViews
from amalgam.distill.eval_checks import shorten
from amalgam.distill.plan import Plan
from amalgam.errors import AmalgamError
from amalgam.labels.algebra import LabelSpace
from amalgam.labels.names import yaml_name
from amalgam.teachers.inputs import answer_views

MIN_CONFIDENCE = 0.5  # see docs/results/suggest_labels.md for its effect
MIN_COUNT = 20  # labels predicted fewer times are not judged
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
        value = (
            yaml_name(self.covers[0]) if len(self.covers) == 1 else f"[{', '.join(yaml_name(c) for c in self.covers)}]"
        )
        return f"{{{yaml_name(self.label)}: {value}}}"


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
    min_count: int = MIN_COUNT,
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
    """Runs every teacher of exclusive labels on up to ``max_images`` source images (evenly spread over all);
    a multi-label teacher is left out, said in the log."""
    if max_images < 1:  # 0 divided by zero, a negative count sliced the images from the end
        raise AmalgamError(f"suggest-labels: max_images is a count of 1 or more, got {max_images}")
    teachers = {n: t for n, t in plan.teachers.items() if t.space is not None and t.task.exclusive_labels}
    if skipped := [n for n, t in plan.teachers.items() if t.space is not None and not t.task.exclusive_labels]:
        log(
            f"suggest-labels: not judged: {', '.join(skipped)} (its task does not declare exclusive_labels: one image"
            " may hold several of its labels, so its top label says nothing of how two label sets pair)"
        )
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


Node = tuple[str, str]  # (teacher, one of its labels)


@dataclass(frozen=True)
class OrderConflict:
    """Two teachers of one task whose predictions pair a label of one with *another* name of the other.

    Such "renames" (``cls-a``'s ``Trouser`` is ``cls-b``'s ``Pullover`` while ``cls-a`` has a
    ``Pullover`` of its own) would merge distinct classes: one of the two teachers lists its labels
    out of the order of its outputs. Counts cannot tell which one.

    Attributes:
        task: the task both teachers do.
        teachers: the two teachers, in recipe order.
        renames: ``(label, the other teacher's label it co-occurs with, evidence)`` per rename not proposed.
    """

    task: str
    teachers: tuple[str, str]
    renames: tuple[tuple[Node, Node, str], ...]

    def size(self) -> int:
        """How many labels are involved: the more of either teacher's."""
        involved: dict[str, set[str]] = {t: set() for t in self.teachers}
        for mine, theirs, _ in self.renames:
            involved[mine[0]].add(mine[1])
            involved[theirs[0]].add(theirs[1])
        return max(len(v) for v in involved.values())

    def examples(self) -> list[tuple[Node, Node, str]]:
        """Up to two renames of different labels (a pair found from both sides is shown once)."""
        shown: list[tuple[Node, Node, str]] = []
        for rename in self.renames:
            if all({rename[0], rename[1]} != {s[0], s[1]} for s in shown):
                shown.append(rename)
        return shown[:2]

    def line(self) -> str:
        """One line: both teachers, how many labels, examples, and how to tell which teacher is wrong."""
        a, b = self.teachers
        shown = "; ".join(
            f"{m[0]}'s {yaml_name(m[1])} is {t[0]}'s {yaml_name(t[1])} ({why})" for m, t, why in self.examples()
        )
        return (
            f"suggest-labels: label order: {a} and {b} disagree on which output is which name for {self.size()}"
            f" labels (e.g. {shown}): one of them lists its labels out of the order of its outputs, and the build's"
            " per-class warnings against each teacher's eval set (mostly_predicted_as) tell which; these"
            " renames are not proposed"
        )


@dataclass(frozen=True)
class PairCoverage:
    """What could be judged for two teachers of one task on the source images they share.

    Attributes:
        teachers: the two teachers, in recipe order.
        labels: their named labels, both teachers' together.
        unjudged: those predicted fewer than ``min_count`` times where both teachers are sure.
        names: which, as ``teacher:label``.
    """

    teachers: tuple[str, str]
    labels: int
    unjudged: int
    names: tuple[str, ...] = ()


@dataclass
class Findings:
    """Everything ``--suggest-labels`` found: the proposals and what they rest on.

    Attributes:
        suggestions: the coherent edit (:func:`consistent`).
        conflicts: teacher pairs whose labels are out of order relative to each other.
        pairs: each pair of teachers of one task sharing a source (empty: nothing was compared;
            None: not known).
        min_count: the count under which a label was not judged.
    """

    suggestions: list[Suggestion]
    conflicts: list[OrderConflict] = field(default_factory=list)
    pairs: list[PairCoverage] | None = None
    min_count: int = MIN_COUNT


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


def survey(
    plan: Plan,
    max_images: int = 512,
    log: Callable[[str], None] = print,
    min_confidence: float = MIN_CONFIDENCE,
    **thresholds,
) -> Findings:
    """:func:`suggest_labels` with the label-order conflicts and what was judged (for :func:`suggestion_lines`)."""
    return survey_from(plan, predictions(plan, max_images, log=log), min_confidence, **thresholds)


#: source images the teachers of :func:`unjudged_pairs` run on before training, a few at a time: each label
#: then needs :data:`MIN_COUNT` answers to be judged; :func:`order_survey_images` sizes it to the labels
ORDER_SURVEY_IMAGES = 128
ORDER_SURVEY_BATCH = 8
#: the most images the survey runs on (a 1000-label pair judges its most frequent labels only, and says so)
ORDER_SURVEY_MAX = 512


def order_survey_images(plan: Plan, pairs: list[tuple[str, str]]) -> int:
    """Images for the label-order survey: twice :data:`MIN_COUNT` per label of the widest classifier, so balanced
    labels are each answered enough to be judged (128 left a 10-class pair's every label unjudged, unsaid); a
    dense teacher answers every pixel, and 128 images give its labels plenty."""
    teachers = [plan.teachers[t] for pair in pairs for t in pair]
    widest = max((len(t.space.known()) for t in teachers if not t.task.dense), default=0)
    return min(ORDER_SURVEY_MAX, max(ORDER_SURVEY_IMAGES, 2 * MIN_COUNT * widest))


def _shared_classes(a: LabelSpace, b: LabelSpace) -> set[str]:
    """The names two teachers share (their backgrounds' among them) and the unified classes both stand for
    through relations."""
    related = {c for n in a.known() for c in a.covered(n)} & {c for n in b.known() for c in b.covered(n)}
    return (set(a.names) & set(b.names)) | related


def unjudged_pairs(plan: Plan) -> list[tuple[str, str]]:
    """Pairs of teachers of one task, exclusive labels, two shared label names and a shared source at least, of
    which one has no eval set: nothing else checks that their shared names mean the same outputs."""
    labelled = [(n, t) for n, t in plan.teachers.items() if t.space is not None and t.task.exclusive_labels]
    pairs = []
    for i, (a, ta) in enumerate(labelled):
        for b, tb in labelled[i + 1 :]:
            shared = _shared_classes(ta.space, tb.space)  # a relation shares a class as a name does
            sources = set(plan.source_ids.get(a, ())) & set(plan.source_ids.get(b, ()))
            if ta.task.name == tb.task.name and not (ta.eval_name and tb.eval_name) and len(shared) > 1 and sources:
                pairs.append((a, b))
    return pairs


def order_lines_before_training(plan: Plan, log: Callable[[str], None] = print) -> list[str]:
    """The label-order conflicts (:class:`OrderConflict`) of :func:`unjudged_pairs`, from the teachers' predictions
    on :data:`ORDER_SURVEY_IMAGES` source images: a trial's teacher whose labels were written in another order than
    its outputs, with no eval set, trained the student on contradictory targets without a word."""
    pairs = unjudged_pairs(plan)
    if not pairs:
        return []
    involved = {t for pair in pairs for t in pair}  # the other teachers need not run
    subset = replace(plan, teachers={n: t for n, t in plan.teachers.items() if n in involved})
    shown = "; ".join(" and ".join(pair) for pair in pairs)
    images = order_survey_images(plan, pairs)
    log(f"comparing the label orders of teachers {shown} on {images} source images (one has no eval set)")
    preds = predictions(subset, images, ORDER_SURVEY_BATCH, log=lambda msg: None)
    found = survey_from(subset, preds, MIN_CONFIDENCE)
    for pair in found.pairs or []:
        if pair.teachers in pairs and pair.unjudged:  # a pass said with nothing judged read as checked
            log(
                f"label orders of {' and '.join(pair.teachers)}: {pair.unjudged} of their {pair.labels} labels were"
                f" answered under {found.min_count} times on those images, not judged"
                f" ({', '.join(pair.names[:6])}{' ...' if len(pair.names) > 6 else ''})"
            )
    lines = []
    for conflict in found.conflicts:
        if conflict.teachers not in pairs:
            continue
        unchecked = " and ".join(t for t in conflict.teachers if not plan.teachers[t].eval_name)
        a, b = conflict.teachers
        shown = "; ".join(
            f"{m[0]}'s {yaml_name(m[1])} is {t[0]}'s {yaml_name(t[1])} ({why})" for m, t, why in conflict.examples()
        )
        lines.append(
            f"teachers {a} and {b} disagree on which output is which name for {conflict.size()} labels on their"
            f" shared source images (e.g. {shown}): one of them lists its labels out of the order of its outputs,"
            f" and {unchecked} has no eval set to tell which: check its labels against its outputs, or give it one"
            " (amalgam inspect --suggest-labels shows the evidence)"
        )
    return lines


def suggest_from(
    plan: Plan, preds: Predictions, min_confidence: float = MIN_CONFIDENCE, **thresholds
) -> list[Suggestion]:
    """:func:`suggest_labels` on predictions already made (to try several thresholds).

    Only images of sources both teachers teach on are counted; the proposals are made one
    coherent edit by :func:`consistent`.
    """
    return survey_from(plan, preds, min_confidence, **thresholds).suggestions


def survey_from(plan: Plan, preds: Predictions, min_confidence: float = MIN_CONFIDENCE, **thresholds) -> Findings:
    """:func:`survey` on predictions already made."""
    names = list(preds.labels)
    min_count = thresholds.get("min_count", MIN_COUNT)
    found: list[Suggestion] = []
    pairs: list[PairCoverage] = []
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
            if names.index(a) < names.index(b):  # each pair once: A x B holds both teachers' counts
                pairs.append(coverage((a, b), counts, ta.space, tb.space, min_count))
            for label, covers, evidence in propose(counts, ta.space, tb.space, **thresholds):
                found.append(Suggestion(ta.task.name, a, label, covers, b, evidence))
    spaces = {n: plan.teachers[n].space for n in names}
    kept, clashes = resolve(found, spaces, names)
    return Findings(kept, order_conflicts(clashes, spaces, names), pairs, min_count)


def coverage(
    teachers: tuple[str, str], counts: torch.Tensor, space_a: LabelSpace, space_b: LabelSpace, min_count: int
) -> PairCoverage:
    """How many of both teachers' named labels :func:`propose` judges on these A x B ``counts``."""
    rows, cols = counts.sum(1), counts.sum(0)
    few = [f"{teachers[0]}:{n}" for n in space_a.known() if rows[space_a.names.index(n)] < min_count]
    few += [f"{teachers[1]}:{n}" for n in space_b.known() if cols[space_b.names.index(n)] < min_count]
    return PairCoverage(teachers, len(space_a.known()) + len(space_b.known()), len(few), tuple(few))


class _Classes:
    """Teachers' labels joined into unified classes (union-find over ``(teacher, label)``).

    A join that would give one teacher two labels of one class is refused: applied, it would
    merge two of that teacher's outputs (the recipe check refuses it too).
    """

    def __init__(self, spaces: dict[str, LabelSpace], order: list[str]) -> None:
        self.spaces, self.order = spaces, order
        self.parent: dict[Node, Node] = {}
        self.teachers: dict[Node, set[str]] = {}  # root -> teachers with a label in its class
        self.single = {(t, n): s.covered(n)[0] for t, s in spaces.items() for n in s.known() if len(s.covered(n)) == 1}
        by_class: dict[str, Node] = {}
        for node in sorted(self.single, key=self.rank):  # equal unified names are one class already
            self.join(node, by_class.setdefault(self.single[node], node))

    def rank(self, node: Node) -> tuple[int, int]:
        """Recipe order of the teacher, then output order: the earliest label names its class."""
        return self.order.index(node[0]), self.spaces[node[0]].names.index(node[1])

    def find(self, node: Node) -> Node:
        """The class's earliest label."""
        self.teachers.setdefault(node, {node[0]})
        while self.parent.setdefault(node, node) != node:
            node = self.parent[node]
        return node

    def join(self, a: Node, b: Node) -> bool:
        """Joins the classes of ``a`` and ``b``; False (and nothing joined) if a teacher would hold two labels."""
        ra, rb = sorted((self.find(a), self.find(b)), key=self.rank)
        if ra == rb:
            return True
        if self.teachers[ra] & self.teachers[rb]:
            return False
        self.parent[rb] = ra
        self.teachers[ra] |= self.teachers.pop(rb)
        return True

    def label_of(self, teacher: str, cls: str) -> Node:
        """The teacher's label that is exactly unified class ``cls`` (else ``cls`` itself)."""
        return teacher, _label_of(self.spaces[teacher], cls)

    def name(self, node: Node) -> str:
        """The unified name the class of ``node`` takes."""
        return self.single[self.find(node)]


def _taken(space: LabelSpace, label: str, cls: str) -> bool:
    """Whether another of the teacher's labels already stands for ``cls``."""
    return any(cls in space.covered(n) for n in space.known() if n != label)


def resolve(
    found: list[Suggestion], spaces: dict[str, LabelSpace], order: list[str]
) -> tuple[list[Suggestion], list[Suggestion]]:
    """:func:`consistent`'s edit, and the renames left out of it as label-order conflicts.

    A rename whose target is a class the teacher already has under another label, or that would
    join two of one teacher's labels into one class (through equal names or other renames), is no
    rename: the two teachers disagree on which output is which name.
    """
    classes = _Classes(spaces, order)
    renames, clashes = [], []
    for s in found:
        if len(s.covers) != 1 or (s.teacher, s.label) not in classes.single:
            continue
        target = classes.label_of(s.other, s.covers[0])
        if _taken(spaces[s.teacher], s.label, s.covers[0]) or not classes.join((s.teacher, s.label), target):
            clashes.append(s)
        else:
            renames.append(s)
    return _renamed(classes, renames) + _groups(classes, found), clashes


def _renamed(classes: _Classes, renames: list[Suggestion]) -> list[Suggestion]:
    """One rename per label whose class takes another name, with the evidence of a rename that joined it."""
    out = []
    for node in sorted(classes.single, key=classes.rank):
        if classes.name(node) == classes.single[node]:
            continue
        why = next((s for s in renames if node in ((s.teacher, s.label), classes.label_of(s.other, s.covers[0]))), None)
        if why is not None:
            other = why.other if why.teacher == node[0] else why.teacher
            out.append(Suggestion(why.task, node[0], node[1], (classes.name(node),), other, why.evidence))
    return out


def _groups(classes: _Classes, found: list[Suggestion]) -> list[Suggestion]:
    """The group proposals in the unified names, each kept once."""
    out, seen = [], set()
    for s in found:
        if len(s.covers) == 1 and (s.teacher, s.label) in classes.single:
            continue
        covers = tuple(dict.fromkeys(_unified(classes, s.other, c) for c in s.covers))
        key = (s.teacher, s.label, frozenset(covers))
        if key in seen or set(covers) == set(classes.spaces[s.teacher].covered(s.label)):
            continue
        if _refused(classes.spaces[s.teacher], s.label, covers) or _narrower(classes, s, covers):
            continue
        seen.add(key)
        out.append(Suggestion(s.task, s.teacher, s.label, covers, s.other, s.evidence))
    return out


def _refused(space: LabelSpace, label: str, covers: tuple[str, ...]) -> bool:
    """A group taking a class another of the teacher's labels stands for: the recipe refuses it ("covered by
    both"), and a trial was proposed one."""
    return any(_taken(space, label, c) for c in covers)


def _narrower(classes: _Classes, found: Suggestion, covers: tuple[str, ...]) -> bool:
    """A group narrowing the label's declared relation by classes the other teacher cannot name: no evidence
    against them (a trial's declared {upper: [tshirt, pullover, coat, shirt]} was proposed as [coat, shirt]
    from a teacher that names neither tshirt nor pullover). Compared in the unified names, as ``covers`` is."""
    own, other = classes.spaces[found.teacher], classes.spaces[found.other]
    declared = {_unified(classes, found.teacher, c) for c in own.covered(found.label)}
    nameable = {_unified(classes, found.other, c) for n in other.known() for c in other.covered(n)}
    return set(covers) < declared and not (declared - set(covers)) & nameable


def _unified(classes: _Classes, teacher: str, cls: str) -> str:
    node = classes.label_of(teacher, cls)
    return classes.name(node) if node in classes.single else cls


def consistent(found: list[Suggestion], spaces: dict[str, LabelSpace], order: list[str]) -> list[Suggestion]:
    """The proposals as one coherent edit of the recipe.

    Labels joined by a rename proposal or by an equal name form one class; it takes the name the
    earliest teacher (recipe order) gives it, and only labels with another name are renamed (a
    ``tv``/``tvmonitor`` pair found from both sides is one rename, a chain of renames agrees on one
    name). Groups name their members by those names; a group found against several teachers is
    kept once. Renames that would merge two labels of one teacher are left out
    (:func:`order_conflicts` reports them).

    Args:
        found: raw proposals of :func:`propose` over teacher pairs (one task per call is enough:
            names of different tasks never meet).
        spaces: teacher -> label space.
        order: teachers in recipe order.
    """
    return resolve(found, spaces, order)[0]


def order_conflicts(clashes: list[Suggestion], spaces: dict[str, LabelSpace], order: list[str]) -> list[OrderConflict]:
    """The renames :func:`resolve` left out, one :class:`OrderConflict` per teacher pair."""
    by_pair: dict[tuple[str, str], list[Suggestion]] = {}
    for s in clashes:
        a, b = sorted((s.teacher, s.other), key=order.index)
        by_pair.setdefault((a, b), []).append(s)
    return [
        OrderConflict(
            group[0].task,
            pair,
            tuple(
                ((s.teacher, s.label), (s.other, _label_of(spaces[s.other], s.covers[0])), s.evidence) for s in group
            ),
        )
        for pair, group in by_pair.items()
    ]


def _label_of(space: LabelSpace, cls: str) -> str:
    """The label of ``space`` that is exactly unified class ``cls`` (else ``cls`` itself)."""
    return next((n for n in space.known() if space.covered(n) == (cls,)), cls)


def suggestion_lines(plan: Plan, found: list[Suggestion] | Findings) -> list[str]:
    """The proposals with their evidence, then each changed teacher's ``labels`` ready to paste.

    Given :class:`Findings`, also the label-order conflicts and the labels too rare to judge, so
    that "nothing to propose" is never said of labels that were not compared.
    """
    if not isinstance(found, Findings):
        found = Findings(found, pairs=None)
    if found.pairs == []:
        return ["suggest-labels: no pair of judged teachers of one task shares a source: nothing to compare"]
    lines = [c.line() for c in found.conflicts] + _unjudged_lines(found)
    if not found.suggestions:
        return lines + [_nothing_line(found)]
    lines.append("suggested label relations (evidence: how often one teacher's label is the other's):")
    for s in found.suggestions:
        kind = "rename" if len(s.covers) == 1 else "group"
        lines.append(f"  {kind}: teachers.{s.teacher}.labels {s.entry()}  (vs {s.other}: {s.evidence})")
    closed = set(_closed_pairs(plan, found.suggestions))
    open_ = [s for s in found.suggestions if tuple(sorted((s.teacher, s.other))) not in closed]
    return lines + _closed_set_lines(plan, found.suggestions) + _paste_lines(plan, open_)


def _closed_pairs(plan: Plan, found: list[Suggestion]) -> list[tuple[str, str]]:
    """The teacher pairs of proposals where neither teacher has a background."""
    spaces = {n: t.space for n, t in plan.teachers.items()}
    pairs = sorted({tuple(sorted((s.teacher, s.other))) for s in found})
    return [p for p in pairs if all(spaces.get(t) is not None and spaces[t].background is None for t in p)]


def _closed_set_lines(plan: Plan, found: list[Suggestion]) -> list[str]:
    """A caution per teacher pair of proposals where neither teacher has a background: each names one
    of its own labels for everything, classes it lacks too, so their co-occurrence mixes in images
    neither may know (a trial's four partial classifiers: 2 of 9 proposals right; another's closed-set
    'cat' answered on vehicles was proposed as {cat: vehicle}). Their proposals are not in the block to paste."""
    closed = _closed_pairs(plan, found)
    return [
        f"  caution: {a} and {b} have no background: each names one of its labels for every image, of classes it"
        " lacks too, so their proposals rest partly on images one of them cannot know; they are left out of the"
        " block to paste: check each against a few images, then write it"
        for a, b in closed
    ]


def _unjudged_lines(found: Findings) -> list[str]:
    """One line per teacher pair with labels too rare on the images to be judged."""
    return [
        f"suggest-labels: {p.unjudged} of {p.labels} labels of {p.teachers[0]} and {p.teachers[1]} were predicted"
        f" fewer than {found.min_count} times where both are sure and were not judged"
        f"{' (' + shorten(list(p.names), 6) + ')' if p.names else ''}: run with more images"
        " (--suggest-labels N), unless these sources hold none of them"
        for p in found.pairs or []
        if p.unjudged
    ]


def _nothing_line(found: Findings) -> str:
    """What "nothing to propose" rests on."""
    if found.pairs is None:  # a bare list of proposals: what was judged is not known
        return "suggest-labels: no relation to propose"
    if found.conflicts:
        return "suggest-labels: no relation to propose until the label order above is fixed"
    if all(p.unjudged == p.labels for p in found.pairs):
        return "suggest-labels: no label was judged, so no relation is proposed"
    if any(p.unjudged for p in found.pairs):
        return "suggest-labels: no relation to propose among the labels judged"
    return (  # not "every pair matches": a trial's unrelated 'animal' and 'cat' co-occurred below the rule too
        "suggest-labels: no relation to propose: no two labels named otherwise co-occur as often as a rename or"
        " group needs"
    )


def _proposed_groups(found: list[Suggestion]) -> dict[str, dict[str, tuple[str, ...]]]:
    """Each proposed group label's classes, per teacher proposing it (its first proposal)."""
    groups: dict[str, dict[str, tuple[str, ...]]] = {}
    for s in found:
        if len(s.covers) > 1 and s.label not in s.covers:
            groups.setdefault(s.label, {}).setdefault(s.teacher, s.covers)
    return groups


def _ambiguous(groups: dict[str, dict[str, tuple[str, ...]]]) -> set[str]:
    """Group labels that two teachers propose with different classes."""
    return {label for label, by in groups.items() if len({frozenset(m) for m in by.values()}) > 1}


def through_groups(found: list[Suggestion]) -> list[Suggestion]:
    """The proposals with each class that another proposal makes a group label of another teacher
    replaced by that group's classes: pasted together, ``{jersey: [T-shirt/top, Shirt]}`` for one
    teacher and ``{"jersey, T-shirt, tee shirt": jersey}`` for another made ``jersey`` a class only the
    second teaches, beside the two it stands for (a trial's whole-space top-1: 0.93 -> 0.79).

    A group label two teachers propose with different classes is left as written, never one picked:
    :func:`group_conflicts` says it.
    """
    groups = _proposed_groups(found)
    ambiguous = _ambiguous(groups)
    resolved = []
    for s in found:
        covers: list[str] = []
        for c in s.covers:
            by = {} if c in ambiguous else groups.get(c, {})
            members = next((m for t, m in by.items() if t != s.teacher), (c,)) if s.teacher not in by else (c,)
            covers += [m for m in members if m not in covers]
        resolved.append(s if tuple(covers) == s.covers else replace(s, covers=tuple(covers)))
    return resolved


def group_conflicts(found: list[Suggestion]) -> list[str]:
    """One line per group label two teachers propose with different classes, naming both."""
    groups = _proposed_groups(found)
    lines = []
    for label in sorted(_ambiguous(groups)):
        proposals = "; ".join(f"{t}: [{', '.join(m)}]" for t, m in groups[label].items())
        users = sorted({s.teacher for s in found if label in s.covers and s.teacher not in groups[label]})
        kept = f": {', '.join(users)} keep it as a class below, write the classes you mean" if users else ""
        lines.append(f"  not followed: {yaml_name(label)} is proposed as different groups ({proposals}){kept}")
    return lines


def _paste_lines(plan: Plan, found: list[Suggestion]) -> list[str]:
    """Each changed teacher's ``labels`` with its proposals applied, only as the recipe check accepts them."""
    found = through_groups(found)
    blocks, refused = [], []
    for teacher in dict.fromkeys(s.teacher for s in found):
        cfg = plan.recipe.teachers[teacher]
        entries, left_out = pasted(cfg.labels or [], cfg.background, [s for s in found if s.teacher == teacher])
        refused += left_out
        if entries != (cfg.labels or []):
            blocks.append(f"  {teacher}:\n    labels: [{', '.join(_yaml(e) for e in entries)}]")
    lines = group_conflicts(found) + [
        f"  not pasted: teachers.{s.teacher}.labels {s.entry()}: the recipe check refuses it ({why})"
        for s, why in refused
    ]
    if blocks:
        lines += ["\nready to paste (the first proposal for each label that the recipe check accepts):", *blocks]
    return lines


def pasted(entries: list, background: str | None, found: list[Suggestion]) -> tuple[list, list[tuple[Suggestion, str]]]:
    """A teacher's ``labels`` entries with the first proposal for each label applied.

    Each proposal is kept only if the entries still build a label space as the recipe loader
    builds it (:func:`amalgam.config.label_entries.space_of`); those refused come back with why.
    """
    chosen: dict[str, Suggestion] = {}
    refused = []
    for s in found:
        if s.label in chosen:
            continue
        try:
            space_of(_applied(entries, {**chosen, s.label: s}), background)
        except AmalgamError as exc:
            refused.append((s, str(exc)))
            continue
        chosen[s.label] = s
    return _applied(entries, chosen), refused


def _applied(entries: list, chosen: dict[str, Suggestion]) -> list:
    """``entries`` with the label of each chosen proposal written as its relation."""
    out = []
    for i, entry in enumerate(entries):
        s = chosen.get(parse_entry(entry, i)[0])
        out.append(entry if s is None else {s.label: s.covers[0] if len(s.covers) == 1 else list(s.covers)})
    return out


def _yaml(entry: object) -> str:
    if isinstance(entry, dict):
        ((name, value),) = entry.items()
        shown = yaml_name(value) if isinstance(value, str) else f"[{', '.join(yaml_name(v) for v in value)}]"
        return f"{{{yaml_name(name)}: {shown}}}"
    return yaml_name(str(entry))
