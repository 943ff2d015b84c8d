"""Label spaces: their union across teachers and the partial-label projections between them.

A teacher knows a subset of the unified labels. Its optional ``background`` label stands for
everything it does not know, so it covers the unified background *and* every unified class
missing from the teacher (Vongkulbhisal et al., CVPR 2019, "Unifying heterogeneous classifiers").

A teacher's label may also stand for unified classes of other names (``covers``): a VOC
``tvmonitor`` is the unified ``tv``, a coarse ``vehicle`` covers ``car``, ``bus`` and ``truck``.
Its projection row then holds those classes, and ground truth is mapped through the same relation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from amalgam.errors import AmalgamError
from amalgam.labels.names import look_alike_error, look_alikes
from amalgam.logit_checks import refuse_probabilities, temperature_value

IGNORE = 255  # target value that metrics skip (dense label maps use it on disk too)


@dataclass(frozen=True)
class LabelSpace:
    """An ordered list of class names, one of which may be the catch-all background."""

    names: tuple[str, ...]
    background: Optional[str] = None
    #: per label, the unified classes it stands for (empty: each label is the class of its name)
    covers: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if len(set(self.names)) != len(self.names):
            dup = sorted({n for n in self.names if self.names.count(n) > 1})
            raise ValueError(f"duplicate label names: {dup}")
        if self.background is not None and self.background not in self.names:
            raise ValueError(f"background '{self.background}' is not one of the labels")
        if self.covers and len(self.covers) != len(self.names):
            raise ValueError(f"covers has {len(self.covers)} entries for {len(self.names)} labels")
        owner: dict[str, str] = {}
        for name in self.known():
            if not self.covered(name):
                raise ValueError(f"'{name}' covers no class")
            for cls in self.covered(name):
                if cls in owner:
                    raise ValueError(f"'{cls}' is covered by both '{owner[cls]}' and '{name}'")
                owner[cls] = name

    def __len__(self) -> int:
        return len(self.names)

    @property
    def background_index(self) -> Optional[int]:
        """Index of the background label, or None."""
        return None if self.background is None else self.names.index(self.background)

    def known(self) -> list[str]:
        """The named classes: every label but the background."""
        return [n for n in self.names if n != self.background]

    def covered(self, name: str) -> tuple[str, ...]:
        """The unified classes label ``name`` stands for (the background's are found by :func:`projection`)."""
        if name == self.background:
            return ()
        return self.covers[self.names.index(name)] if self.covers else (name,)

    def relations(self) -> dict[str, tuple[str, ...]]:
        """Known labels whose unified classes are not just their own name: ``{tvmonitor: (tv,)}``."""
        return {n: self.covered(n) for n in self.known() if self.covered(n) != (n,)}


def unify(spaces: Sequence[LabelSpace], background: Optional[str] = None) -> LabelSpace:
    """The union of several spaces' named classes, in order of first appearance.

    Args:
        spaces: the teachers' label spaces.
        background: if given, the unified space starts with this catch-all label.
    """
    names: list[str] = [background] if background else []
    for space in spaces:
        for label in space.known():
            names += [n for n in space.covered(label) if n not in names]
    return LabelSpace(tuple(names), background)


def projection(teacher: LabelSpace, unified: LabelSpace) -> torch.Tensor:
    """Boolean matrix ``[len(teacher), len(unified)]``: teacher label j covers unified label k.

    A named teacher label covers the unified classes it stands for (by default the one of its own
    name); the teacher's background covers the unified background plus every unified class none
    of its labels covers.

    Raises:
        AmalgamError: a class the unified space lacks (make it with :func:`unify` over every
            teacher's space), or a background left covering nothing (its KL would be infinite).
    """
    matrix = torch.zeros(len(teacher), len(unified), dtype=torch.bool)
    covered: set[str] = set()
    for name in teacher.known():
        for cls in teacher.covered(name):
            if cls not in unified.names:
                raise AmalgamError(
                    f"projection: the unified space has no class '{cls}' (teacher label '{name}'): make it with"
                    " unify() over every teacher's label space"
                )
            matrix[teacher.names.index(name), unified.names.index(cls)] = True
            covered.add(cls)
    if teacher.background is not None:
        for k, name in enumerate(unified.names):
            if name not in covered:
                matrix[teacher.background_index, k] = True
        if not matrix[teacher.background_index].any():
            raise AmalgamError(
                f"projection: the teacher's background '{teacher.background}' covers no unified class (the unified"
                " space has no background and the teacher's other labels cover all of it): unify(spaces,"
                f" background='{teacher.background}'), or give the teacher no background"
            )
    return matrix


def project_log_probs(
    logits: torch.Tensor, matrix: torch.Tensor, temperature: float = 1.0, after_projection: bool = False
) -> torch.Tensor:
    """Student log-probabilities restricted to a teacher's labels and renormalised.

    ``log q_j = logsumexp_{k in S_j}(z_k / T) - logsumexp_{k in union S}(z_k / T)``; with
    ``after_projection`` the temperature softens the projected distribution instead:
    ``log q = log_softmax(log q^{T=1} / T)``.

    The two agree at ``T = 1``. They differ for a label that covers several unified classes (a
    teacher's background): softening before the sum gives such a label ``T * log(n)`` extra logit
    instead of ``log(n)``, so a student fitted at ``T > 1`` scores that label lower at ``T = 1``
    (where predictions are made) than the teacher does.

    Args:
        logits: ``[B, U, ...]`` unified logits (class dimension 1).
        matrix: ``[L, U]`` boolean projection from :func:`projection`.
        temperature: softmax temperature.
        after_projection: soften the projected distribution rather than the unified logits.

    Returns:
        ``[B, L, ...]`` log-probabilities over the teacher's labels.
    """
    z = logits.float() / (1.0 if after_projection else temperature)
    grouped = group_logsumexp(z, matrix)
    if after_projection:
        grouped = grouped / temperature
    return grouped - torch.logsumexp(grouped, dim=1, keepdim=True)


def group_logsumexp(z: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``out[:, j] = logsumexp_{k in S_j} z[:, k]`` for the rows ``S_j`` of a ``[L, U]`` projection.

    A label of one unified class takes that class's value as it is, and only labels of several
    classes (a partial teacher's background) are reduced: no ``[B, L, U, ...]`` tensor is made, which
    for dense outputs cost more than the student's own layers. A label of no class gets ``-inf``.
    """
    matrix = matrix.detach().cpu().bool()  # the index lists are made on the host: no device sync per label
    counts = matrix.sum(1)
    single = (counts == 1).nonzero().flatten()
    several = (counts != 1).nonzero().flatten()
    blocks = [z.index_select(1, matrix[single].float().argmax(1).to(z.device))]
    for j in several.tolist():
        members = matrix[j].nonzero().flatten().to(z.device)
        blocks.append(_masked_logsumexp(z.index_select(1, members)))
    order = torch.cat([single, several]).argsort().to(z.device)  # back to the labels' order
    return torch.cat(blocks, 1).index_select(1, order)


def _masked_logsumexp(z: torch.Tensor) -> torch.Tensor:
    """``logsumexp`` over dim 1 (kept), ``-inf`` with a zero gradient where every member is ``-inf`` (masked
    logits): torch's own backward is NaN there (0 / 0), and it reached the student's parameters."""
    empty = torch.isneginf(z).all(1, keepdim=True)
    inner = torch.logsumexp(torch.where(empty, torch.zeros_like(z), z), 1, keepdim=True)
    return torch.where(empty, torch.full_like(inner, -math.inf), inner)


def extents(spaces: Sequence[LabelSpace]) -> dict[str, frozenset[str]]:
    """The unified classes each teacher label name stands for: ``{tvmonitor: {tv}, vehicle: {car, bus}}``.

    Ground-truth class names of an eval set are read through this: a set labelled in VOC's names,
    or in a coarse teacher's, is scored against teachers and students that use other names.
    The first teacher that names a label defines it.
    """
    found: dict[str, frozenset[str]] = {}
    for space in spaces:
        for name in space.known():
            found.setdefault(name, frozenset(space.covered(name)))
    return found


def missing_labels(target: LabelSpace, lut: torch.Tensor) -> list[str]:
    """The named labels of ``target`` that no class of a :func:`lookup` table maps to."""
    found = set(lut.tolist())
    return [n for n in target.known() if target.names.index(n) not in found]


def lookup(
    source_names: Sequence[str],
    target: LabelSpace,
    extent: Optional[dict[str, frozenset[str]]] = None,
    *,
    refuse_look_alikes: bool = True,
) -> torch.Tensor:
    """Maps class indices of a labelled set into ``target`` (a LUT of length ``len(source_names)``).

    A ground-truth name stands for the unified classes ``extent`` gives it (by default the class of
    its own name). It maps to the target label whose classes hold all of them (a ``car`` pixel is a
    coarse teacher's ``vehicle``); to the target's background, else :data:`IGNORE`, when the target
    knows none of them; and to :data:`IGNORE` when it knows only some (a ``vehicle`` pixel cannot
    be scored as ``car``).

    Raises:
        AmalgamError: (with ``refuse_look_alikes``) a name the target does not know that equals one
            of its labels or classes up to case, spaces, ``_`` and ``-`` (a folder ``red `` or
            ``Red`` for ``red``): see :mod:`~amalgam.labels.names`.
    """
    extent = extent or {}
    fallback = target.background_index if target.background is not None else IGNORE
    # by dict and set, not list scans: a 22k-label space took 15 s a call
    index = {name: i for i, name in enumerate(target.names) if name != target.background}
    owner = {cls: i for name, i in index.items() for cls in (target.covers[i] if target.covers else (name,))}
    lut, unknown = [], []
    for name in source_names:
        if name in index:
            lut.append(index[name])
            continue
        classes = extent.get(name, frozenset([name]))
        owners = {owner.get(c) for c in classes}
        if owners == {None}:
            lut.append(fallback)
            if name not in extent:  # another teacher's label is a class of its own by the recipe's word
                unknown.append(name)
        elif len(owners) == 1:
            lut.append(owners.pop())
        else:
            lut.append(IGNORE)
    if refuse_look_alikes and (found := look_alikes(unknown, [*target.known(), *owner])):
        raise look_alike_error(found, target.known())
    return torch.tensor(lut, dtype=torch.long)


def apply_lookup(target: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Applies a :func:`lookup` table to class indices, keeping :data:`IGNORE` (and out-of-range) ignored."""
    valid = (target >= 0) & (target < len(lut))
    mapped = lut.to(target.device)[target.clamp(0, len(lut) - 1)]
    return torch.where(valid, mapped, torch.full_like(target, IGNORE))


def partial_label_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    matrix: torch.Tensor,
    temperature: float = 1.0,
    weights: Optional[torch.Tensor] = None,
    after_projection: bool = False,
    check: Optional[bool] = None,
) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || student restricted to the teacher's labels)``.

    The class dimension is 1; the KL is summed over classes and averaged over every other
    position (samples, and pixels for dense outputs), each position times ``weights`` if given.

    Args:
        student_logits: ``[B, U, ...]`` unified logits.
        teacher_logits: ``[B, L, ...]`` the teacher's logits over its own labels.
        matrix: ``[L, U]`` boolean projection from :func:`projection`.
        temperature: softening temperature T.
        weights: per-position weights, the shape of the outputs without the class dimension
            (``[B]``, ``[B, H, W]``), not normalised: a 0/1 mask gives the mean over every position
            with the left-out ones as 0; divide by its mean for the mean over the kept ones.
        after_projection: soften the student after restricting it (see :func:`project_log_probs`).
        check: whether to refuse logits that are probabilities
            (:func:`~amalgam.logit_checks.refuse_probabilities`; None: where it is cheap). A build
            passes False: it checked each teacher's reading when it loaded it.

    The teacher's logits are not detached: a learned ensemble's target trains through them. Run
    teachers under ``torch.no_grad()`` (amalgam's own do).

    Raises:
        AmalgamError: for shapes that do not pair up (the student's classes against the matrix's
            columns, the teacher's against its rows, their other dimensions, the weights'), or
            probabilities passed as logits.
    """
    check_pairing(student_logits, teacher_logits, matrix, weights)
    temperature = temperature_value(temperature, "partial_label_kl")  # T <= 0 gave NaN or an upside-down loss
    refuse_probabilities(teacher_logits, "partial_label_kl", "the teacher's logits", check)
    refuse_probabilities(student_logits, "partial_label_kl", "the student's logits", check)
    log_q = project_log_probs(student_logits, matrix, temperature, after_projection)
    log_p = torch.log_softmax(teacher_logits.float() / temperature, dim=1)
    p = log_p.exp()
    # a label masked with -inf (either side) where p = 0: its term is 0, not 0 * inf = NaN
    kl = (p * torch.where(p > 0, log_p - log_q, torch.zeros_like(log_q))).sum(dim=1)
    if weights is not None:
        kl = kl * weights.to(kl.dtype)
    return kl.mean() * temperature**2


def check_pairing(
    student: torch.Tensor,
    teacher: torch.Tensor,
    matrix: torch.Tensor,
    weights: Optional[torch.Tensor],
    owner: str = "partial_label_kl",
) -> None:
    """Shapes and the matrix's dtype only (no host sync): each of these broadcast into a plausible loss of the
    wrong thing (a float matrix's fractions were read as membership without a word)."""
    problem = None
    if matrix.dtype != torch.bool:
        problem = f"matrix must be the boolean [labels, unified] projection of projection(), got {matrix.dtype}"
    elif student.dim() < 2 or student.shape[1] != matrix.shape[1]:
        problem = f"student logits {list(student.shape)} need {matrix.shape[1]} unified classes along dim 1"
    elif teacher.dim() < 2 or teacher.shape[1] != matrix.shape[0]:
        problem = f"teacher logits {list(teacher.shape)} need its {matrix.shape[0]} labels along dim 1"
    elif teacher.shape[0] != student.shape[0] or teacher.shape[2:] != student.shape[2:]:
        problem = f"teacher logits {list(teacher.shape)} and student logits {list(student.shape)} differ beyond dim 1"
    elif weights is not None and not _fits(weights.shape, (student.shape[0], *student.shape[2:])):
        wanted = [student.shape[0], *student.shape[2:]]
        problem = (
            f"weights {list(weights.shape)} must be {wanted}, the logits' shape without the class dimension"
            " (a size may be 1, or a scalar)"
        )
    if problem:
        raise AmalgamError(f"{owner}: {problem}")


def _fits(shape: torch.Size, wanted: tuple[int, ...]) -> bool:
    """A scalar, or as many dimensions as ``wanted``, each of its size or 1 (``[B, 1, 1]`` per sample)."""
    return len(shape) == 0 or (len(shape) == len(wanted) and all(a in (1, b) for a, b in zip(shape, wanted)))


def partial_label_nll(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    matrix: torch.Tensor,
    weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Cross-entropy of the student, restricted to the teacher's labels, on the teacher's top label.

    The hard counterpart of :func:`partial_label_kl` (a pseudo-label term): ``-log q_j`` at
    ``j = argmax(teacher)``, temperature 1, averaged over every position times ``weights`` if given.
    A label covering several unified classes (a partial teacher's background) counts as one: the
    student may put that mass on any of them.

    Args:
        student_logits: ``[B, U, ...]`` unified logits.
        teacher_logits: ``[B, L, ...]`` the teacher's logits over its own labels.
        matrix: ``[L, U]`` boolean projection from :func:`projection`.
        weights: per-position weights, the shape of the outputs without the class dimension.
    """
    check_pairing(student_logits, teacher_logits, matrix, weights, "partial_label_nll")
    log_q = project_log_probs(student_logits, matrix)
    nll = -log_q.gather(1, teacher_logits.max(1, keepdim=True).indices).squeeze(1)  # argmax, faster on CPUs
    if weights is not None:
        nll = nll * weights.to(nll.dtype)
    return nll.mean()
