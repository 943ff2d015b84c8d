"""Several sub-teachers made from one teacher, combined into one target per batch.

A sub-teacher wrapper is called with the teacher's ``run`` function (prepared input -> canonical
output), its network and task, and the prepared input. It can wrap any teacher in a recipe
(``teachers.<name>.wrap: {type: multi_transform, flip: true}``) or be used from Python::

    wrap = SUBTEACHERS.get("noise")(sigma=0.1, alpha=0.5)
    target = wrap(lambda x: model(x), model, get_task("classification"), images)

Deterministic wrappers (``multi_transform``) can be cached; the others draw new sub-teachers
every call, so their teachers always run live. :meth:`SubTeacher.check` says before any training
why a wrap cannot work on a teacher (the teacher check calls it), and :meth:`SubTeacher.describe`
states the wrap with its arguments (the build log, ``amalgam inspect``, report.json).
"""

from __future__ import annotations

import functools
import inspect
import numbers
import random
import weakref
from typing import Any, Callable, ClassVar, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from amalgam.data.views import resize_with_holes
from amalgam.errors import AmalgamError
from amalgam.plugin_contract import plugin_label
from amalgam.registry import Registry
from amalgam.task import Task, get_task

Run = Callable[[torch.Tensor], torch.Tensor]


def _without_grad(call: Callable) -> Callable:
    """A wrap's ``__call__`` run under ``no_grad`` with its teacher in eval mode: called from a user's
    loop (``wrap(run, model, task, x)``), its targets carried the teacher's graph, and a loss on them
    trained the teacher; a teacher left in train mode had its batch-norm statistics moved by every
    call. Each module's own mode is restored after (``mc_dropout`` turns its dropouts on itself)."""

    @functools.wraps(call)
    def run_without_grad(self: "SubTeacher", run: Run, model: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        if args:  # (task, x): a task's name is taken for its plugin, as a user's loop may hold only the name
            args = (_as_task(args[0]), *args[1:])
        if "task" in kwargs:
            kwargs["task"] = _as_task(kwargs["task"])
        modes = [(m, m.training) for m in model.modules()] if isinstance(model, nn.Module) else []
        for m, _ in modes:
            m.training = False
        try:
            with torch.no_grad():
                return call(self, run, model, *args, **kwargs)
        finally:
            for m, mode in modes:
                m.training = mode

    return run_without_grad


def _as_task(task: Any) -> Task:
    """``task`` as a :class:`Task`: one already, or a registered task's name."""
    if isinstance(task, Task):
        return task
    if isinstance(task, str):
        return get_task(task)
    raise AmalgamError(
        f"a sub-teacher wrap is called as wrap(run, model, task, x): task is a Task or a task's name"
        f" ('classification', 'segmentation', 'depth', a plugin's), got {type(task).__name__}"
    )


class SubTeacher:
    """Base of the wrappers: turns one teacher into sub-teachers and combines their outputs.

    Subclasses keep each constructor argument as the attribute of the same name: :meth:`args`
    reads them back (override it where that does not hold).
    """

    #: True when the same input always gives the same output (the teacher cache may store it).
    deterministic: ClassVar[bool] = False
    #: the name it is registered under (set by :func:`register`; a plugin's class name otherwise)
    kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:  # every wrap's, a plugin's too: its targets are targets, not a graph
            cls.__call__ = _without_grad(cls.__dict__["__call__"])

    def __call__(self, run: Run, model: nn.Module, task: Task, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def averages_mirrors(self) -> bool:
        """Whether the wrap averages the teacher's answers on mirrored inputs into its plain ones (refused on a
        teacher whose labels change under a mirror: the mirror check)."""
        return False

    def check(self, model: nn.Module, task: Task) -> Optional[str]:
        """Why this wrap cannot work on a teacher of ``task`` with network ``model``, or None.

        Run by the teacher check, so that ``amalgam inspect`` and the build refuse before training.
        A reason starting ``"<argument>: "`` names the argument at fault (the key path gets it).
        """
        return None

    def args(self) -> dict[str, Any]:
        """The constructor's arguments as this wrap holds them, JSON-safe (report.json keeps them;
        a plugin may hold one as a tensor, a numpy number or a Path: see :func:`jsonable`)."""
        params = inspect.signature(type(self).__init__).parameters
        return {name: jsonable(getattr(self, name)) for name in list(params)[1:] if hasattr(self, name)}

    def describe(self) -> str:
        """The wrap's type and arguments, e.g. ``multi_transform(flip=True, scales=[1.0], hard=False)``."""
        shown = ", ".join(f"{k}={v!r}" for k, v in self.args().items())
        return f"{self.kind or type(self).__name__}({shown})"

    def refuse_if_unfit(self, model: nn.Module, task: Task) -> None:
        """Raises :meth:`check`'s reason: a wrap called from Python is held to the teacher check too.

        Checked once per network and task: a wrap is called at every live step, and a check may walk
        every module of the network (dropout layers, residual blocks), which do not change.
        """
        fitted = self.__dict__.setdefault("_fitted", weakref.WeakKeyDictionary())  # subclasses skip __init__
        if task.name in fitted.get(model, ()):
            return
        if problem := self.check(model, task):
            raise AmalgamError(f"{self.kind or type(self).__name__}: {problem}")
        fitted.setdefault(model, set()).add(task.name)

    def __getstate__(self) -> dict:
        # the networks checked are not the copy's to keep (and weak references do not pickle)
        return {k: v for k, v in self.__dict__.items() if k != "_fitted"}


def jsonable(value: Any) -> Any:
    """``value`` as JSON holds it: numbers, strings, bools and None as they are; lists, tuples and
    dicts (keys as strings) item by item; a tensor or numpy value as its number or list (``tolist``);
    anything else as its ``str`` (a Path, a callable), so that writing report.json never fails."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    tolist = getattr(value, "tolist", None)  # torch.Tensor, numpy arrays and numpy scalars
    if callable(tolist) and type(value).__module__.split(".")[0] in ("torch", "numpy"):
        return jsonable(tolist())
    return str(value)


SUBTEACHERS: Registry[type[SubTeacher]] = Registry("sub-teacher")


def register(kind: str) -> Callable[[type[SubTeacher]], type[SubTeacher]]:
    """Registers a wrapper class under ``kind`` and records the name on it (what :meth:`SubTeacher.describe` says)."""

    def add(cls: type[SubTeacher]) -> type[SubTeacher]:
        cls.kind = kind
        return SUBTEACHERS.register(kind)(cls)

    return add


@register("multi_transform")
class MultiTransform(SubTeacher):
    """Data distillation (Radosavovic et al.): the teacher on flips and scales, transforms undone, averaged.

    Args:
        flip: also run on the left-right mirrored input (its answer is mirrored back by ``Task.mirror``).
        scales: input scale factors; dense outputs are resized back to the scale-1 output size.
        hard: replace the aggregate by its hard pseudo-label (one-hot logits); labelled tasks only,
            refused on others (depth has no label to take), where it would change nothing.
    """

    deterministic = True

    def __init__(self, flip: bool = True, scales: Sequence[float] = (1.0,), hard: bool = False):
        if not scales or any(s <= 0 for s in scales):
            raise AmalgamError(f"scales: expected positive factors, got {list(scales)}")
        self.flip, self.scales, self.hard = flip, list(scales), hard

    @property
    def averages_mirrors(self) -> bool:
        return self.flip

    def check(self, model: nn.Module, task: Task) -> Optional[str]:
        if self.hard and not task.labelled:
            return f"hard: a {task.name} teacher has no labels to take a hard pseudo-label of (set hard: false)"
        if self.hard and not task.exclusive_labels:  # an argmax keeps one of several labels that hold
            return f"hard: {plugin_label(task)} does not declare exclusive_labels: one label each is wrong for it"
        return None

    def __call__(self, run: Run, model: nn.Module, task: Task, x: torch.Tensor) -> torch.Tensor:
        self.refuse_if_unfit(model, task)
        outputs, size = [], None
        for scale in self.scales:
            xs = x if scale == 1 else F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
            for mirrored in (False, True) if self.flip else (False,):
                y = run(xs.flip(-1) if mirrored else xs)
                y = task.mirror(y) if mirrored else y  # the task's values may change under a mirror, not only places
                if task.dense:  # no-answer pixels NaN before resizing, so none is blended into an answer
                    y = task.mark_no_answer(y)
                    if size is None:
                        size = _dense_size(run, x) if scale != 1 else y.shape[-2:]
                    if y.shape[-2:] != size and task.marks_holes:
                        y = resize_with_holes(y.float(), size)  # a hole (no depth) does not spread over its kernel
                    elif y.shape[-2:] != size:
                        y = F.interpolate(y.float(), size=size, mode="bilinear", align_corners=False)
                outputs.append(y)
        out = task.ensemble(outputs)
        if self.hard:  # labelled: check() refused the rest
            # one-hot as logits: softmax at any temperature in [1, 4] puts > 0.99 on the label
            out = F.one_hot(out.argmax(1), out.shape[1]).movedim(-1, 1).to(out.dtype) * 30.0
        return out


def _dense_size(run: Run, x: torch.Tensor) -> torch.Size:
    return run(x[:1]).shape[-2:]


@register("mc_dropout")
class MCDropout(SubTeacher):
    """MC-dropout sub-teachers: dropout kept on at inference, ``samples`` draws averaged.

    Args:
        samples: sub-teachers per batch.
        p: override the dropout rate of the teacher's dropout layers (None keeps theirs).
    """

    def __init__(self, samples: int = 4, p: Optional[float] = None):
        if samples < 1 or (p is not None and not 0 <= p < 1):
            raise AmalgamError(f"expected samples >= 1 and 0 <= p < 1, got samples={samples}, p={p}")
        self.samples, self.p = samples, p

    def check(self, model: nn.Module, task: Task) -> Optional[str]:
        if _dropouts(model):
            return None
        if isinstance(model, torch.jit.ScriptModule):  # its dropout, if any, is baked into the graph
            return "cannot reach the dropout layers of a TorchScript teacher"
        return "the teacher has no dropout layers"

    def __call__(self, run: Run, model: nn.Module, task: Task, x: torch.Tensor) -> torch.Tensor:
        self.refuse_if_unfit(model, task)
        drops = _dropouts(model)
        saved = [(m.training, m.p) for m in drops]
        try:
            for m in drops:
                m.train()
                m.p = m.p if self.p is None else self.p
            return task.ensemble([run(x) for _ in range(self.samples)])
        finally:
            for m, (mode, p) in zip(drops, saved):
                m.train(mode)
                m.p = p


def _dropouts(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


@register("stochastic_depth")
class StochasticDepth(SubTeacher):
    """Sub-networks of a residual teacher (Lee et al.): each residual branch dropped with
    probability ``drop`` (its skip path kept), drawn anew per batch; ``samples`` draws averaged.

    Residual blocks are found by shape: modules with ``conv1`` and a ``downsample`` attribute
    (torchvision / smp / timm ResNet blocks).
    """

    def __init__(self, drop: float = 0.2, samples: int = 1, seed: Optional[int] = None):
        if not 0 <= drop <= 1 or samples < 1:
            raise AmalgamError(f"expected 0 <= drop <= 1 and samples >= 1, got drop={drop}, samples={samples}")
        self.drop, self.samples, self.seed = drop, samples, seed
        # without a seed, torch's stream (the recipe's seed, restored on resume), as noise and mc_dropout draw: OS
        # entropy made a seeded build irreproducible (a trial)
        self.rng = random.Random(seed) if seed is not None else None

    def check(self, model: nn.Module, task: Task) -> Optional[str]:
        if isinstance(model, torch.jit.ScriptModule):  # no forward hooks: the blocks cannot be skipped
            return "cannot skip the residual blocks of a TorchScript teacher (no forward hooks on ScriptModules)"
        if not residual_blocks(model):
            return "the teacher has no residual blocks (conv1 + downsample)"
        return None

    def __call__(self, run: Run, model: nn.Module, task: Task, x: torch.Tensor) -> torch.Tensor:
        self.refuse_if_unfit(model, task)
        blocks = residual_blocks(model)
        outputs = []
        for _ in range(self.samples):
            draws = [self.rng.random() for _ in blocks] if self.rng else torch.rand(len(blocks)).tolist()
            dropped = [b for b, u in zip(blocks, draws) if u < self.drop]
            # first among the block's hooks: a feature tap on it then keeps what flows on, not the dropped branch
            handles = [b.register_forward_hook(_skip_only, prepend=True) for b in dropped]
            try:
                outputs.append(run(x))
            finally:
                for h in handles:
                    h.remove()
        return outputs[0] if len(outputs) == 1 else task.ensemble(outputs)


def residual_blocks(model: nn.Module) -> list[nn.Module]:
    """The residual blocks of a ResNet-style network."""
    return [m for m in model.modules() if hasattr(m, "conv1") and hasattr(m, "downsample")]


def _skip_only(block: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    identity = args[0] if block.downsample is None else block.downsample(args[0])
    return F.relu(identity)


@register("noise")
class NoisyOutput(SubTeacher):
    """Noise-injected teacher (Sau & Balasubramanian): ``z' = z (1 + xi)``, ``xi ~ N(0, sigma^2)``,
    applied to each sample's output with probability ``alpha``."""

    def __init__(self, sigma: float = 0.1, alpha: float = 0.5):
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (sigma, alpha)):
            raise AmalgamError(f"expected numbers, got sigma={sigma!r}, alpha={alpha!r}")
        if sigma < 0 or not 0 <= alpha <= 1:
            raise AmalgamError(f"expected sigma >= 0 and 0 <= alpha <= 1, got sigma={sigma}, alpha={alpha}")
        self.sigma, self.alpha = sigma, alpha

    def __call__(self, run: Run, model: nn.Module, task: Task, x: torch.Tensor) -> torch.Tensor:
        z = run(x)
        xi = torch.randn_like(z, dtype=torch.float32) * self.sigma
        hit = (torch.rand(z.shape[0], device=z.device) < self.alpha).view(-1, *([1] * (z.dim() - 1)))
        return torch.where(hit, z * (1 + xi), z.float())


def build_subteacher(kind: str, kwargs: dict) -> SubTeacher:
    """The wrapper registered as ``kind``, built from ``kwargs``; bad arguments raise naming them."""
    cls = SUBTEACHERS.get(kind)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise AmalgamError(f"bad arguments for sub-teacher '{kind}': {exc}") from None
