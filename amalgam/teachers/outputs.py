"""Which tensor of a teacher's raw output is distilled: ``teachers.<n>.output_key`` or a stated rule.

Networks answer with a tensor, a tuple, a dict (torchvision segmenters: ``{out, aux}``) or an
object (HF-style ``ModelOutput`` with ``.logits``, a depth model's ``.predicted_depth``). amalgam
never picks one of several tensors silently:

* ``output_key`` names the tensor: a dict key, a tuple index, a namedtuple's field (torchvision's
  ``InceptionOutputs.logits``; its index works too) or an attribute, dotted for nesting (``logits``,
  ``0``, ``out``, ``heads.depth``). Candidates are listed by those names (a namedtuple's by field).
* Without it, a bare tensor is used as is; an output holding exactly one tensor gives that one; a
  dict with an ``out`` key gives ``out`` (torchvision's convention, said in the log and by
  ``amalgam inspect``). Anything else is an error listing every candidate with its shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import torch

from amalgam.errors import AmalgamError, a_type

DEFAULT_KEY = "out"  # torchvision segmentation models: {"out": ..., "aux": ...}
_MAX_DEPTH = 4  # how deep candidates are listed inside nested outputs


class OutputKeyError(AmalgamError):
    """The output has no tensor at ``output_key``, or several and no rule that picks one."""

    #: the teacher key the error is about, as its message is prefixed
    key = "output_key"


class UnusedOutputsError(OutputKeyError):
    """``unused_outputs`` names a channel the chosen output does not have."""

    key = "unused_outputs"


def is_namedtuple(value: Any) -> bool:
    """Whether ``value`` is a ``collections.namedtuple`` (or ``typing.NamedTuple``) instance."""
    return isinstance(value, tuple) and isinstance(getattr(value, "_fields", None), tuple)


def _children(value: Any) -> list[tuple[str, Any]]:
    """The named parts of one level of an output: dict items, namedtuple fields, sequence items or
    public attributes."""
    if isinstance(value, Mapping):
        return [(str(k), v) for k, v in value.items()]
    if is_namedtuple(value):
        return list(zip(value._fields, value))
    if isinstance(value, (tuple, list)):
        return [(str(i), v) for i, v in enumerate(value)]
    if isinstance(value, (torch.Tensor, str, bytes, int, float, bool)) or value is None:
        return []
    return _attributes(value)


def _attributes(value: Any) -> list[tuple[str, Any]]:
    """An object's public attributes: in its ``__dict__``, its ``__slots__`` (a slots dataclass has no
    ``__dict__``) and its class's properties (a ``.logits`` computed on access), each read once."""
    attrs = getattr(value, "__dict__", None)
    names = list(attrs) if isinstance(attrs, dict) else []
    for cls in type(value).__mro__[:-1]:  # not object's own
        slots = cls.__dict__.get("__slots__", ())
        names += [slots] if isinstance(slots, str) else list(slots)
        names += [k for k, v in cls.__dict__.items() if isinstance(v, property)]
    found = []
    for name in dict.fromkeys(n for n in names if not n.startswith("_")):
        try:
            found.append((name, getattr(value, name)))
        except Exception:  # noqa: BLE001 - a property that fails on this output is no candidate
            continue
    return found


def candidates(raw: Any, prefix: str = "", depth: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor inside ``raw``, by the dotted ``output_key`` that selects it."""
    if isinstance(raw, torch.Tensor):
        return {prefix: raw}
    if depth >= _MAX_DEPTH:
        return {}
    found: dict[str, torch.Tensor] = {}
    for name, child in _children(raw):
        found.update(candidates(child, f"{prefix}.{name}" if prefix else name, depth + 1))
    return found


def describe(found: dict[str, torch.Tensor]) -> str:
    """``out [2, 21, 64, 64], aux [2, 21, 64, 64]``."""
    return ", ".join(f"{key} {list(t.shape)}" for key, t in found.items())


def select(raw: Any, key: str) -> torch.Tensor:
    """The tensor at dotted ``key`` inside ``raw``.

    Raises:
        AmalgamError: naming the part that does not exist and the tensors that do.
    """
    value = raw
    for i, part in enumerate(key.split(".")):
        value = _step(value, part)
        if value is _MISSING:
            where = ".".join(key.split(".")[:i]) or "the output"
            raise OutputKeyError(
                f"output_key '{key}': {where} has no '{part}' (tensors in the output: {describe(candidates(raw))})"
            )
    if not isinstance(value, torch.Tensor):
        raise OutputKeyError(
            f"output_key '{key}' is {a_type(value)}, not a tensor (tensors in the output: {describe(candidates(raw))})"
        )
    return value


_MISSING = object()


def _step(value: Any, part: str) -> Any:
    """The child ``part`` of one level of an output (see :func:`_children`), or ``_MISSING``."""
    if isinstance(value, Mapping):
        return value[part] if part in value else _MISSING
    if is_namedtuple(value) and part in value._fields:
        return getattr(value, part)
    if isinstance(value, (tuple, list)):
        return value[int(part)] if part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value) else _MISSING
    if part.startswith("_"):
        return _MISSING
    return getattr(value, part, _MISSING)


@dataclass(frozen=True)
class OutputChoice:
    """The resolved output of one teacher: its key (None for a bare tensor) and why it was taken."""

    key: Optional[str]
    reason: str
    #: output channels (dim 1) left out: ``teachers.<n>.unused_outputs``
    dropped: tuple[int, ...] = ()

    def apply(self, raw: Any) -> torch.Tensor:
        """The chosen tensor of a raw output, less its dropped channels."""
        out = raw if self.key is None else select(raw, self.key)
        if not self.dropped:
            return out
        channels = out.shape[1] if out.dim() >= 2 else 0
        if max(self.dropped) >= channels:
            raise UnusedOutputsError(
                f"{list(self.dropped)}: the output {list(out.shape)} has {channels} channels (dim 1), numbered from 0"
            )
        kept = torch.tensor([i for i in range(channels) if i not in self.dropped], device=out.device)
        return out.index_select(1, kept)


def resolve(raw: Any, key: Optional[str], dropped: tuple[int, ...] = ()) -> OutputChoice:
    """:func:`choose`, with the channels ``dropped`` (``unused_outputs``) left out when it is applied."""
    choice = choose(raw, key)
    return OutputChoice(choice.key, choice.reason, tuple(dropped)) if dropped else choice


def choose(raw: Any, key: Optional[str]) -> OutputChoice:
    """Decides, once, which tensor of a sample output is distilled (see the module docstring).

    Args:
        raw: the network's output on a dummy batch.
        key: ``teachers.<n>.output_key`` or None.

    Raises:
        AmalgamError: an unknown key, or several tensors and no rule that picks one.
    """
    if key is not None:
        select(raw, key)
        return OutputChoice(key, "output_key")
    if isinstance(raw, torch.Tensor):
        return OutputChoice(None, "a single tensor")
    found = candidates(raw)
    if len(found) == 1:
        only = next(iter(found))
        return OutputChoice(only, f"the only tensor of {a_type(raw)}")
    if isinstance(raw, Mapping) and isinstance(raw.get(DEFAULT_KEY), torch.Tensor):
        others = [k for k in found if k != DEFAULT_KEY]
        reason = f"'{DEFAULT_KEY}' by default (torchvision's convention; not {', '.join(others)})"
        return OutputChoice(DEFAULT_KEY, reason)
    if not found:
        raise OutputKeyError(
            f"the output ({type(raw).__name__}) holds no tensor amalgam can list: set output_key to the name"
            " (attribute, key or index) that reads it"
        )
    raise OutputKeyError(
        f"the output ({type(raw).__name__}) holds {len(found)} tensors: {describe(found)}; "
        f"set output_key to one of: {', '.join(found)}"
    )
