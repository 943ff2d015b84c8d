"""Per-batch augmentation of distillation: the horizontal flip (``train.augment``) and ``train.mixup``.

Every draw comes from one seeded generator that is checkpointed with the run, so a resumed run
flips and blends what an uninterrupted one would. Under torchrun each process draws the values of
the whole global batch and keeps its own slice: N processes augment what one process would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import torch

from amalgam.config.schema import TrainConfig
from amalgam.distill.mixup import mix_pairs
from amalgam.distill.targets import apply_flip


def flip_mask(batch: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Which samples of a batch to flip left-right: a random half, drawn from ``generator``."""
    return (torch.rand(batch, generator=generator) < 0.5).to(device)


def random_hflip(images: torch.Tensor, generator: torch.Generator, *dense: torch.Tensor):
    """Flips a random half of the batch left-right (teachers and student see the same images).

    Dense targets given in ``dense`` (``[B, ..., H, W]``) flip with their images; with none, the
    flipped images are returned alone, else a tuple ``(images, *dense)``.
    """
    flip = flip_mask(images.shape[0], generator, images.device)
    return apply_flip(images, flip) if not dense else (apply_flip(images, flip), *(apply_flip(t, flip) for t in dense))


@dataclass
class AugmentedBatch:
    """One batch before and after augmentation.

    Attributes:
        raw: the un-augmented images (what the teacher cache is keyed by).
        images: what the student and the teachers see.
        flip: which rows were flipped (None without ``train.augment``).
        mixed: which rows are blends (None when none are).
    """

    raw: torch.Tensor
    images: torch.Tensor
    flip: Optional[torch.Tensor]
    mixed: Optional[torch.Tensor]
    partner: Optional[torch.Tensor] = None  # each row's blend partner (with mixup)
    weight: Optional[torch.Tensor] = None  # each row's own share of its blend (1: not blended)


class BatchAugment:
    """Flips and blends batches as ``train.augment`` and ``train.mixup`` say.

    Args:
        cfg: the recipe's ``train`` section.
        source_names: the training sources in loader order (mixup names its sources).
        seed: the recipe's seed (the generator starts at ``seed + 1``).
        local: this process's rows of the global batch.
        unflipped: sources never flipped (``Plan.unflipped``): their rows' draws are kept, unused, so
            the other rows flip as they would.
    """

    def __init__(
        self, cfg: TrainConfig, source_names: list[str], seed: int, local: slice, unflipped: Iterable[str] = ()
    ):
        self.cfg = cfg
        self.local = local
        self.unflipped = torch.tensor([source_names.index(n) for n in unflipped], dtype=torch.long)
        self.rng = torch.Generator().manual_seed(seed + 1)
        self.mix_ids = [source_names.index(n) for n in cfg.mixup.sources] if cfg.mixup is not None else []

    def _draw(self, rows: int) -> torch.Tensor:
        return torch.rand(self.cfg.batch_size, generator=self.rng)[self.local][:rows]

    def __call__(
        self, raw: torch.Tensor, source: torch.Tensor, groups: Optional[torch.Tensor] = None
    ) -> AugmentedBatch:
        """``groups``: rows that mixup may pair (default: the source; see ``mix_pairs``)."""
        rows = raw.shape[0]
        flip = None
        if self.cfg.augment:
            flip = flip_mask(self.cfg.batch_size, self.rng, raw.device)[self.local][:rows]
            if len(self.unflipped):
                flip = flip & ~torch.isin(source.cpu(), self.unflipped).to(flip.device)
        images = apply_flip(raw, flip)
        if self.cfg.mixup is None:
            return AugmentedBatch(raw, images, flip, None)
        draws = (self._draw(rows), self._draw(rows), self._draw(rows))
        partner, weight, mixed = mix_pairs(source, self.mix_ids, self.cfg.mixup.fraction, draws, groups)
        if mixed is not None:
            w = weight.view(-1, 1, 1, 1).to(images.device, images.dtype)
            images = w * images + (1 - w) * images[partner.to(images.device)]
        return AugmentedBatch(raw, images, flip, mixed, partner, weight)
