"""Frozen teachers: each sees the batch converted to its own input spec and answers in canonical form."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from typing import Iterable, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from amalgam.config.label_entries import space_of
from amalgam.config.schema import Recipe, TeacherConfig
from amalgam.errors import AmalgamError
from amalgam.labels import LabelSpace
from amalgam.plugin_contract import check_plugin
from amalgam.task import Task, get_task
from amalgam.teachers.checks import (  # noqa: F401 - the unused ones: importable from here before the split
    check_as_trained,
    check_teacher_output,
    check_teacher_precision,
    check_teacher_wrap,
    output_fit,
)
from amalgam.teachers.fingerprint import weight_digests
from amalgam.teachers.inputs import ResolvedInput, resolve_input, timm_tag_note
from amalgam.teachers.model_sources import build_model, load_checkpoint, unloaded_note
from amalgam.teachers.outputs import OutputChoice, resolve
from amalgam.teachers.subteachers import SubTeacher, build_subteacher
from amalgam.teachers.taps import FeatureTap, TapNotRun

#: the attribute of a network that says why it runs contiguous (:attr:`Teacher.contiguous_reason`)
CONTIGUOUS_REASON = "_amalgam_contiguous_reason"


def to_input(images: torch.Tensor, size: tuple[int, int], channels: int, mean, std, bgr: bool = False) -> torch.Tensor:
    """Converts ``[B, 3, H, W]`` RGB images in [0, 1] to a network's input spec.

    Resizes (bilinear, antialiased when shrinking), converts to grey by luminance when the network
    takes one channel, reverses the channels for a BGR network (``bgr``: ``input.channel_order``),
    and normalises with the network's mean/std (given in its channel order).
    """
    if tuple(images.shape[-2:]) != tuple(size):
        shrink = size[0] < images.shape[-2] or size[1] < images.shape[-1]
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    if channels == 1 and images.shape[1] == 3:
        weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        images = (images * weights).sum(1, keepdim=True)
    if bgr and images.shape[1] == 3:
        images = images.flip(1)
    mean_t = images.new_tensor(mean).view(1, -1, 1, 1)
    std_t = images.new_tensor(std).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


def weights_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of a network's weights (float32 when it has none): a teacher saved in fp16
    (a TorchScript file exported for a GPU) or fp64 takes its input in it."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)


def _as_float32(value: torch.Tensor) -> torch.Tensor:
    """A teacher's floating output (or feature) in float32, as the task, losses and cache read it."""
    return value.float() if value.is_floating_point() else value


class Teacher(nn.Module):
    """A frozen teacher network with its task, label space, input spec and sources.

    ``forward`` takes ``[B, 3, H, W]`` images in [0, 1], its views (``input_spec``; other sizes are
    stretched to its size), and returns the task's canonical output (e.g. logits over the teacher's
    own labels) on them; amalgam/teachers/inputs.py ``answer`` feeds it views made from the
    originals and brings dense answers back onto the student's grid or a label map's.
    """

    def __init__(self, name: str, task: Task, model: nn.Module, cfg: TeacherConfig, image_size):
        super().__init__()
        self.name = name
        self.task = task
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.input_spec: ResolvedInput = resolve_input(cfg, model, image_size)
        spec = self.input_spec
        self.input_note = timm_tag_note(cfg, model, spec)  # said after the input line (inputs.py)
        self.size, self.channels, self.mean, self.std = spec.size, spec.channels, spec.mean, spec.std
        self.dtype = weights_dtype(model)  # its input's; its outputs are read as float32
        self.output_kind = task.resolve_output_kind(cfg.output)
        self.output_given = cfg.output != "default"  # else the task's first kind, said in output_note
        self.output_key: Optional[str] = cfg.output_key
        self.unused_outputs: tuple[int, ...] = tuple(getattr(cfg, "unused_outputs", ()) or ())
        #: the selected output's unit to the task's (``output_scale``: 0.001 for millimetres of depth)
        self.output_scale: float = getattr(cfg, "output_scale", None) or 1.0
        self.output_choice: Optional[OutputChoice] = None  # resolved on the first run (see outputs.py)
        self.checkpoint_note = ""  # which entry of a checkpoint wrapper was loaded (model_sources.py)
        self.notes: list[str] = []  # rules the teacher check applied (a dense output's stride), said with output_note
        self.space: Optional[LabelSpace] = space_of(cfg.labels, cfg.background) if task.labelled else None
        self.source_names: list[str] = list(cfg.sources or [])
        self.eval_name: Optional[str] = cfg.eval
        self.tap: Optional[FeatureTap] = None
        self.channels_last = False
        #: why this teacher stays contiguous (NCHW) under ``train.channels_last`` (None: it may switch)
        self.sub: Optional[SubTeacher] = build_subteacher(cfg.wrap.type, cfg.wrap.kwargs()) if cfg.wrap else None
        self.wrap: Optional[str] = cfg.wrap.type if cfg.wrap else None  # named in the report
        #: the wrap's arguments as it holds them (report.json's teacher_wrap_args)
        self.wrap_args: Optional[dict] = self.sub.args() if self.sub else None

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)  # teachers stay in eval mode (BatchNorm, dropout)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """The batch converted to this teacher's input spec."""
        x = to_input(images, self.size, self.channels, self.mean, self.std, self.input_spec.bgr).to(self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @property
    def contiguous_reason(self) -> Optional[str]:
        """Why the network runs contiguous, not channels_last (it fails there), or None. Kept on the
        network itself: teachers sharing one network (``output_key``) share its memory format."""
        return getattr(self.model, CONTIGUOUS_REASON, None)

    @contiguous_reason.setter
    def contiguous_reason(self, reason: Optional[str]) -> None:
        setattr(self.model, CONTIGUOUS_REASON, reason)

    def use_channels_last(self) -> None:
        """NHWC weights and inputs: Unet/resnet18 inference ran 1.5x faster on this CPU (37 -> 57 img/s).
        A no-op for a teacher kept contiguous (``contiguous_reason``: it fails in channels_last)."""
        if self.contiguous_reason is not None:  # maybe found by another teacher of this network
            self.use_contiguous()
            return
        self.model.to(memory_format=torch.channels_last)
        self.channels_last = True

    def use_contiguous(self) -> None:
        """Back to NCHW weights and inputs (a network that ``.view``s its activations fails in NHWC)."""
        self.model.to(memory_format=torch.contiguous_format)
        self.channels_last = False

    def forward_model(self, x: torch.Tensor) -> object:
        """The network on a prepared input. One whose weights are not float32 (fp16, bf16, fp64) runs
        in its own dtype outside the run's autocast: under bf16 autocast its BatchNorm met bf16
        activations beside fp16 weights and crashed at the first training step ("mixed dtype")."""
        if self.dtype == torch.float32 or x.device.type not in ("cpu", "cuda"):
            return self.model(x)
        with torch.autocast(x.device.type, enabled=False):
            return self.model(x)

    @property
    def deterministic(self) -> bool:
        """Same images, same output (false for stochastic sub-teachers)."""
        return self.sub is None or self.sub.deterministic

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The network on an already prepared input, in canonical form."""
        raw = self.forward_model(x)
        if self.output_choice is None:
            self.output_choice = resolve(raw, self.output_key, self.unused_outputs)
        return self.task.convert_output(self._scaled(self.output_choice.apply(raw)), self.output_kind)

    def _scaled(self, selected: object) -> object:
        """The selected output in float32, times ``output_scale`` (where it is not 1)."""
        selected = _as_float32(selected)
        return selected * self.output_scale if self.output_scale != 1.0 and torch.is_tensor(selected) else selected

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.answer(images)[0]

    @torch.inference_mode()
    def selected_output(self, images: torch.Tensor, gain: float = 1.0, whole: bool = False) -> object:
        """The plain model's output on ``images`` as ``output_key`` selects it, before the task reads it
        (``gain``: the normalised input multiplied by it, as the reading check amplifies images; ``whole``:
        with the channels of ``unused_outputs`` kept)."""
        raw = self.forward_model(self.prepare(images) * gain if gain != 1.0 else self.prepare(images))
        choice = self.output_choice or resolve(raw, self.output_key, self.unused_outputs)
        return self._scaled((replace(choice, dropped=()) if whole else choice).apply(raw))

    @torch.inference_mode()
    def answer(
        self, images: torch.Tensor, tap: Optional[FeatureTap] = None, wrapped: bool = True
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The output on ``images`` and the feature ``tap`` (a tap on this teacher's model) read.

        ``tap`` defaults to the teacher's own ``tap``; with neither, the feature is None. A wrapped
        teacher's feature is the one of the unchanged input (see :meth:`_wrapped_with_tap`).
        ``wrapped=False`` runs the plain model even when the recipe wraps it: the teacher the
        user owns, which evaluation scores (the wrap only shapes the training targets).

        Raises when ``tap`` is not attached to this teacher's model, or its module did not run on
        this call: what it holds then is another network's feature or an earlier batch's.
        """
        tap = tap if tap is not None else self.tap
        x = self.prepare(images)
        sub = self.sub if wrapped else None
        if tap is None:
            return (self.run(x) if sub is None else sub(self._run_copy, self.model, self.task, x)), None
        self._check_tap_owner(tap)
        tap.clear()  # so that a module that does not run leaves nothing, not the last batch's feature
        out = self._run_once(x, tap) if sub is None else self._wrapped_with_tap(x, tap)
        if tap.value is None:
            raise TapNotRun(self.name, tap.module_name)
        return out, _as_float32(tap.value)

    def _run_once(self, x: torch.Tensor, tap: FeatureTap) -> torch.Tensor:
        """:meth:`run`, refusing a tapped module that ran more than once in it (a shared block): only its last
        output would be kept, as the student's taps refuse (:meth:`FeatureTap.take`)."""
        before = tap.calls
        out = self.run(x)
        if tap.calls - before > 1:
            raise AmalgamError(
                f"teacher '{self.name}': tap '{tap.module_name}' ran {tap.calls - before} times in one forward (a"
                " module used twice?) and only its last output would be distilled: tap a module that runs once"
            )
        return out

    def _check_tap_owner(self, tap: FeatureTap) -> None:
        """Refuses a tap hooked on another network than this teacher's (or on none)."""
        owner = tap.model
        if owner is self.model or (owner is not None and any(m is owner for m in self.model.modules())):
            return
        where = "is not attached (FeatureTap.on)" if owner is None else "is attached to another network"
        raise AmalgamError(
            f"teacher '{self.name}': the tap on '{tap.module_name}' {where}: "
            f"make it with FeatureTap.on(teacher.model, '{tap.module_name}', owner)"
        )

    def _run_copy(self, x: torch.Tensor) -> torch.Tensor:
        """A wrap's run, on a copy of its input: a wrap feeds one input to several runs (a flip,
        dropout samples), and a network may edit its input in place (``x.sub_(mean)``)."""
        return self.run(x.clone())

    def _wrapped_with_tap(self, x: torch.Tensor, tap: FeatureTap) -> torch.Tensor:
        """A wrapped teacher's output, leaving in ``tap`` the feature of the unchanged input.

        A wrapper's last run may be on a mirrored or rescaled input, whose feature does not line
        up with the student's; the first run on ``x`` itself is kept (one extra run if none is).
        """
        kept: list[torch.Tensor] = []

        def run(inp: torch.Tensor) -> torch.Tensor:
            first = inp is x and not kept
            if first:  # a run on a rescaled input may have come first: its feature is not x's
                tap.value = None
                out = self._run_once(inp.clone(), tap)  # a copy, as _run_copy's: a net may edit it in place
                kept.append(tap.value)
                return out
            return self._run_copy(inp)

        out = self.sub(run, self.model, self.task, x)
        if not kept:
            tap.value = None
            self.run(x)
            kept.append(tap.value)
        tap.value, tap.calls = kept[0], 1  # the one feature it stands for: take() reads it
        return out

    def wrap_note(self) -> Optional[str]:
        """The recipe's wrap with its arguments and what it shapes, for the log and ``amalgam inspect``
        (None: no wrap)."""
        if self.sub is None:
            return None
        return f"{self.sub.describe()}: shapes its training targets only (evaluation scores the plain model)"

    def input_line(self) -> str:
        """Its input as the log, ``inspect`` and the report say it: every value with its origin, then the timm tag
        its pretrained values are of (:func:`~amalgam.teachers.inputs.timm_tag_note`)."""
        return self.input_spec.describe() + (f"; {self.input_note}" if self.input_note else "")

    def output_note(self) -> str:
        """Which output is distilled and why, for the log and ``amalgam inspect``."""
        choice = self.output_choice
        what = f"output '{choice.key}' ({choice.reason})" if self._key_chosen() else "the output tensor"
        if self.unused_outputs:
            what += f" less its channels {list(self.unused_outputs)} (unused_outputs)"
        if self.output_scale != 1.0:
            what += f" times {self.output_scale:g} (output_scale)"
        return what + self._kind_note() + "".join(f"; {note}" for note in self.notes)

    def output_is_a_choice(self) -> bool:
        """Whether :meth:`output_note` states a choice (a key among several outputs, or a reading
        among the task's several) or a rule the teacher check applied: the build log says those."""
        stated = bool(self.unused_outputs) or self.output_scale != 1.0
        return self._key_chosen() or len(self.task.output_kinds) > 1 or bool(self.notes) or stated

    def _key_chosen(self) -> bool:
        return self.output_choice is not None and self.output_choice.key is not None

    def _kind_note(self) -> str:
        """How the task reads the output, where it can read it several ways (depth: metric, inverse,
        log): a disparity read as metres by default would teach a silently wrong student."""
        if len(self.task.output_kinds) < 2:
            return ""
        origin = "" if self.output_given else f", the default of {', '.join(self.task.output_kinds)}"
        return f", read as {self.output_kind} (output: {self.output_kind}{origin})"

    def num_params(self) -> int:
        """Parameter count of the network."""
        return sum(p.numel() for p in self.model.parameters())


def build_teacher(
    name: str, cfg: TeacherConfig, recipe: Recipe, built: Optional[Mapping[str, Teacher]] = None
) -> Teacher:
    """Builds, loads and checks one teacher of the recipe, in the memory format and precision
    training runs it in (:func:`check_as_trained`).

    ``built``: the teachers built before it. One whose network is this one's (same model block and
    weight files, equal weights: two heads of one network read through ``output_key``) lends it its
    module, so that the network is held once and its parameters counted once (:func:`distinct_params`).
    """
    task = get_task(cfg.task)
    check_plugin(type(task))
    try:
        model = build_model(cfg.model.source, cfg.model.kwargs(), recipe.base_dir)
    except AmalgamError as exc:
        raise AmalgamError(f"teachers.{name}.model: {exc}") from None
    if cfg.checkpoint is not None:
        path, kwargs = recipe.resolve(cfg.checkpoint), cfg.model.kwargs()
        note = load_checkpoint(model, path, f"teacher '{name}'", f"teachers.{name}.model", kwargs)
    else:
        try:
            note = unloaded_note(cfg.model.source, cfg.model.kwargs(), recipe.base_dir, model)
        except AmalgamError as exc:
            raise AmalgamError(f"teachers.{name}.{exc}") from None
    twin = _twin_network(name, model, recipe, built or {})
    teacher = Teacher(name, task, twin.model if twin else model, cfg, recipe.data.image_size)
    teacher.checkpoint_note = note
    if twin is not None:  # the same network fails in channels_last for both, or for neither
        teacher.channels_last = twin.channels_last
    check_as_trained(teacher, recipe)
    if twin is not None:
        teacher.notes.append(
            f"one network with teacher '{twin.name}' (same model and weights): held once, its parameters"
            " counted once in student.budget"
        )
    return teacher


def _twin_network(name: str, model: nn.Module, recipe: Recipe, built: Mapping[str, Teacher]) -> Optional[Teacher]:
    """The teacher built before whose network is ``model``'s: the same model block and weight files
    (:func:`~amalgam.teachers.fingerprint.weight_digests`), and equal weights (a factory without
    a checkpoint may draw random ones on each build: those are two networks)."""
    if not built:
        return None
    key = _network_key(recipe, name)
    for other in built.values():
        if _network_key(recipe, other.name) == key and _same_weights(other.model, model):
            return other
    return None


def _network_key(recipe: Recipe, name: str) -> tuple:
    """What builds a teacher's network: its model block and the digests of its weight files."""
    cfg = recipe.teachers[name]
    kwargs = json.dumps(cfg.model.kwargs(), sort_keys=True, default=str)
    return cfg.model.source, kwargs, tuple(sorted(weight_digests(recipe, name).values()))


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Whether two networks are of one class and hold equal tensors under the same names."""
    if type(a).__qualname__ != type(b).__qualname__:
        return False
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa
    )


def distinct_params(teachers: Iterable[Teacher]) -> int:
    """The teachers' parameters, a network shared by several (:func:`build_teacher`) counted once:
    what ``student.budget`` is a share of."""
    sizes = {id(p): p.numel() for t in teachers for p in t.model.parameters()}
    return sum(sizes.values())


def build_teachers(recipe: Recipe) -> dict[str, Teacher]:
    """Every teacher of the recipe, with its sources defaulted to all sources."""
    teachers: dict[str, Teacher] = {}
    for name, cfg in recipe.teachers.items():
        teacher = build_teacher(name, cfg, recipe, teachers)
        teacher.source_names = teacher.source_names or list(recipe.data.sources)
        teachers[name] = teacher
    return teachers
