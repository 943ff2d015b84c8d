"""Checks a task plugin against the contract of :class:`amalgam.task.Task` before any training.

A plugin's slip (a hook missing a parameter, a forgotten class attribute, a head with fewer
channels than its teachers answer, a metric its meter never returns) would otherwise surface
late, as a raw traceback after the whole schedule, or not at all. Each check here says what is
wrong in one line naming the plugin's class and the hook at fault. The contract is read from
:class:`Task` itself, so a hook added there is checked without a change here.
"""

from __future__ import annotations

import inspect
import os
import traceback
from functools import lru_cache
from typing import Any, Callable, NamedTuple, Optional

import torch

from amalgam.errors import AmalgamError, count_of, error_line
from amalgam.registry import BUILT_IN_PACKAGES

#: class attributes every task must set, and their type (the others have defaults on ``Task``)
REQUIRED_ATTRIBUTES: dict[str, type] = {"name": str, "dense": bool, "target_key": str, "metric": str}
#: optional class attributes that must be a bool when set (their defaults are on ``Task``)
FLAGS = ("labelled", "exclusive_labels", "higher_is_better")
#: hooks ``Task`` only declares (they raise NotImplementedError): a build calls each of them
REQUIRED_HOOKS = ("build_head", "distill_loss", "predict", "new_meter")
#: arguments a hook may take instead of the contract's: amalgam 0.1's
#: ``distill_loss(student, teacher, projection, temperature)`` is still called (deprecated)
OLD_FORMS: dict[str, int] = {"distill_loss": 4}
#: the decoder (or encoder) channels the teacher check builds a probe head with
PROBE_CHANNELS = 16


def plugin_label(task: Any) -> str:
    """``task plugin 'normals' (trial_tasks.normals:NormalsTask)``: a task class or instance, by name and class."""
    cls = task if isinstance(task, type) else type(task)
    return f"task plugin '{getattr(cls, 'name', '?')}' ({cls.__module__}:{cls.__qualname__})"


def check_plugin(cls: type) -> None:
    """Raises :class:`AmalgamError` in one line naming the plugin when ``cls`` breaks the contract."""
    if problem := contract_problem(cls):
        raise AmalgamError(f"{plugin_label(cls)}: {problem}")


def declares_direction(task: Any) -> bool:
    """Whether a task (class or instance) sets ``higher_is_better``: the instance itself (in ``__init__``), its
    class, or a class it derives from other than ``Task``."""
    from amalgam.task import Task

    cls = task if isinstance(task, type) else type(task)
    own = not isinstance(task, type) and "higher_is_better" in vars(task)
    return own or any("higher_is_better" in vars(k) for k in cls.__mro__ if k is not Task and k is not object)


@lru_cache(maxsize=None)
def contract_problem(cls: type) -> Optional[str]:
    """What in the task class ``cls`` breaks the contract (None if nothing): a required class
    attribute missing or of another type, a required hook not defined, a hook that cannot be called
    the way amalgam calls it. Checked once per class (classes do not change)."""
    from amalgam.task import Task  # the contract: task.py imports this module's users

    for attr, kind in REQUIRED_ATTRIBUTES.items():
        if not isinstance(getattr(cls, attr, None), kind):
            return f"class attribute '{attr}' ({kind.__name__}) is not set"
    for attr in FLAGS:  # "False", a str, is true: a lower-is-better metric turned upside down in the report
        if not isinstance(value := getattr(cls, attr, False), (bool, property)):  # a property: read per instance
            return f"class attribute '{attr}' must be True or False, got {value!r} ({type(value).__name__})"
    for hook in REQUIRED_HOOKS:
        if getattr(cls, hook, None) is getattr(Task, hook):
            return f"{hook}{_shown(getattr(Task, hook))} is not defined"
    if not cls.labelled and getattr(cls, "num_outputs", None) is Task.num_outputs:
        return "num_outputs(space) is not defined (a task without labels says its head's channels)"
    for hook, base in _contract_hooks(Task).items():
        if problem := hook_problem(cls, hook, base):
            return problem
    return None


def _contract_hooks(base: type) -> dict[str, Callable]:
    """The public methods ``base`` defines: the hooks amalgam may call on a task."""
    return {n: f for n, f in vars(base).items() if inspect.isfunction(f) and not n.startswith("_")}


def hook_problem(cls: type, hook: str, base: Callable) -> Optional[str]:
    """Why ``cls.<hook>`` cannot be called with the arguments ``base`` (``Task``'s) takes, or None."""
    own = inspect.getattr_static(cls, hook, None)
    if own is None or own is base:
        return None
    method = getattr(cls, hook)
    if not callable(method):
        return f"{hook} is {type(method).__name__}, not a method: {hook}{_shown(base)} expected"
    try:
        sig = inspect.signature(method)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to read
        return None
    bound_self = isinstance(own, (staticmethod, classmethod))  # the call passes no instance to bind
    count = len(inspect.signature(base).parameters) - 1
    new_form = _new_form(sig, bound_self)  # (student, teacher, options, extra): not 0.1's form
    forms = [count, OLD_FORMS[hook]] if hook in OLD_FORMS and not new_form else [count]
    for n in forms:
        try:
            sig.bind(*([None] * (n + (0 if bound_self else 1))))
            return None
        except TypeError:
            continue
    got = sig if bound_self else sig.replace(parameters=list(sig.parameters.values())[1:])
    return f"{hook}{_shown(base)} expected, got {hook}{got}"


def _new_form(sig: inspect.Signature, bound_self: bool) -> bool:
    """Whether the signature is not amalgam 0.1's form (see :func:`takes_old_form`)."""
    names = list(sig.parameters)[0 if bound_self else 1 :]
    return not (len(names) >= 4 and names[2] == "projection")


def takes_old_form(cls: type) -> bool:
    """Whether a task's ``distill_loss`` is amalgam 0.1's ``(student, teacher, projection, temperature)``:
    known by its third argument's name, as 0.1's docs wrote it (any other form with four arguments,
    ``(student, teacher, opts, reduction)``, was called the old way, its options the projection)."""
    own = inspect.getattr_static(cls, "distill_loss", None)
    sig = inspect.signature(cls.distill_loss)
    return not _new_form(sig, isinstance(own, (staticmethod, classmethod)))


def _shown(fn: Callable) -> str:
    """``fn``'s parameters after ``self``, without annotations: ``(output, size, projection=None)``."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    return "(" + ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params) + ")"


def check_output_problem(task: Any, out: torch.Tensor, batch: int, space: Any) -> Optional[str]:
    """``task.check_output(out, batch, space)``, held to its contract: None or a ``str``. Anything
    else (``True`` meaning "fine", ``False`` meaning "wrong") is the plugin's error, said as such."""
    result = task.check_output(out, batch, space)
    if result is None or isinstance(result, str):
        return result or None
    raise AmalgamError(
        f"{plugin_label(task)}: check_output returned {result!r} ({type(result).__name__}); it must return None"
        " when the output is fine, else a str saying what is wrong"
    )


def head_problem(task: Any, teacher: str, out: torch.Tensor) -> Optional[str]:
    """Why the student's head for a task without labels cannot answer what teacher ``teacher`` does
    (``out``: its canonical output on the check batch), or None. Labelled tasks are left out: their
    head covers the unified labels, each teacher only its own. A head that does not run on the probe
    input is left to the student's build, which runs it on the real one."""
    if task.labelled or not isinstance(out, torch.Tensor) or out.dim() < 1:
        return None
    count = task.num_outputs(None)
    try:
        y = _probe_head(task, count)
    except Exception:  # noqa: BLE001 - a head fixed to other channels: the student build says why
        return None
    if not isinstance(y, torch.Tensor):
        return None
    if y.dim() != out.dim():  # [B] against [B, 1] broadcasts to [B, B] without a word
        return (
            f"{plugin_label(task)}: the student's head gives {y.dim()}-d answers {['B', *y.shape[1:]]}"
            f" but teacher '{teacher}' answers {out.dim()}-d ones {list(out.shape)}: the loss would broadcast one"
            " against the other; make check_output require the head's shape (or convert_output reshape the teacher's)"
        )
    if tuple(y.shape[1:2] if task.dense else y.shape[1:]) == tuple(out.shape[1:2] if task.dense else out.shape[1:]):
        return None
    got = count_of(y.shape[1], "channel") if task.dense else f"{list(y.shape[1:])} per image"
    wants = count_of(out.shape[1], "channel") if task.dense else f"{list(out.shape[1:])} per image"
    return (
        f"{plugin_label(task)}: the student's head gives {got} (build_head(in_channels, {count}), num_outputs"
        f" says {count}) but teacher '{teacher}' answers {wants}: the loss would broadcast one against the other"
    )


@torch.no_grad()
def _probe_head(task: Any, count: int) -> Any:
    """The task's head on a random decoder map (dense) or last encoder map (pooled)."""
    head = task.build_head(PROBE_CHANNELS, count).eval()
    side = 16 if task.dense else 4
    return head(torch.rand(2, PROBE_CHANNELS, side, side))


def require_metric(task: Any, metrics: dict) -> None:
    """Raises when the meter's result lacks the task's headline metric: every score would be n/a."""
    if task.metric in metrics:
        return
    keys = ", ".join(sorted(map(str, metrics))) or "nothing"
    raise AmalgamError(f"{plugin_label(task)}: its meter returned {{{keys}}}, not its metric '{task.metric}'")


@torch.no_grad()
def metric_problem(task: Any, out: torch.Tensor, space: Any) -> Optional[str]:
    """:func:`require_metric` before training, on a teacher's check-batch output scored against its
    own prediction (a teacher is perfect on itself): None when the meter gives the task's metric, or
    when this probe cannot tell (the meter takes targets of another form than predictions)."""
    try:
        pred = task.predict(out, tuple(out.shape[-2:]) if task.dense else (1, 1), None)
        meter = task.new_meter(len(space) if space is not None else None)
        meter.update(pred, pred)
        metrics = meter.compute()
    except Exception:  # noqa: BLE001 - the first evaluation checks it on real targets
        return None
    try:
        require_metric(task, metrics)
    except AmalgamError as exc:
        return f"{exc} (found before training, on the teacher's check batch)"
    return None


def ensemble_problem(task: Any) -> Optional[str]:
    """Why amalgam cannot merge several outputs of ``task`` (sub-teachers, ``amalgamation.ensemble``),
    or None: a labelled task whose labels are not declared mutually exclusive (``exclusive_labels``)
    and that has no ``ensemble`` of its own would get a softmax mean, wrong for independent labels."""
    from amalgam.task import Task

    if not task.labelled or getattr(task, "exclusive_labels", False) or type(task).ensemble is not Task.ensemble:
        return None
    return (
        f"{plugin_label(task)}: its outputs cannot be merged: define ensemble(outputs), or set exclusive_labels = True"
        " if its labels are mutually exclusive (a softmax mean is right only then)"
    )


def mirror_note(task: Any) -> str:
    """How the task's outputs are mirrored with a flipped image (``amalgam tasks``, the cache's log line)."""
    from amalgam.task import Task

    if type(task).mirror is not Task.mirror:
        return "mirror: its own"
    if task.dense:
        return "mirror: default (a spatial flip, values unchanged)"
    return "mirror: default (unchanged, one answer per image)"


def is_built_in(cls: type) -> bool:
    """Whether a task class is one of amalgam's own."""
    return getattr(cls, "__module__", "").split(".")[0] in BUILT_IN_PACKAGES


def plugin_modules() -> dict[str, str]:
    """The module prefixes of the task plugins loaded in this process, each with its :func:`plugin_label`: a
    plugin's own module, or the package holding it (``mycorp.tasks.normals`` -> ``mycorp.tasks``), never a
    top-level package above that (it claimed a user's every module)."""
    from amalgam.task import TASKS

    found = {}
    for name in TASKS.names():
        cls = TASKS.get(name)
        module = getattr(cls, "__module__", "") or ""
        if is_built_in(cls) or not module:
            continue
        found[module.rsplit(".", 1)[0] if "." in module else module] = plugin_label(cls)
    return found


class PluginFailure(NamedTuple):
    """A failure inside a task plugin's code: the hook amalgam called, and the one line that says it."""

    hook: str
    line: str


def plugin_failure(exc: BaseException) -> Optional[PluginFailure]:
    """The hook and one line naming the task plugin and where in its code ``exc`` was raised, when the
    traceback passes through a loaded plugin's code; None otherwise (amalgam's own failures keep their
    traceback, a network's stays the teacher's). A plugin's bug read as amalgam's traceback, late, named no
    plugin. The outermost frame in a plugin's modules decides: a method of an ``nn.Module`` there is a teacher
    network defined beside the plugin (the edges example's), not the plugin."""
    from torch import nn

    owners = plugin_modules()
    hits = []
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        module = frame.f_globals.get("__name__", "") or ""
        label = next((v for k, v in owners.items() if module == k or module.startswith(k + ".")), None)
        if label is None:
            continue
        if not hits and isinstance(frame.f_locals.get("self"), nn.Module):
            return None
        hits.append((frame.f_code.co_name, frame.f_code.co_filename, lineno, label))
    if not hits:
        return None
    (called, _, _, label), (_, filename, lineno, _) = hits[0], hits[-1]
    line = (
        f"{label} raised in its {called} ({os.path.basename(filename)}:{lineno}):"
        f" {type(exc).__name__}: {error_line(exc)} (--debug shows the traceback)"
    )
    return PluginFailure(called, line)


def plugin_error_line(exc: BaseException) -> Optional[str]:
    """:func:`plugin_failure`'s line, or None."""
    failure = plugin_failure(exc)
    return failure.line if failure else None
