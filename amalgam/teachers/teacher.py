"""Frozen teachers: each sees the batch converted to its own input spec and answers in canonical form."""

from __future__ import annotations

import itertools
import json
import re
from typing import Iterable, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from amalgam.config.label_entries import space_of
from amalgam.config.schema import Recipe, TeacherConfig
from amalgam.errors import AmalgamError, error_line, under_key
from amalgam.labels import LabelSpace
from amalgam.plugin_contract import check_output_problem, check_plugin, ensemble_problem, head_problem, metric_problem
from amalgam.task import SIGMOID_EVIDENCE as READING_VALUES
from amalgam.task import ReadingError, Task, get_task
from amalgam.teachers.fingerprint import weight_digests
from amalgam.teachers.inputs import DEFAULT, RECIPE, TIMM, ResolvedInput, resolve_input
from amalgam.teachers.model_sources import build_model, load_checkpoint, unloaded_note
from amalgam.teachers.outputs import OutputChoice, OutputKeyError, resolve
from amalgam.teachers.subteachers import SubTeacher, build_subteacher
from amalgam.teachers.taps import FeatureTap, TapNotRun
from amalgam.training.runtime import PRECISIONS, autocast_dtype, resolve_device

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
        self.size, self.channels, self.mean, self.std = spec.size, spec.channels, spec.mean, spec.std
        self.dtype = weights_dtype(model)  # its input's; its outputs are read as float32
        self.output_kind = task.resolve_output_kind(cfg.output)
        self.output_given = cfg.output != "default"  # else the task's first kind, said in output_note
        self.output_key: Optional[str] = cfg.output_key
        self.unused_outputs: tuple[int, ...] = tuple(getattr(cfg, "unused_outputs", ()) or ())
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
        return self.task.convert_output(_as_float32(self.output_choice.apply(raw)), self.output_kind)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.answer(images)[0]

    @torch.inference_mode()
    def selected_output(self, images: torch.Tensor) -> object:
        """The plain model's output on ``images`` as ``output_key`` selects it, before the task reads it."""
        raw = self.forward_model(self.prepare(images))
        return _as_float32((self.output_choice or resolve(raw, self.output_key, self.unused_outputs)).apply(raw))

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
        out = self.run(x) if sub is None else self._wrapped_with_tap(x, tap)
        if tap.value is None:
            raise TapNotRun(self.name, tap.module_name)
        return out, _as_float32(tap.value)

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
            out = self._run_copy(inp)
            if first:
                kept.append(tap.value)
            return out

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

    def output_note(self) -> str:
        """Which output is distilled and why, for the log and ``amalgam inspect``."""
        choice = self.output_choice
        what = f"output '{choice.key}' ({choice.reason})" if self._key_chosen() else "the output tensor"
        if self.unused_outputs:
            what += f" less its channels {list(self.unused_outputs)} (unused_outputs)"
        return what + self._kind_note() + "".join(f"; {note}" for note in self.notes)

    def output_is_a_choice(self) -> bool:
        """Whether :meth:`output_note` states a choice (a key among several outputs, or a reading
        among the task's several) or a rule the teacher check applied: the build log says those."""
        return self._key_chosen() or len(self.task.output_kinds) > 1 or bool(self.notes) or bool(self.unused_outputs)

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
        note = load_checkpoint(model, recipe.resolve(cfg.checkpoint), f"teacher '{name}'")
    else:
        note = unloaded_note(cfg.model.source, cfg.model.kwargs(), recipe.base_dir)
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


def check_as_trained(teacher: Teacher, recipe: Recipe) -> None:
    """:func:`check_teacher_output` in the memory format training runs the teacher in, then
    :func:`check_teacher_precision` under its autocast: a teacher that ``.view``s its activations
    passed the check in NCHW and crashed in training in channels_last, an fp16 one under bf16.

    A teacher that fails in channels_last but works contiguous is kept contiguous, said in its notes.
    """
    train = getattr(recipe, "train", None)  # a stand-in recipe (tests) holds no train block
    size = recipe.data.image_size
    if train is None or not train.channels_last or teacher.contiguous_reason is not None:
        check_teacher_output(teacher, size)
    else:
        teacher.use_channels_last()
        try:
            check_teacher_output(teacher, size)
        except AmalgamError as exc:
            teacher.use_contiguous()
            check_teacher_output(teacher, size)  # failing here too, the network fails whatever the format
            teacher.contiguous_reason = str(exc).split(" input: ", 1)[-1]
    if teacher.contiguous_reason is not None:
        teacher.notes.append(
            f"run contiguous (NCHW), not channels_last (train.channels_last): in channels_last it fails"
            f" ({teacher.contiguous_reason})"
        )
    device = getattr(recipe, "device", "cpu")
    # on an accelerator the check emulates its autocast on the CPU (10-25x slower without bf16 units,
    # seconds for a big teacher at every plan): run it there only for weights that are not float32
    if train is not None and (teacher.dtype != torch.float32 or _on_cpu(device)):
        check_teacher_precision(teacher, train.precision, device)


def check_teacher_precision(teacher: Teacher, precision: str, device: str = "cpu") -> None:
    """Runs the teacher (wrapped, as training does) on a check batch under the autocast of
    ``train.precision`` on ``device``, emulated on the CPU: a teacher that fails only there stops
    here in one line naming ``train.precision: fp32``, not at the first training step."""
    dtype = _training_autocast(precision, device)
    if dtype is None:
        return
    images = torch.rand(2, 3, *teacher.size)
    try:
        with torch.autocast("cpu", dtype=dtype):
            teacher.answer(images)
    except Exception as exc:  # noqa: BLE001 - a crashing teacher is the user's model
        kind = str(dtype).removeprefix("torch.")
        raise AmalgamError(
            f"teacher '{teacher.name}' fails under {kind} autocast (train.precision: {precision}, what training"
            f" computes its targets in): {error_line(exc)}; set train.precision: fp32"
        ) from None


def _on_cpu(device: str) -> bool:
    """Whether the recipe's ``device`` comes to the CPU here (an unknown one: said where the run starts)."""
    try:
        return resolve_device(device).type == "cpu"
    except AmalgamError:
        return True


def _training_autocast(precision: str, device: str) -> Optional[torch.dtype]:
    """The autocast dtype ``train.precision`` comes to on ``device`` (None: fp32, or a device this
    machine lacks, whose refusal is said where the run starts)."""
    if precision != "auto":
        return PRECISIONS.get(precision)
    try:
        return autocast_dtype(resolve_device(device), "auto")
    except AmalgamError:
        return None


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


def check_teacher_output(teacher: Teacher, image_size) -> None:
    """Runs the teacher once on a dummy batch and checks the output against its task and labels."""
    dummy = torch.rand(2, 3, *image_size)
    dummy[1] *= 0.25  # a dark image beside a bright one: batch statistics differ from one image's
    teacher.notes = []  # said again by each check
    check_teacher_wrap(teacher)
    out = _first_answer(teacher, dummy)
    problem = (
        check_output_problem(teacher.task, out, 2, teacher.space)
        if isinstance(out, torch.Tensor)
        else (f"expected a tensor, got {type(out).__name__}")
    )
    if not problem and not bool(torch.isfinite(out).all()):
        bad = (~torch.isfinite(out)).float().mean().item()
        problem = f"{bad:.0%} of the output on a random batch is NaN or inf (a diverged checkpoint, or -inf masking?)"
    fit = None if problem else _dense_fit(teacher, out)
    problem = problem or (_DENSE_MISFIT.format(*out.shape[-2:], *teacher.size) if fit is None else None)
    if problem:
        hint = teacher.task.shape_hint(out, teacher.space, teacher.output_kind)  # the fix the shape points at
        raise AmalgamError(f"teacher '{teacher.name}' ({teacher.task.name}): {problem}{hint}")
    if mismatch := head_problem(teacher.task, teacher.name, out):  # a broadcast loss would train on it
        raise AmalgamError(mismatch)
    if missing := metric_problem(teacher.task, out, teacher.space):  # else found after the whole schedule
        raise AmalgamError(missing)
    if fit:
        teacher.notes.append(fit)
    if teacher.dtype != torch.float32:
        dtype = str(teacher.dtype).removeprefix("torch.")
        teacher.notes.append(f"its weights are {dtype}: it runs in {dtype}, outside train.precision's autocast")
    raw = teacher.selected_output(dummy)  # the second run: read for the reading check, compared for consistency
    if reading := teacher.task.reading_problem(reading_sample(teacher, raw), teacher.output_kind):
        raise AmalgamError(f"teachers.{teacher.name}.output: {reading}")
    if note := teacher.task.output_note(out, teacher.output_kind):
        teacher.notes.append(note)
    again = teacher.task.convert_output(raw, teacher.output_kind)
    if why := _inconsistency(teacher, dummy, out, again):
        scripted = isinstance(teacher.model, torch.jit.ScriptModule)
        fix = (
            "re-export it from model.eval(), taking any batch size"
            if scripted
            else "its eval() mode must be deterministic and take any batch size to be distilled"
        )
        raise AmalgamError(f"teacher '{teacher.name}' {why}: {fix}")


def check_teacher_wrap(teacher: Teacher) -> None:
    """Refuses, naming ``teachers.<name>.wrap`` (or the argument at fault), a wrap that cannot work
    on this teacher's network or task: found here, ``amalgam inspect`` and the build stop before
    training rather than at epoch 1 step 1, and no wrap is accepted that would change nothing."""
    if teacher.sub is not None and _merges_outputs(teacher.sub) and (problem := ensemble_problem(teacher.task)):
        raise AmalgamError(f"teachers.{teacher.name}.wrap: {problem}")
    if teacher.sub is None or not (problem := teacher.sub.check(teacher.model, teacher.task)):
        return
    wrap = f"teachers.{teacher.name}.wrap"
    key, message = under_key(wrap, problem)
    if key == wrap:  # not an argument's fault: the wrap's type says which wrap
        message = f"{teacher.wrap}: {problem}"
    raise AmalgamError(f"{key}: {message}")


def _merges_outputs(sub: SubTeacher) -> bool:
    """Whether the wrap is one of amalgam's, which merge sub-teachers with ``Task.ensemble`` (a
    plugin's wrap merges as it documents)."""
    return type(sub).__module__ == SubTeacher.__module__


#: images the reading check reads when the check batch gives it too few values (a small classifier)
READING_ROWS = 16
#: how far those images' normalised input is amplified: a sigmoid stays in [0, 1] whatever its input,
#: while logits grow with it (an untrained stand-in's small logits, nearly the same on every image,
#: lay in [0, 1] on 16 plain images for a third of random one-logit resnets; amplified, for none)
READING_GAIN = 16.0


def reading_images(n: int, image_size) -> torch.Tensor:
    """``n`` varied images in [0, 1] for the reading check: noise of a random tint and contrast each
    (seeded, so the check is repeatable)."""
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(n, 3, *image_size, generator=gen) - 0.5
    tint, contrast = torch.rand(n, 3, 1, 1, generator=gen), torch.rand(n, 1, 1, 1, generator=gen)
    return (tint + noise * contrast).clamp(0, 1)


@torch.inference_mode()
def amplified_output(teacher: Teacher, images: torch.Tensor, gain: float = READING_GAIN) -> torch.Tensor:
    """The plain model's selected output on ``images`` with their normalised input times ``gain``."""
    raw = teacher.forward_model(teacher.prepare(images) * gain)
    return _as_float32((teacher.output_choice or resolve(raw, teacher.output_key, teacher.unused_outputs)).apply(raw))


def reading_sample(teacher: Teacher, raw: torch.Tensor) -> torch.Tensor:
    """The selected output the reading check reads: ``raw`` (the 2-image check batch's), and where it
    holds fewer than ``READING_VALUES`` values (a classifier of 2-7 labels, a one-logit one) the
    outputs on :func:`reading_images` amplified (:func:`amplified_output`), run in pairs as the check
    batch was, up to ``READING_ROWS`` rows (non-finite ones left out). The check counts values, rows
    x labels: 2 images x 5 sigmoids never reached it, and a sigmoid classifier of few labels was
    distilled as logits without a word."""
    if raw.dim() == 0 or raw.numel() >= READING_VALUES or not _checks_readings(teacher.task):
        return raw  # enough values already, or a task whose outputs have no reading to check
    extra = reading_images(READING_ROWS - raw.shape[0], teacher.size)
    more = torch.cat([amplified_output(teacher, pair) for pair in extra.split(raw.shape[0])])
    finite = torch.isfinite(more.flatten(1) if more.dim() > 1 else more[:, None]).all(1)
    return torch.cat([raw, more[finite]])


def _checks_readings(task: Task) -> bool:
    """Whether the task's plugin checks how an output reads (its own ``reading_problem``)."""
    return type(task).reading_problem is not Task.reading_problem


def _first_answer(teacher: Teacher, dummy: torch.Tensor) -> torch.Tensor:
    """The plain model's canonical output on the check batch; a failure is one line naming the teacher."""
    try:  # the plain model: a wrap (flip averaging) turns probabilities into log-probabilities
        return teacher.answer(dummy, wrapped=False)[0]
    except OutputKeyError as exc:
        raise AmalgamError(f"teachers.{teacher.name}.output_key: {exc}") from None
    except ReadingError as exc:
        raise AmalgamError(f"teachers.{teacher.name}.{exc}") from None
    except Exception as exc:  # noqa: BLE001 - a crashing teacher is the user's model
        msg = error_line(exc)
        raise AmalgamError(
            f"teacher '{teacher.name}' fails on a {teacher.channels}-channel {list(teacher.size)} input: {msg}"
            + (_channels_hint(msg, teacher) or _size_hint(msg, teacher))
        ) from None


_CHANNELS = re.compile(r"to have (\d+) channels, but got (\d+) channels")  # torch's convolution error


def _channels_hint(msg: str, teacher: Teacher) -> str:
    """What to set when the network's first convolution takes the other channel count than its input."""
    found = _CHANNELS.search(msg)
    if not found or int(found.group(2)) != teacher.channels or found.group(1) not in ("1", "3"):
        return ""
    wants = found.group(1)
    return (
        f" (the network takes {wants}-channel images: set teachers.{teacher.name}.input.channels: {wants}"
        f" and a mean and std of {wants} value{'s' if wants != '1' else ''} each)"
    )


def _size_hint(msg: str, teacher: Teacher) -> str:
    """Where the input size the error names came from, and the key that sets it: a fixed-size
    network (a ViT asserting 224) fed the default size failed with torch's words only."""
    h, w = teacher.size
    if not re.search(rf"\b({h}|{w})\b", msg):
        return ""
    key = f"teachers.{teacher.name}.input.size"
    origin = teacher.input_spec.origin.get("size")
    takes = _network_size(teacher.model)
    if origin == TIMM:
        return f" ({h}x{w} is the timm pretrained_cfg's input_size: give the model img_size, or set {key})"
    if origin == DEFAULT:
        fix = f"set {key}: {list(takes)}, the size the network takes" if takes else f"set {key} to the size it takes"
        return f" ({h}x{w} is data.image_size, fed by default: {fix})"
    if origin == RECIPE:
        built = f": the network takes {takes[0]}x{takes[1]}" if takes and tuple(takes) != (h, w) else ""
        return (
            f" ({h}x{w} is the recipe's {key}{built}; set it to the size the network takes, or build the network"
            f" for {h}x{w} (timm: img_size: {h}))"
        )
    return f" ({h}x{w} is the {origin}: set {key} to the size the network takes)"


def _network_size(model: nn.Module) -> Optional[tuple[int, int]]:
    """The input size a fixed-size network states: torchvision ViT's ``image_size``, timm's
    ``patch_embed.img_size``; None when it states none."""
    for owner, attr in ((model, "image_size"), (getattr(model, "patch_embed", None), "img_size"), (model, "img_size")):
        value = getattr(owner, attr, None) if owner is not None else None
        if isinstance(value, int) and not isinstance(value, bool):
            return (value, value)
        if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
            return (int(value[0]), int(value[1]))
    return None


#: strides a dense net's last map may be upsampled from (to a multiple of the stride near the input's size)
_STRIDES = (2, 4, 8, 16, 32)


def output_fit(size: tuple[int, int], out: tuple[int, int]) -> Optional[str]:
    """How a dense output of size ``out`` is placed on an input of ``size``, said as a note ("" when it
    is the input's size), or None when no one factor maps it onto the input (transposed, padded, cropped).

    Taken: ``k`` times the input on both axes; ``1/s`` of it, each side the floor or ceil of size / s
    as strided layers round; and a ``1/s`` map upsampled ``s`` times (520 for 513 at stride 8), a
    power-of-two ``s``, stretched onto the input by under one stride.
    """
    (h, w), (oh, ow) = size, out
    seen = f"{oh}x{ow} for {h}x{w}"
    if (oh, ow) == (h, w):
        return ""
    if oh > h and oh % h == 0 and ow % w == 0 and oh // h == ow // w:
        return f"it answers at {oh // h}x its input ({seen}): resized"
    fits = [s for s in range(2, max(h, w) + 1) if abs(oh - h / s) < 1 and abs(ow - w / s) < 1]
    if fits:  # rounding leaves small outputs several strides: name one only where it is what nets use
        s = min(fits, key=lambda s: (s not in _STRIDES, abs(oh - h / s) + abs(ow - w / s)))
        named = s in _STRIDES or (h % s == 0 and w % s == 0)
        return f"it answers at {f'1/{s} of its input ({seen})' if named else seen}: upsampled bilinearly"
    for s in _STRIDES:
        if oh in (s * (h // s), s * -(-h // s)) and ow in (s * (w // s), s * -(-w // s)):
            return f"it answers at {seen} (a 1/{s} map upsampled {s}x): stretched onto the input by under {s} px"
    return None


_DENSE_MISFIT = (
    "its output is {}x{} for its {}x{} input (input.size), not the input's size scaled by one factor on both"
    " axes (transposed, padded or cropped?): it cannot be placed back on the input's pixels; make the network"
    " answer at its input's size, or at 1/stride of it"
)


def _dense_fit(teacher: Teacher, out: torch.Tensor) -> Optional[str]:
    """:func:`output_fit` of a dense output on the teacher's input ("" for other tasks)."""
    if not teacher.task.dense or out.dim() < 3:
        return ""
    return output_fit(tuple(teacher.size), tuple(out.shape[-2:]))


def _inconsistency(teacher: Teacher, dummy: torch.Tensor, out: torch.Tensor, again: torch.Tensor) -> Optional[str]:
    """How the plain model's answers vary where a network in eval mode does not, or None.

    eval() cannot reach into a TorchScript file traced in train() mode: its dropout and batch
    statistics are baked in, and amalgam would cache noisy, batch-dependent targets without a word.
    """

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        # loose enough for fp16 and batch-size-dependent kernels; dropout and batch statistics move far more
        scale = float(b.abs().max()) + 1.0
        return a.shape == b.shape and bool(torch.allclose(a.float(), b.float(), rtol=1e-2, atol=1e-2 * scale))

    try:
        alone = teacher.answer(dummy[:1], wrapped=False)[0]
    except Exception as exc:  # noqa: BLE001 - batch statistics of one value, or a batch size fixed when traced
        return (
            f"fails on one image where it ran on two ({error_line(exc)}; a batch size fixed when traced, or"
            " batch statistics of a BatchNorm in training mode?)"
        )
    if not same(again, out):
        return "answers the same images differently twice (dropout in training mode?)"
    if not same(alone, out[:1]):
        return "answers an image alone differently from the same image in a batch (BatchNorm in training mode?)"
    return None


def build_teachers(recipe: Recipe) -> dict[str, Teacher]:
    """Every teacher of the recipe, with its sources defaulted to all sources."""
    teachers: dict[str, Teacher] = {}
    for name, cfg in recipe.teachers.items():
        teacher = build_teacher(name, cfg, recipe, teachers)
        teacher.source_names = teacher.source_names or list(recipe.data.sources)
        teachers[name] = teacher
    return teachers
