"""Multi-task students. ``forward(images in [0, 1])`` always returns ``{task name: output}``.

* ``branched``: the first ``branch_at`` encoder stages are shared; each task gets a deep copy of
  the remaining stages, plus a U-Net decoder (dense tasks) and its head. ``branch_at`` may also
  map each task to its own branch point: a tree (see :mod:`amalgam.students.tree`).
* ``compact``: one encoder, one shared U-Net decoder, a light head per task.

Heads come from the task plugins; the student normalises its own input (ImageNet statistics),
so an exported student takes plain [0, 1] images.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from amalgam.errors import AmalgamError, RecipeError, error_line
from amalgam.registry import Registry
from amalgam.students.encoders import StagedEncoder, build_encoder, split_stages
from amalgam.students.tree import branch_points, spine_depth
from amalgam.task import get_task

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class StudentSpec:
    """Everything needed to rebuild a student without its teachers (stored in ``student.pt``)."""

    type: str
    encoder: str
    branch_at: int | dict[str, int]  # one point for all tasks, or a point per task (a tree)
    decoder_channels: list[int]
    heads: dict[str, int] = field(default_factory=dict)  # task name -> output channels
    task_decoders: dict[str, list[int]] = field(default_factory=dict)  # a dense task's own widths (branched)
    encoder_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the encoder's constructor
    hypercolumn: list[str] = field(default_factory=list)  # dense tasks whose head also reads the decoder's 1/8 map

    def __post_init__(self) -> None:
        # widths equal to the shared ones are no choice of their own: such a spec is the plain one
        shared = list(self.decoder_channels)
        self.task_decoders = {t: list(w) for t, w in self.task_decoders.items() if list(w) != shared}

    def decoders_for(self, task: str) -> list[int]:
        """The decoder widths of ``task``: its own when the recipe gives them, else the shared ones."""
        return list(self.task_decoders.get(task, self.decoder_channels))

    def dense_decoders(self) -> dict[str, list[int]]:
        """Each dense task's decoder widths, in head order."""
        return {t: self.decoders_for(t) for t in self.heads if get_task(t).dense}

    @classmethod
    def stored(cls, spec: dict) -> dict:
        """A stored spec dict as today's spec writes it (keys added since read at their defaults), so
        that files and checkpoints of any age compare key by key with :meth:`to_dict`."""
        try:
            return cls(**spec).to_dict()
        except TypeError:  # not a spec of this version at all: compared as it is
            return dict(spec)

    @classmethod
    def differences(cls, a: dict, b: dict) -> list[str]:
        """The fields where two stored spec dicts (student files', checkpoints', :meth:`to_dict`'s)
        differ once both are read as today's spec writes them (:meth:`stored`), in field order."""
        a, b = cls.stored(a), cls.stored(b)
        return [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]

    def describe_encoder(self) -> str:
        """``tu-resnet10t`` or ``tu-resnet10t(channels=[16, 32, 64, 128], stem_width=16)``."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.encoder_args.items())
        return f"{self.encoder}({args})" if args else self.encoder

    def report_fields(self) -> dict:
        """What report.json's ``student`` says of the architecture beyond its size: each dense
        task's decoder widths, and the encoder when ``encoder_args`` shape it."""
        out: dict = {"decoders": self.dense_decoders()} if self.dense_decoders() else {}
        if out and getattr(STUDENTS.get(self.type), "shared_decoder", False):  # listed under each task
            out["decoder_shared"] = True
        out |= {"hypercolumn": list(self.hypercolumn)} if self.hypercolumn else {}
        return out | ({"encoder": self.describe_encoder()} if self.encoder_args else {})

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("task_decoders", "encoder_args", "hypercolumn"):  # files written before them read the same
            if not out[key]:
                del out[key]
        return out


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    """Upsample x2, concatenate the skip feature, two 3x3 convolutions."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.convs = nn.Sequential(
            _conv_bn_relu(in_channels + skip_channels, out_channels), _conv_bn_relu(out_channels, out_channels)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.convs(x)


class UnetDecoder(nn.Module):
    """smp-style U-Net decoder over the 6 encoder features (input first), one block per width.

    Five blocks end at the input's resolution; four leave out the finest block, which costs the most
    compute, and end at half of it (see :func:`dense_output`). Fewer are refused: the dense losses
    shrink teachers' outputs to the student's by bilinear resizing, exact (an average) at half the
    size but skipping pixels, thin objects among them, at a quarter and below.

    ``hypercolumn``: the output also carries the second block's map (1/8 of the input), upsampled: a head
    naming things at fine resolution then reads the coarse, semantic features directly (Hariharan et al.,
    2015), not only through the narrow last blocks.
    """

    def __init__(self, encoder_channels: list[int], decoder_channels: list[int], hypercolumn: bool = False):
        super().__init__()
        self.hypercolumn = hypercolumn
        depth = len(encoder_channels) - 1
        if not depth - 1 <= len(decoder_channels) <= depth:
            raise AmalgamError(
                f"decoder_channels: {depth - 1} or {depth} widths (one per decoder block), got {decoder_channels}"
            )
        skips = list(reversed(encoder_channels[1:-1])) + [0]
        ins = [encoder_channels[-1]] + list(decoder_channels[:-1])
        self.blocks = nn.ModuleList(DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, decoder_channels))
        self.out_channels = decoder_channels[-1] + (decoder_channels[1] if hypercolumn else 0)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        skips = list(reversed(features[1:-1])) + [None]
        x = features[-1]
        coarse = None
        for k, (block, skip) in enumerate(zip(self.blocks, skips)):
            x = block(x, skip)
            coarse = x if k == 1 else coarse
        if not self.hypercolumn:
            return x
        return torch.cat([x, F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)], 1)


class _Student(nn.Module):
    #: a tree of task branches: ``student.branch_at`` per task or ``auto``, ``amalgam search``, the report's tree
    tree: ClassVar[bool] = False

    def __init__(self, spec: StudentSpec):
        super().__init__()
        self.spec = spec
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def task_path(self, name: str) -> nn.Module:
        """A module holding only task ``name``'s path (shared weights): for export and deployment."""
        if name not in self.spec.heads:
            raise AmalgamError(f"the student has no task '{name}' (it has: {', '.join(self.spec.heads)})")
        return self._path(name)

    def _path(self, name: str) -> nn.Module:
        raise NotImplementedError

    def load_encoder(self, encoder: nn.Module) -> None:
        """Copies a (pretrained) smp encoder of ``spec.encoder`` into every place the student holds it."""
        raise RecipeError("student.encoder_weights", f"a '{self.spec.type}' student cannot load encoder weights")

    @classmethod
    def default_tap(cls, spec: StudentSpec) -> str:
        """Module whose output feature terms and gates read when ``amalgamation.student_tap`` is not set."""
        raise AmalgamError(f"amalgamation.student_tap: required for a '{spec.type}' student (it has no default)")

    def _head(self, task_name: str, dense_channels: int, pooled_channels: int) -> nn.Module:
        task = get_task(task_name)
        return task.build_head(dense_channels if task.dense else pooled_channels, self.spec.heads[task_name])


class BranchedStudent(_Student):
    """A shared trunk (the spine) that each task leaves at its branch point for its own encoder
    tail + decoder + head. ``trunk[k]`` is shared by the tasks whose branch point is above ``k``."""

    tree = True

    @classmethod
    def default_tap(cls, spec: StudentSpec) -> str:
        """The last stage all tasks share."""
        shared = min(branch_points(spec.branch_at, list(spec.heads)).values())
        if shared == 0:
            raise AmalgamError("amalgamation.student_tap: required when student.branch_at is 0 (nothing is shared)")
        return f"trunk.{shared - 1}"

    def __init__(self, spec: StudentSpec):
        super().__init__(spec)
        base = StagedEncoder(spec.encoder, spec.encoder_args)
        channels = base.out_channels
        self.points = branch_points(spec.branch_at, list(spec.heads))
        self.trunk = nn.ModuleList(base.stages[: spine_depth(self.points)])
        self.branches = nn.ModuleDict()
        self.decoders = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        stray = sorted(set(spec.task_decoders) - set(spec.dense_decoders()))
        if stray:
            raise AmalgamError(f"task_decoders: {', '.join(stray)} is not a dense task of this student")
        for name in spec.heads:
            self.branches[name] = copy.deepcopy(nn.ModuleList(base.stages[self.points[name] :]))
            widths = spec.decoders_for(name)
            if get_task(name).dense:
                self.decoders[name] = UnetDecoder(channels, widths, name in spec.hypercolumn)
            dense_in = self.decoders[name].out_channels if name in self.decoders else widths[-1]
            self.heads[name] = self._head(name, dense_in, channels[-1])

    def _trunk(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = [self.normalise(images)]
        for stage in self.trunk:
            features.append(stage(features[-1]))
        return features

    def _branch(self, features: list[torch.Tensor], name: str, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        own = list(features[: self.points[name] + 1])  # skips come from the stages this task sees
        for stage in self.branches[name]:  # on every row: batch norm on small maps needs them
            own.append(stage(own[-1]))
        if rows is not None:
            own = [f[rows] for f in own]
        if name not in self.decoders:
            return self.heads[name](own[-1])
        return dense_output(self.heads[name](self.decoders[name](own)), own[0], self.training)

    def forward(self, images: torch.Tensor, rows: Optional[dict[str, torch.Tensor]] = None) -> dict[str, torch.Tensor]:
        """Every task's output; ``rows`` (task -> batch rows) runs a task's decoder and head on those
        rows only (the others come back as zeros, see amalgam/training/routing.py)."""
        features = self._trunk(images)
        out = {}
        for name in self.branches:
            r = routed(rows, name, images.shape[0])
            y = self._branch(features, name, r)
            out[name] = y if r is None else scatter_rows(y, r, images.shape[0])
        return out

    def encoder_modules(self) -> list[nn.Module]:
        """The shared trunk and every task's own encoder stages."""
        return [self.trunk, self.branches]

    def load_encoder(self, encoder: nn.Module) -> None:
        """The trunk and each task's own stages start from the matching stages of ``encoder``."""
        stages = split_stages(encoder)
        for k, stage in enumerate(self.trunk):
            stage.load_state_dict(stages[k].state_dict())
        for name, own in self.branches.items():
            for k, stage in enumerate(own, start=self.points[name]):
                stage.load_state_dict(stages[k].state_dict())

    def _path(self, name: str) -> nn.Module:
        stages = nn.ModuleList([*self.trunk[: self.points[name]], *self.branches[name]])
        return _TaskPath(self, stages, self.decoders[name] if name in self.decoders else None, self.heads[name])


class CompactStudent(_Student):
    """One encoder and one shared decoder; tasks differ only by their light heads."""

    #: one decoder for every dense task (report.json's ``student.decoder_shared``)
    shared_decoder: ClassVar[bool] = True

    @classmethod
    def default_tap(cls, spec: StudentSpec) -> str:
        """The shared decoder."""
        return "decoder"

    def __init__(self, spec: StudentSpec):
        super().__init__(spec)
        if spec.task_decoders:
            raise RecipeError(
                "student.task_decoder_channels",
                "a compact student shares one decoder among its tasks: set student.decoder_channels,"
                " or use student.type: branched for a decoder per task",
            )
        self.encoder = build_encoder(spec.encoder, spec.encoder_args)
        channels = list(self.encoder.out_channels)
        dense = any(get_task(n).dense for n in spec.heads)
        # one decoder: its map carries the coarse one for every dense head, where any asks for it
        self.decoder = UnetDecoder(channels, spec.decoder_channels, bool(spec.hypercolumn)) if dense else None
        dense_in = self.decoder.out_channels if dense else spec.decoder_channels[-1]
        self.heads = nn.ModuleDict({n: self._head(n, dense_in, channels[-1]) for n in spec.heads})
        self.dense_tasks = {n for n in spec.heads if get_task(n).dense}

    def forward(self, images: torch.Tensor, rows: Optional[dict[str, torch.Tensor]] = None) -> dict[str, torch.Tensor]:
        """Every task's output; with ``rows`` the shared decoder runs on the dense tasks' rows only."""
        features = self.encoder(self.normalise(images))
        out = {n: head(features[-1]) for n, head in self.heads.items() if n not in self.dense_tasks}
        if self.decoder is None:
            return out
        r = self._dense_rows(rows, images.shape[0])
        decoded = self.decoder(features if r is None else [f[r] for f in features])
        for n in self.dense_tasks:
            y = dense_output(self.heads[n](decoded), images, self.training)
            out[n] = y if r is None else scatter_rows(y, r, images.shape[0])
        return {n: out[n] for n in self.heads}

    def _dense_rows(self, rows: Optional[dict[str, torch.Tensor]], batch: int) -> Optional[torch.Tensor]:
        """The rows any dense task runs on (None: all of them)."""
        each = [routed(rows, n, batch) for n in self.dense_tasks]
        if any(r is None for r in each):
            return None
        return torch.unique(torch.cat(each))

    def encoder_modules(self) -> list[nn.Module]:
        """The one encoder."""
        return [self.encoder]

    def load_encoder(self, encoder: nn.Module) -> None:
        """The one encoder starts from ``encoder``."""
        self.encoder.load_state_dict(encoder.state_dict())

    def _path(self, name: str) -> nn.Module:
        return _TaskPath(self, self.encoder, self.decoder if name in self.dense_tasks else None, self.heads[name])


def routed(rows: Optional[dict[str, torch.Tensor]], task: str, batch: int) -> Optional[torch.Tensor]:
    """The rows ``task`` runs on, or None for all of them (also under 2 rows: batch norm needs two)."""
    r = None if rows is None else rows.get(task)
    return None if r is None or r.numel() < 2 or r.numel() == batch else r


def dense_output(y: torch.Tensor, images: torch.Tensor, training: bool) -> torch.Tensor:
    """A dense head's output as the student returns it.

    A decoder of fewer blocks than encoder stages ends below the input's resolution. While training
    the output stays there (the dense losses bring the teachers' outputs to it, as for any teacher
    of another resolution); in eval mode and in task paths it is upsampled (bilinear) to the
    images' size, which is what users, exports and evaluation read.
    """
    if training or y.shape[-2:] == images.shape[-2:]:
        return y
    return F.interpolate(y, size=images.shape[-2:], mode="bilinear", align_corners=False)


def scatter_rows(y: torch.Tensor, rows: torch.Tensor, batch: int) -> torch.Tensor:
    """``y`` (the outputs of ``rows``) placed in a batch of zeros; gradients reach ``y`` only."""
    return y.new_zeros((batch, *y.shape[1:])).index_copy(0, rows, y)


class _TaskPath(nn.Module):
    """Normalise -> encoder stages -> decoder (dense tasks) -> head: one task of a student."""

    def __init__(self, student: _Student, encoder: nn.Module, decoder, head: nn.Module):
        super().__init__()
        self.encoder, self.decoder, self.head = encoder, decoder, head
        self.register_buffer("mean", student.mean.clone(), persistent=False)
        self.register_buffer("std", student.std.clone(), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        if isinstance(self.encoder, nn.ModuleList):  # branched: trunk + branch stages
            features = [x]
            for stage in self.encoder:
                features.append(stage(features[-1]))
        else:
            features = self.encoder(x)
        if self.decoder is None:
            return self.head(features[-1])
        return dense_output(self.head(self.decoder(features)), images, training=False)


#: ``student.type`` -> class(spec); ``forward(images) -> {task: output}``, ``default_tap(spec)``, ``task_path(name)``
STUDENTS: Registry[type[_Student]] = Registry("student type")
STUDENTS.add("branched", BranchedStudent)
STUDENTS.add("compact", CompactStudent)


def build_student(spec: StudentSpec) -> nn.Module:
    """Builds the student a spec describes (random weights)."""
    return STUDENTS.get(spec.type)(spec)


#: what a student that does not run at the recipe's size most often needs, said with the failure
SIZE_HINT = (
    "a timm transformer built for one size takes student.encoder_args: {img_size: [H, W]}; a deep stem needs"
    " a larger data.image_size; or pick another student.encoder"
)


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode without gradients for the block (no BatchNorm statistics move), then in
    the mode it came in: the probes of a student before training (its size check, its latency)."""
    mode = module.training
    try:
        with torch.no_grad():
            yield module.eval()
    finally:
        module.train(mode)


def check_student_runs(student: nn.Module, size: tuple[int, int], batch_size: Optional[int] = None) -> None:
    """Runs the student once, in eval mode (no statistics move), on two random images of ``size``: an
    encoder that cannot take it (a Swin built for 224, Inception at 32 px) stops here in one line, not
    at the first training step after the teachers were cached. With ``batch_size`` (the training batch), a
    batch norm that would see one value per channel in training (batch 1 over a 1x1 map) stops too.

    Raises:
        RecipeError: naming ``student.encoder``, or ``train.batch_size``.
    """
    values: dict[str, int] = {}  # each batch norm's values per channel and image

    def seen(name: str, args: tuple) -> None:  # a pre-hook returning a value would replace the input
        values.setdefault(name, args[0][0, 0].numel())

    hooks = [
        m.register_forward_pre_hook(lambda _, args, name=name: seen(name, args))
        for name, m in student.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        with evaluating(student):
            student(torch.rand(2, 3, *size))
    except Exception as exc:  # noqa: BLE001 - any failure of the network: said in one line
        spec = getattr(student, "spec", None)
        what = spec.describe_encoder() if spec is not None else "its encoder"
        raise RecipeError(
            "student.encoder",
            f"the student ({what}) does not run on {size[0]}x{size[1]} images (data.image_size): {error_line(exc)};"
            f" {SIZE_HINT}",
        ) from None
    finally:
        for hook in hooks:
            hook.remove()
    if batch_size is not None and values and batch_size * min(values.values()) < 2:
        name = min(values, key=values.get)
        raise RecipeError(
            "train.batch_size",
            f"{batch_size}: the student's batch norm {name} sees a 1x1 map at {size[0]}x{size[1]}, so one value per"
            " channel in training, which it cannot normalise: train with 2 or more images a step in each process",
        )


def names_its_encoder(student_type: str) -> bool:
    """Whether a registered student type says which modules are its encoder: an ``encoder_modules()``
    giving what :meth:`load_encoder` fills, for ``train.encoder_lr_scale``."""
    return hasattr(STUDENTS.get(student_type), "encoder_modules")


def shares_decoder(student_type: str) -> bool:
    """Whether a registered student type has one decoder for every dense task (its class's ``shared_decoder``)."""
    return getattr(STUDENTS.get(student_type), "shared_decoder", False)


def has_branches(student_type: str) -> bool:
    """Whether a registered student type is a tree of task branches (its class's ``tree``)."""
    return STUDENTS.get(student_type).tree


def default_student_tap(spec: StudentSpec) -> str:
    """Module whose output feature terms read, as the student type says (branched: the branch point)."""
    return STUDENTS.get(spec.type).default_tap(spec)


def count_params(module: nn.Module) -> int:
    """Number of parameters (the one count: reports, inspect, the build log, budgets, peers)."""
    return sum(p.numel() for p in module.parameters())
