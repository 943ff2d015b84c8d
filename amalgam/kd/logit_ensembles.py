"""Ensembles of logits: K teachers' logits over the same labels -> one soft target per sample.

Every ensemble is an ``nn.Module`` called as ``ensemble(teacher_logits, temperature, features=...,
labels=...)`` with ``teacher_logits`` ``[K, B, C]`` (or a list of ``[B, C]``, one a teacher: unlike a
stack, it cannot be read the wrong way round when ``B == K``); ``labels`` go only to the ensembles
that read them (``needs_labels``; the others refuse them), ``features`` to those that read them
(``needs_features``; the others leave them: a loop may pass them to any). It returns ``(target, weights)``: the target
probabilities ``[B, C]`` at that temperature and the per-sample teacher weights ``[B, K]`` (rows sum
to one). Pair it with :func:`kd_loss`::

    ens = LOGIT_ENSEMBLES.get("entropy")(num_teachers=3)
    target, w = ens(torch.stack([t(x) for t in teachers]), temperature=4.0)
    loss = F.cross_entropy(student(x), y) + kd_loss(student_logits, target, 4.0)
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from amalgam.errors import AmalgamError
from amalgam.logit_checks import TOLERANCE, refuse_probabilities, should_check, temperature_value
from amalgam.precision import full_precision
from amalgam.registry import Registry

#: how far a target's values may fall below 0 and its sums over dim 1 stray from 1 (fp16 softmaxes)
TARGET_TOLERANCE = TOLERANCE


def kd_loss(
    student_logits: torch.Tensor, target: torch.Tensor, temperature: float, check: Optional[bool] = None
) -> torch.Tensor:
    """Hinton et al.: ``T^2 * KL(target || softmax(student / T))``, summed over classes (dim 1) and
    averaged over every other position: the samples, and their pixels for ``[B, C, H, W]`` maps (a
    per-position mean: ``F.kl_div(..., reduction="batchmean")`` is ``H * W`` times larger there).

    ``target`` holds probabilities over dim 1: ``softmax(teacher_logits / T, 1)``, not the logits
    themselves (a common mistake that trains on a loss a thousand times too large without a word).
    It is read in float32 (an fp16 softmax's zeros took the log of 0 and made the loss NaN).
    ``check`` whether it is (values >= 0, sums 1 within :data:`TARGET_TOLERANCE`; raises if not):
    True every call, False never, None (default) where it is cheap: every call on a CPU target; on
    an accelerator the first call of the process only, as reading the answer back waits for the
    device (one host sync, not one a step); never while torch.compile or jit tracing.

    The target is not detached: a learned ensemble (the ``gate``) trains through it. Run the
    teachers under ``torch.no_grad()`` (amalgam's own teachers and sub-teacher wraps do), or a
    teacher whose parameters require grad gets gradients from this loss.

    Raises:
        AmalgamError: for a temperature that is not a number > 0, shapes that differ, one class
            (a softmax over one logit is 1: nothing to learn; use a binary loss on the sigmoid), or
            a target that is no distribution.
    """
    temperature = temperature_value(temperature, "kd_loss")
    if target.shape != student_logits.shape:  # [B, 1] or [1, C] broadcast into a loss of nothing
        raise AmalgamError(
            f"kd_loss: target {list(target.shape)} and student logits {list(student_logits.shape)} must have one shape"
        )
    if student_logits.dim() >= 2 and student_logits.shape[1] == 1:
        raise AmalgamError(
            "kd_loss: one class along dim 1: its softmax is 1 whatever the logit, so the loss is 0 and teaches"
            " nothing; for one binary logit use F.binary_cross_entropy_with_logits(student / T, sigmoid(teacher / T))"
        )
    if should_check(target, check, "kd_loss: target"):
        _check_target(target)
        refuse_probabilities(student_logits, "kd_loss", "the student's logits", check=True)
    target = target.float()
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    kl = (target * (target.clamp_min(1e-12).log() - log_q)).sum(1)
    return kl.mean() * temperature**2


def _check_target(target: torch.Tensor) -> None:
    """Raises unless ``target`` is a distribution over dim 1."""
    t = target.detach().float()
    sums = t.sum(1)
    low, stray, bad, zero = torch.stack(  # one read: a device target costs one host sync
        [t.min(), (sums - 1).abs().max(), (~t.isfinite()).sum(), (sums < TARGET_TOLERANCE).sum()]
    ).tolist()
    if bad:  # NaN compares false: it passed as probabilities and made the loss NaN
        raise AmalgamError(f"kd_loss: target holds {int(bad)} NaN/inf values (a teacher's failed answers?)")
    empty = int(zero) if low >= -TARGET_TOLERANCE else 0
    if empty:  # zeroed to ignore them: these positions would count as a loss of 0 in the mean
        raise AmalgamError(
            f"kd_loss: the target sums to 0 at {empty} positions (zeroed to leave them out?): kd_loss has no"
            " mask; leave those rows out of both tensors, or use amalgam.labels.partial_label_kl's weights"
        )
    if low < -TARGET_TOLERANCE or stray > TARGET_TOLERANCE:
        raise AmalgamError(
            f"kd_loss: target is not probabilities over dim 1 (min {low:.3g}, sums up to {stray:.3g} off 1):"
            " pass softmax(teacher_logits / T, 1), not the teacher's logits"
        )


class LogitEnsemble(nn.Module):
    """Base: per-sample weights from :meth:`weights`, target = sum_k w_k softmax(z_k / T).

    Class attributes say what a loop must give: ``needs_features`` (the student's features, and an
    ``in_features`` constructor argument: their width) and ``needs_labels`` (ground truth, which
    amalgamation never has).
    """

    needs_features: bool = False
    needs_labels: bool = False

    def __init__(self, num_teachers: int):
        super().__init__()
        self.num_teachers = num_teachers

    def weights(
        self, logits: torch.Tensor, features: Optional[torch.Tensor], labels: Optional[torch.Tensor]
    ) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        teacher_logits: torch.Tensor | Sequence[torch.Tensor],
        temperature: float = 1.0,
        features: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        check: Optional[bool] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(target [B, C], weights [B, K])``; ``check``: whether to refuse teachers' logits that are
        probabilities (:func:`~amalgam.logit_checks.should_check`; a build passes False: it checked each
        teacher's reading when it loaded it)."""
        temperature = temperature_value(temperature, type(self).__name__)
        if labels is not None and not self.needs_labels:  # taken for a labelled weighting, and ignored
            raise AmalgamError(f"{type(self).__name__} does not read labels (weighs without them): leave labels out")
        if isinstance(teacher_logits, (list, tuple)):  # one [B, C] per teacher, as the peer losses take them
            _same_classes([t.shape for t in teacher_logits])
            teacher_logits = torch.stack(list(teacher_logits))
        logits = teacher_logits.detach().float()  # teachers are never trained through the target
        if logits.dim() != 3 or logits.shape[0] != self.num_teachers:
            dense = (
                "; dense maps [K, B, C, H, W]: put the pixels in the batch, z.movedim(2, -1).reshape(K, -1, C)"
                " (a gate's features and a confidence ensemble's labels one row a pixel too), and the target"
                " [B * H * W, C] back with .reshape(B, H, W, C).movedim(-1, 1)"
                if logits.dim() > 3 and logits.shape[0] == self.num_teachers
                else ""
            )
            raise AmalgamError(
                f"expected teacher logits [K={self.num_teachers}, B, C], got {list(logits.shape)}{dense}"
            )
        for k, z in enumerate(logits):
            refuse_probabilities(z, type(self).__name__, f"teacher {k}'s logits", check)
        w = self.weights(logits, features, labels)
        with full_precision(logits.device):  # an fp16 einsum rounds small probabilities to 0 (their log -inf)
            probs = F.softmax(logits / temperature, dim=2)  # [K, B, C]
            w = w.float()  # a learned gate's weights come out of autocast in bf16/fp16: the target's dtype
            return torch.einsum("bk,kbc->bc", w, probs), w


def _width(value: object) -> bool:
    """A feature width: an integer (NumPy's too) > 0, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _same_classes(shapes: list[torch.Size]) -> None:
    """Refuses teachers' logits of different shapes in one line (torch.stack's error said nothing of labels)."""
    if len({tuple(s[:1]) for s in shapes}) > 1 and len({tuple(s[1:]) for s in shapes}) == 1:
        raise AmalgamError(f"teacher logits of different batch sizes {[list(s) for s in shapes]}: one batch for all")
    if len({tuple(s) for s in shapes}) > 1:
        raise AmalgamError(
            f"teacher logits of different shapes {[list(s) for s in shapes]}: an ensemble needs every teacher over"
            " the same labels in the same order; bring them onto one label space first (amalgam.labels: unify,"
            " projection, partial_label_kl)"
        )


LOGIT_ENSEMBLES: Registry[type[LogitEnsemble]] = Registry("logit ensemble")

#: constructor arguments a loop gives (not a recipe's): the group's size, the student's feature width
GIVEN_BY_THE_LOOP = ("num_teachers", "in_features")


def build_logit_ensemble(kind: str, num_teachers: int, in_features: Optional[int] = None, **kwargs) -> LogitEnsemble:
    """The ensemble registered as ``kind`` for ``num_teachers`` teachers, with its own ``kwargs``.

    ``in_features`` (the student's feature width) is passed to the kinds that read features.

    Raises:
        AmalgamError: an argument the kind does not take or a required one left out, in one line
            naming its arguments (the recipe check prefixes ``amalgamation.ensemble``).
    """
    cls = LOGIT_ENSEMBLES.get(kind)
    params = inspect.signature(cls.__init__).parameters
    named = [p for p in params.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    own = [p.name for p in named if p.name not in ("self", *GIVEN_BY_THE_LOOP)]
    open_ended = len(named) < len(params)  # **kwargs: the class checks its own arguments
    takes = f"its arguments: {', '.join(own)}" if own else "it takes no argument"
    for key in kwargs:
        if key not in own and not open_ended:
            raise AmalgamError(f"{key}: '{kind}' does not take '{key}' ({takes})")
    for key in own:
        if key not in kwargs and params[key].default is inspect.Parameter.empty:
            raise AmalgamError(f"{key}: required by '{kind}' ({takes})")
    if cls.needs_features and not _width(in_features):
        raise AmalgamError(f"in_features: '{kind}' reads the student's features: give their width, got {in_features!r}")
    extra = {"in_features": in_features} if cls.needs_features else {}
    return cls(num_teachers=num_teachers, **kwargs, **extra)


@LOGIT_ENSEMBLES.register("mean")
class MeanEnsemble(LogitEnsemble):
    """Equal weights (the plain average of the softened teachers)."""

    def weights(self, logits, features, labels):
        return logits.new_full((logits.shape[1], self.num_teachers), 1.0 / self.num_teachers)


@LOGIT_ENSEMBLES.register("fixed")
class FixedEnsemble(LogitEnsemble):
    """Fixed per-teacher weights, normalised to sum to one."""

    def __init__(self, num_teachers: int, weights: Sequence[float]):
        super().__init__(num_teachers)
        finite = all(math.isfinite(w) for w in weights)  # a NaN passes every comparison and gave NaN targets
        if len(weights) != num_teachers or not finite or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise AmalgamError(f"weights: expected {num_teachers} non-negative values, got {list(weights)}")
        self.register_buffer("w", torch.tensor(weights, dtype=torch.float32) / sum(weights))

    def weights(self, logits, features, labels):
        return self.w.to(logits.device).expand(logits.shape[1], -1)


@LOGIT_ENSEMBLES.register("gate")
class LearnedGate(LogitEnsemble):
    """A gating network on the student's features gives per-sample weights ``softmax(g(f))``.

    ``features`` are the student's ``[B, D]`` (or ``[B, D, H, W]``, average-pooled) features; the gate
    is trained by the distillation loss together with the student.
    """

    needs_features = True

    def __init__(self, num_teachers: int, in_features: int, hidden: int = 0):
        super().__init__(num_teachers)
        if not _width(in_features):
            raise AmalgamError(f"gate: in_features (the student's feature width) must be > 0, got {in_features!r}")
        self.in_features = int(in_features)
        if hidden:
            self.gate = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_teachers))
        else:
            self.gate = nn.Linear(in_features, num_teachers)

    def weights(self, logits, features, labels):
        if features is None:
            raise AmalgamError("gate: needs the student's features")
        if features.dim() == 4:
            features = features.mean((2, 3))
        if features.dim() != 2 or features.shape[1] != self.in_features or features.shape[0] != logits.shape[1]:
            raise AmalgamError(
                f"gate: expected the student's features [B={logits.shape[1]}, {self.in_features}] (or [B, D, H, W]),"
                f" got {list(features.shape)}"
            )
        return F.softmax(self.gate(features.float()), dim=1)


@LOGIT_ENSEMBLES.register("entropy")
class EntropyEnsemble(LogitEnsemble):
    """Lower-entropy teachers count more: ``w = softmax_k(-H(softmax(z_k)))`` per sample."""

    def weights(self, logits, features, labels):
        p = F.softmax(logits, dim=2)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(2)  # [K, B]
        return F.softmax(-entropy, dim=0).t()


@LOGIT_ENSEMBLES.register("confidence")
class ConfidenceEnsemble(LogitEnsemble):
    """CA-MKD (Zhang et al., ICASSP 2022): ``w_k = (1 - softmax_k(CE_k)) / (K - 1)`` with ``CE_k``
    each teacher's cross-entropy against the label; needs labels (and K >= 2)."""

    needs_labels = True

    def weights(self, logits, features, labels):
        if labels is None:
            raise AmalgamError("confidence: needs labels (CA-MKD weighs teachers by their loss on the label)")
        if self.num_teachers < 2:
            raise AmalgamError("confidence: needs at least two teachers")
        classes = logits[0].shape[-1]
        if labels.is_floating_point() or labels.shape != logits[0].shape[:1]:
            raise AmalgamError(f"confidence: labels are one class index a sample, [B] integers; got {labels.dtype}"
                               f" {list(labels.shape)} for logits {list(logits[0].shape)}")  # fmt: skip
        if labels.device.type == "cpu" and labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < classes:
            raise AmalgamError(f"confidence: labels must be class indices in [0, {classes}), got {labels.tolist()[:8]}")
        ce = torch.stack([F.cross_entropy(z, labels, reduction="none") for z in logits])  # [K, B]
        return ((1 - F.softmax(ce, dim=0)) / (self.num_teachers - 1)).t()
