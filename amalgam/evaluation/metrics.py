"""Metric accumulators shared by task plugins."""

from __future__ import annotations

from typing import Optional

import torch

from amalgam.errors import AmalgamError
from amalgam.labels import IGNORE

#: ground truth a class needs for :meth:`ConfusionMatrix.mostly_predicted_as` to judge it: items of a
#: classifier (one wrong image is a confusion, not an order), pixels of a segmenter (a few stray ones are
#: no class: 37 pixels of three scenes read as a swapped order)
MIN_ITEMS_JUDGED = 2
MIN_PIXELS_JUDGED = 256


class ConfusionMatrix:
    """Confusion matrix over ``num_classes`` classes; targets equal to IGNORE are skipped.

    Rows are ground truth, columns predictions.
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Adds a batch of predicted and true class indices (any matching shapes)."""
        pred, target = pred.reshape(-1).cpu(), target.reshape(-1).cpu()
        keep = (target != IGNORE) & (target >= 0) & (target < self.num_classes)
        pred = pred[keep]
        # clamped, a plugin's 255 was counted as the last class without a word
        if pred.numel() and not bool(((pred >= 0) & (pred < self.num_classes)).all()):
            wrong = pred[(pred < 0) | (pred >= self.num_classes)][0].item()
            raise AmalgamError(
                f"a prediction of class index {wrong} outside 0..{self.num_classes - 1}: a task's predict must give"
                " indices of the labels scored"
            )
        idx = target[keep] * self.num_classes + pred
        self.matrix += torch.bincount(idx, minlength=self.num_classes**2).view(self.num_classes, -1)

    def accuracy(self) -> float:
        """Fraction of scored samples/pixels predicted correctly."""
        total = self.matrix.sum().item()
        return self.matrix.diag().sum().item() / total if total else float("nan")

    def recall(self) -> torch.Tensor:
        """Per-class recall (true positives over ground truth); NaN for classes absent from ground truth."""
        truth = self.matrix.sum(1).double()
        tp = self.matrix.diag().double()
        return torch.where(truth > 0, tp / truth.clamp(min=1), torch.full_like(tp, float("nan")))

    def iou(self) -> torch.Tensor:
        """Per-class IoU; NaN for classes absent from both ground truth and predictions."""
        tp = self.matrix.diag().double()
        union = self.matrix.sum(0).double() + self.matrix.sum(1).double() - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))

    def mean_iou(self, classes: Optional[list[int]] = None) -> float:
        """Mean IoU over the classes with ground-truth pixels (of ``classes`` if given).

        A class only predicted is not a 0 of its own: its pixels already count against the classes they
        were taken from. Averaging it in (as over a full dataset, where every class has pixels, makes no
        difference) put a teacher and a student over different sets of classes on a small eval set:
        the one that named an absent class averaged in a 0 the other did not.
        """
        iou = self.iou()
        present = self.matrix.sum(1) > 0
        if classes is not None:
            scored = torch.zeros_like(present)
            scored[classes] = True
            present &= scored
        return iou[present].mean().item() if present.any() else float("nan")

    def mostly_predicted_as(
        self, share: float = 0.5, skip_common: bool = False, min_count: int = 1
    ) -> list[Optional[int]]:
        """Per class, the one other class that takes more than ``share`` of its predictions, else None.

        With ``skip_common`` (dense tasks) the most common class of the ground truth, a segmenter's
        background, is not counted as such a class: predicting it is blindness, not a swap of labels.
        A class with fewer than ``min_count`` items (pixels) of ground truth is not judged: on a few
        eval images one confused item read as a swapped label order.
        """
        truth = self.matrix.sum(1)
        common = int(truth.argmax()) if skip_common and truth.sum() else -1
        found: list[Optional[int]] = []
        for c in range(self.num_classes):
            row = self.matrix[c].clone()
            row[c] = 0
            j = int(row.argmax())
            swapped = truth[c] >= max(1, min_count) and j != common and row[j] > share * truth[c]
            found.append(j if swapped else None)
        return found
