"""The training loader: the mixed sources, sampled by source weight, sharded under torchrun."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader

from amalgam.config.schema import TrainConfig
from amalgam.data import mixing_sampler
from amalgam.data.views import collate
from amalgam.distill.plan import Plan
from amalgam.training.distributed import DistContext, GlobalBatchShard
from amalgam.training.runlock import drop_in_child


def _worker_init(worker_id: int) -> None:
    drop_in_child()  # the run folder's lock dies with the build, not with its last worker
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    plan: Plan, cfg: TrainConfig, seed: int, device: torch.device, ctx: DistContext = DistContext()
) -> DataLoader:
    """Loader over the mixed sources, sampled by source weight, with the source id of each sample.

    Under torchrun each rank loads its contiguous slice of every global batch.
    """
    weights = [plan.recipe.data.sources[n].weight for n in plan.sources.names]
    samples = cfg.samples_per_epoch or len(plan.sources)
    sampler = mixing_sampler(plan.sources, weights, samples, seed)
    drop_last = samples >= 2 * cfg.batch_size  # no 1-sample batch for BatchNorm
    if ctx.enabled:
        sampler = GlobalBatchShard(sampler, cfg.batch_size, ctx, drop_last)
    return DataLoader(
        plan.sources,
        batch_size=ctx.local_batch(cfg.batch_size),
        sampler=sampler,
        num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0,
        pin_memory=device.type == "cuda",
        drop_last=drop_last and not ctx.enabled,
        worker_init_fn=_worker_init,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate,  # originals of differing sizes stay a list
    )


def replay_epochs(loader: DataLoader, epochs: int) -> None:
    """Advances the loader's random streams past ``epochs`` finished epochs (for ``--resume``).

    The sampler's generator advances once per epoch and the loader draws one base seed per epoch:
    drawing both again puts the next epoch on the samples an uninterrupted run would draw.
    """
    sampler = loader.sampler.sampler if isinstance(loader.sampler, GlobalBatchShard) else loader.sampler
    for _ in range(epochs):
        list(sampler)
        if loader.generator is not None:
            torch.empty((), dtype=torch.int64).random_(generator=loader.generator)
