"""The task plugin contract: everything amalgam knows about a task comes from a :class:`Task`.

A task plugin is the only place that knows its task: how a student head is built, how a
teacher's raw output becomes the task's canonical form, the distillation loss and the metrics.
Built-in tasks live in ``tasks/`` (installed as ``amalgam_tasks``); third parties register theirs
under the ``amalgam.tasks`` entry-point group, exactly like the built-ins.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, ClassVar, NamedTuple, Optional, Protocol

import torch
from torch import nn

from amalgam.errors import AmalgamError
from amalgam.labels import IGNORE, LabelSpace, apply_lookup
from amalgam.plugin_contract import ensemble_problem, takes_old_form
from amalgam.registry import Registry, load_entry_points


class Meter(Protocol):
    """Accumulates predictions against targets over an evaluation set."""

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None: ...

    def compute(self) -> dict[str, float]: ...


@dataclass(frozen=True)
class DistillOptions:
    """Everything :meth:`Task.distill_loss` is given besides the two outputs (one object, so that a
    new option never changes the method's signature).

    Attributes:
        projection: ``[L_teacher, U]`` boolean label projection (labelled tasks), else None.
        temperature: the recipe's ``amalgamation.temperature``.
        weights: per-sample (dense: per-pixel ``[B, H, W]``) weights, set only with
            ``amalgamation.domain_weights`` for a teacher that knows part of the unified labels.
        after_projection: True only with ``amalgamation.temperature_after_projection`` (labelled tasks):
            soften the student after summing it into the teacher's labels.
        class_balance: ``amalgamation.class_balance`` for dense labelled tasks (0: off): the power of
            the per-pixel class-rarity weights (:mod:`amalgam.kd.class_balance`).
        focal: ``amalgamation.focal`` for dense labelled tasks (0: off): the power of the per-pixel
            weights on what the student misses (:func:`amalgam.kd.class_balance.focal_weights`).
        pseudo_labels: ``amalgamation.pseudo_labels`` for dense labelled tasks (0: off): the weight of a
            cross-entropy on the teacher's top label at each position, with the same position weights.
        output_kind: how the teacher's output is read (its ``output:``, resolved: never ``default``;
            depth's ``relative`` is distilled without its scale and shift). Always given.
    """

    projection: Optional[torch.Tensor] = None
    temperature: float = 1.0
    weights: Optional[torch.Tensor] = None
    after_projection: bool = False
    class_balance: float = 0.0
    focal: float = 0.0
    pseudo_labels: float = 0.0
    output_kind: str = "default"


class EvalReading(NamedTuple):
    """What a task's :attr:`Task.eval_reading` found: ``said`` (its numbers, for the log and the
    teacher's reading line), ``warnings`` (one line each, logged and kept for report.json), ``problem``
    (why the build stops, or None; ``<set>`` in it is replaced by the teacher's eval set), ``rule`` (the
    rule applied, said once in the log) and ``repeated`` (warnings the task says again from the whole
    eval set after training, :meth:`Task.teacher_warnings`: logged now, reported from the whole set only)."""

    said: str
    warnings: list[str]
    problem: Optional[str]
    rule: str = ""
    repeated: tuple[str, ...] = ()


class Task:
    """Base class of task plugins. Subclasses set the class attributes and override the methods.

    Canonical outputs (what teachers are converted to and what the student returns):
    labelled tasks give logits ``[B, C]`` or ``[B, C, H, W]``; others give whatever the task
    documents (depth: ``[B, 1, H, W]`` metres).
    """

    name: ClassVar[str]
    #: True if the student feeds this task a decoder map (the input's resolution, or half of it while
    #: training with a four-block decoder), False for a pooled vector.
    dense: ClassVar[bool]
    #: True if teachers of this task carry label spaces (``labels:`` in the recipe).
    labelled: ClassVar[bool] = False
    #: True if a labelled task's logits are a softmax over mutually exclusive labels (classification,
    #: segmentation): only then may amalgam merge its teachers by probabilities (``amalgamation.ensemble``'s
    #: types, the default :meth:`ensemble`) or take a hard pseudo-label; a multi-label task leaves it False.
    exclusive_labels: ClassVar[bool] = False
    #: Optional: ``eval_reading(teacher, kind, answers, truths) -> EvalReading``, a teacher's reading
    #: (``output:``) checked against its eval set's ground truth before training; the plan runs the
    #: plain teacher on a few eval images for it (``answers`` and ``truths``: lists of what
    #: :meth:`predict` gives and the set's targets). Depth's finds a disparity read as metres. None: no check.
    eval_reading: ClassVar[Optional[Callable[..., "EvalReading"]]] = None
    #: Optional: ``reading_quality(kind, answers, truths) -> float | None``, how well a teacher's answers on
    #: the check's eval images agree with the truth, in [0, 1], blind to the output's unit (None: not
    #: judged for that reading). With it, a teacher the recipe gives no mean/std or channel order is also
    #: tried under the usual others before training, as labelled teachers are (``distill/input_probe.py``).
    reading_quality: ClassVar[Optional[Callable[..., Optional[float]]]] = None
    #: How the input probes' lines name :attr:`reading_quality` ("delta1 (...)" for depth).
    quality_words: ClassVar[str] = "agreement with the truth (reading_quality)"
    #: Extra catch-all label the unified space starts with (segmentation: "background").
    unified_background: ClassVar[Optional[str]] = None
    #: Key of the ground truth in an eval sample: "label", "mask" or "depth".
    target_key: ClassVar[str]
    #: Headline metric of the report and whether higher is better.
    metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    #: Key of a per-class list in the meter's metrics ("iou", "recall"): the report's per-class table.
    per_class_metric: ClassVar[Optional[str]] = None
    #: Ground truth a class needs before the per-class warnings judge it: the unit of the meter's
    #: ``support`` list (items of ground truth per class, if it gives one) and the least count; one image
    #: with recall 0 read as a near-blind teacher.
    per_class_floor: ClassVar[tuple[str, int]] = ("items", 0)
    #: Whether the per-class metric times ``support`` counts the items named right (a recall over images,
    #: each an independent draw): a "lost" warning on a thin class then says when its gap can be chance.
    per_class_counts: ClassVar[bool] = False
    #: Values accepted for a teacher's ``output:`` key (the first is the default).
    output_kinds: ClassVar[tuple[str, ...]] = ("default",)
    #: Optional :class:`DistillOptions` fields :meth:`distill_loss` honours: "weights", "after_projection",
    #: "class_balance", "focal", "pseudo_labels" (a recipe setting one a task does not name is said in the log).
    distill_options: ClassVar[frozenset[str]] = frozenset()
    #: how report.html draws :meth:`visualize`'s ``[H, W]`` maps: a matplotlib colour map, and the colour
    #: bar's unit ("": none)
    picture_cmap: ClassVar[str] = "gray"
    picture_unit: ClassVar[str] = ""

    def resolve_output_kind(self, kind: str) -> str:
        """A teacher's ``output:`` value with ``default`` replaced by the task's first kind."""
        return self.output_kinds[0] if kind == "default" else kind

    def output_layer(self, kind: str) -> Optional[nn.Module]:
        """Layer that turns a freshly trained raw network's output into ``kind`` (None: not needed)."""
        return None

    def build_head(self, in_channels: int, num_outputs: int) -> nn.Module:
        """The student's head: decoder features (dense) or last encoder map (pooled) -> output."""
        raise NotImplementedError

    def num_outputs(self, space: Optional[LabelSpace]) -> int:
        """Output channels of the student's head for the unified label space."""
        if space is None:
            raise NotImplementedError(f"task {self.name} must define num_outputs")
        return len(space)

    def convert_output(self, raw: object, kind: str) -> torch.Tensor:
        """Turns a teacher's raw output into the canonical form (unwrapping dicts/tuples)."""
        if isinstance(raw, dict):
            raw = raw.get("out", next(iter(raw.values())))
        if isinstance(raw, (tuple, list)):
            raw = raw[0]
        return raw

    def check_output(self, out: torch.Tensor, batch: int, space: Optional[LabelSpace]) -> Optional[str]:
        """Describes what is wrong with a teacher's canonical output, or returns None."""
        return None

    def shape_hint(self, out: torch.Tensor, space: Optional[LabelSpace], kind: str) -> str:
        """The setting or fix a refused output's shape points at, as ``" (...)"`` ("" when none does);
        said after :meth:`check_output`'s line, ``<teacher>`` in it replaced by the teacher's name (a key
        path: ``teachers.<teacher>.labels``). Default: an extra axis of size 1 (``[B, 1, C, H, W]``)."""
        if isinstance(out, torch.Tensor) and out.dim() == 5 and 1 in out.shape[1:3]:
            return f" (an extra axis of size 1: return out.squeeze({1 if out.shape[1] == 1 else 2}))"
        return ""

    def teacher_warnings(self, teacher: str, metrics: dict) -> list[str]:
        """Lines warning that a teacher's own scores on its eval set cannot be trusted as a reference
        (beyond the per-class ones of ``per_class_metric``); said in the log, report and ``amalgam eval``.
        ``metrics`` is the teacher meter's result, ``{}`` where the teacher was not scored."""
        return []

    def labels_problem(self, names: list[str]) -> Optional[str]:
        """Why a teacher's labels (names in output order) cannot be read by this task (None if they can)."""
        return None

    def reading_problem(self, raw: object, kind: str) -> Optional[str]:
        """Why a teacher's output before :meth:`convert_output` (the selected tensor) cannot be of its
        ``output: kind`` (None if it may be). Checked once, at the teacher check, after the shape and
        NaN checks of the converted output."""
        return None

    def mark_no_answer(self, out: torch.Tensor) -> torch.Tensor:
        """A teacher's dense canonical output with the pixels where it gives no answer set to NaN,
        before it is resized or undone onto another frame (depth: values <= 0). A task that marks
        them (:attr:`marks_holes`) has its answers resized around the holes: each pixel averages the
        answers near it that exist, no blend of an answer and a non-answer passes for an answer, and a
        hole does not spread over a shrinking kernel. Default: unchanged, and a NaN (the teacher's own
        failure) spreads so that :meth:`nonfinite_rows` finds it."""
        return out

    def resize_space(self, out: torch.Tensor, kind: str, back: bool = False) -> torch.Tensor:
        """A dense canonical answer of a teacher reading ``kind`` moved into the space it is resized in (``back``:
        moved back), elementwise: a resize blends neighbours, and the blend of two disparities is not the blend
        of their depths. Applied around every resize of a teacher's answer and of the student's in that
        teacher's row, so both are resized alike. Default: resized as it is."""
        return out

    @property
    def marks_holes(self) -> bool:
        """Whether :meth:`mark_no_answer` is the task's own: its NaN are holes, not failures."""
        return type(self).mark_no_answer is not Task.mark_no_answer

    def nonfinite_rows(self, out: torch.Tensor) -> torch.Tensor:
        """``[B]`` bool: the rows of a teacher's canonical output (after :meth:`mark_no_answer`: a
        training target, or its answer on eval images) that hold the teacher's own NaN or inf. Such
        rows teach nothing and are left out of its term and its (and the student's) scores, counted.
        Default: any non-finite value; a task whose :meth:`mark_no_answer` writes NaN tells its
        marks from the teacher's (depth: the teacher's own become +inf)."""
        flat = out.reshape(out.shape[0], -1) if out.dim() > 1 else out[:, None]
        return ~torch.isfinite(flat).all(1)

    def nonfinite_any(self, out: torch.Tensor) -> torch.Tensor:
        """0-d bool: whether :meth:`nonfinite_rows` may find a row in ``out``; a cheap gate in front
        of it (training asks it of every target at every step): never false when a row is found,
        rarely true when none is. Default: the float32 sum of ``out`` is not finite (NaN and inf
        survive a sum; a finite sum over 3e38 does not happen with logits): one reduction, about 15x
        cheaper than the per-value test. A task overriding only :meth:`nonfinite_rows` gets its
        ``any()``, which is exact."""
        if type(self).nonfinite_rows is not Task.nonfinite_rows:  # another rule: the sum says nothing of it
            return self.nonfinite_rows(out).any()
        return ~torch.isfinite(out.sum(dtype=torch.float32))

    def output_meaning(self, labels: Optional[list[str]], shape: tuple[int, ...]) -> str:
        """What the student's output of this task is, in words: the ``meaning`` of the ``.json``
        beside an export (which adds a dense output's size). ``labels``: the unified labels in
        output order (None for a task without labels); ``shape``: the output's, batch first.
        Default: :func:`output_meaning`, only what every task's output is known to be."""
        return output_meaning(self.name, labels, shape)

    def taught_meaning(self, labels: Optional[list[str]], shape: tuple[int, ...], readings: list[str]) -> str:
        """:meth:`output_meaning` for a student whose teachers of this task were read as ``readings``
        (their resolved ``output:`` kinds, from the recipe the student holds; empty where it holds none):
        what the output is can follow from them (depth taught only by relative teachers is no metres).
        Default: :meth:`output_meaning`."""
        return self.output_meaning(labels, shape)

    def output_unit(self, readings: list[str]) -> Optional[str]:
        """The unit of the student's output of this task taught through ``readings`` (as
        :meth:`taught_meaning`), the ``unit`` of an export's ``.json`` for programs to check; None: the
        task names none (labelled tasks: logits over the labels listed)."""
        return None

    def unchecked_reading(self, teacher: str, kind: str, answers: list[torch.Tensor]) -> list[str]:
        """Warnings about a teacher with no eval set, read as ``kind``, from its plain answers on a few images
        of its sources (each at the student's size, as :meth:`predict` gives them): what its values alone
        show of a misreading (depth: a median no scene has). Default: none."""
        return []

    def peer_reading(
        self, teacher: str, kind: str, answers: list[torch.Tensor], peer: str, peer_kind: str, peer_answers: list
    ) -> Optional["EvalReading"]:
        """A teacher with no eval set (``teacher``, read as ``kind``) checked against a teacher of the same task
        whose reading its eval set confirmed (``peer``), both run on the same few source images (each answer at
        the student's size, as :meth:`predict` gives it): ``problem`` stops the build, ``warnings`` are said.
        Default: None (no check); depth's stops a disparity read as metres beside a metric teacher (a trial's
        took the student over, with no word)."""
        return None

    def output_note(self, out: torch.Tensor, kind: str) -> str:
        """A rule of this task that a teacher's canonical output on the check batch (``out``, read as
        ``output: kind``) meets, said in the log and by ``amalgam inspect`` with its reading ("" for none;
        depth: the share of values <= 0, left out of its targets)."""
        return ""

    def ensemble(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Combines several canonical outputs for the same images (sub-teachers, test-time transforms,
        ``amalgamation.ensemble`` for a task without :attr:`exclusive_labels`).

        Labelled tasks with :attr:`exclusive_labels` average probabilities and return their log (valid
        logits); other labelled tasks must define their own (a softmax would be wrong for them); tasks
        without labels average values.
        """
        if problem := ensemble_problem(self):
            raise AmalgamError(problem)
        stacked = torch.stack([o.float() for o in outputs])
        if self.labelled:  # log of the mean probability, exact: a floor (1e-8) became 0.01 once softened at T = 4
            return stacked.log_softmax(2).logsumexp(0) - math.log(len(outputs))
        return stacked.mean(0)

    def mirror(self, output: torch.Tensor) -> torch.Tensor:
        """A canonical output (batch first) as the teacher would answer the left-right mirrored images:
        training mirrors half the student's images (``train.augment``) and the teacher cache, and
        ``multi_transform``'s ``flip``, mirror the stored answers with this. Default: a spatial flip of
        dense outputs, values unchanged; per-image outputs unchanged. Override it when values change
        under a mirror: a normal's or a flow's x component changes sign, left/right labels swap."""
        return output.flip(-1) if self.dense else output

    def visualize(self, pred: torch.Tensor) -> Optional[torch.Tensor]:
        """One image's prediction (:meth:`predict`'s, batch axis dropped), or its ground truth, as
        report.html draws it: ``[H, W]`` values (NaN: not drawn) coloured by :attr:`picture_cmap` with
        a colour bar in :attr:`picture_unit`, or ``[H, W, 3]`` RGB in [0, 1]; None: not drawn.
        Default: an ``[H, W]`` map as it is, of ``[C, H, W]`` the first channel (C = 1) or the norm over
        channels; anything else None."""
        if pred.dim() == 2:
            return pred.float()
        if pred.dim() == 3:
            return pred[0].float() if pred.shape[0] == 1 else pred.float().norm(dim=0)
        return None

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor, options: DistillOptions) -> torch.Tensor:
        """Scalar distillation loss of the student's output against one teacher's output.

        Args:
            student: the student's canonical output for the samples this teacher teaches on.
            teacher: the teacher's canonical output on the same samples (dense tasks: on the
                student's input grid; a loss must accept another resolution, e.g. a student with
                a four-block decoder trains on outputs at half of it).
            options: the projection, temperature and optional weighting; a task uses
                ``options.weights`` / ``options.after_projection`` only if it names them in
                :attr:`distill_options` (amalgam says in the log when a recipe sets one it ignores).
        """
        raise NotImplementedError

    def supervised_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss against ground truth (teacher training, label-aware strategies); targets as eval sets give them."""
        raise NotImplementedError(f"task {self.name} has no supervised loss")

    def predict(
        self, output: torch.Tensor, size: tuple[int, int], projection: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Predictions to score: class indices (restricted to a teacher's labels through
        ``projection`` when given) or dense values, resized to ``size`` for dense tasks."""
        raise NotImplementedError

    def map_target(self, target: torch.Tensor, lut: torch.Tensor, labels: int) -> torch.Tensor:
        """An eval set's ground truth over ``labels`` labels (a teacher's, or the unified space's).

        ``lut[i]`` is the label the set's class ``i`` stands for (:data:`~amalgam.labels.IGNORE`: none).
        With :attr:`exclusive_labels` the target holds class indices, each looked up. Otherwise it is one
        multi-hot vector an image, ``[B, C_set]`` (integers come back int64): a label's column is its
        class's (the largest where several classes are one label), and IGNORE where the set has none; the
        meter skips those (its ``restrict(labels)``, where it has one, is given the labels the set holds).
        A task of multi-label maps overrides this: a map of several channels comes as the set loaded it.

        Raises:
            AmalgamError: a multi-hot target without one column per class of the set.
        """
        if self.exclusive_labels:
            return apply_lookup(target, lut)
        return gather_columns(target, lut, labels, self.name)

    def new_meter(self, num_classes: Optional[int]) -> Meter:
        """A fresh metric accumulator; its :meth:`Meter.compute` dict holds :attr:`metric`."""
        raise NotImplementedError

    def as_scored(self, pred: torch.Tensor, truth: torch.Tensor, kind: str) -> torch.Tensor:
        """``pred`` (:meth:`predict`'s, a batch) as :meth:`reading_meter` scores it against ``truth``, for
        pictures: as it is by default; depth's relative readings fitted to the truth per image."""
        return pred

    def unified_reading(self, readings: list[str]) -> Optional[str]:
        """The reading (a teacher's ``output:`` kind) the student's whole-label-space row is scored as, through
        :meth:`reading_meter`, given every teacher's of this task (``readings``); None: :meth:`new_meter`.
        Default: the reading they all share, else None."""
        return readings[0] if readings and len(set(readings)) == 1 else None

    def reading_meter(self, num_classes: Optional[int], kind: str) -> Meter:
        """The meter scoring a teacher read as ``kind`` (its ``output:``), and the student on its
        labels. Default: :meth:`new_meter`; depth's ``relative`` teachers, and the student beside
        them, are scored after a per-image scale-and-shift fit."""
        return self.new_meter(num_classes)


def map_size(target: torch.Tensor, batched: bool = True) -> tuple[int, int]:
    """A dense ground truth's height and width. A map comes ``[B, H, W]``, or channels last
    ``[B, H, W, C]`` when it has several channels (as an eval set loads it; ``batched=False``: one
    image's, without ``B``): its last two axes are not always its size."""
    lead = 1 if batched else 0
    return (int(target.shape[lead]), int(target.shape[lead + 1]))


def output_dims(shape: tuple[int, ...]) -> str:
    """An output's dimensions in words, batch first: ``batch, 11, 64, 64``."""
    return ", ".join(["batch", *map(str, shape[1:])])


def output_meaning(task: str, labels: Optional[list[str]], shape: tuple[int, ...]) -> str:
    """What any task's output is known to be, without its plugin (:meth:`Task.output_meaning`'s
    default): canonical logits over the labels listed (labelled tasks), or values in the unit the
    student was trained on."""
    if labels is not None:
        return f"{task} logits [{output_dims(shape)}] over the labels listed, in their order"
    return f"{task} [{output_dims(shape)}] in the unit the student was trained on"


TASKS: Registry[type[Task]] = Registry("task")


def get_task(name: str) -> Task:
    """An instance of the task plugin registered as ``name`` (built-in or third-party).

    Raises:
        AmalgamError: when its class calls itself by another ``name`` (the engine keys its routing,
            heads and reports by it: the registered name was a KeyError deep in training).
    """
    load_entry_points(TASKS, "amalgam.tasks")
    task = TASKS.get(name)()
    if problem := name_problem(name, task.name):
        raise AmalgamError(problem)
    return task


def name_problem(registered: str, own: object) -> Optional[str]:
    """Why a task registered as ``registered`` whose class says ``name = own`` cannot be used, or None."""
    if own == registered:
        return None
    return (
        f"task plugin registered as '{registered}' ({TASKS.origin(registered)}) has name = {own!r}: make its class"
        " attribute name and its entry point's name one"
    )


def task_names() -> list[str]:
    """Every task name found, built-ins and plugins."""
    load_entry_points(TASKS, "amalgam.tasks")
    return TASKS.names()


def gather_columns(target: torch.Tensor, lut: torch.Tensor, labels: int, task: str) -> torch.Tensor:
    """A multi-hot ``[B, C_set]`` target as ``[B, labels]`` (integers as int64): column ``lut[i]`` takes the
    set's column ``i`` (the largest of several), IGNORE where no column of the set is that label."""
    if target.dim() != 2 or target.shape[1] != len(lut):  # a map's layout is the plugin's own: its map_target
        raise AmalgamError(
            f"task {task}: an eval set's ground truth is multi-hot [B, {len(lut)}], one column per class of the set,"
            f" got shape {list(target.shape)} (its labels are not exclusive: exclusive_labels is False; a task of"
            " multi-label maps defines map_target)"
        )
    target = target if target.is_floating_point() else target.long()  # a bool or uint8 cannot hold IGNORE
    lut = lut.to(target.device)
    kept = lut != IGNORE
    # one scatter, not a loop over the columns: IGNORE entries (and labels no column fills) stay below any value
    known = torch.where(target == IGNORE, torch.full_like(target, -1), target)[:, kept]
    out = torch.full((target.shape[0], labels), -1, dtype=target.dtype, device=target.device)
    out = out.scatter_reduce(1, lut[kept].expand(target.shape[0], -1), known, reduce="amax")
    return out.masked_fill(out == -1, IGNORE)


#: how a labelled task (classification, segmentation) may read a teacher's output (``output:``):
#: one channel per label (logits, softmax probabilities, per-label sigmoid probabilities), or one
#: channel for a two-label space (the second label's logit or sigmoid probability)
LABELLED_OUTPUT_KINDS = ("logits", "probabilities", "sigmoid", "binary", "binary_probability")
_EPS = 1e-6  # probabilities are clamped to [eps, 1 - eps] before their log or logit
# values that must all lie in [0, 1] before logits are taken for sigmoids: a handful of small
# logits of an untrained stand-in can, by chance
SIGMOID_EVIDENCE = 16


#: what probabilities sum to over the labels: 1, or 100 as percentages (``softmax * 100``)
PROBABILITY_SUMS = (1.0, 100.0)


def constant_sum(probs: torch.Tensor) -> Optional[float]:
    """1 or 100 when a non-negative output sums to it at every position (probabilities, percentages),
    else None. Their log is a logit up to a constant, which softmax ignores, so either is read right
    as ``output: probabilities``. Other constants are not taken: confident logits ``6 * one_hot`` sum to 6."""
    probs = probs.float()
    if probs.numel() == 0 or probs.dim() < 2 or probs.shape[1] < 2 or probs.min() < -1e-6:
        return None
    sums, tolerance = probs.sum(1), _sum_tolerance(probs)
    for total in PROBABILITY_SUMS:
        if torch.allclose(sums, torch.full_like(sums, total), rtol=0.0, atol=tolerance * total):
            return total
    return None


#: how far from its constant a float32 output's sums may be (a softmax's rounding is far below it)
SUM_TOLERANCE = 1e-3


def _sum_tolerance(values: torch.Tensor) -> float:
    """:data:`SUM_TOLERANCE`, or twice the rounding step of a half-precision output's values (every value a
    bf16 or fp16 number): a bf16 softmax's sums lie 0.996 to 1 and read as no probabilities."""
    for dtype in (torch.bfloat16, torch.float16):
        if torch.equal(values, values.to(dtype).float()):
            return max(SUM_TOLERANCE, 2 * torch.finfo(dtype).eps)
    return SUM_TOLERANCE


def _at_most_one(out: torch.Tensor) -> bool:
    """Whether a non-negative output sums to at most 1 (within its rounding) at every position."""
    out = out.float()
    return out.numel() > 0 and out.dim() >= 2 and bool((out.sum(1) <= 1 + _sum_tolerance(out)).all())


def _in_unit_range(out: torch.Tensor) -> bool:
    return out.numel() > 0 and out.min() >= 0 and out.max() <= 1


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.float().clamp(_EPS, 1 - _EPS)
    return p.log() - (-p).log1p()


class ReadingError(AmalgamError):
    """A teacher's output cannot be read as its ``output:`` kind (the teacher check names the key)."""


def _one_channel(out: torch.Tensor, kind: str) -> torch.Tensor:
    out = out.unsqueeze(1) if out.dim() == 1 else out  # a classifier's [B] logit
    if out.dim() < 2 or out.shape[1] != 1:
        raise ReadingError(f"output: {kind} reads one channel (the second label's score), got {list(out.shape)}")
    return out


class LabelledOutputs:
    """A labelled task's readings of a teacher's output (``output:``), each turned into logits:
    ``logits`` as they are; ``probabilities`` (a network ending in softmax) as their log, which
    softmax turns back into them; ``sigmoid`` (one sigmoid per label) as their logit; ``binary`` and
    ``binary_probability`` (one channel, the second label's logit or sigmoid, for a two-label space)
    as the two logits [0, z]. Mixed in before :class:`Task`.

    Every reading ends as logits of a softmax over the labels, so the labels are exclusive
    (:attr:`Task.exclusive_labels`): a plugin built on this mixin merges and wraps as the built-in
    tasks do, as it did before that attribute existed."""

    output_kinds: ClassVar[tuple[str, ...]] = LABELLED_OUTPUT_KINDS
    exclusive_labels: ClassVar[bool] = True

    def output_layer(self, kind: str) -> Optional[nn.Module]:
        # a raw network learns logits; these layers make it answer the other per-label readings
        layers = {"probabilities": nn.Softmax(dim=1), "sigmoid": nn.Sigmoid(), "binary_probability": nn.Sigmoid()}
        return layers.get(kind)

    def convert_output(self, raw: object, kind: str) -> torch.Tensor:
        out = super().convert_output(raw, kind)  # type: ignore[misc]
        if kind == "probabilities":  # only a 0 is floored: a floor at 1e-8 is 0.01 of the top label at T = 4
            return out.float().clamp_min(torch.finfo(torch.float32).tiny).log()
        if kind == "sigmoid":
            return _logit(out)
        if kind in ("binary", "binary_probability"):
            z = _one_channel(out, kind).float()
            z = _logit(z) if kind == "binary_probability" else z
            return torch.cat([torch.zeros_like(z), z], 1)
        return out

    def shape_hint(self, out: torch.Tensor, space: Optional[LabelSpace], kind: str) -> str:
        """Hints every labelled task shares: an integer class map, one channel for two labels."""
        if space is None or not isinstance(out, torch.Tensor) or out.dim() == 0:
            return ""
        if not out.is_floating_point() and out.dim() in (1, 3):
            return " (an integer class map, not scores: export the network's logits)"
        one_channel = out.dim() == 1 or out.shape[1] == 1
        if len(space) == 2 and one_channel and kind not in ("binary", "binary_probability"):
            return " (one channel for two labels: set output: binary (a logit) or binary_probability (a sigmoid))"
        if out.dim() >= 2 and out.shape[1] > len(space):
            return (
                f" ({out.shape[1] - len(space)} more channels than labels: name them in teachers.<teacher>.labels,"
                " or list them in teachers.<teacher>.unused_outputs)"
            )
        if out.dim() in (2, 4) and out.is_floating_point() and out.shape[1] < len(space):
            return (
                f" ({out.shape[1]} channels for {len(space)} labels: teachers.<teacher>.labels lists one label per"
                " output channel)"
            )
        return super().shape_hint(out, space, kind)

    def labels_problem(self, names: list[str]) -> Optional[str]:
        if len(names) > 1:
            return None  # softmax over one label is 1 everywhere: the teacher would teach nothing
        return (
            f"one label ({names[0]}) teaches nothing (its softmax is 1 everywhere): for a one-channel binary model"
            f" give [background, {names[0]}] with output: binary (a logit) or binary_probability (a sigmoid)"
        )

    def reading_problem(self, raw: object, kind: str) -> Optional[str]:
        """Why the output cannot be ``kind`` (see :meth:`Task.reading_problem`)."""
        out = super().convert_output(raw, kind).float()  # type: ignore[misc] # only unwrapped
        if kind == "logits":
            return probabilities_problem(out)
        if kind == "probabilities" and constant_sum(out) is None:
            sums = out.sum(1)
            part = (  # a softmax over more outputs than it returns: its share of the labels is no distribution
                "; if the model's softmax runs over more outputs than it returns, return them all and list the"
                " extra ones in unused_outputs"
                if _at_most_one(out)
                else ""
            )
            return (
                f"read as probabilities, but the output is not (sums over the labels {sums.min().item():.3g} to"
                f" {sums.max().item():.3g}): if it is logits, drop output: probabilities{part}"
            )
        if kind in ("sigmoid", "binary_probability") and not _in_unit_range(out):
            fix = "set output: binary" if kind == "binary_probability" else f"drop output: {kind}"  # a logit's own
            return (
                f"read as sigmoid probabilities, but values lie outside [0, 1] ({out.min().item():.3g} to"
                f" {out.max().item():.3g}): if they are logits, {fix}"
            )
        if kind == "sigmoid" and out.dim() >= 2 and out.shape[1] >= 3 and constant_sum(out) == 1:
            # independent sigmoids of 3+ labels never sum to 1 everywhere: softmax targets read as sigmoids
            # were sharper than the teacher's (softened top class 0.91 against 0.82)
            return (
                "read as sigmoids, but they sum to 1 over the labels everywhere, as a softmax does: set output:"
                " probabilities"
            )
        if kind == "binary" and out.numel() >= SIGMOID_EVIDENCE and _in_unit_range(out):
            return "read as a logit, but every value lies in [0, 1] as probabilities do: set output: binary_probability"
        return None


def probabilities_problem(out: torch.Tensor) -> Optional[str]:
    """Why a labelled teacher's output, distilled as logits, is not (None if it may be).

    An output that is non-negative and sums to the same constant over its labels at every position
    is probabilities (1) or percentages (100); one whose every value lies in [0, 1] without summing to
    1 is sigmoids. Read as logits, either gives ``softmax(p / T)`` near uniform (or one-hot for
    percentages), and the student would learn the wrong targets from it without a word.
    """
    if (total := constant_sum(out)) is not None:
        return (
            f"the output sums to {total:.4g} over its {out.shape[1]} labels at every position, as probabilities do,"
            " but is distilled as logits (softened into near-uniform targets): set output: probabilities (amalgam takes"
            " their log), or return the logits (drop the model's final softmax)"
        )
    if out.shape[1] > 1 and out.numel() >= SIGMOID_EVIDENCE and _in_unit_range(out):
        if _at_most_one(out):  # a softmax less some of its outputs, too
            return (
                "every value of the output lies in [0, 1] and sums to at most 1 over the labels, as sigmoids do or a"
                " softmax over more outputs than the labels, but is distilled as logits (softened into near-uniform"
                " targets): set output: sigmoid if the model ends in sigmoids; if in a softmax over more outputs,"
                " return them all, list the extra ones in unused_outputs and set output: probabilities; or return"
                " the logits"
            )
        return (
            "every value of the output lies in [0, 1], as sigmoid probabilities do, but is distilled as logits"
            " (softened into near-uniform targets): set output: sigmoid (amalgam takes their logit), or return"
            " the logits (drop the model's final sigmoid)"
        )
    return None


def require(condition: bool, message: str) -> None:
    """Raises :class:`AmalgamError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise AmalgamError(message)


def distill(task: Task, student: torch.Tensor, teacher: torch.Tensor, options: DistillOptions) -> torch.Tensor:
    """``task.distill_loss`` in the documented form; a plugin still in the 0.1 form
    ``distill_loss(student, teacher, projection, temperature)`` is called that way, with a
    DeprecationWarning (it is never given weights: it declares none in ``distill_options``)."""
    if _old_form(type(task)):
        warnings.warn(
            f"task plugin '{task.name}': distill_loss(student, teacher, projection, temperature) is deprecated;"
            " write distill_loss(self, student, teacher, options) (see docs/plugins.md)",
            DeprecationWarning,
            stacklevel=2,
        )
        return task.distill_loss(student, teacher, options.projection, options.temperature)
    return task.distill_loss(student, teacher, options)


@lru_cache(maxsize=None)
def _old_form(cls: type) -> bool:
    return takes_old_form(cls)
