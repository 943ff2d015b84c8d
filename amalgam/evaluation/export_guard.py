"""The checks a TorchScript export carries: input it would misread is refused in one line, where it runs.

A trace records tensor operations only, so the Python checks of a loaded student
(:class:`amalgam.students.serialize.InputGuard`) vanish from the file: a deployment feeding 0-255
values, normalised images or another size got wrong answers without a word, and a height that is no
multiple of the encoder's stride failed deep inside the decoder. :class:`ExportGuard` is scripted
around the traced student, so the file itself says what it takes (no postponed annotations here:
TorchScript reads this module's annotations).
"""

import math
from typing import Optional, Tuple

import torch
from torch import nn

from amalgam.students.serialize import EXPECTS, HIGHEST, LOWEST


class ExportGuard(nn.Module):
    """``inner`` (a traced student) behind the input checks TorchScript can carry.

    Args:
        inner: the traced module.
        size: the trained height and width.
        multiple: what height and width must be multiples of (None: anything).
        fixed: refuse every size but ``size`` (the file answers other sizes wrong, or not at all).
    """

    def __init__(self, inner: nn.Module, size: Tuple[int, int], multiple: Optional[int], fixed: bool):
        super().__init__()
        self.inner = inner
        self.height, self.width = int(size[0]), int(size[1])
        self.multiple = int(multiple or 1)
        self.fixed = fixed
        self.expects = EXPECTS
        self.lowest, self.highest = float(LOWEST), float(HIGHEST)

    def forward(self, images: torch.Tensor):
        self._check_form(images)
        self._check_size(images.size(2), images.size(3))
        if images.numel() > 0:
            low, high = torch.aminmax(images)  # one pass, one host sync for both
            self._check_values(float(low), float(high))
        return self.inner(images)

    def _check_form(self, images: torch.Tensor) -> None:
        if images.dtype == torch.float64:  # numpy's default
            raise RuntimeError(self.expects + ", got float64: convert it with .float()")
        if images.dtype == torch.float16 or images.dtype == torch.bfloat16:  # as student.pt refuses them: answers
            raise RuntimeError(  # of rounded images, read as the float32 ones (a trial: off by 0.022 in bf16)
                self.expects + ", got float16 or bfloat16: the file computes in float32, convert it with .float()"
            )
        if not images.is_floating_point():  # TorchScript names a dtype by its number: said by kind
            raise RuntimeError(
                self.expects + ", got a tensor of integers, bools or complex numbers: convert it with .float(), 0-255"
                " values / 255"
            )
        if images.dim() != 4 or images.size(1) != 3:
            raise RuntimeError("the student expects images [B, 3, H, W], got " + str(images.shape))

    def _check_size(self, h: int, w: int) -> None:
        trained = str(self.height) + "x" + str(self.width)
        got = "input " + str(h) + "x" + str(w) + ": "
        if self.fixed and (h != self.height or w != self.width):
            raise RuntimeError(got + "this file takes " + trained + " only: resize every image to it, as in training")
        if h % self.multiple != 0 or w % self.multiple != 0:
            raise RuntimeError(
                got + "height and width must be multiples of " + str(self.multiple)
                + " (trained at " + trained + ": resize every image to it, as in training)"
            )  # fmt: skip

    def _check_values(self, low: float, high: float) -> None:
        if not (math.isfinite(low) and math.isfinite(high)):  # not low != low: TorchScript folds that to False
            raise RuntimeError(self.expects + ", got images holding NaN or inf")
        span = "values in [" + str(math.floor(low)) + ", " + str(math.ceil(high)) + "]"  # str(float) has 17 digits
        if low < self.lowest:
            raise RuntimeError(self.expects + ", got " + span + ": pass the images before normalising them")
        if high > self.highest:
            raise RuntimeError(self.expects + ", got " + span + ": divide 0-255 values by 255")


class ValueGate(nn.Module):
    """``inner``'s outputs turned to NaN where the input is no [0, 1] image: an ONNX graph cannot raise,
    and a deployment feeding 0-255 values or normalised images read plausible answers. Each image is
    judged alone (one bad image in a batch poisons its own rows only); NaN and inf input fail too."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.lowest, self.highest = float(LOWEST), float(HIGHEST)

    def forward(self, images: torch.Tensor):
        flat = images.flatten(1)
        # onnxruntime's ReduceMin/Max drop a NaN that is not first in the row: it is looked for on its own
        ok = (flat.amin(1) >= self.lowest) & (flat.amax(1) <= self.highest) & ~torch.isnan(flat).any(1)
        gate = torch.where(ok, torch.ones_like(ok, dtype=images.dtype), torch.full_like(flat[:, 0], float("nan")))
        return tuple(out * gate.reshape([-1] + [1] * (out.dim() - 1)) for out in self.inner(images))
