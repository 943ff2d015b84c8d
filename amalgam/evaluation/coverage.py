"""How much of its eval set a teacher is scored on, said in report.json's ``warnings`` when partial.

The plan's log says which of a set's classes a teacher has no label for and which of its labels
the set lacks; a report read later (or by a program) showed a ratio over a part of the set as if
it were the whole. A teacher scored on part of its set gets one warning line in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from amalgam.distill.eval_checks import shorten
from amalgam.labels import IGNORE, LabelSpace, missing_labels


@dataclass
class Coverage:
    """One teacher on one eval set: the classes on either side that do not meet, and the images
    (per-image targets only: a label map's pixels are not images) left unscored."""

    teacher: str
    eval: str
    #: the teacher's labels (of ``known``) that no class of the set maps to
    absent: list[str]
    #: the set's classes that map to none of the teacher's labels (nor its background)
    unscored: list[str]
    known: int
    images: int = 0
    _unscored_images: torch.Tensor | int = field(default=0, init=False, repr=False)

    @classmethod
    def of(cls, teacher: str, eval_name: str, space: LabelSpace, classes: list[str], lut: torch.Tensor) -> Coverage:
        """From the teacher's lookup table of the set's class names (:func:`~amalgam.labels.lookup`)."""
        absent = missing_labels(space, lut)
        unscored = [c for c, i in zip(classes, lut.tolist()) if i == IGNORE]
        return cls(teacher, eval_name, absent, unscored, len(space.known()))

    def count(self, target: torch.Tensor) -> None:
        """Counts a batch of the teacher's targets (after lookup); label maps are not counted."""
        if target.dim() == 1:  # summed on the device: no host sync per batch
            self.images += target.shape[0]
            self._unscored_images = self._unscored_images + (target == IGNORE).sum()

    @property
    def unscored_images(self) -> int:
        """Images whose class the teacher has no label for."""
        return int(self._unscored_images)

    def warning(self) -> Optional[str]:
        """One line when the teacher is scored on part of the set (or of its labels), else None."""
        parts = []
        if self.unscored_images:
            parts.append(f"scored on {self.images - self.unscored_images} of the {self.images} images evaluated")
        if self.unscored:
            parts.append(f"the set's classes it has no label for are not scored: {shorten(self.unscored)}")
        if self.absent:
            parts.append(
                f"{self.known - len(self.absent)} of the teacher's {self.known} labels are in the set "
                f"(absent: {shorten(self.absent)})"
            )
        if not parts:
            return None
        return f"teacher {self.teacher} is scored on part of eval set '{self.eval}': " + "; ".join(parts)
