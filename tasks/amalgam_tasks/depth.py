"""Monocular depth in metres: conv head with exp, log-L1 + scale-invariant loss, abs rel / RMSE / delta.

A teacher's value <= 0 is no depth (a ReLU head's zeros, sky in a disparity model): read as metres
it stays <= 0, an inverse reading turns it into 0, and the distillation loss leaves it out of the
teacher's targets (masked, as the eval sets' 0 pixels are), never read as 1 mm or 10^6 m.

Relative depth is known up to an unknown per-image scale and shift: ``output: relative`` of inverse
depth (MiDaS, DPT, Depth Anything), ``output: affine`` of depth (Marigold). Every finite value is an
answer (a shift may make any value negative); each image's values are first moved to ``[0.01, ...]``
with mean 1.01 (a scale and shift of their own, which nothing downstream sees), so that no value is
taken for "no depth" and a raw range in the thousands stays exact in the fp16 teacher cache. They
are distilled by a scale-and-shift-invariant loss on inverse depth (relative) or depth (affine), and
scored, teacher and student alike, after a per-image least-squares scale and shift of the same
quantity onto the truth's (MiDaS's protocol)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from amalgam.labels import LabelSpace
from amalgam.task import DistillOptions, EvalReading, Task, output_dims

MIN_DEPTH = 1e-3


class ExpDepth(nn.Module):
    """Maps a log-depth map to metres; clamped so an untrained head cannot overflow."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x.float().clamp(-7.0, 7.0))  # fp32: CPU autocast would keep exp in bf16


#: delta1's band: a depth within this factor of the truth counts as right
DELTA1 = 1.25


def within_delta1(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Where ``pred`` is within :data:`DELTA1` times ``truth`` (both > 0): delta1's count, for the meter
    and the input probes' quality alike."""
    return torch.maximum(pred / truth, truth / pred) < DELTA1


class DepthMeter:
    """abs rel, RMSE, delta<1.25 and scale (the geometric mean of prediction / truth) over valid
    (ground truth finite and > 0: a plugin's or torchvision set's +inf is no depth, as a dense set's is) pixels of
    the whole set."""

    def __init__(self) -> None:
        self.n = 0
        self.abs_rel = 0.0
        self.sq = 0.0
        self.delta1 = 0.0
        self.log_ratio = 0.0
        self.answered = 0  # valid pixels the prediction gives depth on (finite, > 0): the scale's

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = pred.reshape(-1).double().cpu(), target.reshape(-1).double().cpu()
        valid = torch.isfinite(target) & (target > 0)  # a +inf truth made the rmse inf
        raw, t = pred[valid], target[valid]
        answered = torch.isfinite(raw) & (raw > 0)
        # a no-answer where the truth has depth is wrong (scored as 1 mm), but says nothing of the unit
        p = torch.nan_to_num(raw, nan=MIN_DEPTH, posinf=MIN_DEPTH).clamp(min=MIN_DEPTH)
        self.n += int(valid.sum())
        self.answered += int(answered.sum())
        self.abs_rel += ((p - t).abs() / t).sum().item()
        self.sq += ((p - t) ** 2).sum().item()
        self.delta1 += within_delta1(p, t).sum().item()
        self.log_ratio += torch.log(p[answered] / t[answered]).sum().item()

    def compute(self) -> dict[str, float]:
        if self.n == 0:
            nan = float("nan")
            return {"rmse": nan, "abs_rel": nan, "delta1": nan, "scale": nan, "pixels": 0, "no_depth": nan}
        return {
            "rmse": math.sqrt(self.sq / self.n),
            "abs_rel": self.abs_rel / self.n,
            "delta1": self.delta1 / self.n,
            "scale": math.exp(self.log_ratio / self.answered) if self.answered else float("nan"),
            "pixels": self.n,
            "no_depth": 1.0 - self.answered / self.n,
        }


def log_depth_loss(
    student: torch.Tensor, teacher: torch.Tensor, si_weight: float = 0.5, valid: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Mean ``|log d_s - log d_t|`` plus the scale-invariant term of Eigen et al. (2014), over the
    ``valid`` pixels (default: all).

    ``g = log d_s - log d_t``; per image ``mean(g^2) - lambda * mean(g)^2``, averaged over the images
    with a valid pixel. With none valid the loss is 0 (still a function of the student).
    """
    g = torch.log(student.float().clamp(min=MIN_DEPTH)) - torch.log(teacher.float().clamp(min=MIN_DEPTH))
    m = torch.ones_like(g, dtype=torch.bool) if valid is None else valid.expand_as(g)
    g, n = torch.where(m, g, 0.0).flatten(1), m.flatten(1).sum(1).float()
    mean, sq = g.sum(1) / n.clamp(min=1), g.pow(2).sum(1) / n.clamp(min=1)
    seen = (n > 0).float()  # weights, not a branch on values: no host sync per step on CUDA
    scale_invariant = ((sq - si_weight * mean.pow(2)) * seen).sum() / seen.sum().clamp(min=1)
    return g.abs().sum() / n.sum().clamp(min=1) + scale_invariant


#: the readings known only up to a per-image scale and shift, and whether each is of inverse depth
RELATIVE_KINDS = {"relative": True, "affine": False}
#: where a relative reading's smallest value of each image is moved (its mean goes to 1 + this)
RELATIVE_FLOOR = 0.01


def _normalised(values: torch.Tensor, valid: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Each row of ``[B, P]`` values shifted by its mean and scaled by its mean absolute deviation
    over its valid pixels (MiDaS's alignment with the mean for the median: masked, and cheap)."""
    mean = torch.where(valid, values, 0.0).sum(1, keepdim=True) / n.clamp(min=1)[:, None]
    centred = torch.where(valid, values - mean, 0.0)
    spread = centred.abs().sum(1, keepdim=True) / n.clamp(min=1)[:, None]
    return centred / spread.clamp(min=1e-6)


def relative_depth_loss(
    student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, inverse: bool = True
) -> torch.Tensor:
    """Mean ``|s - t|`` of the student's and the teacher's inverse depth (``inverse``; else depth), each
    normalised per image (:func:`_normalised`) over the ``valid`` pixels: blind to the scale and shift
    a relative teacher does not know. Images with no valid pixel add nothing (0 when none has one)."""
    m = valid.expand_as(student).flatten(1)
    n = m.sum(1).float()
    s, t = student.float().clamp(min=MIN_DEPTH).flatten(1), teacher.float().clamp(min=MIN_DEPTH).flatten(1)
    if inverse:
        s, t = 1.0 / s, 1.0 / t
    gap = (_normalised(s, m, n) - _normalised(t, m, n)).abs()
    return torch.where(m, gap, 0.0).sum() / n.sum().clamp(min=1)


#: the low-end quantile of an image's values below which values far from the rest are outliers ...
RELATIVE_LOW_SHARE = 0.01
#: ... when the row's minimum lies this many times the quantile's distance to the mean below it: they
#: are held at the floor (a -1000 among values near 1 would squeeze the rest into a few fp16 steps of
#: the cache); otherwise the minimum is the low end, and every value is kept exactly
RELATIVE_OUTLIER = 10.0


def _robust_low(values: torch.Tensor) -> torch.Tensor:
    """Each row's low end: its minimum finite value, or its :data:`RELATIVE_LOW_SHARE` quantile where
    the minimum is an outlier (:data:`RELATIVE_OUTLIER`); 0 for a row with no finite value."""
    lows = []
    for row in values:
        finite = row[torch.isfinite(row)]
        if not finite.numel():
            lows.append(row.new_zeros(()))
            continue
        low = finite.kthvalue(max(1, int(RELATIVE_LOW_SHARE * finite.numel()))).values
        least = finite.min()
        outlier = (low - least) > RELATIVE_OUTLIER * (finite.mean() - low).abs()
        lows.append(low if bool(outlier) else least)
    return torch.stack(lows)


def relative_to_positive(out: torch.Tensor) -> torch.Tensor:
    """Each image's finite values moved by a scale and shift of their own to start at
    :data:`RELATIVE_FLOOR` with mean ``1 + RELATIVE_FLOOR`` (a flat image: all 1); the lowest
    :data:`RELATIVE_LOW_SHARE` held at the floor. NaN stays NaN (the teacher's own failure, counted);
    +-inf becomes 0 (no depth at that pixel, as an inverse reading's disparity <= 0 is)."""
    out = out.float()
    finite = torch.isfinite(out)
    flat, ok = out.flatten(1), finite.flatten(1)
    low = _robust_low(flat)
    kept = ok & (flat >= low[:, None])  # the mean of the values above the held ones
    mean = torch.where(kept, flat, 0.0).sum(1) / kept.sum(1).clamp(min=1)
    shape = (-1, *[1] * (out.dim() - 1))
    span, low = (mean - low).view(shape), low.view(shape)
    moved = (out - low).clamp(min=0) / span.clamp(min=1e-30) + RELATIVE_FLOOR
    moved = torch.where(span > 0, moved, torch.ones_like(out))
    return torch.where(finite, moved, torch.where(out.isnan(), out, torch.zeros_like(out)))


def valid_depth(teacher: torch.Tensor, size) -> tuple[torch.Tensor, torch.Tensor]:
    """A teacher's depth at ``size`` and where it is valid (> 0, finite): values <= 0 are no depth,
    and a resized pixel is valid only if every pixel it blends is."""
    teacher = teacher.float()
    valid = torch.isfinite(teacher) & (teacher > 0)
    if tuple(teacher.shape[-2:]) == tuple(size):
        return teacher, valid
    resized = F.interpolate(torch.where(valid, teacher, 0.0), size=size, mode="bilinear", align_corners=False)
    share = F.interpolate(valid.float(), size=size, mode="bilinear", align_corners=False)
    return resized, share > 1 - 1e-4


#: a teacher whose depth is this many times the eval set's (or 1/that), as a geometric mean, measures
#: in another unit than the set's maps: its scores are no reference
SCALE_WARNING = 1.5
#: a teacher's depth this many times its eval set's (or 1/this) is in another unit: the build stops (in
#: millimetres, a student learnt millimetres and its report read 46x better than the teacher)
UNIT_STOP = 8.0

#: share of negative metric depths on the check's random (noise) batch that stops the build: a raw
#: log-depth head is negative wherever depth < 1 m; a metric head may stray below 0 on noise, but not mostly
NEGATIVE_SHARE = 0.5


# The reading check against an eval set's depth, before training (:meth:`DepthTask.eval_reading`; the plan
# runs the teacher on a few eval images). Its numbers for the quickstart's depth teacher on 16 scenes-val
# images: r 0.979, scale 0.997x, rmse 0.47 m, 0.348 m after the fit (0.74x), 0.8% of pixels off by over 1.5x.

#: valid pixels kept per image by the check (strided): a large map costs no more than a small one
CHECK_PIXELS = 4096
#: fewer valid pixels than this over the check's images say nothing: no verdict is drawn from them
CHECK_MIN_PIXELS = 64
#: Pearson r of log depth with the truth below which a teacher's depth is upside down (near is far): a
#: disparity read as metres gives about -1, a competent teacher about +1 (the quickstart's: 0.98)
ANTI_CORRELATION = -0.3
#: ... and under which (NaN included: a constant answer) its depth hardly follows the truth's: a warning
#: before training, as for a near-blind segmenter (a competent teacher is near 1; shuffled depth near 0)
WEAK_CORRELATION = 0.3
#: a teacher's rmse after a per-image scale-and-shift fit of its inverse depth (how relative, MiDaS-style
#: depth is scored) under this share of its raw rmse is far better aligned than as it is (quickstart: 0.74;
#: trial F's relative inverse depth declared ``inverse``: 0.29) ...
RELATIVE_GAIN = 0.5
#: ... and at least this share of its valid pixels off by more than SCALE_WARNING (quickstart: 0.8%; a
#: metric teacher with a 20% per-image scale error: 7%; that relative teacher: 32%): it is relative depth
RELATIVE_SHARE = 0.25
#: share of the pixels where the eval set has depth on which a metric or inverse teacher gives none (<= 0:
#: masked out of its targets) that warns before training, and that stops it (a MiDaS-like disparity with a
#: shift, read as inverse, answered <= 0 on 46%: its student learnt nothing there, and a 1.7 km rmse passed)
NO_DEPTH_WARNING = 0.05
#: ... and the share of them said beside a teacher's scores after evaluation
NO_DEPTH_SAID = 0.01
NO_DEPTH_STOP = 0.25


@dataclass(frozen=True)
class DepthAgreement:
    """A depth teacher's answers against an eval set's truth over the valid pixels of a few images.

    Attributes:
        images: images with a valid pixel (truth > 0 and teacher depth > 0 and finite).
        pixels: valid pixels pooled (at most :data:`CHECK_PIXELS` an image).
        correlation: Pearson r of log depth with log truth (NaN when either is constant).
        scale: geometric mean of depth / truth.
        rmse: root mean square error in metres, as read.
        aligned_rmse: the same after a least-squares scale and shift of the inverse depth, per image.
        affine_rmse: the same after a least-squares scale and shift of the depth itself, per image.
        off_share: share of the pixels whose depth is over :data:`SCALE_WARNING` times, or under
            1/that, the truth.
        truth_spread: standard deviation of the truth's log depth (0: a flat truth says nothing of
            whether the teacher follows it).
        no_depth: share of the pixels where the truth is depth on which the teacher gives none.
    """

    images: int
    pixels: int
    correlation: float
    scale: float
    rmse: float
    aligned_rmse: float
    affine_rmse: float
    off_share: float
    truth_spread: float = float("nan")
    #: share of the pixels where the truth is depth on which the teacher gives none (<= 0 or not finite)
    no_depth: float = 0.0

    def describe(self) -> str:
        """The numbers in one clause, for the log."""
        return (
            f"{self.images} images, {self.pixels:,} pixels: log-depth r {self.correlation:.3f} with the truth,"
            f" scale {self.scale:.3g}x, rmse {self.rmse:.3g} m ({self.aligned_rmse:.3g} after a per-image"
            f" scale-and-shift fit of its inverse, {self.affine_rmse:.3g} of itself), {self.off_share:.1%} of pixels"
            f" off by over {SCALE_WARNING:g}x"
            + (f"; no depth (<= 0) on {self.no_depth:.1%} of the pixels the truth has" if self.no_depth else "")
        )

    @property
    def best_fit(self) -> tuple[str, float]:
        """The relative reading whose fit comes closest to the truth, and its rmse."""
        if self.affine_rmse < self.aligned_rmse:
            return "affine", self.affine_rmse
        return "relative", self.aligned_rmse


def _valid_pairs(pred: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (depth, truth) pairs, float64, where both are depth (> 0, finite), strided to :data:`CHECK_PIXELS`."""
    pred, truth = pred.reshape(-1).double().cpu(), truth.reshape(-1).double().cpu()
    valid = torch.isfinite(pred) & (pred > 0) & torch.isfinite(truth) & (truth > 0)
    pred, truth = pred[valid], truth[valid]
    step = max(1, pred.numel() // CHECK_PIXELS)
    return pred[::step], truth[::step]


def _aligned(pred: torch.Tensor, truth: torch.Tensor, inverse: bool = True) -> torch.Tensor:
    """``pred`` after the least-squares scale and shift of its inverse onto the truth's inverse (as
    MiDaS-style relative depth is evaluated), or of itself onto the truth (``inverse`` False: affine
    depth); a fitted value <= 0 is held at a tenth of the truth's smallest one (an inverse: depth 10x
    its farthest), so one bad pixel cannot make it infinite or negative."""
    x, y = (1.0 / pred, 1.0 / truth) if inverse else (pred, truth)
    design = torch.stack([x, torch.ones_like(x)], 1)
    solution = torch.linalg.lstsq(design, y[:, None]).solution[:, 0]
    fitted = (design @ solution).clamp(min=0.1 * y.min().item())
    return 1.0 / fitted if inverse else fitted


def fit_to_truth(pred: torch.Tensor, truth: torch.Tensor, inverse: bool = True) -> torch.Tensor:
    """``pred`` (``[H, W]`` depth) with its inverse (or itself) fitted by least squares onto the truth's
    over the pixels where both are depth; the others as they were. Unchanged with under two such pixels."""
    valid = torch.isfinite(pred) & (pred > 0) & torch.isfinite(truth) & (truth > 0)
    if int(valid.sum()) < 2:
        return pred
    fitted = _aligned(pred[valid].double(), truth[valid].double(), inverse).to(pred.dtype)
    return pred.masked_scatter(valid, fitted)


class RelativeDepthMeter(DepthMeter):
    """:class:`DepthMeter` after a per-image scale-and-shift fit of the inverse depth (``inverse``; else
    the depth) onto the truth's (:func:`fit_to_truth`): how relative depth is scored, by its shape,
    not its unknown scale. Its metrics hold no ``scale`` (1 by construction)."""

    def __init__(self, inverse: bool = True) -> None:
        super().__init__()
        self.inverse = inverse

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = pred.detach().float().cpu(), target.detach().float().cpu()
        if pred.dim() == 2:
            pred, target = pred[None], target[None]
        super().update(torch.stack([fit_to_truth(p, t, self.inverse) for p, t in zip(pred, target)]), target)

    def compute(self) -> dict[str, float]:
        metrics = super().compute()
        metrics.pop("scale")
        return metrics


def depth_agreement(answers: list[torch.Tensor], truths: list[torch.Tensor]) -> Optional[DepthAgreement]:
    """How a teacher's depth (each ``[H, W]`` at its truth's size, metres) agrees with the truth,
    pooled over the images (None with under :data:`CHECK_MIN_PIXELS` valid pixels)."""
    pairs = [p for p in map(_valid_pairs, answers, truths) if p[0].numel() > 0]
    if sum(p.numel() for p, _ in pairs) < CHECK_MIN_PIXELS:
        return None
    pred, truth = torch.cat([p for p, _ in pairs]), torch.cat([t for _, t in pairs])
    aligned = torch.cat([_aligned(p, t) for p, t in pairs])
    affine = torch.cat([_aligned(p, t, inverse=False) for p, t in pairs])
    log_ratio = torch.log(pred / truth)
    return DepthAgreement(
        images=len(pairs),
        pixels=pred.numel(),
        correlation=_pearson(torch.log(pred), torch.log(truth)),
        scale=math.exp(log_ratio.mean().item()),
        rmse=(pred - truth).pow(2).mean().sqrt().item(),
        aligned_rmse=(aligned - truth).pow(2).mean().sqrt().item(),
        affine_rmse=(affine - truth).pow(2).mean().sqrt().item(),
        off_share=(log_ratio.abs() > math.log(SCALE_WARNING)).double().mean().item(),
        truth_spread=torch.log(truth).std().item() if truth.numel() > 1 else 0.0,
        no_depth=_no_depth_share(answers, truths),
    )


def _no_depth_share(answers: list[torch.Tensor], truths: list[torch.Tensor]) -> float:
    """The share of the pixels where the truth is depth (> 0, finite) on which the answer is none."""
    truth_has = [torch.isfinite(t) & (t > 0) for t in truths]
    missing = sum(int((has & ~(torch.isfinite(a) & (a > 0))).sum()) for a, has in zip(answers, truth_has))
    total = sum(int(has.sum()) for has in truth_has)
    return missing / total if total else 0.0


def _pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson r; NaN when either is constant (a flat answer says nothing of its direction)."""
    if any((v.max() - v.min()).item() <= 1e-9 * max(1.0, v.abs().max().item()) for v in (x, y)):
        return float("nan")  # constant up to rounding: the mean's rounding left a spurious r near 0
    x, y = x - x.mean(), y - y.mean()
    denominator = (x.pow(2).sum() * y.pow(2).sum()).sqrt().item()
    return (x * y).sum().item() / denominator if denominator > 0 else float("nan")


#: the rule of the check, said with its numbers
CHECK_RULE = (
    f"log-depth correlating under {ANTI_CORRELATION:g} with the truth stops the build (upside down: a disparity"
    f" read as metres), under {WEAK_CORRELATION:g} warns (it hardly follows the truth); within the"
    f" {SCALE_WARNING:g}x scale band, an rmse under {RELATIVE_GAIN:g}x the raw one"
    f" after the better fit, with {RELATIVE_SHARE:.0%} of pixels off by over {SCALE_WARNING:g}x, warns of relative"
    " depth (distilled as metric unless output: relative or affine); a metric or inverse reading 8x or more off"
    " stops (another unit: output_scale); a relative reading is checked for its direction and strength only"
)


def relative_rule(kind: str) -> str:
    """How a teacher of a relative reading is used, said with it in the log, inspect and report.json."""
    what = "inverse depth" if RELATIVE_KINDS[kind] else "depth"
    return (
        f"{kind}: {what} up to a per-image scale and shift, every finite value an answer; distilled by a"
        f" scale-and-shift-invariant loss on {what}, teacher and student scored after a per-image least-squares"
        f" scale and shift of their {what} onto the truth's"
    )


def _hardly_follows(agreement: DepthAgreement) -> bool:
    """Log depth correlating under :data:`WEAK_CORRELATION` (or constant) with a truth that varies."""
    return agreement.truth_spread > 1e-6 and not agreement.correlation >= WEAK_CORRELATION


#: a teacher whose log depth follows the truth this closely (r) ...
WARP_ORDER = 0.8
#: ... with fewer of its pixels than this within 1.25x once each image is scaled to the truth's median, keeps
#: the truth's order and not its proportions: a warped reading (quickstart's teacher: 0.96; a trial's sigmoid of
#: depth scaled to metres: 0.51, passed every check)
WARP_QUALITY = 0.7


def _warped(teacher: str, agreement: DepthAgreement, quality: Optional[float]) -> str:
    """The warning for depth that follows the truth's order but not its proportions (a sigmoid or min-max
    normalised output read through a linear ``output_scale``), or ""."""
    if quality is None or not agreement.correlation >= WARP_ORDER or quality >= WARP_QUALITY:
        return ""
    return (
        f"teacher {teacher}'s depth follows its eval set's order (log-depth r {agreement.correlation:.2f}) but not"
        f" its proportions: {quality:.0%} of pixels within 1.25x once each image is scaled to the truth's median"
        f" (a competent teacher: 90% or more): a warped reading (a sigmoid or a normalisation of depth, read"
        f" through a linear output_scale?); give teachers.{teacher} a factory that undoes it, or output: relative"
        " or affine if its depth has no metric scale"
    )


def _weak_warning(teacher: str, agreement: DepthAgreement) -> str:
    r = "its depth is constant" if math.isnan(agreement.correlation) else f"log-depth r {agreement.correlation:.2f}"
    return (
        f"teacher {teacher} hardly follows its eval set's depth ({r} over {agreement.images} images): a teacher that"
        " cannot do its job teaches nothing; check its input (size, channels, mean/std) and its output"
    )


#: the other cause of depth upside down, said with the teacher's fix
GROUND_TRUTH_HINT = (
    "; or, if the teacher is right, its eval set's maps are read the wrong way up: data.eval.<set>.depth_reading"
    " is inverse for maps of disparity, depth (the default) for maps of depth"
)


def _upside_down(teacher: str, kind: str, agreement: DepthAgreement) -> str:
    """The line that stops the build on depth anti-correlated with the truth, with the reading that fits."""
    return (
        f"teacher '{teacher}' (read as {kind}) is upside down on its eval set: its log-depth correlates"
        f" {agreement.correlation:.2f} with the truth over {agreement.pixels:,} pixels of {agreement.images}"
        f" images (near read as far): {_reading_fix(teacher, kind)}{GROUND_TRUTH_HINT}"
    )


def _reading_fix(teacher: str, kind: str) -> str:
    """The reading that fits depth anti-correlated with what it is checked against, read as ``kind``."""
    key = f"teachers.{teacher}.output"
    return {
        "metric": f"it reads like disparity / inverse depth: set {key}: inverse (relative if its scale is unknown)",
        "inverse": f"it reads like depth read as inverse: set {key}: metric (affine if its scale is unknown)",
        "log": f"check {key} (log; metric, inverse, relative, affine)",
        "relative": f"it reads like depth read as inverse: set {key}: affine (metric if it is metres)",
        "affine": f"it reads like inverse depth read as depth: set {key}: relative (inverse if it is 1/metres)",
    }.get(kind, f"check {key} ({kind}; metric, inverse, log, relative or affine)")


#: the logs a head may answer, the words for them, and the settings that read them (output_scale multiplies
#: a log reading's log: 10^x = e^(x ln 10))
LOG_BASES = (
    (math.e, "log", "teachers.{teacher}.output: log"),
    (10.0, "log10", f"teachers.{{teacher}}.output: log and output_scale: {math.log(10):.7g}"),
)


def _log_fit(answers: list[torch.Tensor], truths: list[torch.Tensor]) -> Optional[tuple[DepthAgreement, str, str]]:
    """The first log of :data:`LOG_BASES` whose reading of ``answers`` agrees with the truth in scale: its
    agreement, words and settings (a log10 head: exp of it was 0.14x off, and output_scale 7 named)."""
    for base, words, fix in LOG_BASES:
        as_log = depth_agreement([torch.pow(base, a.float()) for a in answers], truths)
        if as_log is not None and 1 / SCALE_WARNING <= as_log.scale <= SCALE_WARNING:
            return as_log, words, fix
    return None


def _log_reading(
    teacher: str, answers: list[torch.Tensor], truths: list[torch.Tensor], agreement: DepthAgreement
) -> tuple[Optional[str], bool]:
    """For a teacher read as metres, off its eval set's depth by ``agreement.scale``, whose answers read as
    log depth agree with the truth in scale: the line, and whether it stops the build. It stops where the
    log reading also follows the truth's shape better (log-depth r): a log-metres head declared metric was
    warned of as another scale only, and distilled as metres. A metric teacher at 0.25-0.45x in a room of
    1-5 m agrees in scale read as log too (k t ~ log t there) and follows the truth better as metres: warned,
    its ``output_scale`` first (``output: log`` would distil it warped)."""
    found = _log_fit(answers, truths)
    if found is None:
        return None, False
    as_log, words, log_fix = found
    if not as_log.correlation > WEAK_CORRELATION:
        return None, False
    log_fix = log_fix.format(teacher=teacher)
    scale_fix = f"teachers.{teacher}.output_scale: {1 / agreement.scale:.3g} (times any output_scale it has now)"
    said = (
        f"teacher {teacher} read as metres is {agreement.scale:.3g}x its eval set's depth (log-depth r"
        f" {agreement.correlation:.3f}); read as {words} depth it agrees in scale ({as_log.scale:.3g}x, r"
        f" {as_log.correlation:.3f}, rmse {as_log.rmse:.3g} m)"
    )
    if as_log.correlation > agreement.correlation:
        return f"{said}: if it answers {words} metres, set {log_fix}; if metres at another scale, {scale_fix}", True
    return f"{said}: if it answers metres at another scale, set {scale_fix}; if {words} metres, {log_fix}", False


def _relative_warning(teacher: str, agreement: DepthAgreement) -> str:
    kind, rmse = agreement.best_fit
    what, who = ("its inverse", "MiDaS, DPT, Depth Anything") if RELATIVE_KINDS[kind] else ("itself", "Marigold")
    return (
        f"teacher {teacher}'s depth looks like relative depth (an unknown scale and shift, as {who} answer):"
        f" a per-image scale-and-shift fit of {what} brings its rmse from {agreement.rmse:.3g} to"
        f" {rmse:.3g} m on {agreement.images} eval images, {agreement.off_share:.0%} of its pixels"
        f" being off by over {SCALE_WARNING:g}x; it is distilled and scored as metric depth: if it is relative"
        f" depth, set teachers.{teacher}.output: {kind}"
    )


class DepthTask(Task):
    """Teachers output ``[B, 1, h, w]`` metres, or inverse / log depth, or inverse depth / depth up to a
    scale and shift (``output: inverse|log|relative|affine``)."""

    name = "depth"
    dense = True
    target_key = "depth"
    metric = "rmse"
    higher_is_better = False
    output_kinds = ("metric", "inverse", "log", "relative", "affine")
    picture_cmap = "magma_r"
    picture_unit = "m"

    def build_head(self, in_channels: int, num_outputs: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(in_channels, num_outputs, kernel_size=3, padding=1), ExpDepth())

    def output_layer(self, kind):
        # a raw network learns log-depth; the clamped exp makes it answer in metres
        return ExpDepth() if kind == "metric" else None

    def num_outputs(self, space: Optional[LabelSpace]) -> int:
        return 1

    def convert_output(self, raw, kind):
        out = super().convert_output(raw, kind)
        if out.dim() == 3:
            out = out.unsqueeze(1)
        if kind in RELATIVE_KINDS:  # no value is "no depth": moved to positive values, each image its own way
            out = relative_to_positive(out)
        if kind in ("inverse", "relative"):
            # a disparity <= 0 (sky) is no depth: 0, masked out of the targets (so is +inf: 1/inf); NaN stays NaN
            out = out.float()
            return torch.where((out > 0) | out.isnan(), 1.0 / out.clamp(min=1e-6), torch.zeros_like(out))
        if kind == "log":
            return torch.exp(out.float())
        return out

    def check_output(self, out: torch.Tensor, batch: int, space: Optional[LabelSpace]) -> Optional[str]:
        if out.dim() != 4 or out.shape[0] != batch or out.shape[1] != 1:
            return f"expected depth of shape [B, 1, H, W], got {list(out.shape)}"
        # only a metric reading can be negative (inverse and log ones come back positive)
        negative = (out < 0).float().mean().item()
        if negative > NEGATIVE_SHARE:
            return (
                f"depth in metres cannot be negative, but {negative:.0%} of the output on a random batch is"
                f" (min {out.min().item():.3g}): if the network answers log depth set output: log, if inverse"
                " depth (disparity) output: inverse, if relative inverse depth with a shift (MiDaS) output:"
                " relative; if its depth is negated (a camera looking down -z), give a factory that negates it:"
                " no setting does (if it is metres, values <= 0 are no depth: amalgam masks them out of its targets)"
            )
        if not bool((out > 0).any()):  # every target masked: the student's depth would learn nothing, silently
            return (
                f"no value of its depth on the check batch is > 0 (max {out.max().item() + 0.0:.3g}), and values"
                " <= 0 are no depth: a dead ReLU head, another output, or a checkpoint that did not load?"
            )
        return None

    def resize_space(self, out, kind, back=False):
        """An inverse or relative (inverse) reading is resized as the disparity it answers, not as depth: the
        blend of a far and a near pixel was far in depth (a relative teacher's far end sits 100x its mean,
        where :func:`relative_to_positive` puts it: a trial's exact teacher, answering at half the maps' size,
        scored rmse 2.92 where 0 is right). A relative reading's disparity is an affine map of the teacher's
        own, which a linear resize commutes with: its score no longer depends on that floor. Its NaN (holes)
        and +inf (the teacher's failure, counted) stay as they are."""
        if kind not in ("inverse", "relative"):
            return out
        out = out.float()
        return torch.where(torch.isfinite(out) & (out > 0), 1.0 / out.clamp(min=1e-30), out)

    def mark_no_answer(self, out: torch.Tensor) -> torch.Tensor:
        """Depth <= 0, and +inf (too far to measure: a depth made from a disparity of 0, the sky) on an image
        with depth elsewhere, as NaN: a pixel resized from it is no target (``valid_depth`` drops non-finite
        ones). A trial's sky at +inf passed the check before training as no depth, then stopped training as
        a failing teacher's.

        The teacher's own NaN or -inf becomes +inf, not NaN: a NaN would read as "no depth" and a
        teacher that fails on some images would be masked without a count (:meth:`nonfinite_rows`
        finds the +inf; blended into its neighbours by a resize it stays inf). An overflow of fp16 autocast
        to +inf is caught before training, against the teacher in fp32 (``check_teacher_precision``)."""
        depth = (out > 0) & (out < float("inf"))
        # +inf on an image with no depth anywhere else is no sky: the teacher gave nothing there, a failure
        nothing = ~depth.reshape(out.shape[0], -1).any(1).reshape(-1, *[1] * (out.dim() - 1)) if out.dim() else depth
        own = out.isnan() | (out == float("-inf")) | ((out == float("inf")) & nothing)
        marked = torch.where(depth, out, torch.full_like(out, float("nan")))
        return torch.where(own, torch.full_like(out, float("inf")), marked)

    def nonfinite_rows(self, out: torch.Tensor) -> torch.Tensor:
        """Rows holding +inf: the teacher's own NaN/inf as :meth:`mark_no_answer` marks it (its NaN are
        no depth, values <= 0 or pixels a view did not show)."""
        return torch.isinf(out.reshape(out.shape[0], -1)).any(1)

    def nonfinite_any(self, out: torch.Tensor) -> torch.Tensor:
        """The sum of the values that are not NaN (no depth, which :meth:`nonfinite_rows` leaves alone)
        is not finite where any value is inf."""
        return ~torch.isfinite(out.nansum(dtype=torch.float32))

    def output_meaning(self, labels: Optional[list[str]], shape: tuple[int, ...]) -> str:
        """Metres, whatever its teachers answered (``output:`` converts them); relative where they all were."""
        dims = output_dims(shape)
        return (
            f"depth [{dims}] in metres, as the student was trained (its teachers' depth converted to metres);"
            " a student taught only by relative-depth teachers (output: relative or affine) knows it only up to a"
            " per-image scale and shift (of its inverse, or of itself), as its output's teachers list says"
        )

    def taught_meaning(self, labels: Optional[list[str]], shape: tuple[int, ...], readings: list[str]) -> str:
        """Metres where a teacher of a metric reading gave the scale; where every teacher was relative, a depth
        known only up to a per-image scale and shift (a trial's export said metres: read so, 0.32x the truth)."""
        if self.output_unit(readings) != "relative":
            return self.output_meaning(labels, shape)
        of = {True: "of its inverse (1 / depth)", False: "of itself"}
        kinds = sorted({RELATIVE_KINDS[r] for r in readings}, reverse=True)
        which = " or ".join(of[k] for k in kinds)
        return (
            f"relative depth [{output_dims(shape)}], not metres: every teacher of it was relative"
            f" (output: {', '.join(sorted(set(readings)))}), so it is known only up to a per-image scale and shift"
            f" {which}; fit those per image (to a few metric depths) before reading it as metres"
        )

    def output_unit(self, readings: list[str]) -> Optional[str]:
        """``relative`` where every teacher was read relative; else ``metres`` (what the student is trained in)."""
        return "relative" if readings and all(r in RELATIVE_KINDS for r in readings) else "metres"

    def unified_reading(self, readings: list[str]) -> Optional[str]:
        """The one reading every teacher shares; teachers all relative, of both fits: ``relative`` (its inverse
        fitted, as :meth:`output_unit` calls the student relative then; a metric row scored it 10x off)."""
        if readings and all(r in RELATIVE_KINDS for r in readings) and len(set(readings)) > 1:
            return "relative"
        return super().unified_reading(readings)

    def unchecked_reading(self, teacher: str, kind: str, answers: list[torch.Tensor]) -> list[str]:
        """A metric, inverse or log reading whose median on the teacher's own sources is no scene's depth:
        a trial's teacher in millimetres, with no eval set, was trained on as metres without a word (the
        student's depth head reaches 1,097 m)."""
        if kind in RELATIVE_KINDS:
            return []
        median = _median_depth(answers, CHECK_MIN_PIXELS)
        if median is None or PLAUSIBLE_NEAREST <= median <= PLAUSIBLE_METRES:
            return []
        return [
            f"teacher {teacher}'s depth, read as {kind}, has a median of {median:.3g} m on {len(answers)} images of"
            f" its sources, no scene's depth ({_unit_hint(teacher, kind, median)}); no eval set checks its reading:"
            " give it one (data.eval) to be sure"
        ]

    def peer_reading(
        self, teacher: str, kind: str, answers: list[torch.Tensor], peer: str, peer_kind: str, peer_answers: list
    ) -> Optional[EvalReading]:
        """Its direction against the checked ``peer``'s depth (anti-correlated: upside down), and, both read with
        a metric scale, its scale against the peer's (:data:`UNIT_STOP` apart stops, :data:`SCALE_WARNING` warns)."""
        agreement = depth_agreement(answers, [a.nan_to_num(0.0, 0.0, 0.0) for a in peer_answers])
        if agreement is None:
            return None
        said = (
            f"against teacher '{peer}' ({peer_kind}, checked against its eval set) on {agreement.images} source"
            f" images: log-depth r {agreement.correlation:.3f}, scale {agreement.scale:.3g}x"
        )
        if agreement.correlation < ANTI_CORRELATION:
            fix = _reading_fix(teacher, kind)
            problem = (
                f"teacher '{teacher}' (read as {kind}, no eval set) is upside down against teacher '{peer}', whose"
                f" reading its eval set confirmed: their log-depths correlate {agreement.correlation:.2f} over"
                f" {agreement.pixels:,} pixels of {agreement.images} source images (near read as far): {fix}"
            )
            return EvalReading(said, [], problem)
        if (
            kind in RELATIVE_KINDS
            or peer_kind in RELATIVE_KINDS
            or 1 / SCALE_WARNING <= agreement.scale <= SCALE_WARNING
        ):
            return EvalReading(said, [], None)
        line = (
            f"teacher '{teacher}' (read as {kind}, no eval set) answers {agreement.scale:.3g}x the depth of teacher"
            f" '{peer}', whose reading its eval set confirmed, on {agreement.images} source images: another unit? set"
            f" teachers.{teacher}.output_scale: {1 / agreement.scale:.3g} (times any it has), or output: relative"
            " or affine if its depth has no metric scale"
        )
        stop = not 1 / UNIT_STOP < agreement.scale < UNIT_STOP
        return EvalReading(said, [] if stop else [line], line if stop else None)

    def output_note(self, out: torch.Tensor, kind: str) -> str:
        """The share of the check batch's values that are no depth (<= 0), masked out of the targets;
        for relative depth, how it is distilled and scored."""
        none = (out <= 0).float().mean().item()
        notes = [relative_rule(kind)] if kind in RELATIVE_KINDS else []
        if none > 0:
            share = f"{none:.1%}" if none >= 0.001 else f"{int((out <= 0).sum())} values"
            notes.append(f"{share} of its depth on the check batch is <= 0: no depth there, masked out of its targets")
        return "; ".join(notes)

    def ensemble(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """The mean of the valid (> 0) values at each pixel; 0 (no depth) where none is; +inf (the
        teacher's own non-finite answer) where any output holds it."""
        stacked = torch.stack([o.float() for o in outputs])
        valid = torch.isfinite(stacked) & (stacked > 0)
        n = valid.sum(0)
        mean = torch.where(valid, stacked, 0.0).sum(0) / n.clamp(min=1)
        mean = torch.where(n > 0, mean, torch.zeros_like(mean))
        # a view's +inf is the teacher's own NaN/inf (mark_no_answer): kept, so it is counted, not averaged away
        return torch.where(torch.isposinf(stacked).any(0), torch.full_like(mean, float("inf")), mean)

    def teacher_warnings(self, teacher: str, metrics: dict) -> list[str]:
        lines = []
        if (none := metrics.get("no_depth") or 0.0) >= NO_DEPTH_SAID:  # its scores would read as a unit error
            lines.append(
                f"teacher {teacher} gives no depth (<= 0 or not finite) on {none:.1%} of the pixels its eval set has"
                " depth on: scored there as 1 mm, they weigh in its rmse, abs_rel and delta1 (not in its scale)"
            )
        return lines + self._scale_warning(teacher, metrics.get("scale"))

    def _scale_warning(self, teacher: str, scale: Optional[float]) -> list[str]:
        if scale is None or not math.isfinite(scale) or 1 / SCALE_WARNING <= scale <= SCALE_WARNING:
            return []
        kitti = ""  # KITTI's PNGs read at the default 1000 values a metre (every teacher 1000/256 off), or the reverse
        if abs(math.log(scale / (1000 / 256))) < 0.05:
            kitti = " (1000/256: KITTI-style PNGs, 256 values a metre, read at the default 1000? set depth_scale: 256)"
        elif abs(math.log(scale / (256 / 1000))) < 0.05:
            kitti = (
                " (256/1000: PNGs of 1000 values a metre, millimetres, read at depth_scale 256? set depth_scale: 1000)"
            )
        return [
            f"teacher {teacher}'s depth is {scale:.3g}x its eval set's (geometric mean over valid pixels){kitti}:"
            " check the set's depth_scale (its PNGs' values a metre: 1000 for millimetres, 256 for KITTI; float"
            " .npy/.tiff maps are read as metres, so save them in metres) and the teacher's output"
            " (metric, inverse, log; relative or affine for a teacher without a metric scale; a metric teacher"
            f" answering another unit: teachers.{teacher}.output_scale {1 / scale:.3g} times the one it has brings it"
            f" to the set's scale; {UNIT_STOP:g}x or more stops the build)"
        ]

    def eval_reading(
        self, teacher: str, kind: str, answers: list[torch.Tensor], truths: list[torch.Tensor]
    ) -> EvalReading:
        """A teacher's reading checked against an eval set's depth before training (the plan calls it).

        Args:
            teacher: its name.
            kind: its ``output:`` reading (metric, inverse, log, relative, affine).
            answers: its depth on a few eval images, each ``[H, W]`` at its truth's size (:meth:`predict`'s).
            truths: the set's depth maps there (0: invalid).

        Depth anti-correlated with the truth is a problem (it would be distilled upside down); a scale
        beyond :data:`SCALE_WARNING` (:meth:`teacher_warnings`, said again after training) and, within
        it, relative depth (far closer after a per-image scale-and-shift fit) are warnings.
        """
        agreement = depth_agreement(answers, truths)
        if agreement is None:  # said, so that a check that could not run is not read as passed
            return EvalReading(f"not checked: under {CHECK_MIN_PIXELS} pixels where both give depth", [], None)
        said = agreement.describe()
        if agreement.correlation < ANTI_CORRELATION:
            return EvalReading(said, [], _upside_down(teacher, kind, agreement), CHECK_RULE)
        weak = [_weak_warning(teacher, agreement)] if _hardly_follows(agreement) else []
        if kind in RELATIVE_KINDS:  # declared without a scale: only its direction is checked
            return EvalReading(said, weak, None, CHECK_RULE)
        if agreement.no_depth >= NO_DEPTH_STOP:
            return EvalReading(said, weak, _no_depth_line(teacher, agreement.no_depth), CHECK_RULE)
        if agreement.no_depth >= NO_DEPTH_WARNING:
            weak.append(_no_depth_line(teacher, agreement.no_depth))
        set_median = _median_depth(truths)
        if problem := _unit_problem(teacher, kind, agreement.scale, set_median):
            return EvalReading(said, weak, problem, CHECK_RULE)
        line, stop = _both_beyond(teacher, kind, _median_depth(answers), set_median)
        if stop:
            return EvalReading(said, weak, line, CHECK_RULE)
        weak += [line] if line else []
        scale = tuple(self._scale_warning(teacher, agreement.scale))  # evaluation says it again
        hint, stop = _log_reading(teacher, answers, truths, agreement) if kind == "metric" and scale else (None, False)
        if stop:  # a trial's log head built on, distilled as metres
            return EvalReading(said, weak, hint, CHECK_RULE)
        weak += [hint] if hint else []
        # a scale beyond the band is said by that line (another unit, or relative depth); a unit error
        # alone passes the relative test too, so that test is left to depth within the band
        if not (weak or scale) and agreement.best_fit[1] < RELATIVE_GAIN * agreement.rmse:
            weak += [_relative_warning(teacher, agreement)] if agreement.off_share >= RELATIVE_SHARE else []
        if not (weak or scale) and (warped := _warped(teacher, agreement, self.reading_quality(kind, answers, truths))):
            weak.append(warped)
        return EvalReading(said, weak, None, CHECK_RULE, repeated=scale)

    #: how the input probes name :meth:`reading_quality`
    quality_words = "delta1 (each image's depth scaled to the truth's median)"

    def reading_quality(self, kind: str, answers: list[torch.Tensor], truths: list[torch.Tensor]) -> Optional[float]:
        """The share of pixels within 1.25x of the truth once each image's depth is scaled to the truth's
        median (blind to the unit), over the check's images; None for a relative reading (its shift is
        no scale) or without enough pixels where both give depth."""
        if kind in RELATIVE_KINDS:
            return None
        shares = []
        for answer, truth in zip(answers, truths):
            valid = (truth > 0) & (answer > 0) & torch.isfinite(answer)
            if int(valid.sum()) < 16:
                continue
            a, t = answer[valid].float(), truth[valid].float()
            a = a * (t.median() / a.median())
            shares.append(within_delta1(a, t).float().mean())
        return float(torch.stack(shares).mean()) if shares else None

    def distill_loss(self, student, teacher, options: DistillOptions):
        """log-L1 + scale-invariant over the pixels where the teacher gives depth (> 0); for a relative
        teacher, the scale-and-shift-invariant :func:`relative_depth_loss` there."""
        teacher, valid = valid_depth(teacher, student.shape[-2:])
        if options.output_kind in RELATIVE_KINDS:
            return relative_depth_loss(student, teacher, valid, inverse=RELATIVE_KINDS[options.output_kind])
        return log_depth_loss(student, teacher, valid=valid)

    def supervised_loss(self, output, target):
        output = self.predict(output, tuple(target.shape[-2:]))
        valid = torch.isfinite(target) & (target > 0)
        return (torch.log(output[valid].clamp(min=MIN_DEPTH)) - torch.log(target[valid])).abs().mean()

    def predict(self, output, size, projection=None):
        if tuple(output.shape[-2:]) != tuple(size):
            output = F.interpolate(output.float(), size=size, mode="bilinear", align_corners=False)
        return output[:, 0]

    def visualize(self, pred: torch.Tensor) -> Optional[torch.Tensor]:
        """The depth map with no depth (<= 0: a ReLU head's zeros, ground truth's holes) left undrawn."""
        depth = pred.float().squeeze(0) if pred.dim() == 3 else pred.float()
        return depth.masked_fill(~(depth > 0), float("nan"))

    def new_meter(self, num_classes: Optional[int]) -> DepthMeter:
        return DepthMeter()

    def as_scored(self, pred: torch.Tensor, truth: torch.Tensor, kind: str) -> torch.Tensor:
        """A relative reading's depth fitted to the truth per image, as it is scored (else as it is)."""
        if kind not in RELATIVE_KINDS or pred.shape != truth.shape:
            return pred
        return torch.stack([fit_to_truth(p.float(), t.float(), RELATIVE_KINDS[kind]) for p, t in zip(pred, truth)])

    def reading_meter(self, num_classes: Optional[int], kind: str) -> DepthMeter:
        """Relative depth, and the student beside it, scored after a per-image fit (:class:`RelativeDepthMeter`)."""
        return RelativeDepthMeter(RELATIVE_KINDS[kind]) if kind in RELATIVE_KINDS else DepthMeter()


def _no_depth_line(teacher: str, share: float) -> str:
    """Why a teacher giving no depth on many pixels where its eval set has depth is no teacher there."""
    return (
        f"teacher {teacher} gives no depth (<= 0 or not finite) on {share:.0%} of the pixels where eval set '<set>'"
        " has depth:"
        " they are masked out of its targets, so the student learns nothing there from it; a disparity with a shift"
        " (MiDaS, DPT: values below 0) is output: relative; a metric head's zeros: another output, or a"
        " checkpoint that did not load?"
    )


#: a median depth beyond this many metres is no scene's (KITTI's reach 80): maps read in another unit
PLAUSIBLE_METRES = 100.0
#: ... and under this many (a scene's median pixel is farther than 5 cm): a teacher read in another unit
PLAUSIBLE_NEAREST = 0.05


def _median_depth(maps: list[torch.Tensor], least: int = 1) -> Optional[float]:
    """The median of the depth (finite, > 0) of ``maps`` pooled; None with under ``least`` such values."""
    valid = [m[torch.isfinite(m) & (m > 0)].float().flatten() for m in maps]
    valid = torch.cat(valid) if valid else torch.empty(0)
    return float(valid.median()) if valid.numel() >= max(least, 1) else None


#: the units a depth off by their factor most likely is in, by that factor (metres x factor)
UNITS = {1e3: "millimetres", 1e2: "centimetres"}


def _fitting_units(median: float) -> list[tuple[str, float]]:
    """``(unit, factor)`` of each of :data:`UNITS` that brings a ``median`` (metres as read) to a scene's depth."""
    return [(u, f) for f, u in UNITS.items() if PLAUSIBLE_NEAREST <= median / f <= PLAUSIBLE_METRES]


def _unit_problem(teacher: str, kind: str, scale: float, set_median: Optional[float] = None) -> Optional[str]:
    """Why a teacher read as ``kind`` whose depth is :data:`UNIT_STOP` times its eval set's (or 1/that)
    cannot be distilled as it is, with the settings that fix it; None within that. The set is named first
    when its median (``set_median``, metres as read) is no scene's and the teacher's is one."""
    if not math.isfinite(scale) or 1 / UNIT_STOP < scale < UNIT_STOP:
        return None
    if set_median is not None and (problem := _set_unit_problem(teacher, scale, set_median)):
        return problem
    # output_scale multiplies the raw output: metric depth divides by the scale, inverse depth by its inverse
    factor = {"metric": 1 / scale, "inverse": scale}.get(kind)
    named = {1 / f: u for f, u in UNITS.items()} if kind == "metric" else UNITS
    near = next((u for u in named if factor and abs(math.log(factor / u)) < 0.05), None)
    unit = f" ({'inverse ' if kind == 'inverse' else ''}{named[near]}?)" if near else ""
    factor = near or factor  # the unit's own factor where it is one: 0.01, not the measured 0.0101
    fix = (
        f"set teachers.{teacher}.output_scale: {factor:.3g} (times any output_scale it has now: the scale above is"
        " measured after it)"
        if factor
        else f"wrap teacher {teacher} so that it answers in metres (output_scale multiplies a log reading's log)"
    )
    said = f"teacher {teacher}'s depth is {scale:.3g}x the depth of eval set '<set>' (geometric mean over valid pixels)"
    if kind == "inverse" and not near:  # MiDaS/DPT answer inverse depth of unknown scale and shift: most such nets
        return (
            f"{said}: an inverse depth of no metric scale, as MiDaS- and DPT-style nets answer (scale and shift"
            f" unknown): set teachers.{teacher}.output: relative. If its inverse depth is metric in another unit,"
            f" {fix}; if the set's maps are read in the wrong unit, fix data.eval.<set>.depth_scale"
        )
    return (
        f"{said}: another unit{unit}. If the teacher answers in it, {fix}; if the set's maps are read in the wrong"
        " unit, fix data.eval.<set>.depth_scale (its PNGs' values a metre; float .npy/.tiff maps are read as"
        " metres: save them so); a teacher without a metric scale is output: relative or affine"
    )


def _unit_hint(teacher: str, kind: str, median: float) -> str:
    """What may make a teacher's depth read a ``median`` no scene has: for a metric reading, the usual units
    whose output_scale brings it to a scene's (output_scale multiplies the raw output before it is read, so
    an inverse or log reading's fix is no such factor of its depth)."""
    if kind != "metric":
        return (
            f"another unit, or not {kind} depth? teachers.{teacher}.output_scale multiplies its raw output before"
            " it is read"
        )
    fits = _fitting_units(median) if median > PLAUSIBLE_METRES else []
    named = " or ".join(f"{u} (output_scale: {1 / f:g}, a median of {median / f:.3g} m)" for u, f in fits)
    also = "; a depth normalised to [0, 1]: output_scale its range in metres" if median < PLAUSIBLE_NEAREST else ""
    which = f"in {named}? set teachers.{teacher}.output_scale, times any it has" if fits else "in another unit?"
    return which + also


#: the deepest depth the student's head answers (:class:`ExpDepth`'s clamp)
STUDENT_REACH = math.exp(7.0)


def _both_beyond(teacher: str, kind: str, own: Optional[float], set_median: Optional[float]) -> tuple[str, bool]:
    """What is said of a teacher and its eval set that agree on a median no scene has (both in millimetres), and
    whether it stops: beyond the student's reach it does (it learnt nothing over 1,097 m, silently), else it is a
    warning; ``("", False)`` if either is a scene's."""
    if own is None or set_median is None or min(own, set_median) <= PLAUSIBLE_METRES:
        return "", False
    fits = _fitting_units(own)
    # output_scale multiplies the raw output: metric depth by 1/f, an inverse depth (disparity) by f; a log no factor
    scale = {
        "metric": lambda f: f"set teachers.{teacher}.output_scale: {1 / f:g} and",
        "inverse": lambda f: f"set teachers.{teacher}.output_scale: {f:g} and",
    }.get(kind, lambda f: f"wrap teacher {teacher} to answer metres and set")
    fix = "; or ".join(
        f"in {u} (a median of {own / f:.3g} m), {scale(f)} data.eval.<set>.depth_scale: {f:g}" for u, f in fits
    )
    fix = (
        f"{fix} (float .npy/.tiff maps are read as metres: save them so)"
        if fits
        else f"scale teachers.{teacher}.output_scale and data.eval.<set>.depth_scale to metres"
    )
    said = (
        f"teacher {teacher} and eval set '<set>' agree, but both read {own:.3g} m at the median, no scene's depth:"
        f" the student learns depth in metres and its head answers {STUDENT_REACH:,.0f} m at most; {fix}"
    )
    return (f"beyond the student's reach: {said}", True) if own > STUDENT_REACH else (said, False)


def _set_unit_problem(teacher: str, scale: float, set_median: float) -> Optional[str]:
    """The stop naming the eval set's unit first: its median is beyond :data:`PLAUSIBLE_METRES`, the
    teacher's (``scale`` times it) within 0.1 m to that; None otherwise."""
    own = scale * set_median
    if set_median <= PLAUSIBLE_METRES or not 0.1 <= own <= PLAUSIBLE_METRES:
        return None
    unit = next((f" ({u}?)" for f, u in UNITS.items() if abs(math.log(set_median / own / f)) < 0.05), "")
    return (
        f"eval set '<set>' reads {set_median:.3g} m at its median, no scene's depth, where teacher {teacher} answers"
        f" {own:.3g} m: its maps are in another unit{unit}. Save float .npy/.tiff maps in metres (they are read"
        " as metres), or set data.eval.<set>.depth_scale to its PNGs' values a metre; if it is the teacher that is"
        f" off, teachers.{teacher}.output_scale scales it"
    )
