"""Semantic segmentation: 1x1/3x3 conv head, per-pixel partial-label KL, mIoU from a confusion matrix."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from amalgam.evaluation.metrics import MIN_PIXELS_JUDGED, ConfusionMatrix
from amalgam.kd.class_balance import catch_all_labels, class_balanced_weights, focal_weights
from amalgam.labels import IGNORE, LabelSpace, partial_label_kl, partial_label_nll, project_log_probs
from amalgam.task import DistillOptions, LabelledOutputs, Task


class SegmentationMeter:
    """mIoU and pixel accuracy over a confusion matrix."""

    def __init__(self, num_classes: int):
        self.confusion = ConfusionMatrix(num_classes)
        self.classes: Optional[list[int]] = None

    def restrict(self, classes: list[int]) -> None:
        """Averages the IoU over these classes only (those an eval set holds); the others stay listed."""
        self.classes = list(classes)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.confusion.update(pred, target)

    def compute(self) -> dict[str, float]:
        """mIoU (over the restricted classes with ground truth: the per-class list's non-None values),
        pixel accuracy, and per class the IoU, None for a class the
        set cannot score: outside the restricted classes, or without a pixel of ground truth (where
        any prediction of it would read as IoU 0, a near-blind teacher that is not)."""
        iou = self.confusion.iou()
        truth = self.confusion.matrix.sum(1)
        scorable = [bool(truth[i]) and (self.classes is None or i in self.classes) for i in range(len(iou))]
        return {
            "miou": self.confusion.mean_iou(self.classes),
            "pixel_acc": self.confusion.accuracy(),
            "iou": [v.item() if ok and not torch.isnan(v) else None for v, ok in zip(iou, scorable)],
            # pixels of ground truth per class (None: a class the set does not score)
            "support": [int(n) if self.classes is None or i in self.classes else None for i, n in enumerate(truth)],
            "mostly_predicted_as": self.confusion.mostly_predicted_as(skip_common=True, min_count=MIN_PIXELS_JUDGED),
        }


class SegmentationTask(LabelledOutputs, Task):
    """Teachers output logits ``[B, C, h, w]`` (any h, w); the student at its input size (half of it
    while training with a four-block decoder)."""

    name = "segmentation"
    dense = True
    labelled = True
    exclusive_labels = True  # one label per pixel: softmax merges and hard labels are right
    distill_options = frozenset({"weights", "after_projection", "class_balance", "focal", "pseudo_labels"})
    unified_background = "background"
    target_key = "mask"
    metric = "miou"
    per_class_metric = "iou"
    per_class_floor = ("pixels", 1024)
    higher_is_better = True

    def build_head(self, in_channels: int, num_outputs: int) -> nn.Module:
        return nn.Conv2d(in_channels, num_outputs, kernel_size=3, padding=1)

    def check_output(self, out: torch.Tensor, batch: int, space: Optional[LabelSpace]) -> Optional[str]:
        if out.dim() != 4 or out.shape[0] != batch or out.shape[1] != len(space):
            return f"expected logits of shape [B, {len(space)}, H, W], got {list(out.shape)}"
        return None

    def shape_hint(self, out, space, kind) -> str:
        last = out.dim() == 4 and space is not None and out.shape[-1] == len(space) != out.shape[1]
        if last:  # before the shared hints: its many "channels" are a width
            return " (channels last? return it as [B, C, H, W]: out.permute(0, 3, 1, 2))"
        return super().shape_hint(out, space, kind)

    def output_meaning(self, labels: Optional[list[str]], shape: tuple[int, ...]) -> str:
        return f"{super().output_meaning(labels, shape)} (argmax over dim 1: each pixel's label)"

    def distill_loss(self, student, teacher, options: DistillOptions):
        """Partial-label KL per pixel; with ``options.class_balance`` > 0 each pixel is weighted by the
        rarity of the teacher's class there (:func:`class_balanced_weights`; a label standing for
        several unified classes, such as a partial teacher's background, is not re-weighted), and
        with ``options.focal`` > 0 by how much the student misses the teacher's label (:func:`focal_weights`)."""
        if teacher.shape[-2:] != student.shape[-2:]:
            teacher = F.interpolate(teacher.float(), size=student.shape[-2:], mode="bilinear", align_corners=False)
        o = options
        weights = o.weights
        if o.class_balance > 0:
            balanced = class_balanced_weights(teacher, o.class_balance, catch_all=catch_all_labels(o.projection))
            weights = balanced if weights is None else weights * balanced
        if o.focal > 0:
            focal = focal_weights(student, teacher, o.projection, o.focal)
            weights = focal if weights is None else weights * focal
        loss = partial_label_kl(student, teacher, o.projection, o.temperature, weights, o.after_projection, check=False)
        if o.pseudo_labels > 0:
            loss = loss + o.pseudo_labels * partial_label_nll(student, teacher, o.projection, weights)
        return loss

    def supervised_loss(self, output, target):
        if output.shape[-2:] != target.shape[-2:]:
            output = F.interpolate(output, size=target.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(output, target, ignore_index=IGNORE)

    def predict(self, output, size, projection=None):
        scores = project_log_probs(output, projection) if projection is not None else output
        if tuple(scores.shape[-2:]) != tuple(size):
            scores = F.interpolate(scores.float(), size=size, mode="bilinear", align_corners=False)
        return scores.argmax(1)

    def new_meter(self, num_classes: Optional[int]) -> SegmentationMeter:
        return SegmentationMeter(num_classes)
