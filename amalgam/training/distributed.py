"""Multi-process training with torch.distributed, started by torchrun.

``torchrun --nproc_per_node N -m amalgam build recipe.yaml`` (plus the usual ``--nnodes``,
``--node_rank``, ``--rdzv_endpoint`` flags for several machines) runs one process per device:
gloo on CPU, nccl on CUDA. ``train.batch_size`` stays the *global* batch: every global batch is
cut into equal contiguous slices, one per rank, so N processes see exactly the samples (and the
flips) one process would. The student is wrapped in DistributedDataParallel; the objective's few
parameters (uncertainty weights, adaptors, gates) are averaged by hand after backward. Rank 0 alone
writes checkpoints, logs and the report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from amalgam.errors import AmalgamError, error_line

T = TypeVar("T")


@dataclass
class DistContext:
    """This process's place in the job (a single process is rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def average_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        """All-reduces and averages gradients (a parameter unused on some rank counts as zero there)."""
        if not self.enabled:
            return
        for p in params:
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            dist.all_reduce(grad)
            p.grad = grad / self.world

    def agree(self, value: int) -> int:
        """The largest of every rank's ``value`` (this rank's alone in a single process).

        How ranks agree to stop at the same step: a signal may reach only some of them.
        """
        if not self.enabled:
            return value
        flag = torch.tensor([value], dtype=torch.int64, device=collective_device(dist.get_backend(), self.local_rank))
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def total(self, values: list[int]) -> list[int]:
        """Each of ``values`` summed over the ranks (this rank's own in a single process); every rank
        must pass as many, in one order."""
        if not self.enabled:
            return list(values)
        sums = torch.tensor(values, dtype=torch.int64, device=collective_device(dist.get_backend(), self.local_rank))
        dist.all_reduce(sums)
        return [int(v) for v in sums.tolist()]

    def share(self, value):
        """Rank 0's ``value`` on every rank (any picklable object; itself in a single process)."""
        if not self.enabled:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def local_batch(self, batch_size: int) -> int:
        """This rank's share of a global batch."""
        if batch_size % self.world:
            raise AmalgamError(f"train.batch_size: {batch_size} must be divisible by the {self.world} processes")
        return batch_size // self.world

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def decided_on_main(ctx: DistContext, decide: Callable[[], T], failed: str = "") -> T:
    """``decide()`` run on rank 0 only, and its result taken by every rank (a decision that timings or
    teacher answers could make differently on each). An error of rank 0's is shared too, so every rank
    stops with it (``failed`` before its words) instead of waiting for rank 0's answer for ever; in a
    single process it is raised as it is."""
    try:
        decided = ("ok", decide() if ctx.is_main else None)
    except Exception as exc:  # noqa: BLE001 - whatever stops rank 0 stops the others
        if not ctx.enabled:
            raise
        decided = ("error", str(exc) if isinstance(exc, AmalgamError) else error_line(exc))
    shared = ctx.share(decided)
    if shared[0] == "error":
        raise AmalgamError(f"{failed}{shared[1]}")
    return shared[1]


def collective_device(backend: str, local_rank: int) -> torch.device:
    """Where a tensor handed to a collective of ``backend`` must live.

    nccl reduces CUDA tensors only (a CPU tensor fails with "No backend type associated with
    device type cpu"): this process's GPU, ``cuda:<local_rank>``. gloo, and a mixed backend such
    as ``cpu:gloo,cuda:nccl``, take CPU tensors.
    """
    if str(backend).lower() == "nccl":
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def own_streams(seed: int, ctx: DistContext, epoch: int = 0) -> None:
    """Gives each rank but 0 global random streams of its own (CPU and GPU: dropout, noise and MC-dropout
    sub-teachers), once the weights every rank must share are drawn: alike, every rank drew the same masks
    for its rows, a global batch with 1/N of one process's variety. Rank 0 keeps the seed's streams (and
    its checkpointed state), so one process and rank 0 draw alike; ``epoch`` renews the others' on resume."""
    if ctx.enabled and ctx.rank:
        torch.manual_seed(int(np.random.SeedSequence([seed, ctx.rank, epoch]).generate_state(1)[0]))


#: how long a collective waits for the slowest rank: NCCL's default (10 minutes) ends a job whose rank 0
#: searches a tree (``branch_at: auto``) or evaluates a large eval set while the others wait
RANK_0_ALONE_MINUTES = 120


def launched_world_size() -> int:
    """How many processes torchrun launched (1 without it), read before any process group is joined."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device_type: str) -> DistContext:
    """Joins the torchrun job described by the environment, or returns a single-process context."""
    world = launched_world_size()
    if world <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if not dist.is_initialized():  # the others wait while rank 0 alone searches a tree, evaluates or reports
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=RANK_0_ALONE_MINUTES))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    return DistContext(rank, world, local_rank)


class GlobalBatchShard(Sampler[int]):
    """Rank ``rank``'s slice of every global batch drawn by ``sampler``.

    The wrapped sampler is iterated in full on every rank (it is seeded, so all ranks draw the same
    order); global batch ``k`` is split into ``world`` equal contiguous slices.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, ctx: DistContext, drop_last: bool):
        self.sampler, self.batch, self.ctx, self.drop_last = sampler, batch_size, ctx, drop_last
        self.local = ctx.local_batch(batch_size)

    def __iter__(self) -> Iterator[int]:
        order = list(self.sampler)
        full = len(order) // self.batch * self.batch
        if not self.drop_last and full < len(order):
            order += order[: self.batch - (len(order) - full)]  # pad the last batch (all ranks busy)
            full = len(order)
        for start in range(0, full, self.batch):
            offset = start + self.ctx.rank * self.local
            yield from order[offset : offset + self.local]

    def __len__(self) -> int:
        n = len(self.sampler)
        batches = n // self.batch if self.drop_last else -(-n // self.batch)
        return batches * self.local
