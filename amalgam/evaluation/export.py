"""``amalgam export``: the trained student (or one task's path) as TorchScript or ONNX, with a parity check.

The exported network takes ``[B, 3, H, W]`` RGB images in [0, 1] (it normalises them itself) and
returns one tensor per task, in the order written to ``<file>.json`` beside it (with the label
names of each task, its shape and what it holds: logits over the labels, depth in metres), so a
deployment needs neither amalgam nor the teachers.
"""

from __future__ import annotations

import errno
import glob
import json
import math
import os
import shutil
import socket
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from amalgam.errors import AmalgamError, error_line
from amalgam.evaluation.export_guard import ExportGuard, ValueGate
from amalgam.io import check_writable, file_digest, no_room
from amalgam.registry import Registry
from amalgam.students.serialize import (
    HIGHEST,
    LOWEST,
    at_chosen_size,
    input_multiple,
    load_student,
    stored_recipe,
)
from amalgam.task import Task, get_task, task_names
from amalgam.task import output_meaning as generic_output_meaning
from amalgam.training.runlock import RESUME_FIX, UNFINISHED, unfinished


class TaskOutputs(nn.Module):
    """The student's outputs as a tuple in ``tasks`` order (what exporters need); with ``only``,
    just that task's path (its modules alone, so the file holds no other branch)."""

    def __init__(self, student: nn.Module, tasks: list[str], only: bool = False):
        super().__init__()
        self.tasks = tasks
        self.net = student.task_path(tasks[0]) if only else student
        #: what input height and width must be multiples of (None: any), for the exported file's checks
        self.multiple = input_multiple(student, tasks)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(images)
        return (out,) if isinstance(out, torch.Tensor) else tuple(out[t] for t in self.tasks)


@dataclass
class Exporter:
    """Writes ``module`` for input ``example`` to ``path``; ``run`` loads it back as a callable."""

    suffix: str
    #: ``save(module, example, path, names, fixed)``: ``fixed`` writes the example's height and width
    #: into the file where the format can (ONNX), so that another size is refused where it is run
    save: Callable[[nn.Module, torch.Tensor, Path, list[str], bool], None]
    run: Callable[[Path], Callable[[torch.Tensor], list[torch.Tensor]]]
    #: other file suffixes of this format (besides ``suffix``): an ``--output`` ending in one is
    #: refused for any other format
    also: tuple[str, ...] = ()

    def suffixes(self) -> tuple[str, ...]:
        """Every suffix that says a file is of this format."""
        return (self.suffix, *self.also)


@contextmanager
def traced_quietly() -> Iterator[None]:
    """A trace without torch's TracerWarnings: the student's one data-dependent branch (a dense output
    below the input's size is upsampled) holds at every size of an export (a 4-block decoder's output
    is always half the input's), and the parity check runs the file at another size to show it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # torch's notice that jit.trace/script are deprecated: 8 lines under --quiet, for the format the user asked for
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+.* is deprecated", category=FutureWarning)
        yield


def _save_torchscript(
    module: nn.Module, example: torch.Tensor, path: Path, names: list[str], fixed: bool = False
) -> None:
    size = tuple(example.shape[-2:])
    with torch.no_grad(), traced_quietly():
        traced = torch.jit.trace(module, example, strict=False)
        torch.jit.script(ExportGuard(traced, size, getattr(module, "multiple", None), fixed)).save(str(path))


def _run_torchscript(path: Path):
    with traced_quietly():  # its deprecation notice too: the file is what the user asked for
        model = torch.jit.load(str(path), map_location="cpu").eval()
    return lambda x: [t for t in model(x)]


def _save_onnx(module: nn.Module, example: torch.Tensor, path: Path, names: list[str], fixed: bool = False) -> None:
    try:
        import onnx  # noqa: F401 - torch.onnx needs it to write the file
    except ImportError:
        raise AmalgamError("--format onnx needs the onnx package: pip install 'amalgam[export]'") from None
    dynamic = {ONNX_INPUT: {0: "batch"} | ({} if fixed else {2: "height", 3: "width"})}
    module = ValueGate(module).eval()  # as the student: the exporter restores the mode it finds, recursively
    with torch.no_grad():
        shapes = [tuple(o.shape) for o in module(example)]
    for name, shape in zip(names, shapes):  # a dense output follows the input's size (or its own stride of it)
        spatial = len(shape) == 4 and not fixed
        dynamic[name] = {0: "batch"} | ({2: f"{name}_height", 3: f"{name}_width"} if spatial else {})
    with torch.no_grad(), traced_quietly():
        torch.onnx.export(
            module, (example,), str(path), input_names=[ONNX_INPUT], output_names=names,
            dynamic_axes=dynamic, opset_version=17, dynamo=False,
        )  # fmt: skip
    _declare_output_shapes(path, shapes, tuple(example.shape[-2:]), fixed)


def _declare_output_shapes(path: Path, shapes: list[tuple], size: tuple[int, int], fixed: bool) -> None:
    """Writes each output's known dimensions into the ONNX graph: shape inference through the final
    resize named every channel axis one symbol (segmentation's 11 and depth's 1 "equal"), and a dense
    output at the input's size is said to follow the input's ``height``/``width``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # a student over 2 GB keeps its weights beside it
    for output, shape in zip(model.graph.output, shapes):
        dims = output.type.tensor_type.shape.dim
        if len(shape) not in (2, 4) or len(dims) != len(shape):
            continue  # another rank may follow the input's size: its axes are left as traced
        for axis, value in list(enumerate(shape))[1:]:
            spatial = len(shape) == 4 and axis >= 2
            if spatial and not fixed:
                at_input = tuple(shape[2:]) == size
                dims[axis].dim_param = ("height", "width")[axis - 2] if at_input else dims[axis].dim_param
            else:
                dims[axis].dim_value = int(value)
    onnx.save(model, str(path))


def _run_onnx(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: [torch.from_numpy(o) for o in session.run(None, {ONNX_INPUT: x.numpy()})]


EXPORTERS: Registry[Exporter] = Registry("export format")
EXPORTERS.add("torchscript", Exporter(".ts", _save_torchscript, _run_torchscript, (".pt", ".pth", ".torchscript")))
EXPORTERS.add("onnx", Exporter(".onnx", _save_onnx, _run_onnx))


def default_path(run_dir: Path, suffix: str, task: Optional[str] = None) -> Path:
    """Where ``amalgam export`` writes without ``--output``: ``run_dir/student[-task]<suffix>``."""
    return Path(run_dir) / f"student{'-' + task if task else ''}{suffix}"


def written_exports(run_dir: Path) -> list[Path]:
    """The exports (and the ``.json`` beside each) ``amalgam export`` wrote into ``run_dir`` by default."""
    found = []
    for fmt in EXPORTERS:
        suffix = EXPORTERS.get(fmt).suffix
        for path in (default_path(run_dir, suffix), default_path(run_dir, suffix, "*")):  # "*": any task
            found += sorted(run_dir.glob(path.name)) + sorted(run_dir.glob(path.name + ".json"))
    return found


def output_path(output: Path, run_dir: Path, suffix: str, task: Optional[str]) -> Path:
    """``--output`` as the file to write: an existing folder gets the default file name inside it.

    Raises:
        AmalgamError: a name without a suffix that is no folder (a file or a folder meant? not guessed).
    """
    if output.is_dir():
        return output / default_path(run_dir, suffix, task).name
    if not output.suffix:
        raise AmalgamError(
            f"--output {output}: no file suffix and no such folder: end the file's name in {suffix}, or make the"
            f" folder first to write {default_path(run_dir, suffix, task).name} into it"
        )
    return output


def suffix_problem(path: Path, fmt: str) -> Optional[str]:
    """Why ``path`` cannot hold a ``fmt`` export: its suffix is another format's (a TorchScript
    zip named ``.onnx`` fails in whatever loads it as ONNX). None for its own or an unknown suffix."""
    suffix = path.suffix.lower()
    for other in EXPORTERS:
        if other != fmt and suffix in EXPORTERS.get(other).suffixes():
            own = EXPORTERS.get(fmt).suffix
            return f"--output {path}: a {suffix} file is {other}, not {fmt}: pass --format {other}, or end it in {own}"
    return None


#: what a grey image needs before it is given to the exported network
GREY = "a grey image must be repeated over the 3 channels first (images.expand(-1, 3, -1, -1))"
#: the ONNX graph's input name (the .json's ``input.name``)
ONNX_INPUT = "images"
#: how an image becomes the export's input, as the student was fed while training (image_set.py: views.resize)
PREPROCESS = {
    "resize": "stretch the whole image to the input's height and width, bilinear, antialiased when shrinking"
    " (torch.nn.functional.interpolate(mode='bilinear', align_corners=False, antialias=True), as torchvision's"
    " and PIL's resize; as the student was fed in training, where an 8-bit image is resized as uint8, then"
    " divided by 255); a dense output maps back onto the image by the same resize",
    "normalisation": "none outside: feed RGB floats in [0, 1]; the file normalises them itself (do not subtract"
    " a mean or divide by a std, do not feed 0-255 values)",
    "dtype": "float32",
    # a phone photo stored turned, read as stored, scored 0.08 mIoU against amalgam eval's 0.13 (a trial)
    "orientation": "read each image upright first: apply its EXIF orientation (PIL.ImageOps.exif_transpose),"
    " as amalgam reads every image",
    "bit_depth": "a 16-bit grey image is brought to 8 bits as round(value / 257) before the resize, as amalgam"
    " reads it (PIL's convert('L') clips it instead)",
}
#: the resize of ``PREPROCESS["resize"]`` as the arguments of torch.nn.functional.interpolate (``input.interpolate``)
INTERPOLATE = {"mode": "bilinear", "align_corners": False, "antialias": True}
#: the .json's contract version: 4 (2026-12-05) adds input.trained_size, size_multiple, other_sizes and
#: interpolate (what sizes and resize say in words, for programs); 3 (2026-12-05) input.orientation,
#: input.bit_depth and parity; 2 (2026-12-04) each labelled output's background; a program checks it before
#: reading fields of a later version
CONTRACT = 4


#: what each format's file does with input it would misread (the .json's ``input.checks``)
CHECKS = {
    "torchscript": "raises torch.jit.Error naming the problem (not a RuntimeError: catch Exception): 0-255 values,"
    " normalised images, NaN or inf, integer, float64 or half tensors, another layout, a size it does not take",
    "onnx": f"an image with values outside [{LOWEST}, {HIGHEST}] (0-255 values, normalised images) or holding NaN"
    " or inf gets NaN in its rows of every output (an ONNX graph cannot raise); check sizes and dtype yourself",
}


def output_meaning(
    task: str,
    labels: Optional[list[str]],
    shape: tuple[int, ...],
    size: tuple[int, ...],
    readings: Optional[list[str]] = None,
) -> str:
    """What one output of an export is, in words: what its task says it is, taught through its teachers'
    ``readings`` (``Task.taught_meaning``; a task whose plugin is not installed here: only its shape and
    labels), and a dense output's size."""
    plugin = _task_plugin(task)
    what = (
        plugin.taught_meaning(labels, shape, readings or []) if plugin else generic_output_meaning(task, labels, shape)
    )
    if len(shape) == 4:
        what += f", at {_dense_size(tuple(shape[-2:]), tuple(size))}"
    return what


def _dense_size(out: tuple[int, int], size: tuple[int, int]) -> str:
    """A dense output's size in words: the input's, a fraction of it (a decoder ending at a stride), or fixed."""
    if out == size:
        return "the input's height and width"
    k = size[0] // out[0] if out[0] else 0
    if k > 1 and out[0] * k == size[0] and out[1] * k == size[1]:
        return f"1/{k} of the input's height and width ({out[0]}x{out[1]} at {size[0]}x{size[1]})"
    return f"{out[0]}x{out[1]}"


def _task_plugin(name: str) -> Optional[Task]:
    """The task plugin registered as ``name``, or None (a student of a plugin not installed here)."""
    return get_task(name) if name in task_names() else None


#: max difference (:func:`output_difference`) from the student at a second size above which an export is
#: said to take its trained size only (a trace that baked a size in answers wrong elsewhere, not slightly off)
SIZE_TOLERANCE = 1e-3
#: why an export takes its trained size only
NOT_RUN = "the student does not run at another size"


def sizes_note(size: tuple[int, ...], multiple: Optional[int], other: bool = True, why: str = NOT_RUN) -> str:
    """Which input sizes an export takes, in words: any, multiples of its encoder's stride, or (``other``
    False, for reason ``why``) only the trained one."""
    trained = (
        f"trained at {size[0]}x{size[1]} (the shape above): resize every image to it, as in training; other sizes"
        " run but hold things at another scale than it learnt, and its answers there can be far worse"
    )
    if not other:
        return f"only {size[0]}x{size[1]}: {why}"
    if multiple is None:
        return f"any height and width; {trained}"
    return f"any height and width that are multiples of {multiple} (nothing is padded); {trained}"


def taught_by(recipe: Optional[dict]) -> dict[str, list[dict]]:
    """``{task: [{"teacher", "output"}]}``: each task's teachers and how each one's output was read
    (``output:``; depth's relative readings leave the student without a metric scale), from the recipe
    a student file holds (none: empty)."""
    found: dict[str, list[dict]] = {}
    for name, teacher in ((recipe or {}).get("teachers") or {}).items():
        task, output = teacher.get("task"), teacher.get("output", "default")
        plugin = _task_plugin(task)  # "default" said as the reading it stands for, where the plugin is here
        reading = plugin.resolve_output_kind(output) if plugin else output
        found.setdefault(task, []).append({"teacher": name, "output": reading})
    return found


def export_meta(
    fmt: str,
    size: tuple[int, ...],
    tasks: list[str],
    spaces: dict,
    outputs: tuple,
    multiple: Optional[int] = None,
    teachers: Optional[dict[str, list[dict]]] = None,
    other: bool = True,
    why: str = NOT_RUN,
) -> dict:
    """The ``.json`` beside an export: its input (the trained shape, and the sizes it takes), and each
    output's task, labels, meaning and teachers (:func:`taught_by`).

    Its fields are a contract with deployments: extend it, never rename a field.
    """
    labels = {t: None if spaces[t] is None else list(spaces[t].names) for t in tasks}
    backgrounds = {t: None if spaces[t] is None else spaces[t].background for t in tasks}
    sizes = sizes_note(size, multiple, other, why)
    return {
        "format": fmt,
        "contract": CONTRACT,
        "input": {
            **({"name": ONNX_INPUT} if fmt == "onnx" else {}),
            "shape": ["batch", 3, *size],
            "range": [0, 1],
            "channels": "RGB",
            "grey": GREY,
            "sizes": sizes,
            "trained_size": list(size),
            "size_multiple": multiple if other else None,
            "other_sizes": other,
            "interpolate": dict(INTERPOLATE),
            **PREPROCESS,
            **({"checks": CHECKS[fmt]} if fmt in CHECKS else {}),
        },
        "outputs": [
            _output_entry(t, labels[t], tuple(out.shape), size, (teachers or {}).get(t, []))
            | ({"background": backgrounds[t]} if labels[t] is not None else {})  # the space, rebuilt by eval
            for t, out in zip(tasks, outputs)
        ],
    }


def _output_entry(task: str, labels: Optional[list[str]], shape: tuple, size: tuple, teachers: list[dict]) -> dict:
    """One output's entry of the ``.json``: its task, labels, shape, meaning, teachers, and the unit its task
    names (depth: ``metres``, or ``relative`` where every teacher was relative)."""
    readings = [t["output"] for t in teachers]
    plugin = _task_plugin(task)
    unit = plugin.output_unit(readings) if plugin else None
    return {
        "task": task,
        "labels": labels,
        "shape": ["batch", *shape[1:]],
        "meaning": output_meaning(task, labels, shape, size, readings),
        **({"unit": unit} if unit else {}),
        "teachers": teachers,
    }


def writable_destination(path: Path) -> None:
    """Checks, before the student is traced, that the export and its ``.json`` can be written there.

    Raises:
        AmalgamError: one line naming the path that is not writable (else torch's tracer fails late,
            with a bare "open file failed").
    """
    check_writable(path.parent, "export folder")
    for file in (path, Path(str(path) + ".json")):
        if file.exists() and not os.access(file, os.W_OK):
            raise AmalgamError(f"{file} is not writable: fix its permissions or pass --output elsewhere")
    path.parent.mkdir(parents=True, exist_ok=True)  # --output into a new folder


#: the parity check's limit on the max difference from the student (:func:`output_difference`), where none
#: is asked for
DEFAULT_TOLERANCE = 1e-4


class ParityError(AmalgamError):
    """The exported file differs from the student by more than the tolerance; it was not written."""


def export(
    run_dir: Path,
    fmt: str,
    task: Optional[str] = None,
    output: Optional[Path] = None,
    log: Callable[[str], None] = print,
    tolerance: Optional[float] = None,
) -> tuple[Path, Optional[float]]:
    """Exports ``run_dir/student.pt``; returns the file and the parity max difference (None: unchecked).

    Args:
        run_dir: a finished build's folder, or a student.pt moved out of one (exported beside it).
        fmt: ``torchscript`` or ``onnx``.
        task: export only this task's path (shared trunk + its branch, decoder and head).
        output: file to write (default ``run_dir/student[-task].<suffix>``); a suffix of another
            format (``.onnx`` for TorchScript, ``.ts``/``.pt`` for ONNX) is refused.
        tolerance: the parity check's limit on :func:`output_difference` (default
            :data:`DEFAULT_TOLERANCE`); given, an export that cannot be checked (ONNX without
            onnxruntime) is refused too.

    Raises:
        ParityError: the file differs from the student by more than the tolerance; a previous export
            at ``output`` is left as it was.
        AmalgamError: for an output suffix of another format, a task the student lacks, an unfinished
            run, an unwritable destination, or a tolerance asked where parity cannot be checked.
    """
    exporter = EXPORTERS.get(fmt)
    student_file = Path(run_dir) / "student.pt"
    if Path(run_dir).is_file():  # a student.pt moved out of its run folder: exported beside it
        student_file, run_dir = Path(run_dir), Path(run_dir).parent
    path = output_path(Path(output), run_dir, exporter.suffix, task) if output else None
    path = path or default_path(run_dir, exporter.suffix, task)
    if problem := suffix_problem(path, fmt):
        raise AmalgamError(problem)
    if tolerance is not None and not tolerance >= 0:
        raise AmalgamError(f"--tolerance: a max difference is 0 or more, got {tolerance}")
    if not student_file.exists() and unfinished(run_dir):
        raise AmalgamError(f"{run_dir} is an unfinished run ({UNFINISHED}): {RESUME_FIX}, then export")
    student, spaces = load_student(student_file)
    if student.image_size is None:
        raise AmalgamError(f"{student_file} holds no recipe: its input size is unknown")
    size = student.image_size
    if task is not None and task not in spaces:
        raise AmalgamError(f"--task: the student has no task '{task}' (it has: {', '.join(spaces)})")
    tasks = [task] if task else list(spaces)
    writable_destination(path)  # after the student is found: a mistyped run folder leaves no folder behind
    module = TaskOutputs(student, tasks, only=task is not None).eval()
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(2, 3, *size, generator=gen)
    other = other_size(size, input_multiple(student, tasks))
    takes_other = runs_at(module, other)  # a fixed-size encoder (a ViT's) takes its trained size only
    with torch.no_grad():
        outputs = module(example)  # their shapes, for the .json
    teachers = taught_by(stored_recipe(student_file))
    origin = {"file": str(student_file.resolve()), "sha256": file_digest(student_file)}  # which student: a stale
    # export beside a rebuilt run is told apart by it
    meta_of = partial(export_meta, fmt, size, tasks, spaces, outputs, input_multiple(student, tasks), teachers)
    meta_of = partial(_with_origin, meta_of, origin)
    _remove_orphans(path, log)
    work = path.with_name(f"{_partial_prefix(path)}{os.getpid()}{path.suffix}")  # the file and its .json, unchecked
    checks = (gen, size, other, takes_other)
    replaced = path.exists()  # said once it is: exporting again over a run's own export is the common case
    try:
        diff, said, sizes = _written(exporter, module, example, (work, path), tasks, checks)
        _within(diff, tolerance, path)
        write_meta(work, {**meta_of(*sizes), "parity": _parity_record(diff, tolerance)}, path.name)  # once, checked
        os.replace(meta_path(work), meta_path(path))
        os.replace(work, path)  # last: a file at ``path`` was checked against the student and has its own .json
    finally:  # interrupted or failed: an export that was never checked is not left behind
        for leftover in (work, meta_path(work)):
            leftover.unlink(missing_ok=True)
    log(said + ("; it replaced the previous export there (and its .json)" if replaced else ""))
    return path, diff


#: room an export needs beyond its weights: the graph, the .json, a zip's directory
EXPORT_SLACK = 4 * 2**20


def _check_room(work: Path, module: nn.Module) -> None:
    """Stops in one line where the folder cannot hold the export (its weights and :data:`EXPORT_SLACK`): torch's
    TorchScript writer on a full disk aborts the process with a C++ dump, and left a partial file (a trial)."""
    weights = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    free = shutil.disk_usage(work.parent).free
    if free < weights + EXPORT_SLACK:
        raise AmalgamError(
            f"cannot write {work.parent}/: disk full ({free:,} bytes free, the export needs about"
            f" {weights + EXPORT_SLACK:,}); nothing was written"
        )


def tolerance_of(tolerance: Optional[float]) -> float:
    """The parity check's limit: ``--tolerance``, else :data:`DEFAULT_TOLERANCE`."""
    return DEFAULT_TOLERANCE if tolerance is None else tolerance


def _parity_record(diff: Optional[float], tolerance: Optional[float]) -> dict:
    """The ``.json``'s ``parity`` (a file exported unchecked read the same as a checked one)."""
    limit = tolerance_of(tolerance) if diff is not None else None
    return {"checked": diff is not None, "max_diff": diff, "tolerance": limit}


def _partial_prefix(path: Path) -> str:
    """The start of the name of an export's partial files made on this machine (its PID follows): another
    machine's on a shared folder are never taken for this one's."""
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname()) or "host"
    return f".{path.stem}.partial-{host}-"


def _remove_orphans(path: Path, log: Callable[[str], None]) -> None:
    """Removes the partial files of exports to ``path`` made on this machine by a process that is gone
    (killed: a SIGKILL runs no cleanup, and a trial found such files of 5 MB each left beside the export)."""
    if os.name != "posix":  # os.kill(pid, 0) ends a process on Windows: no liveness test there
        return
    prefix = _partial_prefix(path)
    for orphan in path.parent.glob(f"{glob.escape(prefix)}*{glob.escape(path.suffix)}*"):
        pid = orphan.name.removeprefix(prefix).split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            orphan.unlink(missing_ok=True)
            log(f"removed {orphan.name}: the partial export of a process that no longer runs")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this (POSIX) machine; one of another user's counts as running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _with_origin(meta_of: Callable[..., dict], origin: dict, *args) -> dict:
    """The ``.json`` with the student file it was exported from (``student``: its path and SHA-256)."""
    return {**meta_of(*args), "student": origin}


def _within(diff: Optional[float], tolerance: Optional[float], path: Path) -> None:
    """Refuses an export whose parity ``diff`` is over ``tolerance`` (or the default), before it replaces
    anything; and one that could not be checked where a tolerance was asked for."""
    if diff is None:
        if tolerance is not None:
            raise AmalgamError(
                f"{path}: parity cannot be checked here (onnxruntime is not installed: pip install onnxruntime),"
                f" and --tolerance {tolerance} asks for it; leave --tolerance out to export it unchecked"
            )
        return
    limit = tolerance_of(tolerance)
    if not diff <= limit:  # NaN too
        raise ParityError(
            f"{path} differs from the PyTorch student by {diff:.2e} > {limit}: not written (a previous export there"
            f" is left as it was){_rounding_hint(diff)}"
        )


#: a parity difference under this may be float32 rounding (a wrong resize or op differs by more): the error names
#: the --tolerance taking it
ROUNDING_BELOW = 1e-3


def _rounding_hint(diff: float) -> str:
    """For a small difference, the ``--tolerance`` that takes it (a trial's student answering in the thousands
    missed 1e-4 by 4%, and the error did not name the option); '' for a large or NaN one: more likely a wrong
    export."""
    if not diff < ROUNDING_BELOW:
        return ""
    return (
        f"; a difference this small may be float rounding (larger where the student answers far from +-1):"
        f" --tolerance {10 ** math.ceil(math.log10(diff)):g} exports it"
    )


def _written(exporter, module, example, paths, tasks, checks) -> tuple[Optional[float], str, tuple]:
    """:func:`_write_checked` where the folder has room for it (:func:`_check_room`), a full disk said in one line."""
    work, path = paths
    _check_room(work, module)
    try:
        return _write_checked(exporter, module, example, paths, tasks, checks)
    except OSError as exc:  # ONNX's writer on a full disk: one line, not a traceback
        if exc.errno not in (errno.ENOSPC, errno.EFBIG):
            raise
        raise AmalgamError(f"cannot write {path}: {no_room(work.parent, exc)}; nothing was written") from None


def _write_checked(exporter, module, example, paths, tasks, checks) -> tuple[Optional[float], str, tuple]:
    """Writes the export to ``paths[0]`` (named ``paths[1]`` in what is said) and checks it against the
    student at its size and another (``checks``: the images' generator, the two sizes, whether it takes
    the other); returns the parity max difference (None: unchecked), the line to say once it is written, and
    the sizes it takes as :func:`export_meta`'s ``(other, why)``."""
    work, path = paths
    gen, size, other, takes_other = checks
    exporter.save(module, example, work, tasks, not takes_other)
    run = exporter.run(work)
    if run is None:
        said = f"wrote {path}; parity not checked (onnx runtime not installed: pip install onnxruntime)"
        return None, said, (takes_other,)
    diff = parity(module, run, torch.rand(3, 3, *size, generator=gen))
    said = f"wrote {path} ({', '.join(tasks)}); parity on 3 random images: max diff {diff:.2e}"
    if not takes_other:
        return diff, f"{said} (the student takes {size[0]}x{size[1]} only)", (False,)
    try:
        again, why = parity(module, run, torch.rand(3, 3, *other, generator=gen)), ""
    except Exception as exc:  # noqa: BLE001 - the file fails where the student runs: it takes its size only
        again, why = float("inf"), f"it fails ({error_line(exc)})"
    if not again <= SIZE_TOLERANCE:  # a trace that baked the size in: right at the trained size only, and said so
        why = why or f"it differs from the student by {again:.2e}"
        exporter.save(module, example, work, tasks, True)  # an ONNX file then refuses other sizes where it runs
        refusal = f"the exported file does not answer other sizes as the student does: {why}"
        said = f"{said}; at {other[0]}x{other[1]} {why}: the file takes {size[0]}x{size[1]} only (its .json says so)"
        return parity(module, exporter.run(work), torch.rand(3, 3, *size, generator=gen)), said, (False, refusal)
    return max(diff, again), f"{said} ({again:.2e} at {other[0]}x{other[1]})", (True,)


def other_size(size: tuple[int, int], multiple: Optional[int]) -> tuple[int, int]:
    """A size the export was not traced at, that the student takes: one ``multiple`` (32 without one)
    more in each side."""
    step = multiple or 32
    return size[0] + step, size[1] + step


def meta_path(path: Path) -> Path:
    """The ``.json`` beside the export at ``path``."""
    return Path(str(path) + ".json")


def write_meta(path: Path, meta: dict, name: Optional[str] = None) -> None:
    """Writes the ``.json`` beside the export at ``path``, with the file's name (``name``: the one it will
    be renamed to) and SHA-256: the pair is replaced in two steps, so a reader can tell they belong together."""
    meta = {**meta, "file": {"name": name or path.name, "sha256": file_digest(path)}}
    meta_path(path).write_text(json.dumps(meta, indent=1) + "\n")


def runs_at(module: nn.Module, size: tuple[int, int]) -> bool:
    """Whether ``module`` answers an image of ``size``."""
    try:
        with torch.no_grad(), at_chosen_size():
            module(torch.rand(1, 3, *size))
    except Exception:  # noqa: BLE001 - any failure: it does not take that size
        return False
    return True


def parity(module: nn.Module, run: Callable, images: torch.Tensor) -> float:
    """Max difference of an exported file's outputs (``run``) from the module's on ``images`` (a batch
    size, and a size, the trace may never have seen): absolute where the module answers within +-1,
    relative to its answer beyond (see :func:`output_difference`)."""
    with torch.no_grad(), at_chosen_size():  # the other size is asked on purpose
        want = module(images)
    got = run(images)
    return max(output_difference(a, b) for a, b in zip(want, got))


def output_difference(want: torch.Tensor, got: torch.Tensor) -> float:
    """Max of ``|got - want| / max(1, |want|)``: float32 rounding grows with the value, so an absolute
    limit would refuse a faithful export of large outputs (metric depth of a street, confident logits).
    The same inf on both sides matches; a NaN or an inf on one side only is inf, which every limit refuses."""
    want, got = want.detach().float(), torch.as_tensor(got).float()
    same_inf = torch.isinf(want) & (want == got)
    diff = (got - want).abs() / want.abs().clamp(min=1.0)
    diff = torch.where(same_inf, torch.zeros_like(diff), diff)
    worst = diff.max().item() if diff.numel() else 0.0
    return worst if worst == worst else float("inf")
