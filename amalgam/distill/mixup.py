"""Mixup for distillation ("function matching", Beyer et al. 2022): teachers label image blends.

A chosen share of the rows of the named sources is blended with another row of the same source
(weight drawn uniformly in [0, 1]); student and teachers see the same blend. A blend is a new
image, so its targets come from running the teachers on it, never from the teacher cache: the
other rows keep their cached targets (:func:`amalgam.distill.targets.with_live_rows`). Mixing only
within a source keeps the blend inside the distribution the source's teachers know (items with
items, scenes with scenes).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch


def mix_batch(
    images: torch.Tensor,
    source: torch.Tensor,
    mix_sources: Sequence[int],
    fraction: float,
    draws: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Blends rows of ``images`` with a partner row from the same source.

    Args:
        images: the (already flipped) batch ``[B, C, H, W]``.
        source: each row's source id ``[B]``.
        mix_sources: source ids whose rows may be blended.
        fraction: share of those rows that are blended.
        draws: three ``[B]`` uniform tensors (whether to blend, the blend weight, the partner
            order), drawn by the caller from its seeded generator so runs are reproducible.

    Returns:
        the batch with blended rows, and the boolean mask of blended rows (None when none were).
    """
    pick, weight, order = (d.to(images.device) for d in draws)
    allowed = torch.isin(source, torch.tensor(list(mix_sources), device=source.device))
    partner = torch.arange(images.shape[0], device=images.device)
    for sid in source[allowed].unique().tolist():
        rows = (source == sid).nonzero().flatten()
        if rows.numel() < 2:
            continue
        # pair each row with the next one in a random cyclic order: never with itself
        shuffled = rows[order[rows].argsort()]
        partner[shuffled] = shuffled.roll(-1)
    mixed = allowed & (pick < fraction) & (partner != torch.arange(images.shape[0], device=images.device))
    if not bool(mixed.any()):
        return images, None
    lam = torch.where(mixed, weight, torch.ones_like(weight)).view(-1, 1, 1, 1).to(images.dtype)
    return lam * images + (1 - lam) * images[partner], mixed
