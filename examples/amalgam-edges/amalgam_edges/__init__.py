"""Edge detection as an amalgam task plugin (example of a third-party package).

Teachers give ``[B, 1, H, W]`` edge logits; the student gets a 1-channel conv head; distillation is
binary cross-entropy against the teacher's softened edge probability; the metric is the F1 score of
``sigmoid > 0.5`` against the boundaries of an eval set's label maps (``mask`` ground truth).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from amalgam.labels import IGNORE, LabelSpace
from amalgam.task import DistillOptions, Task


def label_edges(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boundaries of ``[B, H, W]`` label maps (a pixel whose right or lower neighbour differs) and
    the pixels where that is defined (neither is ignored)."""
    edge = torch.zeros_like(mask, dtype=torch.bool)
    valid = mask != IGNORE
    right = (mask[..., :, 1:] != mask[..., :, :-1]) & valid[..., :, 1:] & valid[..., :, :-1]
    down = (mask[..., 1:, :] != mask[..., :-1, :]) & valid[..., 1:, :] & valid[..., :-1, :]
    edge[..., :, :-1] |= right
    edge[..., :-1, :] |= down
    return edge, valid


class EdgeMeter:
    """Precision, recall and F1 of predicted edge pixels over the whole set."""

    def __init__(self) -> None:
        self.tp = self.fp = self.fn = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        truth, valid = label_edges(target.long().cpu())
        pred = pred.cpu().bool() & valid
        self.tp += int((pred & truth).sum())
        self.fp += int((pred & ~truth).sum())
        self.fn += int((~pred & truth).sum())

    def compute(self) -> dict[str, float]:
        precision = self.tp / max(1, self.tp + self.fp)
        recall = self.tp / max(1, self.tp + self.fn)
        f1 = 2 * precision * recall / max(1e-12, precision + recall)
        return {"f1": f1, "precision": precision, "recall": recall}


class EdgeTask(Task):
    name = "edges"
    dense = True
    target_key = "mask"
    metric = "f1"
    higher_is_better = True

    def build_head(self, in_channels: int, num_outputs: int) -> nn.Module:
        return nn.Conv2d(in_channels, 1, kernel_size=3, padding=1)

    def num_outputs(self, space: Optional[LabelSpace]) -> int:
        return 1

    def check_output(self, out: torch.Tensor, batch: int, space: Optional[LabelSpace]) -> Optional[str]:
        if out.dim() != 4 or out.shape[0] != batch or out.shape[1] != 1:
            return f"expected edge logits of shape [B, 1, H, W], got {list(out.shape)}"
        return None

    def distill_loss(self, student, teacher, options: DistillOptions):
        if teacher.shape[-2:] != student.shape[-2:]:
            teacher = F.interpolate(teacher.float(), size=student.shape[-2:], mode="bilinear", align_corners=False)
        # Bernoulli KL(teacher || student) per pixel: cross-entropy minus the target's own entropy
        temperature = options.temperature
        p = torch.sigmoid(teacher.float() / temperature)
        cross = F.binary_cross_entropy_with_logits(student.float() / temperature, p)
        entropy = F.binary_cross_entropy(p, p)
        return (cross - entropy) * temperature**2

    def supervised_loss(self, output, target):
        truth, valid = label_edges(target.long())
        logits = self.predict_logits(output, tuple(target.shape[-2:]))
        return F.binary_cross_entropy_with_logits(logits[valid], truth[valid].float())

    def predict_logits(self, output: torch.Tensor, size) -> torch.Tensor:
        if tuple(output.shape[-2:]) != tuple(size):
            output = F.interpolate(output.float(), size=size, mode="bilinear", align_corners=False)
        return output[:, 0]

    def predict(self, output, size, projection=None):
        return self.predict_logits(output, size) > 0

    def new_meter(self, num_classes: Optional[int]) -> EdgeMeter:
        return EdgeMeter()


class SobelEdges(nn.Module):
    """A fixed teacher: Sobel gradient magnitude of the grey image, as edge logits."""

    def __init__(self, threshold: float = 0.5, sharpness: float = 8.0):
        super().__init__()
        gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.register_buffer("kernel", torch.stack([gx, gx.t()]).unsqueeze(1))
        self.threshold, self.sharpness = threshold, sharpness

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = x.mean(1, keepdim=True)
        g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), self.kernel)
        return (g.pow(2).sum(1, keepdim=True).sqrt() - self.threshold) * self.sharpness


def sobel_edges(threshold: float = 0.5, sharpness: float = 8.0) -> nn.Module:
    """Factory for recipes: ``model: {from: python, factory: "amalgam_edges:sobel_edges"}``."""
    return SobelEdges(threshold, sharpness)
