"""A teacher held against its eval set before training: what a build would otherwise say only after the
whole schedule, or never.

The set must hold the teacher's ground truth and name its labels (:func:`check_eval_set`); the task's
own reading check (depth upside down); the label-order check on a few images (labels out of the
order of the outputs, a near-blind teacher, a mean/std it was not trained with, a label the set
names otherwise). Each runs the plain teacher on a handful of eval images, scored as evaluation
scores them.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

import torch

from amalgam.data import ImageSet
from amalgam.data.image_set import spread
from amalgam.data.views import BatchViews
from amalgam.distill.input_probe import (
    PROBE_COMPETENT,
    Probed,
    attributes_set,
    channel_order_line,
    fed,
    mean_iou,
    mean_recall,
    normalisation_finding,
    normalisation_hint,
    reversed_channels,
    size_candidates,
    size_finding,
    sized,
)
from amalgam.errors import AmalgamError, RecipeError
from amalgam.evaluation.metrics import ConfusionMatrix
from amalgam.evaluation.per_class import label_order_warning
from amalgam.labels import IGNORE, LabelSpace, apply_lookup, lookup, missing_labels
from amalgam.labels.names import IGNORE_NAMES, fold, look_alikes, shown
from amalgam.labels.relations import unnamed_label_lines
from amalgam.task import Task, map_size
from amalgam.teachers.inputs import RECIPE, answer_views
from amalgam.teachers.teacher import Teacher

if TYPE_CHECKING:  # annotations only: the plan runs these checks
    from amalgam.distill.plan import Plan


#: eval images a task's reading check runs a teacher on before training (spread over the set as scored)
READING_CHECK_IMAGES = 16


def said_before_training(plan: Plan, log: Callable[[str], None], line: str) -> None:
    """Logs a warning of these checks and keeps it for report.json (``plan.teacher_warnings``): a
    teacher fed what it was not trained with still builds, and its report read healthy."""
    log(f"warning: {line}")
    plan.teacher_warnings.append(line)


def exif_doubt(dataset: ImageSet, name: Optional[str]) -> str:
    """Where the eval set's images read upright include EXIF-turned ones that fit their maps either way (turned
    180 degrees, or square), the reading the maps may have been drawn on instead, said beside a teacher's
    failed check: a trial's teacher, scored on maps drawn on the stored pixels, was told to read its depth as
    inverse."""
    count = dataset.exif_either
    if not count:
        return ""
    return (
        f"; but first: {count} of '{name}''s images are EXIF-turned and fit their maps either way: if its maps"
        f" were drawn on the pixels as stored, set data.eval.{name}.exif: stored and check again"
    )


class ReadingStop(RecipeError):
    """A teacher's reading the check against its eval set stops, with what the check measured (``said``),
    so that teachers stopped alike on one set can be said together (:func:`~amalgam.distill.plan.misread_error`)."""

    def __init__(self, path: str, message: str, said: str):
        super().__init__(path, message)
        self.said = said


def check_reading_on_eval(plan: Plan, teacher: Teacher, dataset: ImageSet, log: Callable[[str], None] = print) -> bool:
    """Checks a teacher's reading against its eval set's ground truth before training, where its task
    has such a check (:attr:`~amalgam.task.Task.eval_reading`, as depth's: a
    disparity read as metres correlates negatively with the truth and would be distilled upside down).

    The plain teacher runs on up to :data:`READING_CHECK_IMAGES` eval images, scored as evaluation
    scores it; the numbers and the rule are said in the log and with the teacher's reading
    (``amalgam inspect``), the check's warnings in the log.

    Returns:
        Whether the check confirmed the reading with nothing to say: such a teacher is the peer of those of
        its task without an eval set (:func:`check_without_truth`).

    Raises:
        RecipeError: on ``teachers.<name>.output`` when the task finds the reading wrong.
    """
    check = teacher.task.eval_reading
    if check is None and teacher.task.reading_quality is None:
        return False
    answers, truths, grey = eval_answers(plan, teacher, dataset, READING_CHECK_IMAGES)
    if check is None:  # a task with a quality and no reading check: its input probes only
        probe_input(plan, teacher, dataset, answers, truths, log, grey)
        return False
    reading = check(teacher.name, teacher.output_kind, answers, truths)
    where = f"against '{teacher.eval_name}' before training"
    rule = f"; {reading.rule}" if reading.rule else ""
    log(f"teacher '{teacher.name}' reading ({teacher.output_kind}) checked {where}: {reading.said}{rule}")
    teacher.notes.append(f"checked {where}: {reading.said}")
    doubt = exif_doubt(dataset, teacher.eval_name)
    if reading.problem:  # a task names the teacher's eval set as data.eval.<set>
        problem = reading.problem.replace("<set>", teacher.eval_name)
        raise ReadingStop(f"teachers.{teacher.name}.output", problem + doubt, reading.said)
    for line in reading.warnings:
        said_before_training(plan, log, line.replace("<set>", teacher.eval_name) + doubt)
    for line in reading.repeated:  # evaluation says it again, measured on every eval image
        log(f"warning: {line}")
    probe_input(plan, teacher, dataset, answers, truths, log, grey)
    return bool(reading.rule) and not (reading.warnings or reading.repeated)  # checked, nothing to say: a peer


#: a ``reading_quality`` from which a small gain with the channels reversed is named: under it a misfed
#: depth teacher's 0.63 moved to 0.65 on 16 images (a competent one's is 0.94-0.98)
QUALITY_COMPETENT = 0.8


def probe_input(
    plan: Plan, teacher: Teacher, dataset: ImageSet, answers: list, truths: list, log, grey: bool = False
) -> None:
    """Tries a teacher of a task with a ``reading_quality`` (depth) under the usual other mean/std and the
    other channel order, where the recipe does not give them, as labelled teachers are tried: a trial's
    depth teachers fed [0, 1] where they wanted [-1, 1], or RGB where they wanted BGR, scored 1.5-2.5x
    worse with no word (delta1 after each image's median scaling: 0.71 and 0.81 against 0.94). ``grey``: the
    images are grey, so their channel order is not probed."""
    quality = teacher.task.reading_quality
    current = quality(teacher.output_kind, answers, truths) if quality else None
    if current is None:
        return
    read = lambda: eval_answers(plan, teacher, dataset, len(truths)).answers  # noqa: E731
    answered = ProbeAnswers(read, teacher, lambda again: quality(teacher.output_kind, again, truths), answers)

    def score() -> float:
        found = answered()
        return float("nan") if found is None else found

    measure = Measure(teacher.task.quality_words, score, current)
    where = f"on {len(truths)} images of '{teacher.eval_name}', before training"
    order = None if grey else measure
    probe_teacher_input(plan, teacher, [measure], order, (len(truths), 0, where), log, QUALITY_COMPETENT)


@dataclass
class Measure:
    """One way the input probes score a teacher on the check's images: ``score()`` as it is fed at the
    time, ``current`` as the recipe feeds it."""

    words: str
    score: Callable[[], float]
    current: float

    def probed(self, images: int, classes: int, current: Optional[float] = None) -> Probed:
        """This measure as the probes take it, on ``images`` images over ``classes`` classes (``current``: the
        score to beat, where not the one as fed)."""
        return Probed(self.score, self.current if current is None else current, images, classes, self.words)


def probe_teacher_input(
    plan: Plan,
    teacher: Teacher,
    measures: list[Measure],
    order: Optional[Measure],
    at: tuple[int, int, str],
    log: Callable[[str], None],
    competent: float = PROBE_COMPETENT,
) -> None:
    """The input probes of every task, in one order: the teacher's mean/std (by each of ``measures`` in
    turn, the first that finds one said); then, fed the mean/std found if one was, its channel order (by
    ``order``) and, where that is not doubted, its size (by the first measure); where no mean/std was found,
    the mean/std again at the size found, or at each size tried (a teacher wanting both another size and
    another mean/std scored low under either fix alone). Each finding is tried with the others, so that one
    build names them all. ``order`` None: the channel order is not probed (grey images: reversing R = G = B
    only reverses the mean/std lists, which a trial's warning read as a BGR teacher). ``at``: the images
    checked, the classes judged (0: a quality without a chance level) and where; ``competent``: the score from
    which a small gain with the channels reversed is named."""
    count, classes, where = at
    found = None
    for measure in measures:
        if found := normalisation_finding(teacher, measure.probed(count, classes)):
            _said(plan, teacher, found.line, "input mean/std", where, log)
            break
    numbers = (", ".join(f"{v:.4g}" for v in values) for values in (found.mean, found.std)) if found else ()
    fed_as = "" if found is None else " with the mean/std proposed (mean [{}], std [{}])".format(*numbers)
    with fed(teacher, found.mean, found.std) if found else nullcontext():
        main, image_size = measures[0], tuple(plan.recipe.data.image_size)
        first = main.score() if found else main.current
        if order is not None:
            order_now = order.score() if found else order.current
            if reordered := channel_order_line(teacher, order.score, order_now, count, order.words, competent, fed_as):
                _said(plan, teacher, reordered, "input channel order", where, log)
                return
        resized = size_finding(teacher, main.probed(count, classes, first), image_size, fed_as)
        if resized:
            _said(plan, teacher, resized.line, "input size", where, log)
    if found is None:
        sizes = [resized.size] if resized else size_candidates(teacher, image_size)
        if _normalisation_at(plan, teacher, measures, sizes, resized is not None, (count, classes, where), log):
            return
    if not (found or resized) and (hint := normalisation_hint(teacher, measures[0].probed(count, classes))):
        _said(plan, teacher, hint, "input mean/std", where, log)  # nothing else found: a hint, never applied


def _normalisation_at(
    plan: Plan,
    teacher: Teacher,
    measures: list[Measure],
    sizes: list[tuple[int, int]],
    proposed: bool,
    at: tuple[int, int, str],
    log: Callable[[str], None],
) -> bool:
    """The mean/std probe with the teacher fed at each of ``sizes``: at the size the size probe ``proposed``
    (against the score there), or at each size it tried (against the score as fed); whether it said one."""
    count, classes, where = at
    findings = []  # (the measure's place, the finding): a recall finding is no better than an IoU one
    for size in sizes:
        with sized(teacher, size):
            for place, measure in enumerate(measures):
                current = measure.score() if proposed else measure.current
                if found := normalisation_finding(teacher, measure.probed(count, classes, current), size, proposed):
                    findings.append((place, found))
                    break  # this size's finding by the first measure that makes one, as at the size fed
    if findings:  # the best of the sizes by the first measure that found any, not the first size that did well
        best = min(findings, key=lambda f: (f[0], -f[1].score))[1]
        _said(plan, teacher, best.line, "input mean/std" + ("" if proposed else " and size"), where, log)
    return bool(findings)


def _said(plan: Plan, teacher: Teacher, line: str, what: str, where: str, log: Callable[[str], None]) -> None:
    """A probe's warning, logged and kept, and its note on the teacher (``<what> doubtful``)."""
    said_before_training(plan, log, f"{line} ({where})")
    teacher.notes.append(f"{what} doubtful {where}")


def input_setting(teacher: Teacher) -> tuple:
    """What a teacher is fed (its size, mean/std, channel order, crop): the key of the probes' runs."""
    spec = teacher.input_spec
    fed_now = (tuple(teacher.size), tuple(teacher.mean), tuple(teacher.std))
    return (*fed_now, spec.channel_order, tuple(spec.size), tuple(spec.mean), tuple(spec.std), spec.crop, spec.resize)


class ProbeAnswers:
    """What the plain teacher's answers on the check's images come to (``summary``: a confusion matrix, a
    quality), run once per input setting: a segmenter's mean/std candidates are scored by mean IoU and again
    by recall, and the channel-order and size probes come back to the setting the mean/std probe proposed;
    each ran the teacher over the images again. Summaries only are kept: a dozen settings' label maps of
    large images held gigabytes."""

    def __init__(
        self,
        read: Callable[[], list[torch.Tensor]],
        teacher: Teacher,
        summary: Callable[[list[torch.Tensor]], Any],
        as_fed: Optional[list[torch.Tensor]] = None,
    ):
        self.read, self.teacher, self.summary = read, teacher, summary
        self.runs: dict[tuple, Any] = {}
        if as_fed is not None:
            self.runs[input_setting(teacher)] = summary(as_fed)

    def __call__(self) -> Any:
        """The summary of the answers under the teacher's input setting now."""
        key = input_setting(self.teacher)
        if key not in self.runs:
            self.runs[key] = self.summary(self.read())
        return self.runs[key]


#: share of the classes seen in the check's images that must each be named mostly as one other class
#: for the label-order warning before training (after training, two such classes are enough: the
#: whole set leaves a competent teacher's confusions no room; 16 images do)
ORDER_SHARE = 0.25
#: ... and at least this many (a weak teacher confuses two classes on 16 images by chance)
ORDER_MIN_CLASSES = 3
#: eval images the label-order check runs a classifier on (one answer per image, not per pixel)
ORDER_CHECK_ITEMS = 160  # five of each of 32 classes (or a spread judging about as many)
#: images a class needs in a classifier's check to be judged (one wrong image is a confusion, not an order)
ORDER_MIN_ITEMS = 2


def check_label_order_on_eval(
    plan: Plan, teacher: Teacher, dataset: ImageSet, log: Callable[[str], None] = print
) -> None:
    """Warns before training when a teacher of one label per pixel or image, on some of its eval images
    (:data:`READING_CHECK_IMAGES` for a dense task; for a classifier :data:`ORDER_CHECK_ITEMS`, a few of
    each class where the set knows its labels), names most of many classes (:data:`ORDER_SHARE` of those
    seen, three at least) as one other class each: its labels, or the set's class names (a
    ``classes.txt`` one line short, label ids read as train ids, folders sorted by name against a model
    trained in another order), are not in the order of its outputs; or when it is blind
    (:func:`blind_line`). Merged with another teacher's labels the student would learn the swap; the
    scores, wrong too, are said only after the whole schedule. What was checked is said with the
    teacher's notes."""
    task, space = teacher.task, teacher.space
    if task.labelled and not task.exclusive_labels and space is not None:  # said, as the mirror check says it
        teacher.notes.append(f"label order not checked (task {task.name} has no exclusive labels)")
        return
    if not (task.labelled and task.exclusive_labels and space is not None and dataset.classes):
        return
    lut = lookup(dataset.classes, space, plan.extents(task.name))
    picks = None if task.dense else per_class_picks(dataset, ORDER_PICKS, ORDER_CHECK_ITEMS)
    answers, truths, grey = eval_answers(
        plan, teacher, dataset, READING_CHECK_IMAGES if task.dense else ORDER_CHECK_ITEMS, picks
    )
    by_set_class = _confusion(answers, truths, len(space), rows=len(dataset.classes))
    truths = [apply_lookup(t, lut) for t in truths]
    matrix = _confusion(answers, truths, len(space))
    judged = _judged(matrix, ORDER_MIN_PIXELS if task.dense else ORDER_MIN_ITEMS)
    where = f"on {len(truths)} images of '{teacher.eval_name}', before training"

    read = lambda: eval_answers(plan, teacher, dataset, len(truths), picks).answers  # noqa: E731
    answered = ProbeAnswers(read, teacher, lambda again: _confusion(again, truths, len(space)), answers)

    def score(metric: Callable = mean_recall) -> float:  # the same images, as fed now; NaN: it collapses there
        found = answered()
        collapsed = blind_line(teacher.name, list(space.names), found, task.dense) is not None
        return float("nan") if collapsed else metric(found, judged)

    mostly = _named_as(matrix, judged, task.dense)
    line = label_order_warning(teacher.name, list(space.names), mostly)
    swapped = sum(j is not None for j in mostly)
    enough = swapped >= max(ORDER_MIN_CLASSES, ORDER_SHARE * len(judged))
    out_of_order = bool(line) and (enough or has_swapped_pair(mostly))
    if not out_of_order:  # labels out of order make any input look wrong: the probes are for a teacher named right
        _probe_labelled_input(plan, teacher, score, matrix, judged, (len(truths), where, grey), log)
    blind = blind_line(teacher.name, list(space.names), matrix, task.dense)
    least, unit = (ORDER_MIN_PIXELS, "pixels") if task.dense else (ORDER_PICKS - 2, "images")
    extent = plan.extents(task.name)
    if hints := unnamed_label_lines(teacher.name, space, dataset.classes, by_set_class, least, unit, where, extent):
        for hint in hints:
            said_before_training(plan, log, hint)
        lacks = "labels the set does not name answered on its classes the teacher lacks"
        teacher.notes.append(f"{len(hints)} {lacks} {where}")
    doubt = (exif_doubt(dataset, teacher.eval_name) if task.dense else "") + _maps_doubt(plan, teacher.eval_name)
    if out_of_order:
        reversed_fix = _order_cleared_by_channels(teacher, read, truths, matrix, judged, task.dense)
        said_before_training(plan, log, f"{reversed_fix or line} ({where}){doubt}")
        teacher.notes.append(
            f"channel order doubtful {where}: its classes named in order with the channels reversed"
            if reversed_fix
            else f"label order doubtful {where}: {swapped} of {len(judged)} classes named as another"
        )
    elif blind:
        fix = f"check its input (value range, mean/std, channel order: teachers.{teacher.name}.input), its checkpoint"
        said_before_training(
            plan, log, f"{blind} {where}: {fix}; a student cannot learn from it what it does not see{doubt}"
        )
        teacher.notes.append(f"near-blind {where}")
    elif len(judged) >= ORDER_MIN_CLASSES:
        teacher.notes.append(f"label order checked {where}: {len(judged)} classes, {swapped} named mostly as another")
    elif len(judged) == 2:  # two classes: a swap of the two is judged (has_swapped_pair), not the count rule
        teacher.notes.append(
            f"label order checked for a swapped pair only {where}: 2 classes judged (the full check needs"
            f" {ORDER_MIN_CLASSES})"
        )
    else:  # said, so that a check that could not judge is not read as passed
        enough = f"{len(judged)} of its classes had enough {unit} there; it judges {ORDER_MIN_CLASSES} or more"
        teacher.notes.append(f"label order not checked {where}: {enough}")


def _maps_doubt(plan: Plan, eval_name: str) -> str:
    """The note that the eval set's own ground truth was warned of (its maps' palettes, values beyond the classes,
    a lossy save): a trial's maps quantized file by file read near-blind, and the line sent it to the teacher's
    input alone ("" when the set's scan said nothing)."""
    prefix = f"data.eval.{eval_name}: "
    if not any(w.startswith(prefix) for w in plan.data_warnings):
        return ""
    return f"; or the set's ground truth, which its scan warned of (data.eval.{eval_name} above)"


def _order_cleared_by_channels(
    teacher: Teacher, read: Callable, truths: list, fed: torch.Tensor, judged: set[int], dense: bool
) -> Optional[str]:
    """The line for a 3-channel teacher that names its classes out of order as fed but in order with its channels
    reversed (a BGR teacher fed RGB: in a trial its red and blue classes read as swapped labels, and the channel
    probe never ran while the order was doubted); None otherwise, or where the recipe states the order."""
    if teacher.channels != 3 or teacher.input_spec.origin.get("channel_order") == RECIPE:
        return None
    with reversed_channels(teacher):
        again = _confusion(read(), truths, len(fed))
    recall = mean_recall(again, judged)  # in order and doing its job, not merely scattered (noise names no one class)
    if any(j is not None for j in _named_as(again, judged, dense)) or recall < max(
        0.5, 1.25 * mean_recall(fed, judged)
    ):
        return None
    other = "rgb" if teacher.input_spec.bgr else "bgr"
    return (
        f"teacher {teacher.name} names its classes out of order as fed ({'BGR' if teacher.input_spec.bgr else 'RGB'})"
        f" and in order with its channels reversed: it was likely trained on {other.upper()} images: set"
        f" teachers.{teacher.name}.input.channel_order: {other} (not its labels)"
    )


def _named_as(matrix: torch.Tensor, judged: set[int], dense: bool) -> list[Optional[int]]:
    """Per class, the other class a confusion ``matrix`` mostly names it as, for the judged classes of an order
    (:func:`order_like`); None elsewhere. Its own thresholds (judged), not the report's, made for a whole set."""
    confusion = ConfusionMatrix(len(matrix))
    confusion.matrix = matrix
    mostly = [j if c in judged else None for c, j in enumerate(confusion.mostly_predicted_as(skip_common=dense))]
    return order_like(mostly, judged)


def has_swapped_pair(mostly: list[Optional[int]]) -> bool:
    """Whether two classes are each named mostly as the other: two labels exchanged, which the count
    rule (three classes at least) let through to training (a trial: Bag and Trouser swapped, said
    only in the report)."""
    return any(j is not None and j < len(mostly) and mostly[j] == c for c, j in enumerate(mostly))


def order_like(mostly: list[Optional[int]], judged: set[int]) -> list[Optional[int]]:
    """The classes named mostly as another (``mostly[c]``) whose other class is itself named as another, or
    not judged: labels out of order shift every class of a cycle, while a competent teacher confusing alike
    classes (T-shirt as Shirt, Pullover as Coat) still names those right; on 16 scenes three such confusions
    read as an order."""
    return [j if j is not None and (j not in judged or mostly[j] is not None) else None for j in mostly]


#: a classifier's check takes this many images of each class, where its eval set knows their labels
ORDER_PICKS = 5
#: pixels a class needs in a dense teacher's check to be judged (a stray pixel is no class)
ORDER_MIN_PIXELS = 64
#: recall under which a class counts as unseen (the report's near-blind rule, after training)
BLIND_RECALL = 0.1
#: blind on this share of the judged classes (two at least), each with this many entries: pixels, images
BLIND_SHARE = 0.5
BLIND_MIN_CLASSES = 2
BLIND_MIN_PIXELS = 256
BLIND_MIN_ITEMS = ORDER_PICKS  # the check takes this many of each class where the set knows them (at 3, a
#: 40%-accurate classifier read as near-blind on 4 classes one time in five)
#: a classifier naming one class for this share of the images, where the truth holds three or more
COLLAPSED_SHARE = 0.9


def blind_line(teacher: str, names: list[str], matrix: torch.Tensor, dense: bool) -> Optional[str]:
    """The warning's head when a teacher finds almost none (recall < :data:`BLIND_RECALL`) of half or
    more of the classes with enough entries (:data:`BLIND_MIN_PIXELS` pixels, :data:`BLIND_MIN_ITEMS`
    images: a weak but real classifier misses two images of a class by chance), or, a classifier,
    names one class for nearly every image (:data:`COLLAPSED_SHARE`) where the truth holds three or more.
    ``matrix``: truth x prediction counts."""
    truth, predicted = matrix.sum(1), matrix.sum(0)
    if not dense and (truth > 0).sum() >= 3 and predicted.max() >= COLLAPSED_SHARE * truth.sum() > 0:
        named, classes = names[int(predicted.argmax())], int((truth > 0).sum())
        return f"teacher {teacher} names one class, '{named}', for {int(predicted.max())} images of {classes} classes"
    judged = [c for c in range(len(names)) if truth[c] >= (BLIND_MIN_PIXELS if dense else BLIND_MIN_ITEMS)]
    blind = [c for c in judged if matrix[c, c] < BLIND_RECALL * truth[c]]
    if len(blind) < max(BLIND_MIN_CLASSES, BLIND_SHARE * len(judged)):
        return None
    shown = ", ".join(f"'{names[c]}'" for c in blind[:5]) + (f" and {len(blind) - 5} more" if len(blind) > 5 else "")
    seen = f"{len(blind)} of the {len(judged)} classes seen"
    return f"teacher {teacher} finds almost none of {seen} ({shown}: recall < {BLIND_RECALL})"


def _confusion(
    answers: list[torch.Tensor], truths: list[torch.Tensor], classes: int, rows: Optional[int] = None
) -> torch.Tensor:
    """Truth x prediction counts over every scored entry (one bincount per image, not one pass per class);
    ``rows``: truth classes of another space than the predictions' (default: the same ``classes``)."""
    rows = classes if rows is None else rows
    matrix = torch.zeros(rows * classes, dtype=torch.long)
    for answer, truth in zip(answers, truths):
        answer, truth = answer.flatten().long(), truth.flatten().long()
        keep = (truth >= 0) & (truth < rows) & (answer >= 0) & (answer < classes)
        matrix += torch.bincount(truth[keep] * classes + answer[keep], minlength=rows * classes)
    return matrix.view(rows, classes)


def _judged(matrix: torch.Tensor, least: int) -> set[int]:
    """Classes with at least ``least`` scored entries (pixels or images)."""
    return {c for c, n in enumerate(matrix.sum(1).tolist()) if n >= least}


def per_class_picks(dataset: ImageSet, each: int, most: int) -> Optional[list[int]]:
    """Up to ``each`` images of each class, of classes spread over the set's, at most ``most`` in all,
    where the set knows every image's label without reading it (an imagefolder set); else None (a
    spread over the set: sorted by class, that held one or two classes of a large label set)."""
    labels = getattr(dataset, "labels", None)
    if not labels:
        return None
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    classes = sorted(by_class)
    chosen = [classes[k] for k in spread(len(classes), max(1, most // each))]
    return [by_class[c][k] for c in chosen for k in spread(len(by_class[c]), min(each, len(by_class[c])))]


def _probe_labelled_input(
    plan: Plan, teacher: Teacher, score: Callable, matrix, judged: set, at: tuple[int, str, bool], log
) -> None:
    """The input probes of a labelled teacher named right (:func:`probe_teacher_input`): a segmenter's mean/std
    by its mean IoU first (its recall hardly moves), then by recall as classifiers' are (a competent segmenter
    of many classes stays under the probe's 0.5 mean IoU); its channel order by mean IoU (a colour swap costs
    precision as much as recall). ``at``: the images checked, where, and whether they are all grey (no channel
    order to probe)."""
    count, where, grey = at
    # a classifier's IoU is its confusion matrix's per class (hits / (hits + misses + false alarms)): said so
    iou_words = "mean IoU" if teacher.task.dense else "mean class IoU (hits / (hits + misses + false alarms))"
    named = ((mean_iou, iou_words), (mean_recall, "mean recall"))
    iou, recall = (Measure(words, partial(score, how), how(matrix, judged)) for how, words in named)
    measures = [iou, recall] if teacher.task.dense else [recall]
    probe_teacher_input(plan, teacher, measures, None if grey else iou, (count, len(judged), where), log)


class EvalAnswers(NamedTuple):
    """A plain teacher's answers on some eval images, their targets, and whether every image is grey."""

    answers: list[torch.Tensor]
    truths: list[torch.Tensor]
    grey: bool  # R = G = B on every image: their channel order cannot be told


def eval_answers(
    plan: Plan, teacher: Teacher, dataset: ImageSet, count: int, indices: Optional[list[int]] = None
) -> EvalAnswers:
    """The plain teacher's predictions (at each target's size, as evaluation scores them) and the
    targets of ``count`` images spread over ``dataset`` (or of ``indices``), one image at a time
    (originals differ in size), and whether all of them are grey."""
    task = teacher.task
    answers, truths, grey = [], [], True
    with with_originals(dataset):
        for index in spread(len(dataset), count) if indices is None else indices:  # one original held at a time
            sample = dataset[index]
            truth = torch.as_tensor(sample[task.target_key])
            answers.append(_plain_answer(plan, teacher, sample, map_size(truth, batched=False) if task.dense else None))
            truths.append(truth)
            grey = grey and is_grey(sample.get("original", sample["image"]))
    return EvalAnswers(answers, truths, grey)


def is_grey(image: torch.Tensor) -> bool:
    """Whether a ``[3, H, W]`` image holds one grey channel three times: its channel order cannot be told."""
    return image.shape[0] == 3 and bool((image[0] == image[1]).all() and (image[1] == image[2]).all())


def with_originals(dataset: ImageSet):
    """``dataset`` giving its decoded originals for the block, also where no teacher's view differs from the
    student's: the size probe's 2x view made from the student's image could not show a teacher trained at twice
    its size (a set that cannot give them, not an ImageSet, is left as it is)."""
    return attributes_set([(dataset, "originals", True)] if hasattr(dataset, "originals") else [])


def _plain_answer(plan: Plan, teacher: Teacher, sample: dict, size: Optional[tuple[int, int]]) -> torch.Tensor:
    """The plain teacher's prediction on one sample (a dense one at ``size``)."""
    # a set that gives no originals (not an ImageSet): the views are made from the student's image
    originals = [sample["original"] if "original" in sample else (sample["image"] * 255).round().to(torch.uint8)]
    views = BatchViews(sample["image"][None], plan.student_view, originals)
    out, _ = answer_views(teacher, views, torch.zeros(1, dtype=torch.long), size, augmented=False, wrapped=False)
    return teacher.task.predict(out, size)[0]


def check_without_truth(plan: Plan, confirmed: set[str], log: Callable[[str], None] = print) -> None:
    """Each teacher with no eval set, run once on :data:`READING_CHECK_IMAGES` images of its first source: what its
    task makes of its values alone (:meth:`~amalgam.task.Task.unchecked_reading`) is warned of, and, where its task
    can compare them (:meth:`~amalgam.task.Task.peer_reading`), it is checked against the first teacher of its task
    whose eval set confirmed its reading, on the same images (a trial's disparity read as metres, beside a checked
    metric teacher, took the student over without a word). Run once every reading an eval set judges has passed.

    Raises:
        RecipeError: on ``teachers.<name>.output`` when the task finds the reading wrong against its peer.
    """
    for teacher in plan.teachers.values():
        if teacher.eval_name or plan.sources is None or not plan.source_ids.get(teacher.name):
            continue
        task = type(teacher.task)
        alone = task.unchecked_reading is not Task.unchecked_reading
        peer = _confirmed_peer(plan, teacher, confirmed) if task.peer_reading is not Task.peer_reading else None
        if not alone and peer is None:  # the task reads nothing from values alone, and has no peer to compare
            continue
        dataset = plan.sources.sets[plan.source_ids[teacher.name][0]]
        found = _source_answers(plan, dataset, [teacher] + ([peer] if peer is not None else []))
        for line in teacher.task.unchecked_reading(teacher.name, teacher.output_kind, found[0]) if alone else ():
            said_before_training(plan, log, line)
        if peer is not None:
            _check_against(plan, teacher, found[0], peer, found[1], log)


def _source_answers(plan: Plan, dataset: ImageSet, teachers: list[Teacher]) -> list[list]:
    """Each of ``teachers``' plain answers on :data:`READING_CHECK_IMAGES` images spread over a source, dense ones
    on the student's grid; one original held at a time (photos differ in size), each read once for them all."""
    size = tuple(plan.recipe.data.image_size) if teachers[0].task.dense else None
    answers: list[list] = [[] for _ in teachers]
    with with_originals(dataset):
        for index in spread(len(dataset), READING_CHECK_IMAGES):
            sample = dataset[index]
            for found, teacher in zip(answers, teachers):
                found.append(_plain_answer(plan, teacher, sample, size))
    return answers


def _confirmed_peer(plan: Plan, teacher: Teacher, confirmed: set[str]) -> Optional[Teacher]:
    """The first teacher of ``teacher``'s task whose reading its eval set confirmed (``confirmed``; a 1.5x-off
    peer would misjudge a right teacher), or None."""
    same = (t for t in plan.teachers.values() if t.task.name == teacher.task.name)
    return next((t for t in same if t.name in confirmed), None)


def _check_against(plan: Plan, teacher: Teacher, answers: list, peer: Teacher, peers: list, log) -> None:
    """:meth:`~amalgam.task.Task.peer_reading` of ``teacher``'s answers against ``peer``'s on the same images."""
    reading = teacher.task.peer_reading(teacher.name, teacher.output_kind, answers, peer.name, peer.output_kind, peers)
    if reading is None:
        return
    log(f"teacher '{teacher.name}' reading ({teacher.output_kind}) checked {reading.said}")
    teacher.notes.append(f"checked {reading.said}")
    if reading.problem:
        raise RecipeError(f"teachers.{teacher.name}.output", reading.problem)
    for line in reading.warnings:
        said_before_training(plan, log, line)


def check_eval_set(
    teacher: Teacher,
    dataset: ImageSet,
    extent: Optional[dict[str, frozenset[str]]] = None,
    log: Callable[[str], None] = print,
    warn: Optional[Callable[[str], None]] = None,
) -> None:
    """The eval set must hold the teacher's kind of ground truth and some of its labels.

    Labels match by name or through the label relations (``extent``). A teacher whose labels are
    only partly in the set is scored on those, and one line says which are absent. ``warn`` (default:
    ``log`` with ``warning:``) takes the lines a report must carry too.
    """
    path = f"teachers.{teacher.name}.eval"
    key = teacher.task.target_key
    if key not in dataset.target_keys:
        hint = dataset.missing_target_hint(key)  # where such a set reads them
        raise RecipeError(
            path, f"eval set '{teacher.eval_name}' has no '{key}' ground truth for a {teacher.task.name} teacher{hint}"
        )
    if teacher.space is None:
        return
    if not dataset.classes:
        raise RecipeError(
            path,
            f"eval set '{teacher.eval_name}' has no class names to match labels against: give it a classes.txt"
            " beside images/ (one name per line, line i = the class of index i in its label maps) or its"
            " classes_file",
        )
    try:
        absent = absent_labels(teacher.space, dataset.classes, extent)
    except AmalgamError as exc:  # a class named like a label (lookup's look-alike rule): say which set
        raise RecipeError(path, f"eval set '{teacher.eval_name}': {exc}") from None
    known = teacher.space.known()
    if len(absent) == len(known):
        # a trial's 'dress' against the set's 'Dress' (another teacher's label, so no look-alike stop) got no hint
        alike = look_alikes(known, dataset.classes)
        pairs = ", ".join(
            f"{shown(n)} is the set class {shown(a[0])} but for how it is written" for n, a in alike.items()
        )
        hint = (
            f"; {pairs}: relate them in the labels ({{{next(iter(alike))!r}: {next(iter(alike.values()))[0]!r}}})"
            if alike
            else ""
        )
        raise RecipeError(
            path,
            f"none of the teacher's {len(known)} labels is in eval set '{teacher.eval_name}' "
            f"(its labels: {shorten(known)}; the set's classes: {shorten(dataset.classes)}){hint}",
        )
    if absent:
        log(
            f"teacher '{teacher.name}' is scored on {len(known) - len(absent)} of its {len(known)} labels on "
            f"'{teacher.eval_name}'; absent from the set: {shorten(absent)}"
        )
    _check_target_maps(teacher, dataset, extent)
    unscored, as_background = outside_labels(teacher.space, dataset.classes, extent)
    where = f"teacher '{teacher.name}' on '{teacher.eval_name}'"
    if unscored:
        log(f"{where}: not scored on the set's classes it has no label for: {shorten(unscored)}")
    unannotated = [c for c in as_background if fold(c) in IGNORE_NAMES]
    if unannotated:  # a trial's Cityscapes-like '0 unlabeled' borders read mIoU 0.547 against 0.678 ignored
        (warn or (lambda line: log(f"warning: {line}")))(
            f"{where}: the set's {shorten(unannotated)} count{'s' if len(unannotated) == 1 else ''} as its"
            " background, as every class outside its labels does: where it marks pixels nobody annotated"
            " (Cityscapes' and COCO-Stuff's 'unlabeled'), the teacher's right answers there are scored wrong;"
            " write those pixels as 255 (ignore) in the maps to leave them unscored, or name the class"
            " 'background' in the set's classes where it is background"
        )
    if as_background := [c for c in as_background if c not in unannotated]:
        log(f"{where}: the set's classes outside its labels count as its background: {shorten(as_background)}")


def _check_target_maps(teacher: Teacher, dataset: ImageSet, extent: Optional[dict[str, frozenset[str]]]) -> None:
    """Maps the set's first ground truth onto the teacher's labels as evaluation will: a target of a layout
    the task cannot read (a class index for a multi-label task) stopped the build only after training."""
    truth = torch.as_tensor(dataset[0][teacher.task.target_key])[None]
    try:
        teacher.task.map_target(truth, lookup(dataset.classes, teacher.space, extent), len(teacher.space))
    except AmalgamError as exc:
        raise RecipeError(f"teachers.{teacher.name}.eval", f"eval set '{teacher.eval_name}': {exc}") from None


def outside_labels(
    space: LabelSpace, classes: list[str], extent: Optional[dict[str, frozenset[str]]]
) -> tuple[list[str], list[str]]:
    """An eval set's classes a teacher has no label for, as :func:`~amalgam.labels.lookup` scores
    them: ``(not scored, counted as the teacher's background)``."""
    lut = lookup(classes, space, extent).tolist()
    covered = {c for name in space.known() for c in space.covered(name)}
    unscored = [c for c, i in zip(classes, lut) if i == IGNORE]
    named = {*space.known(), space.background}
    uncovered = [c for c in classes if c not in named and not (extent or {}).get(c, frozenset([c])) & covered]
    return unscored, [c for c in uncovered if c not in unscored]


def absent_labels(space: LabelSpace, classes: list[str], extent: Optional[dict[str, frozenset[str]]]) -> list[str]:
    """The named labels of ``space`` that no class of an eval set maps to."""
    return missing_labels(space, lookup(classes, space, extent))


def shorten(names: list[str], count: int = 8) -> str:
    """``a, b, c and 12 more``: long label lists stay one readable line (names holding a comma quoted,
    ``'tench, Tinca tinca', 'goldfish, Carassius auratus'``, so that their boundaries show)."""
    quoted = any("," in n for n in names[:count])
    shown = ", ".join(repr(n) if quoted else n for n in names[:count])
    return shown + (f" and {len(names) - count} more" if len(names) > count else "")
