"""The weights a new student starts from: random, a previous student (``student.init``) or a
pretrained encoder (``student.encoder_weights``). The ``branch_at: auto`` warm-up starts from the
same encoder weights as the build, so the affinities are measured on the student that will be
trained."""

from __future__ import annotations

from typing import Callable

from torch import nn

from amalgam.config.schema import Recipe
from amalgam.labels import LabelSpace
from amalgam.students.pretrained import match_encoder_weights, pretrained_encoder
from amalgam.students.serialize import init_student


def start_weights(
    student: nn.Module,
    recipe: Recipe,
    spaces: dict[str, LabelSpace | None],
    log: Callable[[str], None],
    whole: bool = True,
) -> None:
    """Loads what the recipe says the student starts from (nothing: its random weights), and says so.

    ``whole=False`` (the ``branch_at: auto`` warm-up, a fully shared tree) skips ``student.init``:
    a previous student is one tree, and the warm-up's is another.
    """
    cfg = recipe.student
    if cfg.init is not None and whole:
        path = recipe.resolve(cfg.init)
        init_student(student, spaces, path)
        log(f"student: starting from {path}")
    elif cfg.encoder_weights is not None:
        spec = student.spec
        weights = match_encoder_weights(spec.encoder, recipe.resolve(cfg.encoder_weights), spec.encoder_args)
        student.load_encoder(pretrained_encoder(spec.encoder, weights, spec.encoder_args))
        log(f"student: encoder {spec.describe_encoder()} starts from {weights.describe()}")
    elif cfg.init is None:  # said: a newcomer could not tell whether it started pretrained (none is downloaded)
        log(
            "student: starts from random weights (no student.encoder_weights: amalgam downloads none; a"
            " pretrained encoder of yours, such as an ImageNet classifier's state dict, usually trains faster)"
        )
