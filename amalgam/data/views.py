"""Views: each consumer (the student, each teacher) sees the original image resized to its own input.

A view is made from the *original* decoded image, never from another view, so a 224-px teacher
under a 64-px student sees 224 px of the original, not an upsampled 64-px image. How the original
fills the view is the consumer's ``resize`` mode (a registry, :data:`RESIZE_MODES`):

* ``stretch`` (the default): the whole original scaled to the view's size, aspect ratio not kept.
  It is the default because it is what the student itself sees (``data.image_size``): a teacher
  then sees every pixel the student sees, at the same place, so a dense answer covers the whole
  student grid. Square originals look the same in every mode.
* ``letterbox``: scaled to fit inside the view, aspect ratio kept, the rest padded with the
  teacher's mean colour (zero after its normalisation).
* ``center_crop``: scaled to cover the view, aspect ratio kept, the overflow cropped equally on
  both sides (the usual evaluation transform of ImageNet classifiers).

Each view comes with its :class:`Placement` (which box of the original shows in which box of the
view); :func:`undo` maps a dense answer on the view back onto the original's frame at any size
(the student's grid, or a label map's resolution): the padding is cut away, the crop is put back
where it came from, and pixels the view never saw are NaN, so they can never pass for an answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F

from amalgam.registry import Registry

#: (top, left, bottom, right) in fractions of the height and width
Box = tuple[float, float, float, float]
FULL: Box = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class ViewSpec:
    """What a consumer's input looks like before its own normalisation.

    Attributes:
        size: ``(height, width)`` of the view.
        resize: a :data:`RESIZE_MODES` name.
        fill: RGB in [0, 1] that letterbox padding is painted with.
        crop: the centre share (of each side) of what the mode keeps that is shown: timm's ``crop_pct``
            (torchvision's Resize(256) + CenterCrop(224) is 0.875); 1 shows it all.
    """

    size: tuple[int, int]
    resize: str = "stretch"
    fill: tuple[float, float, float] = (0.0, 0.0, 0.0)
    crop: float = 1.0


@dataclass(frozen=True)
class Placement:
    """The box ``src`` of the original appears in the box ``dst`` of the view (fractions)."""

    src: Box = FULL
    dst: Box = FULL

    @property
    def identity(self) -> bool:
        return self.src == FULL and self.dst == FULL


@dataclass(frozen=True)
class ResizeMode:
    """A way to fit an original into a view.

    Attributes:
        boxes: ``(original (H, W), view (h, w)) -> (crop, paste)``: the pixel box of the original
            that is kept and the pixel box of the view it is scaled into, both ``(top, left,
            bottom, right)`` integers.
        sees_everything: every pixel of the original is in the view (so a dense answer, undone,
            covers the whole frame).
    """

    boxes: Callable[[tuple[int, int], tuple[int, int]], tuple[tuple[int, ...], tuple[int, ...]]]
    sees_everything: bool


RESIZE_MODES: Registry[ResizeMode] = Registry("input.resize mode")


def _stretch(src: tuple[int, int], dst: tuple[int, int]):
    return (0, 0, *src), (0, 0, *dst)


def _letterbox(src: tuple[int, int], dst: tuple[int, int]):
    scale = min(dst[0] / src[0], dst[1] / src[1])
    h = min(dst[0], max(1, round(src[0] * scale)))
    w = min(dst[1], max(1, round(src[1] * scale)))
    top, left = (dst[0] - h) // 2, (dst[1] - w) // 2
    return (0, 0, *src), (top, left, top + h, left + w)


def _center_crop(src: tuple[int, int], dst: tuple[int, int]):
    scale = max(dst[0] / src[0], dst[1] / src[1])
    h = min(src[0], max(1, round(dst[0] / scale)))
    w = min(src[1], max(1, round(dst[1] / scale)))
    top, left = (src[0] - h) // 2, (src[1] - w) // 2
    return (top, left, top + h, left + w), (0, 0, *dst)


RESIZE_MODES.add("stretch", ResizeMode(_stretch, sees_everything=True))
RESIZE_MODES.add("letterbox", ResizeMode(_letterbox, sees_everything=True))
RESIZE_MODES.add("center_crop", ResizeMode(_center_crop, sees_everything=False))

#: the mode of a teacher whose recipe gives none (see the module docstring for why)
DEFAULT_RESIZE = "stretch"


#: how :func:`resize` makes every view, the student's image included; its version is kept in a training
#: checkpoint, so a resume of a run that trained on another resize says so (1: OpenCV for the student's
#: image, before 2026-12-04; 2: this one)
RESIZE_KIND = "bilinear, antialiased when shrinking, 8-bit originals in 8 bits"
RESIZE_VERSION = 2


def resize(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of ``[..., C, H, W]`` (antialiased when shrinking, as PIL and timm do). A uint8
    image on the CPU stays uint8 (8-bit kernels: a 640x480 photo shrinks in 0.1 ms, not 1.2); any
    other comes back float."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    squeeze = image.dim() == 3
    x = image.unsqueeze(0) if squeeze else image
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    eight_bit = x.dtype == torch.uint8 and x.device.type == "cpu"
    x = F.interpolate(
        x if eight_bit else x.float(), size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink
    )
    return x[0] if squeeze else x


def make_view(original: torch.Tensor, spec: ViewSpec) -> tuple[torch.Tensor, Placement]:
    """One consumer's view of one original.

    Args:
        original: ``[3, H, W]`` float in [0, 1] (or uint8, scaled here).
        spec: the consumer's view.

    Returns:
        the ``[3, h, w]`` view in [0, 1] and where the original sits in it.
    """
    src_hw, dst_hw = tuple(original.shape[-2:]), tuple(spec.size)
    crop, paste = RESIZE_MODES.get(spec.resize).boxes(src_hw, dst_hw)
    crop = _centre_of(crop, spec.crop) if spec.crop < 1 else crop
    content = resize(original[:, crop[0] : crop[2], crop[1] : crop[3]], (paste[2] - paste[0], paste[3] - paste[1]))
    content = content.float() / 255.0 if content.dtype == torch.uint8 else content.float()  # 8-bit until resized
    if (paste[2] - paste[0], paste[3] - paste[1]) == dst_hw:
        view = content
    else:
        view = content.new_tensor(spec.fill).view(3, 1, 1).expand(3, *dst_hw).clone()
        view[:, paste[0] : paste[2], paste[1] : paste[3]] = content
    return view, Placement(_fractions(crop, src_hw), _fractions(paste, dst_hw))


def _centre_of(box: Sequence[int], share: float) -> tuple[int, int, int, int]:
    """The centre ``share`` of each side of a pixel ``box`` (at least one pixel)."""
    top, left, bottom, right = box
    h, w = max(1, round((bottom - top) * share)), max(1, round((right - left) * share))
    top, left = top + (bottom - top - h) // 2, left + (right - left - w) // 2
    return top, left, top + h, left + w


def _fractions(box: Sequence[int], hw: Sequence[int]) -> Box:
    return (box[0] / hw[0], box[1] / hw[1], box[2] / hw[0], box[3] / hw[1])


def undo(
    dense: torch.Tensor, placements: Sequence[Placement], size: Sequence[int], holes: bool = False
) -> torch.Tensor:
    """Maps dense answers on views back onto their originals' frames, sampled at ``size``.

    Args:
        dense: ``[B, C, h, w]`` answers on the views (any resolution: output strides are fine).
        placements: each row's placement (from :func:`make_view`).
        size: ``(H, W)`` of the frame to return: the student's grid, or a label map's size.
        holes: its NaN are holes (no answer: a depth teacher's "no depth"), resized by
            :func:`resize_with_holes`; else a NaN is the teacher's own failure and spreads, to be found.

    Returns:
        ``[B, C, H, W]``; pixels of the frame that the view did not show are NaN.
    """
    size = tuple(int(s) for s in size)
    shrink = resize_with_holes if holes else resize
    if all(p.identity for p in placements):  # stretch: one resize, exactly as before views existed
        return shrink(dense, size)
    out = dense.new_empty((dense.shape[0], dense.shape[1], *size), dtype=torch.float32)
    for placement, rows in _groups(placements).items():
        out[rows] = _undo_group(dense[rows].float(), placement, size, shrink)
    return out


def _groups(placements: Sequence[Placement]) -> dict[Placement, list[int]]:
    groups: dict[Placement, list[int]] = {}
    for row, p in enumerate(placements):
        groups.setdefault(p, []).append(row)
    return groups


#: the output strides networks use: a map that is 1/s of its input, or such a map upsampled s times, for these
STRIDES = (2, 4, 8, 16, 32)


class OutputStride(NamedTuple):
    """How a dense output lies on its input: ``1/stride`` of it (or such a map ``upsampled`` stride times), and
    whether its cells are ``placed`` over the pixels they pooled (a stride nets use, or one dividing the input;
    else the map is stretched: 8x8 of a 299 px input claims no cell size)."""

    stride: int
    upsampled: bool
    placed: bool


def output_stride(size: Sequence[int], out: Sequence[int]) -> Optional[OutputStride]:
    """How a dense output of size ``out`` lies on an input of ``size``: a ``1/s`` map (each side the floor or ceil
    of size / s, as strided layers round) or such a map upsampled ``s`` times (520 for 513 at stride 8); None
    where it is the input's size, a multiple of it, or no stride's map."""
    (h, w), (oh, ow) = (int(size[0]), int(size[1])), (int(out[0]), int(out[1]))
    if (oh, ow) == (h, w) or (oh > h and oh % h == 0 and ow % w == 0 and oh // h == ow // w):
        return None
    fits = [s for s in range(2, max(h, w) + 1) if abs(oh - h / s) < 1 and abs(ow - w / s) < 1]
    if fits:  # rounding leaves small outputs several strides: the one nets use, else the closest
        s = min(fits, key=lambda s: (s not in STRIDES, abs(oh - h / s) + abs(ow - w / s)))
        return OutputStride(s, False, s in STRIDES or (h % s == 0 and w % s == 0))
    for s in STRIDES:
        if oh in (s * (h // s), s * -(-h // s)) and ow in (s * (w // s), s * -(-w // s)):
            return OutputStride(s, True, True)
    return None


def onto_input(dense: torch.Tensor, size: Sequence[int], holes: bool = False) -> torch.Tensor:
    """A dense answer at an output stride placed on its input's pixels: each cell of a ``1/s`` map over the ``s x s``
    pixels it pooled (upsampled exactly ``s`` times), then cropped or edge-padded to ``size`` where the input is no
    multiple of ``s``. Stretched onto the input instead, a 16x11 map of a 65x47 input drifted by up to 3 px (a
    trial: mIoU 0.80 against 0.92 placed, stride 4); other outputs come back as they are (``undo`` resizes them)."""
    found = output_stride(size, dense.shape[-2:])
    if found is None or not found.placed:  # not placed: stretched by undo
        return dense
    h, w = int(size[0]), int(size[1])
    if not found.upsampled:
        exact = (dense.shape[-2] * found.stride, dense.shape[-1] * found.stride)
        dense = resize_with_holes(dense, exact) if holes else resize(dense, exact)
    dense = dense[..., :h, :w]
    pad = (0, w - dense.shape[-1], 0, h - dense.shape[-2])
    return F.pad(dense.float(), pad, mode="replicate") if any(pad) else dense


def resize_with_holes(dense: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """:func:`resize` of answers whose NaN are holes (no answer there: a depth teacher's "no depth"):
    each output pixel averages the answers around it that exist, and is a hole only where they weigh
    under half. A plain (antialiased) resize spread every hole over its whole kernel: 1% of scattered
    holes shrunk 4x made 45% of the pixels holes, scored against the teacher."""
    if tuple(dense.shape[-2:]) == tuple(size):
        return dense
    holes = torch.isnan(dense)
    weight = resize((~holes).float(), size)
    values = resize(torch.where(holes, torch.zeros_like(dense), dense), size) / weight.clamp_min(1e-6)
    return torch.where(weight >= 0.5, values, torch.full_like(values, float("nan")))


def _undo_group(dense: torch.Tensor, p: Placement, size: tuple[int, int], shrink=resize) -> torch.Tensor:
    if p.identity:
        return shrink(dense, size)
    dense, p = _cut_to_shown(dense, p)
    # answers denser than the frame are first shrunk with antialiasing (a sampling grid alone would alias)
    per_pixel = [(p.dst[2 + a] - p.dst[a]) * dense.shape[2 + a] / ((p.src[2 + a] - p.src[a]) * size[a]) for a in (0, 1)]
    if max(per_pixel) > 1:
        dense = shrink(dense, [max(1, math.ceil(dense.shape[2 + a] / max(per_pixel[a], 1))) for a in (0, 1)])
    axes = [_axis_grid(p.src[a], p.src[2 + a], p.dst[a], p.dst[2 + a], size[a], dense.shape[2 + a]) for a in (0, 1)]
    (gy, vy), (gx, vx) = axes
    grid = torch.stack(torch.broadcast_tensors(gx.view(1, -1), gy.view(-1, 1)), dim=-1).to(dense.device)
    grid = grid.unsqueeze(0).expand(dense.shape[0], -1, -1, -1)
    out = F.grid_sample(dense, grid, mode="bilinear", padding_mode="border", align_corners=False)
    seen = (vy.view(-1, 1) & vx.view(1, -1)).to(dense.device)
    return out.masked_fill(~seen, float("nan"))


def _cut_to_shown(dense: torch.Tensor, p: Placement) -> tuple[torch.Tensor, Placement]:
    """The answer's whole pixels that overlap the shown box (padding never blurs into the shown
    part when the answer is shrunk), with the placement restated in the cut's fractions."""
    h, w = dense.shape[-2:]
    top, bottom = math.floor(p.dst[0] * h + 1e-6), math.ceil(p.dst[2] * h - 1e-6)
    left, right = math.floor(p.dst[1] * w + 1e-6), math.ceil(p.dst[3] * w - 1e-6)
    dst = ((p.dst[0] * h - top) / (bottom - top), (p.dst[1] * w - left) / (right - left))
    dst = (*dst, (p.dst[2] * h - top) / (bottom - top), (p.dst[3] * w - left) / (right - left))
    return dense[..., top:bottom, left:right], Placement(p.src, dst)


def _axis_grid(s0: float, s1: float, d0: float, d1: float, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Along one axis: where each of the frame's ``n`` pixel centres falls in the ``m``-pixel answer
    (grid_sample's [-1, 1] coordinates, held inside the shown box), and whether the view showed it."""
    a = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # frame pixel centres as fractions
    b = d0 + (a - s0) * (d1 - d0) / (s1 - s0)  # the same points as fractions of the view
    lo, hi = d0 + 0.5 / m, d1 - 0.5 / m  # outermost answer pixel centres inside the shown box
    b = b.clamp(min(lo, hi), max(lo, hi)) if lo <= hi else torch.full_like(b, (d0 + d1) / 2)
    return (2 * b - 1).float(), (a >= s0) & (a <= s1)


def same_view(a: ViewSpec, b: ViewSpec) -> bool:
    """Two specs whose views of any original are the same image (stretch ignores ``fill``)."""
    same_fit = a.size == b.size and a.resize == b.resize and a.crop == b.crop
    return same_fit and (a.resize == "stretch" or a.fill == b.fill)


def default_fill(mean: Sequence[float]) -> tuple[float, float, float]:
    """Padding colour: the teacher's mean (zero after its normalisation); grey means repeat."""
    values = list(mean) * 3 if len(mean) == 1 else list(mean)
    return (float(values[0]), float(values[1]), float(values[2]))


class BatchViews:
    """A batch's originals, and each consumer's views of them, made on demand.

    A view is made only when a teacher runs (a cache miss, a blend, an uncached teacher), and only
    for the rows it runs on: a batch whose teacher outputs are all cached makes none. A spec equal
    to the student's is answered with the student's own images.

    Args:
        student: the student's view of the batch ``[B, 3, h, w]`` (un-flipped, un-blended).
        student_spec: what the student's view is.
        originals: the decoded originals (``[3, H, W]`` uint8 each), or None when every teacher
            shares the student's view (then no other view can be asked for).
        flip: the rows mirrored left-right by augmentation (``[B]`` bool), or None.
    """

    def __init__(
        self,
        student: torch.Tensor,
        student_spec: ViewSpec,
        originals: Optional[Sequence] = None,
        flip: Optional[torch.Tensor] = None,
    ):
        self.student = student
        self.student_spec = student_spec
        self.originals = originals
        self.flip = None if flip is None else flip.cpu()
        self.blends: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # (partner row, weight) per row

    def blend(self, partner: torch.Tensor, weight: torch.Tensor) -> None:
        """Row ``i`` becomes ``weight[i] * row i + (1 - weight[i]) * row partner[i]`` (after the
        flips) in every augmented view, as mixup blends the student's images."""
        self.blends = (partner.cpu(), weight.cpu())

    def get(self, spec: ViewSpec, rows: torch.Tensor, augmented: bool = True) -> tuple[torch.Tensor, list[Placement]]:
        """The views of ``rows`` for ``spec``, on the student images' device, and their placements.

        ``augmented``: flipped and blended as the student's input is (the placements stay those
        of the un-flipped views); else the plain views, as the teacher cache stores answers to.
        """
        rows = rows.cpu()
        views, placements = self._plain(spec, rows)
        if not augmented:
            return views, placements
        views = self._flipped(views, rows)
        if self.blends is not None:
            partner, weight = self.blends
            mixed = weight[rows] < 1
            if bool(mixed.any()):
                others = self._flipped(self._plain(spec, partner[rows][mixed])[0], partner[rows][mixed])
                w = weight[rows][mixed].view(-1, 1, 1, 1).to(views)
                on = mixed.to(views.device)
                views[on] = w * views[on] + (1 - w) * others
        return views, placements

    def _plain(self, spec: ViewSpec, rows: torch.Tensor) -> tuple[torch.Tensor, list[Placement]]:
        if same_view(spec, self.student_spec):
            return self.student[rows.to(self.student.device)], [Placement()] * len(rows)
        if self.originals is None:
            raise RuntimeError(f"no originals were loaded, but a {spec} view was asked for")
        made = [make_view(self.originals[r], spec) for r in rows.tolist()]
        return torch.stack([v for v, _ in made]).to(self.student.device), [p for _, p in made]

    def _flipped(self, views: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if self.flip is None:
            return views
        f = self.flip[rows].to(views.device).view(-1, 1, 1, 1)
        return torch.where(f, views.flip(-1), views)


def collate(samples: list[dict]) -> dict:
    """``default_collate``, except that tensors of differing shapes (originals, label maps at their
    own resolution) are kept as lists."""
    from torch.utils.data import default_collate

    out = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        same = not isinstance(values[0], torch.Tensor) or all(v.shape == values[0].shape for v in values)
        out[key] = default_collate(values) if same and key != "original" else values
    return out


def same_size_groups(batch: dict) -> Optional[torch.Tensor]:
    """Per row, an id shared by the rows of the same source and original size (mixup pairs only
    those, so each consumer's view of a blend is the blend of its views); None without originals."""
    originals = batch.get("original")
    if originals is None:
        return None
    keys: dict[tuple, int] = {}
    ids = [keys.setdefault((int(s), *o.shape[-2:]), len(keys)) for s, o in zip(batch["source"], originals)]
    return torch.tensor(ids)
