"""The self-describing student file: weights, architecture, label spaces and recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from amalgam.errors import AmalgamError, RecipeError
from amalgam.io import atomic_save
from amalgam.labels import LabelSpace
from amalgam.students.build import StudentSpec, build_student


def save_student(student: nn.Module, spaces: dict[str, LabelSpace | None], recipe: dict, path: Path) -> None:
    """Writes ``student.pt``: weights, architecture, unified label spaces and the recipe.

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
        },
        path,
    )


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
    """The checked contents of a ``student.pt`` (loaded with ``weights_only=True``)."""
    if not path.is_file():
        raise AmalgamError(f"student file not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise AmalgamError(f"cannot read student file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(blob, dict) or blob.get("format") != "amalgam-student/1":
        raise AmalgamError(f"{path} is not an amalgam student file")
    return blob


def load_student(path: str | Path) -> tuple[nn.Module, dict[str, LabelSpace | None]]:
    """Rebuilds a student from ``student.pt`` (loaded with ``weights_only=True``).

    Returns:
        The student in eval mode and its unified label spaces by task.
    """
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
    return student.eval(), spaces
