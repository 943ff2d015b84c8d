"""The checks a teacher passes when it is built, each in one line naming the recipe key to fix.

It runs once on a dummy batch (the task's output contract, finite values, a dense map that can be
placed back on its input, the same answer twice), under the memory format and autocast training
will use, and its output reading (logits or probabilities, sigmoid) is judged on enough values.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

from amalgam.config.schema import Recipe
from amalgam.data.views import output_stride
from amalgam.errors import AmalgamError, error_line, under_key
from amalgam.plugin_contract import (
    check_output_problem,
    ensemble_problem,
    head_problem,
    metric_problem,
    plugin_error_line,
)
from amalgam.task import SIGMOID_EVIDENCE as READING_VALUES
from amalgam.task import ReadingError, Task
from amalgam.teachers.inputs import DEFAULT, RECIPE, TIMM
from amalgam.teachers.outputs import OutputKeyError, candidates
from amalgam.teachers.subteachers import SubTeacher
from amalgam.training.runtime import PRECISIONS, autocast_dtype, resolve_device

if TYPE_CHECKING:  # annotations only: the teacher module runs these checks
    from amalgam.teachers.teacher import Teacher


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
    kind = str(dtype).removeprefix("torch.")
    try:
        with torch.autocast("cpu", dtype=dtype):
            mixed, _ = teacher.answer(images)
    except Exception as exc:  # noqa: BLE001 - a crashing teacher is the user's model
        raise AmalgamError(
            f"teacher '{teacher.name}' fails under {kind} autocast (train.precision: {precision}, what training"
            f" computes its targets in): {error_line(exc)}; set train.precision: fp32"
        ) from None
    if not torch.isfinite(mixed).all():  # fp16 overflows past 65504 (an activation, logits, depth in mm)
        with torch.no_grad():
            plain, _ = teacher.answer(images)
        if torch.isfinite(plain).all():
            raise AmalgamError(
                f"teacher '{teacher.name}' answers NaN/inf under {kind} autocast (train.precision: {precision}) and"
                f" finite numbers in fp32: its values overflow {kind}; set train.precision: fp32"
                + (" or bf16" if dtype is torch.float16 else "")
            )


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


def _nonfinite_problem(teacher: Teacher, out: torch.Tensor) -> Optional[str]:
    """The stop for a check batch answered NaN or inf on every image (a diverged checkpoint); fewer, or values
    the task reads as no answer, are noted on the teacher instead."""
    if bool(torch.isfinite(out).all()):
        return None
    bad = ~torch.isfinite(out)
    values = f"{int(bad.sum()):,} of {bad.numel():,} values"
    # the images training would count as failed: the task's own marks decide (depth's sky +inf is no failure)
    images = int(teacher.task.nonfinite_rows(teacher.task.mark_no_answer(out)).sum())
    if images == out.shape[0]:  # every image: a diverged checkpoint, not an odd input
        return f"{values} of its output on a random batch are NaN or inf (a diverged checkpoint, -inf masking?)"
    if images == 0:  # the task reads them as no answer there (depth's sky at +inf beside depth), as training does
        teacher.notes.append(f"{values} of its output on a random batch are not finite, read as no answer there")
    else:
        teacher.notes.append(
            f"answered NaN or inf on {images} of {out.shape[0]} random images ({values}): training leaves such"
            " rows out and counts them (it stops where most are), evaluation leaves such images out"
        )
    return None


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
    problem = problem or _nonfinite_problem(teacher, out)
    fit = None if problem else _dense_fit(teacher, out)
    problem = problem or (_DENSE_MISFIT.format(*out.shape[-2:], *teacher.size) if fit is None else None)
    if problem:
        hint = teacher.task.shape_hint(out, teacher.space, teacher.output_kind)  # the fix the shape points at
        hint = hint.replace("<teacher>", teacher.name)
        hint = _other_key_hint(teacher, dummy) or hint
        raise AmalgamError(f"teacher '{teacher.name}' ({teacher.task.name}): {problem}{hint}{_weights_hint(teacher)}")
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
        if not _whole_softmax(teacher, dummy):
            raise AmalgamError(f"teachers.{teacher.name}.output: {reading}{_weights_hint(teacher)}")
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
def amplified_output(
    teacher: Teacher, images: torch.Tensor, gain: float = READING_GAIN, whole: bool = False
) -> torch.Tensor:
    """The plain model's selected output on ``images`` with their normalised input times ``gain``
    (``whole``: with its ``unused_outputs``)."""
    return teacher.selected_output(images, gain, whole)


def _whole_softmax(teacher: Teacher, dummy: torch.Tensor) -> bool:
    """Whether probabilities that do not sum to 1 over the labels do with ``unused_outputs`` kept: a softmax
    over more outputs than the labels (TF-slim's 1001 classes, one dropped), whose kept share is renormalised
    (the log of each is a logit up to a constant). Said in the teacher's notes; it had no accepted reading."""
    if teacher.output_kind != "probabilities" or not teacher.unused_outputs:
        return False
    sample = reading_sample(teacher, teacher.selected_output(dummy, whole=True), whole=True)
    if teacher.task.reading_problem(sample, teacher.output_kind):
        return False
    teacher.notes.append(
        f"its outputs sum to a constant with unused_outputs {list(teacher.unused_outputs)} kept (a softmax over all"
        " of them): the labels' probabilities are renormalised over the labels"
    )
    return True


def reading_sample(teacher: Teacher, raw: torch.Tensor, whole: bool = False) -> torch.Tensor:
    """The selected output the reading check reads: ``raw`` (the 2-image check batch's), and where it
    holds fewer than ``READING_VALUES`` values (a classifier of 2-7 labels, a one-logit one) the
    outputs on :func:`reading_images` amplified (:func:`amplified_output`), run in pairs as the check
    batch was, up to ``READING_ROWS`` rows (non-finite ones left out). The check counts values, rows
    x labels: 2 images x 5 sigmoids never reached it, and a sigmoid classifier of few labels was
    distilled as logits without a word."""
    if raw.dim() == 0 or raw.numel() >= READING_VALUES or not _checks_readings(teacher.task):
        return raw  # enough values already, or a task whose outputs have no reading to check
    extra = reading_images(READING_ROWS - raw.shape[0], teacher.size)
    more = torch.cat([amplified_output(teacher, pair, whole=whole) for pair in extra.split(raw.shape[0])])
    finite = torch.isfinite(more.flatten(1) if more.dim() > 1 else more[:, None]).all(1)
    return torch.cat([raw, more[finite]])


def _checks_readings(task: Task) -> bool:
    """Whether the task's plugin checks how an output reads (its own ``reading_problem``)."""
    return type(task).reading_problem is not Task.reading_problem


def _weights_hint(teacher: Teacher) -> str:
    """Which entry of a checkpoint holding several state dicts was loaded, for an error on its output: a
    trial's untrained 'model' beside a trained 'ema' read as a sigmoid output, the entry said nowhere."""
    note = teacher.checkpoint_note
    return f" (its weights: {note})" if note and "also holds" in note else ""


def _other_key_hint(teacher: Teacher, dummy: torch.Tensor) -> str:
    """Where ``output_key`` picked a tensor that does not fit, the other keys of the output whose channels
    are the labels' count (a ``(features, logits)`` tuple at key 0: the hint to leave 118 feature channels
    out as unused_outputs built a teacher of top-1 0.22)."""
    choice = teacher.output_choice
    taken = teacher.output_key if teacher.output_key is not None else (choice.key if choice else None)
    if taken is None or teacher.space is None:
        return ""
    try:
        with torch.inference_mode():
            found = candidates(teacher.forward_model(teacher.prepare(dummy)))
    except Exception:  # noqa: BLE001 - the failure is said by the caller
        return ""
    labels = len(teacher.space)
    # one of the taken tensor's form (a channel per label, as many dims) is no better: the fault is not which
    # tensor (NaN, its size); torchvision's aux head is a training aid, never the output to distil
    same = taken in found and found[taken].dim() >= 2 and found[taken].shape[1] == labels
    fits = [
        k
        for k, t in found.items()
        if k not in (taken, "aux")
        and t.dim() >= 2
        and t.shape[1] == labels
        and not (same and t.dim() == found[taken].dim())
        and bool(torch.isfinite(t).all())
    ]
    if not fits:
        return ""
    shown = ", ".join(f"'{k}' {list(found[k].shape)}" for k in fits[:4])
    if teacher.output_key is None:  # taken by a rule (torchvision's 'out'): the error read as if nothing was chosen
        return f" (output {choice.reason} was read; {shown} has a channel per label: set output_key to distil it)"
    return f" (output_key {shown} has a channel per label: is that the output to distil?)"


def _first_answer(teacher: Teacher, dummy: torch.Tensor) -> torch.Tensor:
    """The plain model's canonical output on the check batch; a failure is one line naming the teacher."""
    try:  # the plain model: a wrap (flip averaging) turns probabilities into log-probabilities
        return teacher.answer(dummy, wrapped=False)[0]
    except OutputKeyError as exc:
        raise AmalgamError(f"teachers.{teacher.name}.{exc.key}: {exc}") from None
    except ReadingError as exc:
        raise AmalgamError(f"teachers.{teacher.name}.{exc}") from None
    except Exception as exc:  # noqa: BLE001 - a crashing teacher is the user's model, or its task plugin
        if line := plugin_error_line(exc):  # not the network: its task's convert_output
            raise AmalgamError(f"teacher '{teacher.name}': {line}") from exc
        msg = error_line(exc)
        hint = _channels_hint(msg, teacher) or _size_hint(msg, teacher)
        if not hint and isinstance(exc, (TypeError, IndexError, KeyError)):
            hint = CALL_HINT  # a trial's network wanted {'pixel_values': x}: 'too many indices for tensor'
        raise AmalgamError(
            f"teacher '{teacher.name}' fails on a {teacher.channels}-channel {list(teacher.size)} input: {msg}{hint}"
        ) from None


#: the hint for a network whose forward fails on one tensor as a wrong kind of argument would make it
CALL_HINT = (
    " (amalgam calls the network as model(x), x one [B, C, H, W] float tensor: a forward that takes a dict,"
    " keywords or several inputs needs a factory that wraps it, e.g. forward(x) returning net({'pixel_values': x}))"
)


_CHANNELS = re.compile(r"to have (\d+) channels, but got (\d+) channels")  # torch's convolution error


def _channels_hint(msg: str, teacher: Teacher) -> str:
    """What to set when the network's first convolution takes the other channel count than its input."""
    found = _CHANNELS.search(msg)
    if not found or int(found.group(2)) != teacher.channels:
        return ""
    wants = found.group(1)
    if wants not in ("1", "3"):  # the size hint read 64 in "input[2, 3, 64, 64]" and named the size
        return (
            f" (the network takes {wants}-channel images, and amalgam feeds 1 or 3 channels: give a factory that"
            f" wraps it, making its {wants} channels of the 3 (e.g. the image and a constant channel))"
        )
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


def output_fit(size: tuple[int, int], out: tuple[int, int]) -> Optional[str]:
    """How a dense output of size ``out`` is placed on an input of ``size``, said as a note ("" when it
    is the input's size), or None when no one factor maps it onto the input (transposed, padded, cropped).

    Taken: ``k`` times the input on both axes; ``1/s`` of it, each side the floor or ceil of size / s
    as strided layers round; and a ``1/s`` map upsampled ``s`` times (520 for 513 at stride 8), a
    power-of-two ``s`` (:func:`~amalgam.data.views.output_stride`), placed as
    :func:`~amalgam.data.views.onto_input` places them.
    """
    (h, w), (oh, ow) = size, out
    seen = f"{oh}x{ow} for {h}x{w}"
    if (oh, ow) == (h, w):
        return ""
    if oh > h and oh % h == 0 and ow % w == 0 and oh // h == ow // w:
        return f"it answers at {oh // h}x its input ({seen}): resized"
    found = output_stride(size, out)
    if found is None:
        return None
    s = found.stride
    placed = "" if h % s == 0 and w % s == 0 else f", then cropped or edge-padded to {h}x{w}"
    if found.upsampled:
        return f"it answers at {seen} (a 1/{s} map upsampled {s}x){placed or ': as it is'}"
    if not found.placed:  # rounding leaves small outputs several strides: no cell size to claim
        return f"it answers at {seen}: upsampled bilinearly"
    return f"it answers at 1/{s} of its input ({seen}): each cell over its {s}x{s} pixels{placed}"


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
        finite = b[torch.isfinite(b)]  # a teacher may answer NaN on part of an image: alike both times
        scale = float(finite.abs().max()) + 1.0 if finite.numel() else 1.0
        close = torch.allclose(a.float(), b.float(), rtol=1e-2, atol=1e-2 * scale, equal_nan=True)
        return a.shape == b.shape and bool(close)

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
