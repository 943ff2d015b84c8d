"""The training loader: the mixed sources, sampled by source weight, sharded under torchrun."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Callable, Optional

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


#: where DataLoader workers hand their batches over (Linux); Docker's default gives it 64 MB
SHARED_MEMORY = Path("/dev/shm")
#: batches each worker prepares ahead (DataLoader's ``prefetch_factor`` default)
PREFETCH = 2
#: training images read to size a batch (spread over the sources)
SIZED_SAMPLES = 8


def batch_bytes(plan: Plan, batch_size: int) -> int:
    """About the bytes a training batch's tensors take (its largest of a few samples, ``batch_size`` times):
    each carries its decoded original, so large photos make large batches."""
    count = len(plan.sources)
    picks = {k * count // SIZED_SAMPLES for k in range(SIZED_SAMPLES)} if count else set()
    sizes = [
        sum(v.numel() * v.element_size() for v in plan.sources[i].values() if isinstance(v, torch.Tensor))
        for i in sorted(picks)
    ]
    return max(sizes, default=0) * batch_size


def workers_that_fit(plan: Plan, cfg: TrainConfig, batch_size: int, log: Callable[[str], None]) -> int:
    """``train.workers``, or 0 where the batches they prepare ahead do not fit the free shared memory: a worker
    that cannot hand one over drops it, and the build waited forever (a trial: 1600x1200 photos, 64 MB
    /dev/shm). Said in the log; workers change how fast a run goes, not what it learns."""
    if cfg.workers == 0 or not SHARED_MEMORY.is_dir():
        return cfg.workers
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun's processes on this machine share it
    need = batch_bytes(plan, batch_size) * PREFETCH * cfg.workers * processes
    free = shutil.disk_usage(SHARED_MEMORY).free
    if need <= free // 2:
        return cfg.workers
    log(
        f"train.workers {cfg.workers} -> 0: the batches they would prepare ahead take about {need / 2**20:,.0f} MB"
        f" of shared memory and {SHARED_MEMORY} has {free / 2**20:,.0f} MB free (docker run --shm-size raises it);"
        " the main process loads the images, slower, with the same result"
    )
    return 0


def make_loader(
    plan: Plan,
    cfg: TrainConfig,
    seed: int,
    device: torch.device,
    ctx: DistContext = DistContext(),
    log: Optional[Callable[[str], None]] = None,
) -> DataLoader:
    """Loader over the mixed sources, sampled by source weight, with the source id of each sample.

    Under torchrun each rank loads its contiguous slice of every global batch. ``log``: where a change of
    ``train.workers`` (:func:`workers_that_fit`) is said; without it the workers are as set.
    """
    workers = cfg.workers if log is None else workers_that_fit(plan, cfg, ctx.local_batch(cfg.batch_size), log)
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
        num_workers=workers,
        persistent_workers=workers > 0,
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
