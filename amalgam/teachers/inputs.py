"""A teacher's input spec, resolved from the recipe (and a timm model's ``pretrained_cfg``), and its
answers on its own views, brought back to a frame of the caller's choosing.

Rules (said in the log and by ``amalgam inspect``, never applied silently):

* a key given under ``teachers.<n>.input`` wins;
* a timm teacher built with ``img_size`` (or ``input_size``) among its model args takes that as a
  missing ``size`` (timm builds the network for it but leaves ``pretrained_cfg`` at its 224);
* a timm teacher takes a missing ``size``, ``mean`` and ``std`` from its ``pretrained_cfg``
  (what it was trained with);
* otherwise ``size`` is the student's ``data.image_size``, ``channels`` 3, ``mean``/``std``
  ImageNet's, ``resize`` :data:`amalgam.data.views.DEFAULT_RESIZE` and ``channel_order`` rgb
  (``bgr`` reverses the channels a Caffe or mmcv teacher is fed; its mean and std are in its order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from amalgam.config.schema import InputSpec, TeacherConfig
from amalgam.data.images import size_text
from amalgam.data.views import DEFAULT_RESIZE, BatchViews, ViewSpec, default_fill, onto_input, undo
from amalgam.errors import AmalgamError, count_of, error_line

RECIPE, DEFAULT, TIMM = "recipe", "default", "timm pretrained_cfg"
#: timm model args that build a network for an input size (``img_size: 64``, ``input_size: [3, 64, 64]``)
TIMM_SIZE_ARGS = ("img_size", "input_size")


@dataclass
class ResolvedInput:
    """A teacher's whole input spec and where each value came from (``origin[key]``)."""

    size: tuple[int, int]
    channels: int
    mean: list[float]
    std: list[float]
    resize: str
    origin: dict[str, str] = field(default_factory=dict)
    channel_order: str = "rgb"
    crop: float = 1.0

    @property
    def bgr(self) -> bool:
        """Whether the teacher is fed its 3 channels reversed (BGR)."""
        return self.channel_order == "bgr" and self.channels == 3

    @property
    def view(self) -> ViewSpec:
        """The view the teacher is fed (before its own channel conversion and normalisation); its
        padding is the mean colour in RGB, the order views are made in."""
        fill = default_fill(self.mean[::-1] if self.bgr else self.mean)
        return ViewSpec(tuple(self.size), self.resize, fill, self.crop)

    def describe(self) -> str:
        """One line: every value, with its origin when it is not the recipe's."""

        def tag(key: str) -> str:
            if key == "size" and self.origin.get(key, DEFAULT) == DEFAULT:  # a network trained at another size
                return " (default: data.image_size; set input.size to the size it was trained at)"  # answers worse
            return "" if self.origin.get(key) == RECIPE else f" ({self.origin.get(key, DEFAULT)})"

        mean = ", ".join(map(_shown, self.mean))
        std = ", ".join(map(_shown, self.std))
        return (
            f"size {size_text(*self.size)}{tag('size')}, {count_of(self.channels, 'channel')}{tag('channels')}, "
            f"mean [{mean}]{tag('mean')}, std [{std}]{tag('std')}, resize {self.resize}{tag('resize')}"
            + self._order_text()
            + (f", centre crop {self.crop:g} of the image" if self.crop < 1 else "")
        )

    def _order_text(self) -> str:
        """The channel order where the recipe states one (bgr, or rgb said outright): every other
        teacher is fed RGB, the README's default, and its line stays as it was."""
        if self.channels != 3 or self.origin.get("channel_order") != RECIPE:
            return ""
        return f", channel order {self.channel_order.upper()}"


def resolve_input(cfg: TeacherConfig, model: nn.Module, image_size) -> ResolvedInput:
    """The teacher's input spec by the rules of this module's docstring."""
    spec: InputSpec = cfg.input
    given = spec.model_fields_set
    pretrained: dict[str, tuple[Any, str]] = {}
    if cfg.model.source == "timm":
        pretrained = {key: (value, TIMM) for key, value in _timm_pretrained(_pretrained_cfg(model)).items()}
        if stated := timm_model_size(cfg.model.kwargs()):
            pretrained["size"] = stated
    values, origin = {}, {}
    fallback = {
        "size": tuple(image_size),
        "channels": spec.channels,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "resize": DEFAULT_RESIZE,
        "channel_order": spec.channel_order,
        "crop": 1.0,  # timm's crop_pct is not taken: a dense answer would leave the borders untaught
    }
    for key, default in fallback.items():
        if key in given and getattr(spec, key) is not None:
            values[key], origin[key] = getattr(spec, key), RECIPE
        elif key in pretrained:
            values[key], origin[key] = pretrained[key]
        else:
            values[key], origin[key] = default, DEFAULT
    values["size"] = (int(values["size"][0]), int(values["size"][1]))
    if values["channel_order"] == "bgr" and values["channels"] == 3:
        _in_bgr_order(values, origin)
    return ResolvedInput(**values, origin=origin)


def _in_bgr_order(values: dict, origin: dict) -> None:
    """A BGR teacher's mean and std are in its own channel order: the recipe states them so (mmcv
    configs do), while the default and timm's are ImageNet's RGB values, reversed here."""
    for key in ("mean", "std"):
        if origin[key] != RECIPE:
            values[key] = list(values[key])[::-1]
            origin[key] = f"{origin[key]}, in BGR order"


def timm_model_size(kwargs: dict) -> Optional[tuple[tuple[int, int], str]]:
    """The input size a timm teacher's model args build it for, with its origin tag (``model img_size``),
    or None when they state none.

    ``img_size``/``input_size`` is an int (square), ``[H, W]`` or ``[C, H, W]``.

    Raises:
        AmalgamError: a size that is none of those, or two args that disagree.
    """
    found: dict[str, tuple[int, int]] = {}
    for arg in TIMM_SIZE_ARGS:
        if kwargs.get(arg) is not None:
            found[arg] = _hw(kwargs[arg], arg)
    if len(set(found.values())) > 1:
        said = " and ".join(f"{arg} {list(hw)}" for arg, hw in found.items())
        raise AmalgamError(f"{said} disagree: give the network one input size")
    return next(((hw, f"model {arg}") for arg, hw in found.items()), None)


def _hw(value: Any, arg: str) -> tuple[int, int]:
    """``(H, W)`` of a timm size arg: an int, ``[H, W]`` or ``[C, H, W]``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) in (2, 3) and all(isinstance(v, int) for v in value):
        return (int(value[-2]), int(value[-1]))
    raise AmalgamError(f"{arg} {value!r} is not an input size (an int, [H, W] or [C, H, W])")


def _timm_pretrained(cfg: dict) -> dict:
    """size, mean and std a timm ``pretrained_cfg`` states."""
    out = {}
    if cfg.get("input_size"):
        out["size"] = tuple(cfg["input_size"][-2:])
    for key in ("mean", "std"):
        if cfg.get(key) and len(cfg[key]) == 3:  # a grey teacher (channels: 1) states its own
            out[key] = [float(v) for v in cfg[key]]
    return out


def _pretrained_cfg(model: nn.Module) -> dict:
    return getattr(model, "pretrained_cfg", None) or {}


def timm_tag_note(cfg: TeacherConfig, model: nn.Module, spec: ResolvedInput) -> str:
    """Which timm tag the values ``spec`` took from the model's ``pretrained_cfg`` are of and, where the recipe
    named the architecture alone (timm then takes its default tag), the other tags that state other values (a
    trial's efficientnet_b0 fine-tuned from a tag of mean 0.5 would be fed the default tag's ImageNet mean,
    unsaid). Said after the input line, not part of the spec (nothing fed depends on it); "" where none is taken."""
    taken = {key: getattr(spec, key) for key, origin in spec.origin.items() if origin == TIMM}
    if cfg.model.source != "timm" or not taken:
        return ""
    name = str(cfg.model.kwargs().get("name", ""))
    pretrained = _pretrained_cfg(model)
    arch, tag = pretrained.get("architecture"), pretrained.get("tag")
    if not arch or not tag:
        return ""
    untagged = "." not in name and not name.startswith("local-dir:")
    said = f"{TIMM}: {arch}.{tag}" + (" (timm's default tag)" if untagged else "")
    differ, keys = [], []
    for other, values in (_other_tags(arch, tag) if untagged else {}).items():
        moved = [key for key, value in taken.items() if key in values and values[key] != value]
        keys += [key for key in moved if key not in keys]
        if moved:
            differ.append(f"{other} " + ", ".join(f"{key} {_value_text(values[key])}" for key in moved))
    if not differ:
        return said
    more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
    return (
        f"{said}; other tags state others ({'; '.join(differ[:3])}{more}): if its weights came from one, name it"
        f" (model.name: {arch}.<tag>) or set {', '.join(f'input.{key}' for key in keys)}"
    )


def _other_tags(arch: str, tag: str) -> dict[str, dict]:
    """The size, mean and std every other pretrained tag of timm architecture ``arch`` states."""
    import timm
    from timm.models import get_pretrained_cfg

    found = {}
    for full in timm.list_pretrained(f"{arch}.*"):
        other = full.split(".", 1)[1]
        if other != tag and (cfg := get_pretrained_cfg(full)) is not None:
            found[other] = _timm_pretrained(vars(cfg))
    return found


def _value_text(value: Any) -> str:
    """A size as HxW, a mean or std as its list."""
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return size_text(*value)
    return f"[{', '.join(map(_shown, value))}]"


class TeacherFailed(AmalgamError):
    """A teacher's own forward raised on real images (training, the checks, evaluation): said in one line
    naming it; ``--debug`` shows the network's traceback."""

    def __init__(self, name: str, images: int, exc: BaseException) -> None:
        super().__init__(
            f"teacher '{name}' failed on a batch of {count_of(images, 'image')}: {error_line(exc)} (its forward raised;"
            " amalgam --debug shows where)"
        )


@torch.inference_mode()
def answer_views(
    teacher, views: BatchViews, rows: torch.Tensor, size, augmented: bool = True, tap=None, wrapped: bool = True
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The teacher's output (and the feature ``tap`` reads) on its own views of ``rows``, dense
    ones brought back onto the originals' frame: outputs sampled at ``size``, features at their
    own size.

    ``augmented``: the teacher sees the views flipped and blended as the student's images are,
    and its answers are returned flipped like them; else it sees the plain views. ``wrapped=False``:
    the plain model, without the recipe's sub-teacher wrap (see :meth:`Teacher.answer`).
    """
    x, placements = views.get(teacher.input_spec.view, rows, augmented)
    flip = views.flip[rows.cpu()].to(x.device) if augmented and views.flip is not None else None
    try:
        if tap is not None or not wrapped:
            out, feat = teacher.answer(x, tap, wrapped=wrapped)
        else:
            out, feat = teacher(x), None
    except AmalgamError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's network: named, not a traceback of amalgam's frames
        raise TeacherFailed(teacher.name, x.shape[0], exc) from exc
    if teacher.task.dense and out.dim() == 4:
        task, kind, holes = teacher.task, teacher.output_kind, teacher.task.marks_holes
        out = task.resize_space(task.mark_no_answer(out), kind)  # resized as the teacher answers (a disparity)
        out = onto_input(out, x.shape[-2:], holes)  # a strided map on its pixels
        out = task.resize_space(_undo_flipped(out, placements, size, flip, holes), kind, back=True)
    if feat is not None and feat.dim() == 4:
        feat = _undo_flipped(feat, placements, feat.shape[-2:], flip)
    return out, feat


def _undo_flipped(
    dense: torch.Tensor, placements, size, flip: Optional[torch.Tensor], holes: bool = False
) -> torch.Tensor:
    """:func:`undo` for answers on mirrored views: mirrored back, undone, mirrored again."""
    if flip is None:
        return undo(dense, placements, size, holes)
    f = flip.view(-1, *([1] * (dense.dim() - 1)))
    back = undo(torch.where(f, dense.flip(-1), dense), placements, size, holes)
    return torch.where(f, back.flip(-1), back)


def _shown(value: float) -> str:
    """A mean or std in three decimals, a small one in four digits (1/255 is 0.003922, not 0.004: 1/250 too)."""
    return f"{value:.3f}" if value == 0 or abs(value) >= 0.01 else f"{value:.4g}"
