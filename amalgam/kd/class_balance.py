"""Class-balanced per-pixel weights for dense distillation.

A pixel-mean distillation loss is dominated by background when objects cover a few per cent of
the pixels: a student that paints background everywhere is already near the loss's minimum.
Weighing each pixel by the inverse frequency (raised to ``power``) of the class the teacher
sees there gives rare classes a say. Frequencies are the teacher's own soft class shares in the
batch, so no ground truth is needed; weights are normalised to mean 1 so the loss keeps its scale.
"""

from __future__ import annotations

from typing import Optional

import torch

from amalgam.errors import AmalgamError
from amalgam.labels import project_log_probs
from amalgam.labels.algebra import check_pairing

#: the default ``power`` (``amalgamation.class_balance``): 0 is the plain pixel mean, 1 full inverse frequency.
#: On at 0.5 since catch-all labels keep their weight (docs/benchmarks.md, "Dense distillation"): it helped
#: where one segmenter knows every label and on the shapes world, and no longer loses the background
#: where each teacher's background covers the other's classes (the loss of the first version).
DEFAULT_POWER = 0.5


def class_balanced_weights(
    teacher_logits: torch.Tensor,
    power: float = DEFAULT_POWER,
    eps: float = 1e-4,
    catch_all: Optional[torch.Tensor] = None,
    valid: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Per-position weights ``w_i = sum_c p_ic a_c / mean_j(...)`` from a teacher's logits.

    ``p`` is the teacher's softmax (temperature 1: the classes it predicts), ``f_c`` the mean of
    ``p_c`` over every position of the batch and ``a_c = f_c^-power``. With ``power = 1`` and one-hot
    ``p``, each class present gets the same total weight; ``power = 0`` gives all ones.

    A *catch-all* label (one that stands for several of the student's classes: the background of a
    teacher that knows part of the labels) is not a class whose rarity means anything, and it is
    the only pressure towards the classes it covers: it keeps ``a = 1``, and the other labels'
    ``a_c`` are scaled so that together they keep their share of the weight (the balance then
    moves weight only among them).

    Args:
        teacher_logits: ``[B, C, ...]`` logits (class dimension 1).
        power: exponent of the inverse frequency, in [0, 1].
        eps: added to each frequency so an absent class cannot give an infinite weight.
        catch_all: ``[C]`` booleans marking catch-all labels (None: none).
        valid: ``[B, ...]`` booleans, the positions that count (None: all): the others (padding, ignored
            pixels) weigh 0 and are left out of the frequencies.

    Returns:
        ``[B, ...]`` weights with mean 1 over every position (no gradient): a loss's mean of them times
        each position's term is the weighted mean over the ``valid`` positions.
    """
    if not 0 <= power <= 1:  # a negative power weighs the frequent classes up, the opposite of a balance
        raise AmalgamError(f"class_balanced_weights: power is in [0, 1], got {power}")
    with torch.no_grad():
        p = teacher_logits.float().softmax(1)
        kept = _kept(valid, p)
        dims = [0, *range(2, p.dim())]
        freq = (p * kept.unsqueeze(1)).sum(dim=dims) / kept.sum().clamp_min(1)  # [C]
        per_class = (freq + eps).pow(-power)
        if catch_all is not None and bool(catch_all.any()):
            per_class = _keep_catch_all(per_class, freq, catch_all.to(per_class.device))
        shape = (1, -1) + (1,) * (p.dim() - 2)
        w = (p * per_class.view(shape)).sum(1) * kept
        return w / w.mean().clamp_min(1e-12)


def _kept(valid: Optional[torch.Tensor], p: torch.Tensor) -> torch.Tensor:
    """``valid`` as float 0/1 of ``p``'s positions (``[B, ...]``, its class dimension 1 left out)."""
    positions = p.shape[:1] + p.shape[2:]
    if valid is None:
        return torch.ones(positions, device=p.device)
    if tuple(valid.shape) != tuple(positions):
        raise AmalgamError(f"valid {list(valid.shape)} must be the logits' positions {list(positions)}")
    return valid.to(device=p.device, dtype=p.dtype)


def _keep_catch_all(per_class: torch.Tensor, freq: torch.Tensor, catch_all: torch.Tensor) -> torch.Tensor:
    """Catch-all labels at 1; the others rescaled to keep their total weight ``sum f_c``."""
    own = ~catch_all
    kept = freq[own].sum() / (freq[own] * per_class[own]).sum().clamp_min(1e-12)
    return torch.where(catch_all, torch.ones_like(per_class), per_class * kept)


#: the default ``power`` of :func:`focal_weights` (``amalgamation.focal``): on the shapes world it
#: lifted every segmentation ratio (two seeds), on the quickstart one seed of two (docs/benchmarks.md).
DEFAULT_FOCAL = 1.0


def focal_weights(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    projection: Optional[torch.Tensor],
    power: float,
    valid: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Per-position weights ``w_i = (1 - q_i)^power / mean_j(...)``: the pixels the student gets wrong weigh more.

    ``q_i`` is the student's probability (temperature 1, summed into the teacher's labels by
    ``projection``) of the label the teacher predicts at position ``i``. A pixel the student
    already copies adds little to a pixel-mean loss's gradient yet dilutes it; this moves the weight
    to the ones it misses (focal loss, Lin et al. 2017, on distillation targets). Mean 1, no gradient.

    Args:
        student_logits: ``[B, U, ...]`` unified logits (class dimension 1).
        teacher_logits: ``[B, L, ...]`` the teacher's logits, the same positions.
        projection: ``[L, U]`` label projection (None: the same labels).
        power: the exponent; 0 gives all ones.
        valid: ``[B, ...]`` booleans, the positions that count (None: all); the others weigh 0, and the
            weights keep mean 1 over every position, as :func:`class_balanced_weights`'.
    """
    if projection is None and student_logits.shape[1] != teacher_logits.shape[1]:  # else gathered at the wrong label
        raise AmalgamError(
            f"focal_weights: the student has {student_logits.shape[1]} classes, the teacher {teacher_logits.shape[1]}:"
            " pass the [teacher, student] label projection"
        )
    if projection is not None:  # a transposed one gathered at the wrong labels without a word (a trial)
        check_pairing(student_logits, teacher_logits, projection, None, "focal_weights")
    with torch.no_grad():
        if projection is not None:
            log_q = project_log_probs(student_logits, projection)
        else:
            log_q = torch.log_softmax(student_logits.float(), 1)
        # max(1).indices: the same first-maximum index as argmax(1), measured 3-5x faster on the CPU
        q = log_q.gather(1, teacher_logits.max(1, keepdim=True).indices).squeeze(1).exp()
        w = (1 - q).clamp_min(0).pow(power) * _kept(valid, log_q)
        return w / w.mean().clamp_min(1e-12)


def catch_all_labels(projection: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``[L]`` booleans: the teacher's labels that project onto more than one unified class."""
    return None if projection is None else projection.sum(1) > 1


def pixel_weight_options(task, amalgamation) -> dict[str, float]:
    """The per-pixel options a task's terms use, as :class:`amalgam.task.DistillOptions` fields:
    ``class_balance`` and ``focal`` (powers of pixel weights) and ``pseudo_labels`` (the weight of a
    hard-label term using them) for dense labelled tasks (per-pixel classes) where the recipe turns
    them on, nothing for the others (the build and the ``auto`` warm-up share this rule)."""
    if not (task.dense and task.labelled):
        return {}
    values = {
        "class_balance": amalgamation.class_balance,
        "focal": amalgamation.focal,
        "pseudo_labels": amalgamation.pseudo_labels,
    }
    return {key: value for key, value in values.items() if value > 0}
