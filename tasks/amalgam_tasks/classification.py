"""Image classification: pooled linear head, partial-label KL, top-1."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from amalgam.evaluation.metrics import MIN_ITEMS_JUDGED, ConfusionMatrix
from amalgam.labels import IGNORE, LabelSpace, partial_label_kl, project_log_probs
from amalgam.task import DistillOptions, LabelledOutputs, Task


class TopOne:
    """Top-1 accuracy and per-class recall (from the confusion matrix behind them)."""

    def __init__(self, num_classes: int):
        self.confusion = ConfusionMatrix(num_classes)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.confusion.update(pred, target)

    def compute(self) -> dict[str, float]:
        return {
            "top1": self.confusion.accuracy(),
            "count": int(self.confusion.matrix.sum()),
            "recall": [None if torch.isnan(v) else v.item() for v in self.confusion.recall()],
            "support": self.confusion.matrix.sum(1).tolist(),  # items of ground truth per class
            "mostly_predicted_as": self.confusion.mostly_predicted_as(min_count=MIN_ITEMS_JUDGED),
        }


class ClassificationTask(LabelledOutputs, Task):
    """Teachers output logits ``[B, C]`` over their labels; the student logits over the union."""

    name = "classification"
    dense = False
    labelled = True
    exclusive_labels = True  # one label per image: softmax merges and hard labels are right
    distill_options = frozenset({"weights", "after_projection"})
    target_key = "label"
    metric = "top1"
    per_class_metric = "recall"
    per_class_floor = ("images", 10)
    per_class_counts = True  # recall x images: the images named right
    higher_is_better = True

    def build_head(self, in_channels: int, num_outputs: int) -> nn.Module:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_outputs))

    def check_output(self, out: torch.Tensor, batch: int, space: Optional[LabelSpace]) -> Optional[str]:
        expected = (batch, len(space))
        if out.dim() != 2 or tuple(out.shape) != expected:
            return f"expected logits of shape [B, {len(space)}] = {list(expected)}, got {list(out.shape)}"
        return None

    def shape_hint(self, out, space, kind) -> str:
        hint = super().shape_hint(out, space, kind)
        pooled_map = out.dim() == 4 and space is not None and out.shape[1] == len(space) and out.shape[-2:] == (1, 1)
        if not hint and pooled_map:
            return " (a [B, C, 1, 1] map: flatten it in the model, e.g. return torch.flatten(out, 1))"
        return hint

    def output_meaning(self, labels: Optional[list[str]], shape: tuple[int, ...]) -> str:
        return f"{super().output_meaning(labels, shape)} (apply a softmax over dim 1 for probabilities)"

    def distill_loss(self, student, teacher, options: DistillOptions):
        o = options
        return partial_label_kl(
            student, teacher, o.projection, o.temperature, o.weights, o.after_projection, check=False
        )

    def supervised_loss(self, output, target):
        return F.cross_entropy(output, target, ignore_index=IGNORE)

    def predict(self, output, size, projection=None):
        if projection is not None:
            return project_log_probs(output, projection).argmax(1)
        return output.argmax(1)

    def new_meter(self, num_classes: Optional[int]) -> TopOne:
        return TopOne(num_classes)
