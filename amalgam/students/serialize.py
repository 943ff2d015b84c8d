"""The self-describing student file: weights, architecture, label spaces and recipe."""

from __future__ import annotations

import json
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import torch
from torch import nn

from amalgam.data.views import RESIZE_VERSION
from amalgam.errors import AmalgamError, RecipeError, error_line
from amalgam.io import atomic_save, file_digest, zip_problem
from amalgam.labels import LabelSpace
from amalgam.students.build import StudentSpec, build_student
from amalgam.training.runlock import RESUME_FIX, UNFINISHED, unfinished


def save_student(
    student: nn.Module,
    spaces: dict[str, LabelSpace | None],
    recipe: dict,
    path: Path,
    teachers: Optional[dict] = None,
    eval_sets: Optional[dict[str, str]] = None,
) -> None:
    """Writes ``student.pt``: weights, architecture, unified label spaces, the recipe and the fingerprints of the
    teachers it learnt from (``teachers``: :func:`~amalgam.teachers.fingerprint.teacher_fingerprints`, so that
    ``amalgam eval`` and ``amalgam report`` say a teacher file changed since) and which images each eval set
    held (``eval_sets``: :meth:`~amalgam.data.image_set.ImageSet.listing`, so that ``amalgam eval`` says a set
    that changed since).

    Enough to rebuild and run the student without any teacher (see :func:`load_student`).
    """
    atomic_save(
        {
            "format": "amalgam-student/1",
            "state_dict": student.state_dict(),
            "spec": student.spec.to_dict(),
            "label_spaces": {
                t: None if s is None else {"names": list(s.names), "background": s.background}
                for t, s in spaces.items()
            },
            "recipe": recipe,
            "made": made_with(),
            **({"teachers": teachers} if teachers is not None else {}),
            **({"eval_sets": eval_sets} if eval_sets is not None else {}),
        },
        path,
    )


def made_with() -> dict:
    """How the images a student saw were made: its resize and how ``limit`` picked them. A file without
    it is older than both records, and may have trained and been scored on other pixels and images."""
    return {"resize_version": RESIZE_VERSION, "limit": "spread"}


def student_record(path: str | Path) -> dict:
    """What a ``student.pt`` says of how it was built, from one read: ``recipe`` (:func:`stored_recipe`),
    ``made`` (:func:`made_with`), ``teachers`` (their fingerprints) and ``eval_sets`` (their listings; None: a file
    written before each was kept, before 2026-12-05)."""
    blob = _read_student_file(Path(path))
    return {k: blob.get(k) for k in ("recipe", "made", "teachers", "eval_sets")}


def init_student(student: nn.Module, spaces: dict[str, LabelSpace | None], path: Path) -> None:
    """Copies the weights of a previous run's ``student.pt`` into ``student`` (recipe key ``student.init``).

    The file must describe the same architecture and the same unified label spaces: a longer or
    warm-restarted schedule continues a student, it does not reinterpret its heads.

    Raises:
        RecipeError: naming ``student.init``, the file and what differs.
    """
    try:
        blob = _read_student_file(Path(path))
    except AmalgamError as exc:
        raise RecipeError("student.init", str(exc)) from None
    names = {t: None if s is None else list(s.names) for t, s in spaces.items()}
    difference = _difference(student.spec.to_dict(), names, blob)
    if difference:
        field, theirs, mine = difference
        raise RecipeError("student.init", f"{path} holds a student with {field}={theirs}, this recipe's has {mine}")
    student.load_state_dict(blob["state_dict"])


def average_students(paths: Sequence[str | Path], out: str | Path) -> None:
    """Writes the student whose weights are the mean of the students in ``paths`` (a "soup").

    Meant for students along one training trajectory (e.g. the stages of a fine-tune), which lie
    in one basin; averaging unrelated students gives noise. Integer buffers (BatchNorm's step
    counts) are taken from the first file, and so are the recipe and the label spaces.

    Raises:
        AmalgamError: naming the file whose architecture or label spaces differ from the first's.
    """
    if not paths:
        raise AmalgamError("average_students needs at least one student file")
    blobs = [_read_student_file(Path(p)) for p in paths]
    first = blobs[0]
    names = {t: (s or {}).get("names") for t, s in first["label_spaces"].items()}
    for path, blob in zip(paths[1:], blobs[1:]):
        difference = _difference(first["spec"], names, blob)
        if difference:
            field, theirs, mine = difference
            raise AmalgamError(f"{path} holds a student with {field}={theirs}, {paths[0]} has {mine}")
    state = {}
    for key, value in first["state_dict"].items():
        if value.is_floating_point():
            value = torch.stack([b["state_dict"][key].float() for b in blobs]).mean(0).to(value.dtype)
        state[key] = value
    atomic_save({**first, "state_dict": state}, Path(out))


def _difference(spec: dict, names: dict[str, list | None], blob: dict) -> tuple[str, object, object] | None:
    """The first (field, blob's value, ours) where a student file differs from an architecture
    ``spec`` and the label names by task, or None when it describes the same student."""
    differ = StudentSpec.differences(spec, blob["spec"])
    if differ:
        return differ[0], StudentSpec.stored(blob["spec"]).get(differ[0]), StudentSpec.stored(spec).get(differ[0])
    for task, mine in names.items():
        theirs = (blob["label_spaces"].get(task) or {}).get("names")
        if mine != theirs:
            return f"{task} labels", theirs, mine
    return None


def _read_student_file(path: Path) -> dict:
    """The checked contents of a ``student.pt`` (loaded with ``weights_only=True``).

    Its zip CRCs are checked first, as ``checkpoint.pt``'s are: a file with a zeroed stretch still
    unpickles, into wrong weights that would be scored, exported and trained on without a word.

    Raises:
        AmalgamError: one line when the file is missing, damaged, unreadable or not a student file.
    """
    if path.is_dir():  # a run folder: its student is inside
        if unfinished(path):  # not told to pass a student file it does not hold
            raise AmalgamError(f"{path} is an unfinished build ({UNFINISHED}): {RESUME_FIX}")
        raise AmalgamError(f"{path} is a folder: pass its student file, {path / 'student.pt'}")
    if not path.is_file():
        raise AmalgamError(f"student file not found: {path}{peers_note(path.parent)}")
    if export := _export_kind(path):
        scored = " (amalgam eval scores a TorchScript export beside its .json)" if export == TORCHSCRIPT else ""
        if export == TORCHSCRIPT and not meta_file(path).is_file():
            scored = f" ({meta_file(path).name}, which amalgam eval needs to score it, is not beside it)"
        raise AmalgamError(f"{path} is {export}, not a student.pt: {EXPORT_READERS[export]}{scored}")
    if path.suffix == ".json" and _export_kind(Path(str(path)[: -len(".json")])):
        raise AmalgamError(f"{path} is the .json of an export: pass the export file, {path.name[: -len('.json')]}")
    problem = zip_problem(path)
    if problem is not None:
        raise AmalgamError(f"student file {path} is damaged: {problem}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise AmalgamError(f"cannot read student file {path}: {error_line(exc)}") from None
    if isinstance(blob, dict) and {"epoch", "student", "optimizer"} <= set(blob):
        # a trial passed a run's checkpoint.pt: "not an amalgam student file" left it there
        done = (path.parent / "student.pt").is_file()
        fix = (
            f"the run's student is {path.parent / 'student.pt'}" if done else f"{RESUME_FIX}, then load its student.pt"
        )
        raise AmalgamError(f"{path} is a training checkpoint of amalgam build, not a student file: {fix}")
    if not isinstance(blob, dict) or blob.get("format") != "amalgam-student/1":
        raise AmalgamError(f"{path} is not an amalgam student file")
    return blob


TORCHSCRIPT = "a TorchScript export"
#: how to run each kind of export, which a student.pt reader cannot read
EXPORT_READERS = {
    "an ONNX export": "run it with onnxruntime (onnxruntime.InferenceSession)",
    TORCHSCRIPT: "load it with torch.jit.load",
}


def _export_kind(path: Path) -> str | None:
    """``amalgam export``'s ONNX or TorchScript file in place of a ``student.pt``, else None."""
    if path.suffix == ".onnx":
        return "an ONNX export"
    try:
        with zipfile.ZipFile(path) as archive:  # TorchScript archives hold their code beside the data
            return TORCHSCRIPT if any("/code/" in n for n in archive.namelist()) else None
    except (zipfile.BadZipFile, OSError):
        return None


def meta_file(path: Path) -> Path:
    """The ``.json`` ``amalgam export`` writes beside its file."""
    return Path(str(path) + ".json")


class ExportedStudent(nn.Module):
    """An ``amalgam export`` TorchScript file as a student: its tuple of outputs as ``{task: output}`` in the order
    its ``.json`` lists them, with ``label_spaces`` and ``image_size`` from it, so that :func:`amalgam.evaluate`
    scores the file that ships."""

    def __init__(self, exported: nn.Module, tasks: list[str], spaces: dict, size: tuple[int, int]):
        super().__init__()
        self.exported = exported
        self.tasks = tasks
        self.label_spaces = spaces
        self.image_size = size

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if tuple(images.shape[-2:]) != tuple(self.image_size):  # as a loaded student.pt says it (a trial: unsaid)
            warnings.warn(other_size_line(*images.shape[-2:], self.image_size), OtherSizeWarning, stacklevel=2)
        out = self.exported(images)
        return dict(zip(self.tasks, out if isinstance(out, (tuple, list)) else (out,)))


def load_torchscript_export(path: Path) -> tuple[nn.Module, dict[str, LabelSpace | None]]:
    """An ``amalgam export`` TorchScript file and its ``.json`` as a student (:class:`ExportedStudent`).

    Raises:
        AmalgamError: a ``.json`` of an export written before it named each space's background (its labels
            alone cannot say which is the background: export again).
    """
    meta = json.loads(meta_file(path).read_text())
    named = (meta.get("file") or {}).get("sha256")
    if named is not None and named != file_digest(path):  # another export's .json: its labels would be misread
        raise AmalgamError(
            f"{meta_file(path)} belongs to another file (its file.sha256 is not {path.name}'s): export the run"
            " again, or put each file beside its own .json"
        )
    outputs = meta.get("outputs", [])
    if any(o.get("labels") is not None and "background" not in o for o in outputs):
        raise AmalgamError(
            f"{meta_file(path)} names no background for its labels (an export of an earlier amalgam): export the"
            " run again (amalgam export <run>) to score the file"
        )
    spaces = {
        o["task"]: None if o.get("labels") is None else LabelSpace(tuple(o["labels"]), o.get("background"))
        for o in outputs
    }
    size = tuple(meta["input"]["shape"][2:])
    with warnings.catch_warnings():  # torch 2.9+ marks TorchScript deprecated; exports still ship it
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    return ExportedStudent(module, list(spaces), spaces, size).eval(), spaces


def peers_note(run_dir: Path) -> str:
    """``: RUN is a peers run ...`` when ``run_dir`` holds one (its report.json lists ``peers``), else
    "": a peers build writes each peer's top-1, no student to evaluate, export or draw."""
    try:
        report = json.loads((run_dir / "report.json").read_text())
    except (OSError, ValueError):
        return ""
    if not (isinstance(report, dict) and "peers" in report):
        return ""
    return f": {run_dir} is a peers run, which writes each peer's top-1 (report.json, report.md) and no student"


def load_student(path: str | Path, check_inputs: bool = True) -> tuple[nn.Module, dict[str, LabelSpace | None]]:
    """Rebuilds a student from ``student.pt`` (loaded with ``weights_only=True``).

    The student takes ``[B, 3, H, W]`` float RGB in [0, 1]: its forward subtracts the ImageNet mean
    and divides by the ImageNet std itself (fixed buffers of the code, not weights of the file). The
    loaded student refuses, with an :class:`AmalgamError` of one line, input it would misread
    without a word: not a float tensor (uint8 images: "divide by 255"), values above 1.5 (0-255
    floats) or below -0.5 (images already normalised), another layout than ``[B, 3, H, W]``, and,
    for a student with dense tasks, a height or width that is not a multiple of its encoder's
    stride (32 for five stages; nothing is padded: padding would change its answers). The check
    costs one min/max of the input (one host sync on CUDA) per call, and is skipped while tracing,
    scripting, compiling or exporting to ONNX: exported files carry no check.

    Args:
        path: a ``student.pt`` written by ``amalgam build``.
        check_inputs: False leaves the check out (for throughput once the input pipeline is known good).

    The student carries what it was trained with, for :func:`amalgam.evaluate`: ``label_spaces``
    (the returned spaces: its outputs are scored by class name, not position) and ``image_size``
    (``(height, width)`` of its training images; None for a file without a recipe).

    Returns:
        The student in eval mode and its unified label spaces by task.
    """
    if _export_kind(Path(path)) == TORCHSCRIPT and meta_file(Path(path)).is_file():
        return load_torchscript_export(Path(path))
    blob = _read_student_file(Path(path))
    try:
        student = build_student(StudentSpec(**blob["spec"]))
    except AmalgamError as exc:  # e.g. encoder_args a newer timm no longer takes: the file, not a recipe
        raise AmalgamError(f"cannot rebuild the student of {path}: {exc}") from None
    student.load_state_dict(blob["state_dict"])
    spaces = {
        t: None if s is None else LabelSpace(tuple(s["names"]), s["background"])
        for t, s in blob["label_spaces"].items()
    }
    # plain attributes, not buffers: the state_dict stays the file's
    student.label_spaces = spaces
    student.image_size = trained_size(blob)
    # a hook, not a wrapper: the type, attributes and state_dict stay the trained student's
    if check_inputs:
        student.register_forward_pre_hook(InputGuard(input_multiple(student)), with_kwargs=True)
    return student.eval(), spaces


def trained_size(blob: dict) -> tuple[int, int] | None:
    """``(height, width)`` of the images a student file's student was trained at (its recipe's
    ``data.image_size``); None when the file holds no recipe."""
    size = ((blob.get("recipe") or {}).get("data") or {}).get("image_size")
    return None if size is None else (int(size[0]), int(size[1]))


#: what a student reads, said first by every refusal of :class:`InputGuard`
EXPECTS = "the student expects float RGB in [0, 1] (its own normalisation is inside)"
#: the value range a [0, 1] image may reach after resampling's overshoot; 0-255 and normalised
#: images (ImageNet statistics: about [-2.1, 2.6]) lie beyond it
LOWEST, HIGHEST = -0.5, 1.5


def input_multiple(student: nn.Module, tasks: Iterable[str] | None = None) -> int | None:
    """What a student's input height and width must be multiples of: the stride of its deepest
    encoder feature. The U-Net decoder doubles that feature back up, concatenating each skip
    feature, so a size that halves unevenly on the way down does not match on the way up.

    None when nothing requires it: a student without dense tasks (its heads pool any size), or a
    student type whose task paths do not show their encoder. ``tasks``: only these tasks' paths (a
    ``--task`` export of a classifier takes any size).
    """
    dense = [t for t in student.spec.dense_decoders() if tasks is None or t in tasks]
    strides = [_stride(getattr(student.task_path(t), "encoder", None)) for t in dense]
    strides = [s for s in strides if s is not None]
    return max(strides, default=None)


def _stride(encoder: nn.Module | None) -> int | None:
    """An encoder's output stride: smp encoders know theirs; a branched path's stages halve each
    (the contract of the splitters in :mod:`amalgam.students.encoders`)."""
    if hasattr(encoder, "output_stride"):
        return int(encoder.output_stride)
    return 2 ** len(encoder) if isinstance(encoder, nn.ModuleList) else None


class InputGuard:
    """Forward pre-hook of a loaded student: refuses input it would misread, in one line.

    A class rather than a closure, so that a student saved whole with ``torch.save`` still pickles.
    """

    def __init__(self, multiple: int | None):
        self.multiple = multiple

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> Optional[tuple[tuple, dict]]:
        images = args[0] if args else kwargs.get("images")
        weights = _weights_dtype(module)
        cast = isinstance(images, torch.Tensor) and images.dtype == torch.float32 and weights != torch.float32
        if not _exporting():  # a traced or compiled graph would bake the checks in, or break on their syncs
            self._check(images, weights, cast, getattr(module, "image_size", None))
        if cast:  # float32, what amalgam, torchvision and numpy/255 give, into a student moved to .half()/.double()
            images = images.to(weights)
            return ((images, *args[1:]), kwargs) if args else (args, {**kwargs, "images": images})
        return None

    def _check(self, images: object, weights: torch.dtype, cast: bool, trained: Optional[Sequence[int]]) -> None:
        problem = _form_problem(images, images.dtype if cast else weights)  # a cast image is the weights' dtype
        problem = problem or _size_problem(images, self.multiple, trained) or _value_problem(images)
        if problem:
            raise AmalgamError(problem)
        if trained is not None and tuple(images.shape[-2:]) != tuple(trained):  # runs, but can answer far worse
            warnings.warn(other_size_line(*images.shape[-2:], trained), OtherSizeWarning, stacklevel=2)


def run_student(student: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``student(images)`` for amalgam's own float32 images: cast to the student's weights where a user moved
    it (``.half()``, ``.double()``; a trial's evaluate refused its own images), its answers back in float32."""
    weights = _weights_dtype(student)
    outputs = student(images.to(weights) if images.is_floating_point() else images)
    if weights == torch.float32:
        return outputs
    return {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in outputs.items()}


class OtherSizeWarning(UserWarning):
    """A loaded student run at another size than it was trained at (once per size, as Python shows warnings)."""


@contextmanager
def at_chosen_size() -> Iterator[None]:
    """The block runs a loaded student at a size chosen on purpose (scored, timed, export-checked there,
    and said by its caller): no :class:`OtherSizeWarning`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OtherSizeWarning)
        yield


def other_size_line(h: int, w: int, trained: Sequence[int]) -> str:
    """What a student run at ``h`` x ``w`` is told when it learnt at ``trained``: a classifier fed 32 px
    after training at 64 answered near chance in a trial, without a word."""
    return (
        f"input {h}x{w}: the student was trained at {trained[0]}x{trained[1]}; at another size things sit at another"
        " scale than it learnt and its answers can be far worse: resize every image to it, as in training"
    )


def _exporting() -> bool:
    """Whether the student runs under TorchScript, tracing (TorchScript and ONNX export) or torch.compile."""
    return (
        torch.jit.is_scripting()
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_compiling()
    )


def _weights_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of the student's first floating parameter (float32 unless moved: ``.double()``)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)


def _form_problem(images: object, weights: torch.dtype = torch.float32) -> str | None:
    """What is wrong with the type, dtype or layout of ``images`` (None: a float ``[B, 3, H, W]``; float64
    where the student's ``weights`` are, a trial having moved it there and been told to feed .float())."""
    if not isinstance(images, torch.Tensor):
        return f"{EXPECTS} as a tensor [B, 3, H, W], got {type(images).__name__}"
    dtype = str(images.dtype).removeprefix("torch.")
    if not images.is_floating_point():
        if images.dtype == torch.bool or images.numel() == 0:
            return f"{EXPECTS}, got {dtype}: convert it with .float()"
        top = images.max().item()
        return f"{EXPECTS}, got {dtype} with max {top}: {_scale_hint(top)}"
    if images.dim() != 4 or images.shape[1] != 3:
        return f"the student expects images [B, 3, H, W], got {list(images.shape)}{_layout_hint(images.shape)}"
    if images.dtype == torch.float64 and weights != torch.float64:  # numpy's default: failed inside a convolution
        return f"{EXPECTS}, got float64: convert it with .float()"
    if images.dtype != weights and not torch.is_autocast_enabled(images.device.type):  # a student moved to
        cast = {torch.float16: ".half()", torch.bfloat16: ".bfloat16()", torch.float64: ".double()"}  # half
        to = cast.get(weights, f".to({weights})")
        return f"the student's weights are {str(weights).removeprefix('torch.')}, the images {dtype}: feed images{to}"
    return None


def _layout_hint(shape: torch.Size) -> str:
    """How to fix the usual layouts that are not ``[B, 3, H, W]`` (none for others)."""
    if len(shape) == 3 and shape[0] == 3:
        return ": add the batch dimension (images[None])"
    if len(shape) == 4 and shape[-1] == 3:
        return ": put the channels first (images.permute(0, 3, 1, 2))"
    if len(shape) == 4 and shape[1] == 1:
        return ": repeat a grey image over 3 channels (images.expand(-1, 3, -1, -1))"
    return ""


def _size_problem(images: torch.Tensor, multiple: int | None, trained: tuple | None = None) -> str | None:
    """The size rule of a dense student, when ``images`` break it; ``trained``: the size it learnt at,
    what to resize to (padding would put things at another place and scale than it learnt)."""
    h, w = images.shape[-2:]
    if multiple is None or (h % multiple == 0 and w % multiple == 0):
        return None
    fix = f"trained at {trained[0]}x{trained[1]}: resize every image to it, as in training" if trained else "resize"
    return f"input {h}x{w}: the student needs height and width multiples of {multiple} ({fix})"


def _value_problem(images: torch.Tensor) -> str | None:
    """Values out of [0, 1] by more than resampling explains (0-255 or normalised images)."""
    if images.numel() == 0:
        return None
    low, high = torch.stack(torch.aminmax(images.detach().float())).tolist()  # one host sync for both
    dtype = str(images.dtype).removeprefix("torch.")
    if low != low or high != high:  # NaN: every output would be NaN
        return f"{EXPECTS}, got {dtype} holding NaN"
    if low < LOWEST:  # before the max: normalised images (ImageNet's mean/std) reach 2.6 too
        return f"{EXPECTS}, got {dtype} with min {low:.4g}, max {high:.4g}: pass the images before normalising them"
    if high > HIGHEST:
        return f"{EXPECTS}, got {dtype} with max {high:.4g}: {_scale_hint(high)}"
    return None


def _scale_hint(top: float) -> str:
    """How to bring images whose largest value is ``top`` to [0, 1] (16-bit ones reach 65535)."""
    if top > 255:
        return "scale it to [0, 1]"
    return "divide by 255" if top > 1 else "convert it with .float()"


def stored_recipe(path: str | Path) -> dict:
    """The recipe (``model_dump``, overrides applied) a ``student.pt`` was built with."""
    return _read_student_file(Path(path))["recipe"]
