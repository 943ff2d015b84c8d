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
    groups: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Blends rows of ``images`` with a partner row from the same source.

    Args:
        images: the (already flipped) batch ``[B, C, H, W]``.
        source: each row's source id ``[B]``.
        mix_sources: source ids whose rows may be blended.
        fraction: share of those rows that are blended.
        draws: three ``[B]`` uniform tensors (whether to blend, the blend weight, the partner
            order), drawn by the caller from its seeded generator so runs are reproducible.
        groups: rows pair only within a group (default: the source; see :func:`mix_pairs`).

    Returns:
        the batch with blended rows, and the boolean mask of blended rows (None when none were).
    """
    partner, lam, mixed = mix_pairs(source, mix_sources, fraction, draws, groups)
    if mixed is None:
        return images, None
    w = lam.view(-1, 1, 1, 1).to(images.device, images.dtype)
    return w * images + (1 - w) * images[partner.to(images.device)], mixed.to(images.device)


def mix_pairs(
    source: torch.Tensor,
    mix_sources: Sequence[int],
    fraction: float,
    draws: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    groups: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Which rows :func:`mix_batch` blends, with which partner and weight.

    ``groups`` (default: ``source``) refines the pairing: the trainer groups rows by source and
    original size, so that every consumer's view of a blend is the blend of its views.

    Returns:
        ``(partner, weight, mixed)``: each row's partner and own weight (1 where not blended),
        and the mask of blended rows (None when none are).
    """
    pick, weight, order = (d.to(source.device) for d in draws)
    groups = source if groups is None else groups.to(source.device)
    allowed = torch.isin(source, torch.tensor(list(mix_sources), device=source.device))
    index = torch.arange(source.shape[0], device=source.device)
    partner = index.clone()
    for gid in groups[allowed].unique().tolist():
        rows = ((groups == gid) & allowed).nonzero().flatten()
        if rows.numel() < 2:
            continue
        # pair each row with the next one in a random cyclic order: never with itself
        shuffled = rows[order[rows].argsort()]
        partner[shuffled] = shuffled.roll(-1)
    mixed = allowed & (pick < fraction) & (partner != index)
    if not bool(mixed.any()):
        return partner, torch.ones_like(weight), None
    return partner, torch.where(mixed, weight, torch.ones_like(weight)), mixed
