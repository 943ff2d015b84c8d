"""Several sub-teachers made from one teacher, combined into one target per batch.

A sub-teacher wrapper is called with the teacher's ``run`` function (prepared input -> canonical
output), its network and task, and the prepared input. It can wrap any teacher in a recipe
(``teachers.<name>.wrap: {type: multi_transform, flip: true}``) or be used from Python::

    wrap = SUBTEACHERS.get("noise")(sigma=0.1, alpha=0.5)
    target = wrap(lambda x: model(x), model, get_task("classification"), images)

Deterministic wrappers (``multi_transform``) can be cached; the others draw new sub-teachers
every call, so their teachers always run live.
"""

from __future__ import annotations

import random
from typing import Callable, ClassVar, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from amalgam.errors import AmalgamError
from amalgam.registry import Registry
from amalgam.task import Task

Run = Callable[[torch.Tensor], torch.Tensor]


class SubTeacher:
    """Base of the wrappers: turns one teacher into sub-teachers and combines their outputs."""

    #: True when the same input always gives the same output (the teacher cache may store it).
    deterministic: ClassVar[bool] = False

    def __call__(self, run: Run, model: nn.Module, task: Task, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


SUBTEACHERS: Registry[type[SubTeacher]] = Registry("sub-teacher")


@SUBTEACHERS.register("multi_transform")
class MultiTransform(SubTeacher):
    """Data distillation (Radosavovic et al.): the teacher on flips and scales, transforms undone, averaged.

    Args:
        flip: also run on the left-right mirrored input (dense outputs are mirrored back).
        scales: input scale factors; dense outputs are resized back to the scale-1 output size.
        hard: replace the aggregate by its hard pseudo-label (labelled tasks: one-hot logits).
    """

    deterministic = True

    def __init__(self, flip: bool = True, scales: Sequence[float] = (1.0,), hard: bool = False):
        if not scales or any(s <= 0 for s in scales):
            raise AmalgamError(f"scales: expected positive factors, got {list(scales)}")
        self.flip, self.scales, self.hard = flip, list(scales), hard

    def __call__(self, run: Run, model: nn.Module, task: Task, x: torch.Tensor) -> torch.Tensor:
        outputs, size = [], None
        for scale in self.scales:
            xs = x if scale == 1 else F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
            for mirrored in (False, True) if self.flip else (False,):
                y = run(xs.flip(-1) if mirrored else xs)
                if task.dense:  # no-answer pixels NaN before resizing, so none is blended into an answer
                    y = task.mark_no_answer(y.flip(-1) if mirrored else y)
                    if size is None:
                        size = _dense_size(run, x) if scale != 1 else y.shape[-2:]
                    if y.shape[-2:] != size:
                        y = F.interpolate(y.float(), size=size, mode="bilinear", align_corners=False)
                outputs.append(y)
        out = task.ensemble(outputs)
        if self.hard and task.labelled:
            # one-hot as logits: softmax at any temperature in [1, 4] puts > 0.99 on the label
            out = F.one_hot(out.argmax(1), out.shape[1]).movedim(-1, 1).to(out.dtype) * 30.0
        return out


def _dense_size(run: Run, x: torch.Tensor) -> torch.Size:
    return run(x[:1]).shape[-2:]


@SUBTEACHERS.register("mc_dropout")
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

    def __call__(self, run: Run, model: nn.Module, task: Task, x: torch.Tensor) -> torch.Tensor:
        drops = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
        if not drops:
            raise AmalgamError("mc_dropout: the teacher has no dropout layers")
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


@SUBTEACHERS.register("stochastic_depth")
class StochasticDepth(SubTeacher):
    """Sub-networks of a residual teacher (Lee et al.): each residual branch dropped with
    probability ``drop`` (its skip path kept), drawn anew per batch; ``samples`` draws averaged.

    Residual blocks are found by shape: modules with ``conv1`` and a ``downsample`` attribute
    (torchvision / smp / timm ResNet blocks).
    """

    def __init__(self, drop: float = 0.2, samples: int = 1, seed: Optional[int] = None):
        if not 0 <= drop <= 1 or samples < 1:
            raise AmalgamError(f"expected 0 <= drop <= 1 and samples >= 1, got drop={drop}, samples={samples}")
        self.drop, self.samples = drop, samples
        self.rng = random.Random(seed)

    def __call__(self, run: Run, model: nn.Module, task: Task, x: torch.Tensor) -> torch.Tensor:
        blocks = residual_blocks(model)
        if not blocks:
            raise AmalgamError("stochastic_depth: the teacher has no residual blocks (conv1 + downsample)")
        outputs = []
        for _ in range(self.samples):
            dropped = [b for b in blocks if self.rng.random() < self.drop]
            handles = [b.register_forward_hook(_skip_only) for b in dropped]
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


@SUBTEACHERS.register("noise")
class NoisyOutput(SubTeacher):
    """Noise-injected teacher (Sau & Balasubramanian): ``z' = z (1 + xi)``, ``xi ~ N(0, sigma^2)``,
    applied to each sample's output with probability ``alpha``."""

    def __init__(self, sigma: float = 0.1, alpha: float = 0.5):
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
