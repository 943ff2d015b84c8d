"""The recipe's schema: pydantic models of every key, their defaults and per-key validation.

Nothing here reads files or knows the registries: loading (``base:``, ``--set``, the YAML
loader) is :mod:`amalgam.config.load`, the checks that need the registries are
:mod:`amalgam.config.checks`. Relative paths resolve against ``Recipe.base_dir``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Literal, NamedTuple, Optional, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from amalgam.errors import AmalgamError

_UNSET_VARIABLE = re.compile(r"\$(\w+|\{\w+\})")


def expand_path(path: Union[str, Path], base: Optional[Path] = None) -> Path:
    """A recipe's path with ``~`` and environment variables (``$DATA``, ``${DATA}``) expanded, as a shell does; a
    variable that is not set stops (a trial's ``output: $RT/runs`` made a folder named '$RT'), unless the path
    exists as written (a file named with a ``$``, relative to ``base``, the recipe's folder)."""
    text = os.path.expandvars(str(path))
    unset = _UNSET_VARIABLE.search(text)
    literal = Path(path).expanduser()
    if unset and not (literal if literal.is_absolute() or base is None else base / literal).exists():
        raise AmalgamError(f"{path}: the environment variable {unset.group(1).strip('{}')} is not set")
    return Path(text).expanduser()


class _Strict(BaseModel):
    # inf/nan are never a setting (lr=.inf trains to NaN and blames a teacher)
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, v, info):
        # YAML reads true/yes as a bool, which pydantic would take as 1: a slip, never a count
        if isinstance(v, bool) and _is_number(cls.model_fields[info.field_name].annotation):
            raise ValueError("expected a number")
        return v


def _input_defaults(v: Any) -> Any:
    """``input: null``, as a variant writes to drop its base's ``input``: every key at its default."""
    return InputSpec() if v is None else v


def _is_number(annotation) -> bool:
    """Whether a field holds an int or float (optionally None) and not a bool."""
    kinds = get_args(annotation) or (annotation,)
    return bool(set(kinds) & {int, float}) and bool not in kinds


class SourceConfig(_Strict):
    """An image set: unlabeled training source or labeled eval set (fields depend on ``type``)."""

    type: str
    path: Optional[Path] = None
    annotations: Optional[Path] = None
    name: Optional[str] = None
    root: Optional[Path] = None
    split: str = "train"
    download: bool = False
    weight: float = Field(1.0, gt=0)
    limit: Optional[int] = Field(
        None,
        gt=0,
        description="use only N images, spread evenly over the sorted file list (file i*total//N), so every"
        " class folder stays; a torchvision dataset keeps its first N when they hold every class, else a spread",
    )
    classes_file: Optional[Path] = Field(None, description="imagefolder/dense: '<folder id> <name>' lines")
    depth_scale: float = Field(
        1000.0, gt=0, description="dense: depth PNG values per metre (1000: millimetres, as NYU; KITTI: 256)"
    )
    depth_reading: Literal["depth", "inverse"] = Field(
        "depth",
        description="dense: what its depth PNGs hold: depth (metres = value / depth_scale) or inverse depth, as"
        " disparity maps (metres = depth_scale / value)",
    )
    flip: Union[Literal["auto"], bool] = Field(
        "auto",
        description="training sources, with train.augment: mirror half the images (true), none (false), or auto:"
        " none when a teacher on it names mirrored images otherwise (digits, text, left/right labels)",
    )
    exif: Literal["upright", "stored"] = Field(
        "upright", description="image files: read as viewers show them (EXIF orientation), or as stored"
    )
    args: dict[str, Any] = Field(
        {},
        description="torchvision: more keyword arguments of the dataset (VOCSegmentation {year: '2007'},"
        " Cityscapes {mode: fine, target_type: semantic})",
    )


def _height_width(v: Any) -> Any:
    """A size given as one number is refused with the form it needs (pydantic said 'a valid tuple')."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        raise ValueError(f"expected [height, width], two numbers: [{v}, {v}] for a square of {v}")
    if isinstance(v, (list, tuple)) and len(v) == 1 and isinstance(v[0], (int, float)) and not isinstance(v[0], bool):
        # pydantic said 'size.1: required key is missing'
        raise ValueError(f"expected [height, width], two numbers: [{v[0]}, {v[0]}] for a square of {v[0]}")
    return v


class DataConfig(_Strict):
    image_size: tuple[int, int]
    sources: dict[str, SourceConfig] = Field(min_length=1)
    eval: dict[str, SourceConfig] = {}

    @field_validator("image_size", mode="before")
    @classmethod
    def _two_sides(cls, v: Any) -> Any:
        return _height_width(v)

    @field_validator("image_size")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) <= 0:
            raise ValueError("expected two positive integers [height, width]")
        return v


class ModelConfig(BaseModel):
    """``from`` names the model source; every other key is passed to its constructor."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    source: str = Field(alias="from")

    def kwargs(self) -> dict[str, Any]:
        """Constructor keyword arguments (everything but ``from``)."""
        return dict(self.model_extra or {})


class TypedConfig(BaseModel):
    """``type`` names a registered part (sub-teacher, logit ensemble); every other key is its argument."""

    model_config = ConfigDict(extra="allow")
    type: str

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the part (everything but ``type``)."""
        return dict(self.model_extra or {})


class InputSpec(_Strict):
    """A network's input. Keys left out take the defaults below, or for a timm teacher its
    ``pretrained_cfg`` (size, mean, std); amalgam/teachers/inputs.py resolves and reports them."""

    size: Optional[tuple[int, int]] = None
    channels: Literal[1, 3] = 3
    mean: list[float] = [0.485, 0.456, 0.406]
    std: list[float] = [0.229, 0.224, 0.225]
    resize: Optional[str] = Field(
        None, description="how the original fills the input: stretch (default) | letterbox | center_crop"
    )
    channel_order: Literal["rgb", "bgr"] = Field(
        "rgb",
        description="the order of its 3 input channels: rgb (default) | bgr (Caffe, mmcv's to_rgb: false);"
        " mean and std are in that order",
    )
    crop: Optional[float] = Field(
        None,
        gt=0,
        le=1,
        description="the centre share of the image it sees, as it was evaluated: timm's crop_pct, 0.875 for"
        " torchvision's Resize(256) + CenterCrop(224); default 1 (all of it); per-image tasks only",
    )

    @field_validator("size", mode="before")
    @classmethod
    def _two_sides(cls, v: Any) -> Any:
        return _height_width(v)

    @field_validator("channel_order")
    @classmethod
    def _order_of_three(cls, v: str, info) -> str:
        # a grey teacher's one channel has no order: bgr there is a slip, never a setting
        if v == "bgr" and info.data.get("channels") == 1:
            raise ValueError("bgr orders 3 channels; this teacher takes 1 (channels: 1): leave channel_order out")
        return v


class TeacherConfig(_Strict):
    task: str
    model: ModelConfig
    checkpoint: Optional[Path] = None
    wrap: Optional[TypedConfig] = None
    input: InputSpec = InputSpec()
    labels: Optional[list[Any]] = Field(  # entries checked in checks.py (label_entries.py), with their forms
        None, description="names in output order; {name: class} or {name: [classes]} relate a label to unified classes"
    )
    labels_file: Optional[Path] = Field(None, description="the labels, one name a line (instead of labels)")
    background: Optional[str] = None
    sources: Optional[list[str]] = Field(
        None, description="the data.sources it teaches on (left out: every one; [] is refused)"
    )
    eval: Optional[str] = None
    output: str = Field(
        "default",
        description="task-specific output convention: depth metric|inverse|log|relative|affine, classification and"
        " segmentation logits|probabilities|sigmoid|binary|binary_probability",
    )
    output_key: Optional[str] = Field(
        None,
        description="the distilled tensor: dict key, tuple index (0 or '0'), namedtuple field or attribute,"
        " dotted for nesting",
    )
    output_scale: Optional[float] = Field(
        None,
        description="tasks of values (depth): the selected output times this before it is read as output (0.001"
        " for a depth teacher answering millimetres, 0.01 for centimetres)",
    )
    unused_outputs: list[int] = Field(
        [],
        description="labelled tasks: output channels its labels leave out (a 1001st background unit, spare"
        " units): dropped before the output is read, so its softmax runs over its labels",
    )

    @field_validator("output_scale")
    @classmethod
    def _positive_scale(cls, v: Optional[float]) -> Optional[float]:
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError("expected a finite number > 0 (0.001: millimetres to metres)")
        return v

    @field_validator("unused_outputs")
    @classmethod
    def _distinct_channels(cls, v: list[int]) -> list[int]:
        if any(i < 0 for i in v) or len(set(v)) != len(v):
            raise ValueError("expected distinct output indices >= 0")
        return sorted(v)

    _input_null = field_validator("input", mode="before")(_input_defaults)

    @field_validator("background")
    @classmethod
    def _composed(cls, v: Optional[str]) -> Optional[str]:
        """In Unicode's composed form, as the labels are read: 'Café' typed decomposed is the label 'Café'."""
        return unicodedata.normalize("NFC", v) if v is not None else v

    @field_validator("output_key", mode="before")
    @classmethod
    def _index_as_key(cls, v: Any) -> Any:
        """A tuple index written plainly (``output_key: 0``, YAML's int) as the string key the code selects by."""
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("sources")
    @classmethod
    def _names_a_source(cls, sources: Optional[list[str]]) -> Optional[list[str]]:
        if sources is not None and not sources:  # [] read as "every source" taught a segmenter on items
            raise ValueError(
                "[] names no source: list the data.sources it teaches on, or leave the key out for every one"
            )
        return sources


#: the teacher's keys a model's constructor never takes: written inside ``model:`` they reach the model, not
#: amalgam (said for python factories; a TorchScript model takes no arguments, so any teacher key there stops).
#: ``checkpoint``, ``labels`` and the like are left out: factories of their own often take them.
AMALGAM_TEACHER_KEYS = (
    "output",
    "output_key",
    "output_scale",
    "unused_outputs",
    "input",
    "labels_file",
    "background",
    "wrap",
)


class BudgetConfig(_Strict):
    """The student's size limit: ``auto`` trees stay within it; a hand-set student over it is warned about."""

    params: Optional[float] = Field(0.5, gt=0, description="share of all teachers' parameters (default: half)")
    latency_ms: Optional[float] = Field(None, gt=0, description="batch-1 latency in ms on this machine's CPU")

    @field_validator("params")
    @classmethod
    def _a_share(cls, v: Optional[float]) -> Optional[float]:
        # a trial wrote a count (1500000): read as a share it was 1.5 million times the teachers, no budget at all
        if v is not None and v > MAX_PARAMS_SHARE:
            raise ValueError(
                f"expected a share of all teachers' parameters (0.5: half of them), not a count: a share over"
                f" {MAX_PARAMS_SHARE:g} limits nothing (null: no limit); for a count, divide it by the teachers'"
                " (amalgam inspect says theirs)"
            )
        return v


#: the largest ``student.budget.params`` taken: a parameter count written for the share is over it (tiny teachers
#: beside the smallest student, as tests' worlds have, ask shares of hundreds)
MAX_PARAMS_SHARE = 1000.0


class SearchConfig(_Strict):
    """The warm-up of ``branch_at: auto`` (see amalgam/distill/affinity.py)."""

    steps: int = Field(60, ge=1, description="warm-up steps of the fully shared student")
    every: int = Field(3, ge=1, description="measure the affinities every N steps")
    batch_size: Optional[int] = Field(None, ge=2, description="default: train.batch_size")
    lookahead_lr: Optional[float] = Field(None, gt=0, description="lookahead step per parameter (default: train.lr)")


class StudentConfig(_Strict):
    type: str = Field("branched", description="a registered student type (amalgam.students.STUDENTS)")
    encoder: str = Field(
        "auto", description="an smp encoder name, or auto: the largest of a ladder within budget (students/sizing.py)"
    )
    branch_at: Union[int, dict[str, int], Literal["auto"]] = Field(
        3, description="shared encoder stages: one number, a number per task (a tree), or auto (searched)"
    )
    budget: BudgetConfig = BudgetConfig()
    search: SearchConfig = SearchConfig()
    decoder_channels: Optional[list[int]] = Field(
        None,
        min_length=4,
        max_length=5,
        description="U-Net decoder widths, one block each (default: auto's rung's; with a named encoder"
        " [128, 64, 32, 16, 16]); 4 blocks end at half the input resolution (students.build.dense_output)",
    )
    task_decoder_channels: dict[str, list[int]] = Field(
        {},
        description="a dense task's own decoder widths (branched students), e.g. a wider one for segmentation;"
        " tasks not named here use decoder_channels (a recipe undoes its base's entry by naming those)",
    )
    encoder_args: dict[str, Any] = Field(
        {},
        description="keyword arguments for a named tu-* encoder's timm model (timm.create_model's), e.g. a narrow"
        " ResNet's channels and stem_width; stored with the student",
    )
    hypercolumn: Union[bool, list[str]] = Field(
        False,
        description="the heads of these dense tasks (true: every dense task) also read the decoder's 1/8-resolution"
        " map, upsampled, beside its last one (students.build.UnetDecoder)",
    )
    init: Optional[Path] = Field(
        None, description="start from this student.pt (e.g. a previous run's) instead of random weights"
    )
    encoder_weights: Optional[Path] = Field(
        None,
        description="start the encoder from this state dict (the encoder's, an smp model's or a timm/torchvision"
        " classifier's; every encoder tensor must be found, see students/pretrained.py)",
    )

    @field_validator("hypercolumn", mode="before")
    @classmethod
    def _hypercolumn_forms(cls, v):
        # else pydantic answers per member of the union ('hypercolumn.bool: Input should be a valid boolean')
        if isinstance(v, str):
            raise ValueError(f"expected true, false or a list of dense tasks ([{v}])")
        return v

    @field_validator("branch_at", mode="before")
    @classmethod
    def _one_of_its_forms(cls, v):
        # else pydantic answers per member of the union, its name ('.int') in the key path
        whole = isinstance(v, int) or (isinstance(v, float) and v.is_integer())
        tree = isinstance(v, dict) and all(isinstance(p, int) and not isinstance(p, bool) for p in v.values())
        if isinstance(v, bool) or not (whole or tree or v == "auto"):
            raise ValueError(
                "expected the encoder stages shared: a number 0-5, a number per task ({task: 0-5}, a tree) or auto"
            )
        return v

    @field_validator("branch_at")
    @classmethod
    def _points(cls, v):
        if isinstance(v, dict) and (out := {t: p for t, p in v.items() if not 0 <= p <= 5}):
            shown = ", ".join(f"{t}: {p}" for t, p in out.items())  # which task's, said (a trial saw no value)
            raise ValueError(f"branch points lie in 0-5 (encoder stages shared), got {shown}")
        points = [] if isinstance(v, dict) or v == "auto" else [v]
        if any(not 0 <= p <= 5 for p in points):
            raise ValueError("branch points lie in 0-5 (encoder stages shared)")  # the value is said after it
        return v

    @field_validator("decoder_channels")
    @classmethod
    def _decoder(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        if v is not None and min(v) < 1:  # a 0-wide block passed inspect and crashed the build
            raise ValueError(f"positive widths (one per decoder block), got {v}")
        return v

    @field_validator("task_decoder_channels")
    @classmethod
    def _task_decoders(cls, v: dict[str, list[int]]) -> dict[str, list[int]]:
        for task, widths in v.items():
            if not 4 <= len(widths) <= 5 or min(widths) < 1:
                raise ValueError(f"{task}: 4 or 5 positive widths (one per decoder block), got {widths}")
        return v


class AmalgamationConfig(_Strict):
    temperature: float = Field(2.0, gt=0)
    features: str = Field("none", description="none, or a registered feature term (FEATURE_TERMS): adapters, feed, ...")
    ensemble: Optional[TypedConfig] = Field(
        None,
        description="merge the logits of teachers of one task with the same label set (any order), background and"
        " sources: mean, fixed, ... (config/ensembles.py)",
    )
    taps: dict[str, str] = {}
    student_tap: Optional[str] = Field(None, description="student module adapters read (default: the branch point)")
    feature_weight: float = Field(1.0, ge=0)
    task_weights: Union[str, dict[str, float]] = Field(
        "initial_loss",  # since 2026-12-03 (uncertainty before): dense tasks keep their say (docs/benchmarks.md)
        description="a registered weighting (TASK_WEIGHTINGS): initial_loss (each term over its first epoch's mean), "
        "uncertainty (learned); or {task or teacher: weight} (an ensemble group's weight: any of its teachers')",
    )

    @field_validator("task_weights", mode="before")
    @classmethod
    def _weights_are_numbers(cls, v: Any) -> Any:
        """Each weight a finite number >= 0: a negative one trained its term upwards without a word, yes/no
        read as 1/0, and .inf was told to be 'a valid string'."""
        if not isinstance(v, dict):
            return v
        for task, weight in v.items():
            try:
                value = float(weight) if not isinstance(weight, bool) else math.nan
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{task}: expected a finite number >= 0, got {weight!r}")
        return v

    domain_weights: bool = Field(
        False, description="weigh a teacher that knows part of the union by the student's belief it is in its labels"
    )
    temperature_after_projection: bool = Field(
        False, description="soften the student after summing it into a teacher's labels, not before (see labels.py)"
    )
    class_balance: float = Field(
        0.5,  # kd.class_balance.DEFAULT_POWER (checked by a test; the schema imports no torch code)
        ge=0,
        le=1,
        description="dense labelled terms: pixels weighted by class rarity^power (kd/class_balance.py); 0: off",
    )
    focal: float = Field(
        1.0,  # kd.class_balance.DEFAULT_FOCAL (checked by a test)
        ge=0,
        le=5,
        description="dense labelled terms: pixels weighted by (1 - student prob. of the teacher's label)^power; 0: off",
    )
    pseudo_labels: float = Field(
        0.0,
        ge=0,
        description="dense labelled terms: weight of a cross-entropy on the teacher's top label; 0: off",
    )


class MixupConfig(_Strict):
    """Blend images within the named sources; teachers label the blends live (see mixup.py)."""

    sources: list[str] = Field(min_length=1, description="data.sources whose images are blended")
    fraction: float = Field(0.5, gt=0, le=1, description="share of those sources' rows blended per batch")


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.9
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["cosine", "step", "none"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0, description="linear learning-rate warm-up over this many epochs (0: none)")
    encoder_lr_scale: float = Field(
        1.0, gt=0, description="the student's encoder stages learn at this multiple of train.lr (the rest at lr)"
    )
    workers: int = Field(2, ge=0)
    samples_per_epoch: Optional[int] = Field(None, ge=1, description="default: all source images")
    augment: bool = True
    mixup: Optional[MixupConfig] = Field(None, description="function matching: teachers label image blends")
    eval_batch_size: int = Field(64, ge=1)
    max_eval_images: Optional[int] = Field(
        None, ge=1, description="score at most N images of each eval set, spread evenly as a set's limit keeps them"
    )
    eval_every: Optional[int] = Field(
        None, ge=1, description="score the student every N epochs (and after the last) into train_log.csv"
    )
    cache_teachers: bool = Field(True, description="store teacher outputs under the run folder (see cache.py)")
    tensorboard: bool = Field(False, description="also log each epoch's terms to <run>/tensorboard (if installed)")
    channels_last: bool = Field(True, description="teachers run channels_last (measured 1.5x on CPU inference)")
    cache_max_gb: float = Field(20.0, gt=0, description="disk budget of the teacher cache; over it teachers run live")
    student_channels_last: bool = Field(
        True, description="train the student in channels_last memory format (measured 1.2-1.5x on CPU)"
    )
    compile: bool = Field(False, description="torch.compile the student's training forward (first steps compile)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="the student's training forward: auto is bf16 autocast on CUDA and on CPUs with bf16 units, "
        "else fp32",
    )
    route_rows: bool = Field(
        True, description="run each dense task's branch only on the rows of its teachers' sources (training/routing.py)"
    )


class PeersConfig(_Strict):
    """Online distillation among peers trained from labels (no pre-trained teacher)."""

    strategy: str = Field(description="a registered peer strategy (amalgam.kd.PEER_STRATEGIES): dml, one, kdcl")
    count: int = Field(2, ge=2, description="peers (dml, kdcl) or branches (one)")
    temperature: float = Field(3.0, gt=0)
    model: ModelConfig
    input: InputSpec = InputSpec()
    labels: list[str] = Field(min_length=2, description="class names in output order")
    source: str = Field(description="a labelled source of data.sources to train on")
    eval: Optional[str] = None
    split_at: str = Field("layer4", description="one: first child module of the branches")

    _input_null = field_validator("input", mode="before")(_input_defaults)


class Recipe(_Strict):
    """A whole amalgamation (teachers -> student) or a peer-learning run (``peers``)."""

    name: str
    seed: int = 0
    output: Optional[Path] = None
    device: str = "auto"
    data: DataConfig
    teachers: dict[str, TeacherConfig] = Field(default_factory=dict)
    peers: Optional[PeersConfig] = None
    student: StudentConfig = StudentConfig()
    amalgamation: AmalgamationConfig = AmalgamationConfig()
    train: TrainConfig = TrainConfig()
    base_dir: Path = Field(Path("."), exclude=True, description="folder relative paths resolve against")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda") and not (v.startswith("cuda:") and v[5:].isdigit()):
            raise ValueError(f"expected auto, cpu, cuda or cuda:N, got '{v}'")
        return v

    def resolve(self, path: Optional[Path]) -> Optional[Path]:
        """Resolves a recipe path against the recipe's folder."""
        if path is None:
            return None
        path = expand_path(path, self.base_dir)
        return Path(os.path.normpath(path if path.is_absolute() else self.base_dir / path))

    def output_dir(self) -> Path:
        """The run folder: ``output`` or ``runs/<name>`` beside the recipe."""
        return self.resolve(self.output or Path("runs") / self.name)


#: keys added since 0.1 whose default changed how a run trains -> the value that means what a
#: checkpoint written before the key existed did (a resume of such a run must pin it)
BEFORE_KEY_EXISTED = {("train", "route_rows"): False, ("amalgamation", "focal"): 0.0}

#: keys whose default changed -> the default before (a checkpoint holding it resumes with it pinned)
DEFAULT_BEFORE = {("amalgamation", "task_weights"): "uncertainty", ("amalgamation", "class_balance"): 0.0}


#: keys that change how fast a run goes or what it logs, not what the student learns beyond
#: floating-point rounding (data order and augmentation are drawn in the main process): a resume may
#: change them. Not ``cache_max_gb``: crossing it turns the cache off, and live targets of flipped
#: images are the teachers' answers to the flip, not the flipped answers.
RUNTIME_KEYS = frozenset(
    f"train.{key}"
    for key in (
        "workers",
        "eval_batch_size",
        "tensorboard",
        "channels_last",
        "student_channels_last",
        "compile",
        "precision",
    )
)


#: ``train`` keys of distillation that a peers build has no use for: set in a peers recipe, they are
#: refused (so they only differ between a peers checkpoint and its resume by their defaults: the
#: runtime ones among them go unmentioned)
PEERS_UNUSED_TRAIN_KEYS = (
    "augment",
    "mixup",
    "cache_teachers",
    "cache_max_gb",
    "channels_last",
    "student_channels_last",
    "compile",
    "precision",
    "route_rows",
    "tensorboard",
    "eval_every",
    "encoder_lr_scale",
)


def runtime_changes(changed: list[str], peers: bool = False) -> tuple[list[str], list[str]]:
    """Splits the ``changed`` keys of :func:`recipe_changes` into those a resume may change and says
    (:data:`RUNTIME_KEYS`, less the ones a peers build does not use) and all the others."""
    unused = {f"train.{key}" for key in PEERS_UNUSED_TRAIN_KEYS} if peers else set()
    runtime = [key for key in changed if key in RUNTIME_KEYS and key not in unused]
    return runtime, [key for key in changed if key not in RUNTIME_KEYS]


def resume_hint(changes: list[Change]) -> str:
    """For the ``changes`` of :func:`recipe_differences` whose checkpoint value is what
    :data:`BEFORE_KEY_EXISTED` or :data:`DEFAULT_BEFORE` says runs did before: the ``--set`` options
    that resume the run as it was ('' when none)."""
    then = {change.key: change.then for change in changes}  # the run's values as compared: old behaviour in
    pinned = {
        f"{section}.{key}": old
        for (section, key), old in (BEFORE_KEY_EXISTED | DEFAULT_BEFORE).items()
        if f"{section}.{key}" in then and then[f"{section}.{key}"] == old
    }
    if not pinned:
        return ""
    sets = " ".join(f"--set {k}={json.dumps(v)}" for k, v in pinned.items())
    return f"; the default of {', '.join(pinned)} changed since that run: {sets} resumes it as it was"


class Change(NamedTuple):
    """One key where a recipe differs from a checkpoint's: its dotted path (``<mapping>.(order)`` for a
    reordered mapping, whose values are then its keys in order) and its values in the run and now."""

    key: str
    then: object
    now: object


def recipe_differences(stored: dict, recipe: Recipe) -> list[Change]:
    """Where ``recipe`` differs from a checkpoint's stored recipe dump, with both values.

    The stored dump is read again with today's defaults first, so a key added to amalgam since
    the checkpoint was written (at its default) is no change and older runs stay resumable;
    except the keys of :data:`BEFORE_KEY_EXISTED`, which read as what the run did then.
    """
    return _differences(stored_as_read(stored), recipe.model_dump(mode="json", exclude={"output"}), "")


def recipe_changes(stored: dict, recipe: Recipe) -> list[str]:
    """The dotted key paths of :func:`recipe_differences`."""
    return [change.key for change in recipe_differences(stored, recipe)]


def stored_as_read(stored: dict) -> dict:
    """A checkpoint's stored recipe dump as :func:`recipe_changes` compares it: read again with today's
    defaults, the keys of :data:`BEFORE_KEY_EXISTED` as the run did then (what a refused resume says it had)."""
    stored = _with_old_behaviour(stored)
    try:
        return Recipe.model_validate(stored).model_dump(mode="json", exclude={"output"})
    except ValidationError:
        return stored


def _with_old_behaviour(stored: dict) -> dict:
    """``stored`` with each missing :data:`BEFORE_KEY_EXISTED` key set to its old behaviour
    (distillation runs only: a peers build reads none of these keys)."""
    if not isinstance(stored, dict) or stored.get("peers") is not None:
        return stored
    stored = copy.deepcopy(stored)
    for (section, key), value in BEFORE_KEY_EXISTED.items():
        if isinstance(stored.get(section), dict):
            stored[section].setdefault(key, value)
    return stored


#: mappings whose order is part of the run: the teachers' order is the unified labels' (the student's head
#: rows), the sources' the layout of the sampler's indices and the teacher cache's rows
ORDERED_MAPPINGS = ("teachers.", "data.sources.")


def _differences(a, b, prefix: str) -> list[Change]:
    if isinstance(a, dict) and isinstance(b, dict):
        reordered = prefix in ORDERED_MAPPINGS and set(a) == set(b) and list(a) != list(b)
        moved = [Change(f"{prefix}(order)", ", ".join(a), ", ".join(b))] if reordered else []
        return moved + [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [Change(prefix.rstrip("."), a, b)]
