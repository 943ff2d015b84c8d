"""Whether a teacher fed mean/std it was not given is fed what it was trained with.

A teacher whose recipe gives no ``input.mean``/``std`` is fed a documented default (ImageNet's). A
teacher trained on other statistics still answers, worse: a classifier trained at mean/std 0.5 named
half of its eval images right, and the student beat that crippled reference (ratio 1.10 where it was
0.59 of the teacher as trained). Before training, a teacher that looks weak on the label check's
images is run again under the other usual normalisations; one that does far better is named.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from amalgam.config.schema import InputSpec
from amalgam.evaluation.metrics import ConfusionMatrix
from amalgam.teachers.inputs import DEFAULT, RECIPE, TIMM
from amalgam.teachers.teacher import Teacher

#: a teacher's mean recall on the check's images under which its normalisation is probed (a competent
#: one, above it, costs no extra run)
PROBE_BELOW = 0.75
#: how much higher (absolute) another normalisation's mean recall must be to be named ...
PROBE_GAIN = 0.15
#: ... and how many times the one as fed ...
PROBE_RATIO = 1.25
#: ... and at least this itself: a teacher that does its job there (garbage that hit a few more pixels of
#: a label map is no better normalisation)
PROBE_COMPETENT = 0.5


def candidates(channels: int, bgr: bool = False) -> dict[str, tuple[list[float], list[float]]]:
    """The usual normalisations, by the words the warning says them in (a BGR teacher's in its order);
    ImageNet's is the recipe's own default (for 3 channels: a 1-channel teacher has none)."""
    mean, std = InputSpec.model_fields["mean"].default, InputSpec.model_fields["std"].default
    order = -1 if bgr else 1
    imagenet = {"ImageNet's mean/std": (list(mean)[::order], list(std)[::order])} if channels == len(mean) else {}
    return imagenet | {
        "mean 0.5, std 0.5 (values in [-1, 1])": ([0.5] * channels, [0.5] * channels),
        "mean 0, std 1 (values in [0, 1])": ([0.0] * channels, [1.0] * channels),
        "mean 0, std 1/255 (values in [0, 255])": ([0.0] * channels, [1 / 255] * channels),
    }


def mean_recall(matrix: torch.Tensor, classes: set[int]) -> float:
    """Mean over ``classes`` (those with truth) of each one's recall in a truth x prediction ``matrix`` (NaN: none)."""
    recall = _confusion(matrix).recall()[sorted(classes)]
    recall = recall[~recall.isnan()]
    return recall.mean().item() if recall.numel() else float("nan")


def mean_iou(matrix: torch.Tensor, classes: set[int]) -> float:
    """Mean over ``classes`` (those with truth) of each one's IoU in a truth x prediction ``matrix`` (NaN: none)."""
    return _confusion(matrix).mean_iou(sorted(classes))


def _confusion(matrix: torch.Tensor) -> ConfusionMatrix:
    """``matrix`` as the report's confusion matrix, so the probes score as evaluation does."""
    found = ConfusionMatrix(matrix.shape[0])
    found.matrix = matrix
    return found


@contextmanager
def attributes_set(changes: list[tuple[object, str, object]]) -> Iterator[None]:
    """Each ``(owner, attribute, value)`` set for the block, then each attribute as it was."""
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in changes]
    for owner, name, value in changes:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def fed(teacher: Teacher, mean: list[float], std: list[float]):
    """``teacher`` fed with ``mean``/``std`` for the block, then as before."""
    return attributes_set([(teacher, "mean", mean), (teacher, "std", std)])


def normalisation_line(
    teacher: Teacher,
    score: Callable[[], float],
    current: float,
    images: int,
    classes: int,
    measure: str = "mean recall",
) -> Optional[str]:
    """The warning when the teacher, fed a mean/std the recipe did not give, scores far better (``measure``
    over ``classes`` classes, ``score()``; NaN for a collapsed answer) under another usual normalisation than
    as fed (``current``); else None. A segmenter is measured by mean IoU: fed [0, 1] where it wants [-1, 1],
    a trial's lost 0.40 -> 0.62 of it and 0.73 -> 0.62 of its recall only, under the gain asked."""
    found = normalisation_finding(teacher, Probed(score, current, images, classes, measure))
    return found.line if found else None


@dataclass
class Probed:
    """What a probe scores a teacher by: ``score()`` as it is fed at the time, ``current`` as the recipe feeds
    it, on ``images`` images, over ``classes`` classes judged (0: a quality without a chance level), said as
    ``measure``."""

    score: Callable[[], float]
    current: float
    images: int
    classes: int
    measure: str

    def parts(self) -> tuple[Callable[[], float], float, int, int, str]:
        """Its fields, in order."""
        return self.score, self.current, self.images, self.classes, self.measure


@dataclass
class Finding:
    """A probe's warning and the input setting it names (``mean`` and ``std``, or ``size``)."""

    line: str
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None
    size: Optional[tuple[int, int]] = None
    score: float = float("nan")  # the teacher's score fed so


def normalisation_finding(
    teacher: Teacher, probed: Probed, size: Optional[tuple[int, int]] = None, proposed: bool = False
) -> Optional[Finding]:
    """:func:`normalisation_line`'s warning with the mean/std it names, so that the next probes can feed them.
    ``size``: the teacher is fed at it for the probe (:func:`sized`), which the fix then names too; ``proposed``:
    the size probe named it already, and ``probed.current`` is the score there."""
    score, current, images, classes, measure = probed.parts()
    if (tried := _normalisations(teacher, score, current)) is None:
        return None
    settings, results, best = tried
    if not _far_better(results[best], current, classes):
        return None
    given, whence = _as_fed(teacher)
    mean, std = (", ".join(f"{v:.4g}" for v in values) for values in settings[best])
    order = " (in its BGR order)" if teacher.input_spec.bgr else ""
    at = f" at {size[0]}x{size[1]}" if size else ""
    fed_at, tried_at = (at + ", the size proposed", "") if proposed else ("", at)
    resize = f" and teachers.{teacher.name}.input.size: [{size[0]}, {size[1]}]" if size and not proposed else ""
    line = (
        f"teacher {teacher.name} has a {measure} of {current:.2f} on {images} eval images as fed{fed_at} (mean"
        f" {given[0]}, std {given[1]}: {whence}) and {results[best]:.2f} with"
        f" {best}{tried_at}: set teachers.{teacher.name}.input.mean: [{mean}] and std: [{std}]{order}{resize}, or"
        " what it was trained with; as fed it is no reference"
    )
    return Finding(line, *settings[best], score=results[best])


def _normalisations(teacher: Teacher, score: Callable[[], float], current: float) -> Optional[tuple[dict, dict, str]]:
    """The usual normalisations a teacher fed a mean/std the recipe did not give, scoring under
    :data:`PROBE_BELOW` as fed (``current``), is tried with: ``(settings, scores, the best's words)``; None
    where it is not tried (competent, its mean/std the recipe's, or not judged: NaN) or none ran."""
    origin = teacher.input_spec.origin
    if not current < PROBE_BELOW or (origin.get("mean") == RECIPE and origin.get("std") == RECIPE):
        return None
    results = {}
    settings = candidates(teacher.channels, bool(teacher.input_spec.bgr))
    for words, (mean, std) in settings.items():
        if mean == list(teacher.mean) and std == list(teacher.std):
            continue
        try:
            with fed(teacher, mean, std):
                results[words] = score()
        except Exception:  # noqa: BLE001 - a network that fails on other values is no better fed by them
            continue
    if not results:
        return None
    return settings, results, max(results, key=lambda w: results[w] if results[w] == results[w] else -1.0)


def _as_fed(teacher: Teacher) -> tuple[tuple[str, str], str]:
    """The mean and std a teacher is fed, as text, and where they come from."""
    origin = teacher.input_spec.origin
    given = ", ".join(f"{v:g}" for v in teacher.mean), ", ".join(f"{v:g}" for v in teacher.std)
    origins = origin.get("mean"), origin.get("std")
    whence = f"{origins[0]}, not the recipe's" if origins[0] == origins[1] else f"mean {origins[0]}, std {origins[1]}"
    return given, whence


#: another usual mean/std scoring this much over the one fed (a default), short of :func:`_far_better`, is
#: said as a hint, never applied: a trial's classifier trained at 0.5 / 0.5 scored 0.69 under ImageNet's and
#: 0.80 under its own on 35 images, under the probe's gain, and its crippled score became the reference unsaid
HINT_GAIN = 0.05


def normalisation_hint(teacher: Teacher, probed: Probed) -> Optional[str]:
    """Where no input setting is named (the probe of :func:`normalisation_finding` and the others found nothing),
    a teacher fed a default mean and std that scores :data:`HINT_GAIN` better under another usual one, and
    competent there (as :func:`_far_better` asks): one line saying both, and that the fed ones are defaults."""
    score, current, images, classes, measure = probed.parts()
    origin = teacher.input_spec.origin
    if RECIPE in (origin.get("mean"), origin.get("std")):  # half of it given: deliberate, not a default
        return None
    if (tried := _normalisations(teacher, score, current)) is None:
        return None
    settings, results, best = tried
    competent = max(PROBE_COMPETENT, (1 / classes if classes else 0.0) + PROBE_GAIN)
    if not (results[best] >= current + HINT_GAIN and results[best] >= competent):  # a weak teacher's noise
        return None
    given, whence = _as_fed(teacher)
    mean, std = (", ".join(f"{v:.4g}" for v in values) for values in settings[best])
    return (
        f"teacher {teacher.name} has a {measure} of {current:.2f} on {images} eval images as fed (mean {given[0]},"
        f" std {given[1]}: {whence}) and {results[best]:.2f} with {best}: too small a gain on so few images to name"
        f" it, and the mean/std fed are not the recipe's: set teachers.{teacher.name}.input.mean and std to those it"
        f" was trained with (mean: [{mean}], std: [{std}] if these)"
    )


def _far_better(found: float, current: float, classes: int) -> bool:
    """Whether a setting's score ``found`` is far over ``current`` (:data:`PROBE_GAIN`, :data:`PROBE_RATIO`)
    and competent itself: a 2-class teacher collapsed scores 0.5; no classes: a quality without a chance level."""
    chance = 1 / classes if classes else 0.0
    competent = found >= max(PROBE_COMPETENT, chance + PROBE_GAIN)
    return found >= current + PROBE_GAIN and found >= PROBE_RATIO * current and competent


#: how much higher (absolute) a teacher's mean IoU must be with its channels reversed to be named ...
ORDER_GAIN = 0.02  # the BGR segmenter of a trial, on 16 images: 0.609 -> 0.651, on the 16 of all its set 0.491 -> 0.517
#: ... and how many times the one as fed (a network that ignores colour scores the same either way)
ORDER_RATIO = 1.03


@contextmanager
def reversed_channels(teacher: Teacher) -> Iterator[None]:
    """``teacher`` fed its 3 channels in the other order (its mean/std with them) for the block."""
    spec = teacher.input_spec
    changes = [
        (spec, "channel_order", "rgb" if spec.bgr else "bgr"),
        (spec, "mean", list(spec.mean)[::-1]),  # its padding colour follows them
        (spec, "std", list(spec.std)[::-1]),
        (teacher, "mean", list(teacher.mean)[::-1]),
        (teacher, "std", list(teacher.std)[::-1]),
    ]
    with attributes_set(changes):
        yield


def channel_order_line(
    teacher: Teacher,
    score: Callable[[], float],
    current: float,
    images: int,
    measure: str = "mean IoU",
    competent: float = PROBE_COMPETENT,
    fed_as: str = "",
) -> Optional[str]:
    """The warning when a 3-channel teacher whose recipe states no ``input.channel_order`` does clearly
    better on the check's images (mean IoU ``score()``) fed the other order than as fed (``current``): a
    BGR segmenter (OpenCV, Caffe, mmcv) fed RGB lost 14% mIoU without a word (its recall, 1% only). A
    teacher under :data:`PROBE_COMPETENT` as fed must gain as the normalisation probe asks: a weak RGB
    segmenter's 0.25 -> 0.28 on 16 images (0.253 and 0.252 on 200) told a trial to feed it BGR.
    ``competent``: the score from which the small gain is enough (a task's ``reading_quality`` sets its own);
    ``fed_as``: words after "fed RGB" naming a setting tried instead of the one fed (the mean/std proposed)."""
    if teacher.channels != 3 or teacher.input_spec.origin.get("channel_order") == RECIPE or current != current:
        return None
    try:
        with reversed_channels(teacher):
            found = score()
    except Exception:  # noqa: BLE001 - a network that fails the other way round is not better fed so
        return None
    # a weak teacher's few-image score moves by chance: it must gain as much as the normalisation probe asks
    gain, ratio = (ORDER_GAIN, ORDER_RATIO) if current >= competent else (PROBE_GAIN, PROBE_RATIO)
    if not (found >= current + gain and found >= ratio * current):  # hedged: said, never applied
        return None
    other = "bgr" if not teacher.input_spec.bgr else "rgb"
    return (
        f"teacher {teacher.name} has a {measure} of {current:.2f} on {images} eval images fed"
        f" {'BGR' if teacher.input_spec.bgr else 'RGB'}{fed_as} and {found:.2f} with its channels reversed: if it was"
        f" trained on {other.upper()} images (OpenCV, Caffe, mmcv), set"
        f" teachers.{teacher.name}.input.channel_order: {other}"
        " (its mean/std in that order); if its mean/std are listed in the other channel order, reverse those"
        " lists instead; as fed it is no reference"
    )


#: the sizes a teacher fed at the default size (``data.image_size``) is also tried at, as factors of it:
#: a network trained at twice or half the student's size answers far worse at it
SIZE_FACTORS = (2.0, 0.5)


def sized(teacher: Teacher, size: tuple[int, int]):
    """``teacher`` fed at ``size`` (its view and its input) for the block, then as before."""
    return attributes_set([(teacher, "size", size), (teacher.input_spec, "size", size)])


def size_candidates(teacher: Teacher, image_size: Optional[tuple[int, int]] = None) -> list[tuple[int, int]]:
    """The sizes a teacher fed at a size the recipe did not give is tried at: twice and half of it and, fed
    timm's ``pretrained_cfg`` size, ``image_size``; none where the recipe gives its size."""
    origin = teacher.input_spec.origin.get("size", DEFAULT)
    if origin not in (DEFAULT, TIMM):
        return []
    h, w = teacher.size
    sizes = [size for f in SIZE_FACTORS if max(size := _ladder(teacher, f, 1)) <= WALK_LIMITS[2]]  # as the walk
    if origin == TIMM and image_size is not None and tuple(image_size) not in [*sizes, (h, w)]:
        sizes.append(tuple(image_size))
    return sizes


#: the size probe goes on in the better direction (twice again, or half again) while the score gains this
#: much: a teacher trained at 16 px fed 64 did better at 32 (0.63 against 0.47), and at 32, the size named,
#: it still scored 0.66 where it does 0.91 at 16, with no word once the recipe gave the size (a trial)
WALK_GAIN = 0.02
#: the walk's smallest side, and its largest as a multiple of the size fed and in pixels (a dense teacher at
#: 2048 px on a CPU takes minutes and gigabytes)
WALK_LIMITS = (8, 8, 1024)


def _ladder(teacher: Teacher, factor: float, steps: int) -> tuple[int, int]:
    """The size ``factor ** steps`` times the one fed, each side on its own (at least :data:`WALK_LIMITS`' smallest)."""
    h, w = teacher.size
    return tuple(max(WALK_LIMITS[0], round(side * factor**steps)) for side in (h, w))


def _walked(teacher: Teacher, score: Callable[[], float], best: tuple[int, int], found: dict) -> tuple[int, int]:
    """From ``best`` (twice or half the size fed, scored in ``found``), the size the score leads to on the way:
    each step from the size fed, so odd sides and a side held at the smallest keep their place."""
    factor = next((f for f in SIZE_FACTORS if _ladder(teacher, f, 1) == tuple(best)), None)
    if factor is None:  # image_size, not a step of the ladder
        return best
    largest = min(WALK_LIMITS[1] * max(teacher.size), WALK_LIMITS[2])
    for steps in range(2, 16):
        nxt = _ladder(teacher, factor, steps)
        if nxt == best or max(nxt) > largest:
            return best
        try:
            with sized(teacher, nxt):
                value = score()
        except Exception:  # noqa: BLE001 - a network that cannot take that size was not trained at it
            return best
        if not value >= found[best] + WALK_GAIN:  # NaN: collapsed there
            return best
        found[nxt], best = value, nxt
    return best


def size_finding(
    teacher: Teacher, probed: Probed, image_size: Optional[tuple[int, int]] = None, fed_as: str = ""
) -> Optional[Finding]:
    """The warning, with the size it names, when a teacher fed at a size the recipe did not give (the default,
    ``data.image_size``, or timm's ``pretrained_cfg``) scores far better (as :func:`normalisation_line` asks) at
    twice or half of it, or, fed timm's, at ``image_size`` (a timm network trained by its owner at 32 px was
    fed 176 px, no size tried); else None. ``fed_as``: as :func:`channel_order_line`'s."""
    score, current, images, classes, measure = probed.parts()
    sizes = size_candidates(teacher, image_size)
    if not current < PROBE_BELOW or not sizes:
        return None
    results = {}
    for size in sizes:
        try:
            with sized(teacher, size):
                results[size] = score()
        except Exception:  # noqa: BLE001 - a network that cannot take that size was not trained at it
            continue
    found = {size: v for size, v in results.items() if v == v}
    if not found:
        return None
    best = max(found, key=found.get)
    if not _far_better(found[best], current, classes):
        return None
    best = _walked(teacher, score, best, found)
    (h, w), origin = teacher.size, teacher.input_spec.origin.get("size", DEFAULT)
    given = "the default: data.image_size" if origin == DEFAULT else TIMM
    line = (
        f"teacher {teacher.name} has a {measure} of {current:.2f} on {images} eval images fed at {h}x{w}"
        f" ({given}){fed_as} and {found[best]:.2f} at {best[0]}x{best[1]}: set"
        f" teachers.{teacher.name}.input.size: [{best[0]}, {best[1]}], or the size it was trained at; as fed it is"
        " no reference"
    )
    return Finding(line, size=best, score=found[best])
